// The CUDA reference's kernels: one source, two compilers.
//
// On a GPU, NVRTC compiles this file at run time (host-sim/src/reference_cuda/gpu.rs).
// Without one, the host C++ compiler builds it with cpu_shim.h in front
// (host-sim/cuda/cpu_launch.cpp), and each launch runs as loops over the same grid and
// blocks. So CI executes these very lines, with the launch configurations the forward pass
// chooses, and compares the logits with the f64 reference.
//
// Rules that keep the two the same: no shared memory, no __syncthreads, no atomics (every
// thread is independent, so running the threads one after another is a valid schedule);
// only the math functions of <math.h>; a kernel's arguments are float*, const float*,
// const int*, int or float (the CPU launcher checks each launch against these signatures).

extern "C" __global__ void matmul(const float* x, const float* w, float* y, int t_len, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (r >= rows || t >= t_len) return;
    const float* xr = x + (size_t)t * cols;
    const float* wr = w + (size_t)r * cols;
    float acc = 0.0f;
    for (int c = 0; c < cols; ++c) acc += wr[c] * xr[c];
    y[(size_t)t * rows + r] = acc;
}

extern "C" __global__ void layer_norm(const float* x, const float* w, const float* b, float* y, int t_len, int d, float eps) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= t_len) return;
    const float* xr = x + (size_t)t * d;
    float* yr = y + (size_t)t * d;
    float mean = 0.0f;
    for (int i = 0; i < d; ++i) mean += xr[i];
    mean /= (float)d;
    float var = 0.0f;
    for (int i = 0; i < d; ++i) { float v = xr[i] - mean; var += v * v; }
    var /= (float)d;
    float inv = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < d; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
}

extern "C" __global__ void conv_silu(const float* ug, const float* w, const float* bias, float* v, int t_len, int di, int k) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (ch >= di || t >= t_len) return;
    float acc = bias[ch];
    for (int j = 0; j < k; ++j) {
        int src = t - (k - 1) + j;
        if (src >= 0) acc += w[ch * k + j] * ug[(size_t)src * 2 * di + ch];
    }
    v[(size_t)t * di + ch] = acc / (1.0f + expf(-acc));
}

extern "C" __global__ void step_size(const float* z, const float* b, float* dt, int t_len, int di) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= t_len) return;
    float s = 0.0f;
    for (int j = 0; j < di; ++j) {
        float a = z[(size_t)t * di + j] + b[j];
        s += fmaxf(a, 0.0f) + log1pf(expf(-fabsf(a)));
    }
    dt[t] = s / (float)di;
}

extern "C" __global__ void scan(const float* bu, const float* dt, const float* a_log, float* states, int t_len, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float a = -expf(a_log[i]);
        float s = 0.0f;
        for (int t = 0; t < t_len; ++t) {
            s = expf(dt[t] * a) * s + dt[t] * bu[(size_t)t * n + i];
            states[(size_t)t * n + i] = s;
        }
    }
}

extern "C" __global__ void ssm_out(const float* cs, const float* d, const float* v, const float* ug, float* y, int t_len, int di) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (ch >= di || t >= t_len) return;
    float g = ug[(size_t)t * 2 * di + di + ch];
    size_t i = (size_t)t * di + ch;
    y[i] = (cs[i] + d[ch] * v[i]) * (g / (1.0f + expf(-g)));
}

extern "C" __global__ void gelu(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

extern "C" __global__ void add_rows(float* x, const float* y, const float* w, int t_len, int d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (i >= d || t >= t_len) return;
    x[(size_t)t * d + i] += w[t] * y[(size_t)t * d + i];
}

extern "C" __global__ void embed(const float* e, const float* p, const int* tokens, float* x, int t_len, int d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (i >= d || t >= t_len) return;
    x[(size_t)t * d + i] = e[(size_t)tokens[t] * d + i] + p[(size_t)t * d + i];
}
