//! The reference forward pass on an NVIDIA GPU, in f32 (feature `cuda`, off by default).
//!
//! Same model as [`crate::reference`], same dequantized weights (converted to f32 and
//! uploaded once), but every step runs for the whole sequence at once on the GPU, with
//! small kernels compiled at run time by NVRTC:
//!
//! * every projection (in_proj, delta_proj, B, C, out_proj, FFN, experts, router, lm_head)
//!   is one matrix product over all positions (`matmul`: one thread per output element);
//! * LayerNorm, the causal conv + silu, the step size `dt`, the gate, GELU and the residual
//!   adds are elementwise kernels;
//! * the SSM scan is one kernel per layer: one thread block, sequential over time, one
//!   thread per state channel;
//! * MoE routing (top-k of the router logits and the softmax over the picked ones) runs on
//!   the CPU between kernels: the router logits come back, per-position mixing weights go
//!   up, and each expert runs over all positions (weight 0 where it was not picked).
//!
//! The driver (libcuda) and NVRTC are loaded at run time (cudarc's `dynamic-loading`), so
//! the binary builds and starts without CUDA; [`logits`] then says why it cannot run as a
//! [`CudaError::Unavailable`], which the command line maps to exit status
//! [`EXIT_UNAVAILABLE`].

use std::fmt;

use crate::reference::RefModel;

/// Exit status of `itera-sim check --reference cuda` when no GPU reference can run here
/// (built without the feature, no driver, no device, no NVRTC).
pub const EXIT_UNAVAILABLE: u8 = 3;

/// Why the GPU reference gave no logits.
#[derive(Debug)]
pub enum CudaError {
    /// It cannot run on this machine or build (one line: why).
    Unavailable(String),
    /// It started, then failed (a CUDA or NVRTC error, bad tokens, ...).
    Failed(anyhow::Error),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::Unavailable(why) => write!(f, "the CUDA reference is unavailable: {why}"),
            CudaError::Failed(e) => write!(f, "the CUDA reference failed: {e:#}"),
        }
    }
}

impl std::error::Error for CudaError {}

/// Logits after every position of `tokens`, `[tokens.len()][vocab]` f32, computed on GPU 0.
#[cfg(not(feature = "cuda"))]
pub fn logits(model: &RefModel, tokens: &[u32]) -> Result<Vec<f32>, CudaError> {
    let _ = (model, tokens);
    Err(CudaError::Unavailable(
        "this itera-sim was built without the cuda feature (cargo build --release -p itera-sim --features cuda)".into(),
    ))
}

/// Logits after every position of `tokens`, `[tokens.len()][vocab]` f32, computed on GPU 0.
#[cfg(feature = "cuda")]
pub fn logits(model: &RefModel, tokens: &[u32]) -> Result<Vec<f32>, CudaError> {
    crate::engine::check_table_tokens(tokens, &model.config).map_err(CudaError::Failed)?;
    let gpu = gpu::Gpu::open()?;
    gpu.forward(model, tokens).map_err(CudaError::Failed)
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)] // probing for the libraries, and kernel launches
mod gpu {
    use std::sync::Arc;

    use anyhow::Context;
    use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

    use super::CudaError;
    use crate::reference::{route, Mat, Mixer, RefModel};

    const KERNELS: &str = r#"
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
"#;

    const THREADS: u32 = 128;

    /// Why a panic inside cudarc happened, as text.
    fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    }

    /// Runs `f`, turning a panic (cudarc panics when a library or symbol is missing) into an
    /// error, with the panic message kept off stderr.
    fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        std::panic::set_hook(hook);
        r.map_err(|p| panic_text(p.as_ref()).lines().next().unwrap_or("").to_string())
    }

    fn first_line(s: impl std::fmt::Display) -> String {
        s.to_string().lines().next().unwrap_or("").to_string()
    }

    pub(super) struct Gpu {
        stream: Arc<CudaStream>,
        module: Arc<CudaModule>,
    }

    impl Gpu {
        /// Loads the driver and NVRTC, finds device 0, compiles the kernels.
        pub(super) fn open() -> Result<Gpu, CudaError> {
            let unavailable = CudaError::Unavailable;
            // SAFETY: these only try to dlopen the libraries (running their initialisers).
            if !no_panic(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false) {
                return Err(unavailable("no CUDA driver (libcuda could not be loaded)".into()));
            }
            if !no_panic(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false) {
                return Err(unavailable(
                    "NVRTC missing (libnvrtc could not be loaded: install the CUDA toolkit or add it to LD_LIBRARY_PATH)"
                        .into(),
                ));
            }
            let count = no_panic(CudaContext::device_count)
                .map_err(|p| unavailable(format!("the CUDA driver could not start: {p}")))?
                .map_err(|e| unavailable(format!("the CUDA driver could not start: {}", first_line(e))))?;
            if count < 1 {
                return Err(unavailable("no CUDA device".into()));
            }
            let ctx = no_panic(|| CudaContext::new(0))
                .map_err(|p| unavailable(format!("cannot open CUDA device 0: {p}")))?
                .map_err(|e| unavailable(format!("cannot open CUDA device 0: {}", first_line(e))))?;
            let ptx = no_panic(|| cudarc::nvrtc::compile_ptx(KERNELS))
                .map_err(|p| unavailable(format!("NVRTC could not run: {p}")))?
                .map_err(|e| CudaError::Failed(anyhow::anyhow!("NVRTC could not compile the kernels: {e:?}")))?;
            let module =
                ctx.load_module(ptx).map_err(|e| CudaError::Failed(anyhow::anyhow!("cannot load the kernels: {e}")))?;
            Ok(Gpu { stream: ctx.default_stream(), module })
        }

        fn f(&self, name: &str) -> anyhow::Result<CudaFunction> {
            self.module.load_function(name).with_context(|| format!("kernel {name}"))
        }

        fn up(&self, v: &[f32]) -> anyhow::Result<CudaSlice<f32>> {
            Ok(self.stream.clone_htod(v)?)
        }

        fn up64(&self, v: &[f64]) -> anyhow::Result<CudaSlice<f32>> {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            self.up(&v)
        }

        fn zeros(&self, n: usize) -> anyhow::Result<CudaSlice<f32>> {
            Ok(self.stream.alloc_zeros::<f32>(n.max(1))?)
        }

        /// `y[t] = w · x[t]` for `t < t_len`.
        fn matmul(&self, x: &CudaSlice<f32>, w: &GpuMat, y: &mut CudaSlice<f32>, t_len: usize) -> anyhow::Result<()> {
            let f = self.f("matmul")?;
            let (t, rows, cols) = (t_len as i32, w.rows as i32, w.cols as i32);
            let cfg = grid2(w.rows, t_len);
            let mut b = self.stream.launch_builder(&f);
            b.arg(x).arg(&w.w).arg(y).arg(&t).arg(&rows).arg(&cols);
            // SAFETY: the kernel's signature matches these arguments; every buffer holds
            // t_len rows of its width (checked by construction below).
            unsafe { b.launch(cfg) }?;
            Ok(())
        }

        #[allow(clippy::too_many_arguments)]
        fn layer_norm(
            &self,
            x: &CudaSlice<f32>,
            w: &CudaSlice<f32>,
            b: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            t_len: usize,
            d: usize,
            eps: f32,
        ) -> anyhow::Result<()> {
            let f = self.f("layer_norm")?;
            let (t, d) = (t_len as i32, d as i32);
            let mut l = self.stream.launch_builder(&f);
            l.arg(x).arg(w).arg(b).arg(y).arg(&t).arg(&d).arg(&eps);
            // SAFETY: matches `layer_norm`; x and y hold t_len rows of d.
            unsafe { l.launch(grid1(t_len)) }?;
            Ok(())
        }

        fn add_rows(
            &self,
            x: &mut CudaSlice<f32>,
            y: &CudaSlice<f32>,
            w: &CudaSlice<f32>,
            t_len: usize,
            d: usize,
        ) -> anyhow::Result<()> {
            let f = self.f("add_rows")?;
            let (t, di) = (t_len as i32, d as i32);
            let mut l = self.stream.launch_builder(&f);
            l.arg(x).arg(y).arg(w).arg(&t).arg(&di);
            // SAFETY: matches `add_rows`; x, y hold t_len rows of d, w t_len weights.
            unsafe { l.launch(grid2(d, t_len)) }?;
            Ok(())
        }

        /// `out = w2 · gelu(w1 · h)` for all positions.
        fn mlp(
            &self,
            h: &CudaSlice<f32>,
            m: &(GpuMat, GpuMat),
            out: &mut CudaSlice<f32>,
            t_len: usize,
        ) -> anyhow::Result<()> {
            let mut hidden = self.zeros(t_len * m.0.rows)?;
            self.matmul(h, &m.0, &mut hidden, t_len)?;
            let f = self.f("gelu")?;
            let n = (t_len * m.0.rows) as i32;
            let mut l = self.stream.launch_builder(&f);
            l.arg(&mut hidden).arg(&n);
            // SAFETY: matches `gelu`; hidden holds n floats.
            unsafe { l.launch(grid1(n as usize)) }?;
            self.matmul(&hidden, &m.1, out, t_len)
        }

        pub(super) fn forward(&self, m: &RefModel, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
            let c = &m.config;
            let t_len = tokens.len();
            let (d, di, k, eps) = (c.d_model as usize, c.d_inner as usize, c.conv_kernel as usize, c.norm_eps);
            let (ti, dii, ki) = (t_len as i32, di as i32, k as i32);
            let gm = |mat: &Mat| GpuMat::new(self, mat);

            let mut x = self.zeros(t_len * d)?;
            {
                let e = gm(&m.embedding)?;
                let p = gm(&m.position)?;
                let toks: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                let toks = self.stream.clone_htod(&toks)?;
                let f = self.f("embed")?;
                let di32 = d as i32;
                let mut l = self.stream.launch_builder(&f);
                l.arg(&e.w).arg(&p.w).arg(&toks).arg(&mut x).arg(&ti).arg(&di32);
                // SAFETY: matches `embed`; tokens are below vocab and t_len <= max_seq
                // (checked by the caller), x holds t_len rows of d.
                unsafe { l.launch(grid2(d, t_len)) }?;
            }
            let ones = self.up(&vec![1.0f32; t_len])?;
            let mut h = self.zeros(t_len * d)?;
            let mut acc = self.zeros(t_len * d)?;
            for layer in &m.layers {
                let n = layer.a_log.len();
                // ---- SSM block ----
                let (nw, nb) = (self.up64(&layer.norm.weight)?, self.up64(&layer.norm.bias)?);
                self.layer_norm(&x, &nw, &nb, &mut h, t_len, d, eps)?;
                let mut ug = self.zeros(t_len * 2 * di)?;
                self.matmul(&h, &gm(&layer.in_proj)?, &mut ug, t_len)?;
                let mut v = self.zeros(t_len * di)?;
                {
                    let (w, b) = (self.up64(&layer.conv_weight.w)?, self.up64(&layer.conv_bias)?);
                    let f = self.f("conv_silu")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(&ug).arg(&w).arg(&b).arg(&mut v).arg(&ti).arg(&dii).arg(&ki);
                    // SAFETY: matches `conv_silu`; ug holds t_len rows of 2 d_inner, w d_inner × K.
                    unsafe { l.launch(grid2(di, t_len)) }?;
                }
                let mut z = self.zeros(t_len * di)?;
                self.matmul(&v, &gm(&layer.delta_proj)?, &mut z, t_len)?;
                let mut dt = self.zeros(t_len)?;
                {
                    let b = self.up64(&layer.delta_bias)?;
                    let f = self.f("step_size")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(&z).arg(&b).arg(&mut dt).arg(&ti).arg(&dii);
                    // SAFETY: matches `step_size`; z holds t_len rows of d_inner.
                    unsafe { l.launch(grid1(t_len)) }?;
                }
                let mut bu = self.zeros(t_len * n)?;
                self.matmul(&v, &gm(&layer.b)?, &mut bu, t_len)?;
                let mut states = self.zeros(t_len * n)?;
                {
                    let a_log = self.up64(&layer.a_log)?;
                    let ni = n as i32;
                    let f = self.f("scan")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(&bu).arg(&dt).arg(&a_log).arg(&mut states).arg(&ti).arg(&ni);
                    let cfg = LaunchConfig {
                        grid_dim: (1, 1, 1),
                        block_dim: ((n as u32).clamp(1, 1024), 1, 1),
                        shared_mem_bytes: 0,
                    };
                    // SAFETY: matches `scan`; bu and states hold t_len rows of N.
                    unsafe { l.launch(cfg) }?;
                }
                let mut cs = self.zeros(t_len * di)?;
                self.matmul(&states, &gm(&layer.c)?, &mut cs, t_len)?;
                let mut y = self.zeros(t_len * di)?;
                {
                    let dvec = self.up64(&layer.d)?;
                    let f = self.f("ssm_out")?;
                    let mut l = self.stream.launch_builder(&f);
                    l.arg(&cs).arg(&dvec).arg(&v).arg(&ug).arg(&mut y).arg(&ti).arg(&dii);
                    // SAFETY: matches `ssm_out`; all hold t_len rows of d_inner (ug: 2 d_inner).
                    unsafe { l.launch(grid2(di, t_len)) }?;
                }
                self.matmul(&y, &gm(&layer.out_proj)?, &mut h, t_len)?;
                self.add_rows(&mut x, &h, &ones, t_len, d)?;

                // ---- FFN or MoE ----
                let (nw, nb) = (self.up64(&layer.mix_norm.weight)?, self.up64(&layer.mix_norm.bias)?);
                self.layer_norm(&x, &nw, &nb, &mut h, t_len, d, eps)?;
                match &layer.mixer {
                    Mixer::Ffn(mlp) => {
                        self.mlp(&h, &(gm(&mlp.w1)?, gm(&mlp.w2)?), &mut acc, t_len)?;
                        self.add_rows(&mut x, &acc, &ones, t_len, d)?;
                    }
                    Mixer::Moe { gate, experts } => {
                        // Routing on the CPU: router logits down, mixing weights up.
                        let ne = gate.rows;
                        let mut zg = self.zeros(t_len * ne)?;
                        self.matmul(&h, &gm(gate)?, &mut zg, t_len)?;
                        let zg = self.stream.clone_dtoh(&zg)?;
                        let mut weights = vec![vec![0.0f32; t_len]; ne];
                        for t in 0..t_len {
                            let row: Vec<f64> = zg[t * ne..(t + 1) * ne].iter().map(|&v| v as f64).collect();
                            for (i, weight) in route(&row, c.top_k as usize) {
                                weights[i][t] = weight as f32;
                            }
                        }
                        for (expert, w) in experts.iter().zip(&weights) {
                            if w.iter().all(|&v| v == 0.0) {
                                continue;
                            }
                            self.mlp(&h, &(gm(&expert.w1)?, gm(&expert.w2)?), &mut acc, t_len)?;
                            let w = self.up(w)?;
                            self.add_rows(&mut x, &acc, &w, t_len, d)?;
                        }
                    }
                }
            }
            let (nw, nb) = (self.up64(&m.final_norm.weight)?, self.up64(&m.final_norm.bias)?);
            self.layer_norm(&x, &nw, &nb, &mut h, t_len, d, eps)?;
            let vocab = m.lm_head.rows;
            let mut logits = self.zeros(t_len * vocab)?;
            self.matmul(&h, &gm(&m.lm_head)?, &mut logits, t_len)?;
            let mut out = self.stream.clone_dtoh(&logits)?;
            out.truncate(t_len * vocab);
            Ok(out)
        }
    }

    /// A matrix uploaded as f32.
    struct GpuMat {
        rows: usize,
        cols: usize,
        w: CudaSlice<f32>,
    }

    impl GpuMat {
        fn new(gpu: &Gpu, m: &Mat) -> anyhow::Result<GpuMat> {
            Ok(GpuMat { rows: m.rows, cols: m.cols, w: gpu.up64(&m.w)? })
        }
    }

    /// One thread per `t` (1-D).
    fn grid1(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((n as u32).div_ceil(THREADS).max(1), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One thread per (element < `n`, position < `t_len`).
    fn grid2(n: usize, t_len: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((n as u32).div_ceil(THREADS).max(1), t_len as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}
