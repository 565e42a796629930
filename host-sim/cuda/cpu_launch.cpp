// The CUDA reference's kernels on the CPU: kernels.cu compiled by the host compiler behind
// cpu_shim.h, and one entry point, `itera_cuda_cpu_launch`, that runs a launch as loops
// over its grid and blocks, as cuLaunchKernel would schedule it (any order is valid: the
// kernels share nothing between threads).
//
// A launch names its kernel and passes its arguments the way cuLaunchKernel takes them (an
// array of pointers to each argument), plus one letter per argument saying what the caller
// thinks it is. The launcher checks those letters, and the launch configuration against
// CUDA's limits, so a forward pass that calls a kernel wrongly fails here, not only on a GPU.

#include <stdint.h>
#include <string.h>

#include <utility>

#include "cpu_shim.h"

// The kernels keep their C names (matmul, scan, ...), as NVRTC sees them; a clash with
// another symbol of the binary would be a link error, not a silent swap.
#include "kernels.cu"

namespace {

// The letter for each argument type a kernel may take.
template <class T>
struct Kind;
template <>
struct Kind<const float*> {
    static constexpr char letter = 'r';  // read
};
template <>
struct Kind<float*> {
    static constexpr char letter = 'w';  // written
};
template <>
struct Kind<const int*> {
    static constexpr char letter = 'n';  // integers (token ids)
};
template <>
struct Kind<int> {
    static constexpr char letter = 'i';
};
template <>
struct Kind<float> {
    static constexpr char letter = 'f';
};

enum Status { OK = 0, UNKNOWN_KERNEL = 1, BAD_ARGUMENTS = 2, BAD_LAUNCH = 3 };

template <class... A, size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(args[I])...);
}

// CUDA's limits on a launch (every compute capability from 3.0 on): what a GPU would refuse.
bool valid(const unsigned* grid, const unsigned* block) {
    for (int i = 0; i < 3; ++i) {
        if (grid[i] == 0 || block[i] == 0) return false;
    }
    uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    return grid[0] <= 2147483647u && grid[1] <= 65535 && grid[2] <= 65535 && block[0] <= 1024 &&
           block[1] <= 1024 && block[2] <= 64 && threads <= 1024;
}

template <class... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** args, const char* kinds,
           size_t count) {
    const char signature[] = {Kind<A>::letter..., '\0'};
    if (count != sizeof...(A) || strcmp(signature, kinds) != 0) return BAD_ARGUMENTS;
    if (!valid(grid, block)) return BAD_LAUNCH;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                blockIdx = {bx, by, bz};
                for (unsigned tz = 0; tz < block[2]; ++tz)
                    for (unsigned ty = 0; ty < block[1]; ++ty)
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            threadIdx = {tx, ty, tz};
                            call(kernel, args, std::index_sequence_for<A...>{});
                        }
            }
    return OK;
}

}  // namespace

// Every kernel of kernels.cu, by name.
#define ITERA_KERNELS(X) \
    X(matmul)            \
    X(layer_norm)        \
    X(conv_silu)         \
    X(step_size)         \
    X(scan)              \
    X(ssm_out)           \
    X(gelu)              \
    X(add_rows)          \
    X(embed)

// Runs kernel `name` over `grid` x `block` (three each) with `count` arguments: `args[i]`
// points at argument i, `kinds` holds one letter per argument (see Kind). Returns a Status.
extern "C" int itera_cuda_cpu_launch(const char* name, const unsigned* grid, const unsigned* block, void** args,
                                     const char* kinds, size_t count) {
#define ITERA_TRY(k) \
    if (strcmp(name, #k) == 0) return launch(k, grid, block, args, kinds, count);
    ITERA_KERNELS(ITERA_TRY)
#undef ITERA_TRY
    return UNKNOWN_KERNEL;
}
