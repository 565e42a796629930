// Just enough of CUDA for kernels.cu to compile with the host C++ compiler: `__global__`
// means nothing, and the four built-in coordinates are per-thread variables that the
// launcher (cpu_launch.cpp) sets before it calls a kernel for one (block, thread).
#pragma once

#include <math.h>
#include <stddef.h>

#define __global__

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

// thread_local: the Rust test harness runs tests on several threads at once.
static thread_local uint3 blockIdx, threadIdx;
static thread_local dim3 blockDim, gridDim;
