//! The reference forward pass in f32, as CUDA kernels (`host-sim/cuda/kernels.cu`), run on
//! an NVIDIA GPU (feature `cuda`) or, through the same source compiled for the CPU, anywhere
//! ([`logits_on_cpu`]: what CI runs).
//!
//! Same model as [`crate::reference`], same dequantized weights (converted to f32 and
//! uploaded once), but every step runs for the whole sequence at once:
//!
//! * every projection (in_proj, delta_proj, B, C, out_proj, FFN, experts, router, lm_head)
//!   is one matrix product over all positions (`matmul`: one thread per output element);
//! * LayerNorm, the causal conv + silu, the step size `dt`, the gate, GELU and the residual
//!   adds are elementwise kernels;
//! * the SSM scan is one kernel per layer: one thread block, sequential over time, one
//!   thread per state channel;
//! * MoE routing (top-k of the router logits and the softmax over the picked ones) runs on
//!   the host between kernels: the router logits come back, per-position mixing weights go
//!   up, and each expert runs over all positions (weight 0 where it was not picked).
//!
//! The pass ([`forward`]) talks to a [`Device`] (`device.rs`): buffers, and launches of a
//! named kernel over a grid. [`CpuDevice`] (`cpu.rs`) runs each launch as loops over the
//! grid; the GPU device (`gpu.rs`) compiles the kernels with NVRTC and launches them through
//! cudarc. The driver (libcuda) and NVRTC are loaded at run time (cudarc's
//! `dynamic-loading`), so the binary builds and starts without CUDA; [`logits`] then says
//! why it cannot run as a [`CudaError::Unavailable`], which the command line maps to exit
//! status [`EXIT_UNAVAILABLE`].

use std::fmt;

use crate::reference::{route, Mat, Mixer, RefModel};

mod cpu;
mod device;
#[cfg(feature = "cuda")]
mod gpu;

pub use cpu::{CpuBuffer, CpuDevice};
pub use device::{Arg, Device, Kernel, Launch};

/// The kernels' source, as NVRTC compiles it (the CPU build includes the same file).
pub const KERNELS_CU: &str = include_str!("../cuda/kernels.cu");

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
    forward(&gpu, model, tokens).map_err(CudaError::Failed)
}

/// What [`logits`] computes, with the same kernels and launches, on the CPU.
pub fn logits_on_cpu(model: &RefModel, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    crate::engine::check_table_tokens(tokens, &model.config)?;
    forward(&CpuDevice, model, tokens)
}

/// Threads per block of the elementwise and product kernels.
const THREADS: u32 = 128;

/// One thread per element `< n` (1-D).
fn grid1(n: usize) -> Launch {
    Launch { grid: [(n as u32).div_ceil(THREADS).max(1), 1, 1], block: [THREADS, 1, 1] }
}

/// One thread per (element `< n`, position `< t_len`).
fn grid2(n: usize, t_len: usize) -> Launch {
    Launch { grid: [(n as u32).div_ceil(THREADS).max(1), t_len as u32, 1], block: [THREADS, 1, 1] }
}

/// The whole sequence through the model on `device`: logits `[tokens.len()][vocab]`. The
/// caller has checked the tokens (below vocab, at most `max_seq` of them).
pub fn forward<D: Device>(device: &D, m: &RefModel, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    let k = Kernels { device };
    let c = &m.config;
    let t_len = tokens.len();
    let (d, di) = (c.d_model as usize, c.d_inner as usize);
    let (t, d_i32, di_i32) = (t_len as i32, d as i32, di as i32);
    let matrix = |mat: &Mat| DeviceMat::new(&k, mat);

    // x = E[token] + P[position]
    let mut x = k.zeros(t_len * d)?;
    {
        let (e, p) = (matrix(&m.embedding)?, matrix(&m.position)?);
        let ids: Vec<u32> = tokens.to_vec();
        let ids = device.upload(&ids)?;
        k.run(
            Kernel::Embed,
            grid2(d, t_len),
            &mut [
                Arg::Floats(&e.w),
                Arg::Floats(&p.w),
                Arg::Ints(&ids),
                Arg::FloatsOut(&mut x),
                Arg::Int(t),
                Arg::Int(d_i32),
            ],
        )?;
    }
    let ones = k.floats(&vec![1.0f32; t_len])?;
    let mut h = k.zeros(t_len * d)?;
    let mut out = k.zeros(t_len * d)?;
    for layer in &m.layers {
        let n = layer.a_log.len();
        // SSM: h = LN(x); [u | g] = in_proj·h; v = silu(conv(u))
        k.layer_norm(&x, &layer.norm, &mut h, t_len, d, c.norm_eps)?;
        let mut ug = k.zeros(t_len * 2 * di)?;
        k.matmul(&h, &matrix(&layer.in_proj)?, &mut ug, t_len)?;
        let mut v = k.zeros(t_len * di)?;
        {
            let (w, b) = (k.floats64(&layer.conv_weight.w)?, k.floats64(&layer.conv_bias)?);
            let args = &mut [
                Arg::Floats(&ug),
                Arg::Floats(&w),
                Arg::Floats(&b),
                Arg::FloatsOut(&mut v),
                Arg::Int(t),
                Arg::Int(di_i32),
                Arg::Int(c.conv_kernel as i32),
            ];
            k.run(Kernel::ConvSilu, grid2(di, t_len), args)?;
        }
        // dt = mean softplus(delta_proj·v + b)
        let mut z = k.zeros(t_len * di)?;
        k.matmul(&v, &matrix(&layer.delta_proj)?, &mut z, t_len)?;
        let mut dt = k.zeros(t_len)?;
        {
            let b = k.floats64(&layer.delta_bias)?;
            let args = &mut [Arg::Floats(&z), Arg::Floats(&b), Arg::FloatsOut(&mut dt), Arg::Int(t), Arg::Int(di_i32)];
            k.run(Kernel::StepSize, grid1(t_len), args)?;
        }
        // s = exp(dt·A) ⊙ s + dt·(B·v), for every position
        let mut bu = k.zeros(t_len * n)?;
        k.matmul(&v, &matrix(&layer.b)?, &mut bu, t_len)?;
        let mut states = k.zeros(t_len * n)?;
        {
            let a_log = k.floats64(&layer.a_log)?;
            let args = &mut [
                Arg::Floats(&bu),
                Arg::Floats(&dt),
                Arg::Floats(&a_log),
                Arg::FloatsOut(&mut states),
                Arg::Int(t),
                Arg::Int(n as i32),
            ];
            let one_block = Launch { grid: [1, 1, 1], block: [(n as u32).clamp(1, 1024), 1, 1] };
            k.run(Kernel::Scan, one_block, args)?;
        }
        // y = (C·s + D ⊙ v) ⊙ silu(g); x += out_proj·y
        let mut cs = k.zeros(t_len * di)?;
        k.matmul(&states, &matrix(&layer.c)?, &mut cs, t_len)?;
        let mut y = k.zeros(t_len * di)?;
        {
            let dvec = k.floats64(&layer.d)?;
            let args = &mut [
                Arg::Floats(&cs),
                Arg::Floats(&dvec),
                Arg::Floats(&v),
                Arg::Floats(&ug),
                Arg::FloatsOut(&mut y),
                Arg::Int(t),
                Arg::Int(di_i32),
            ];
            k.run(Kernel::SsmOut, grid2(di, t_len), args)?;
        }
        k.matmul(&y, &matrix(&layer.out_proj)?, &mut h, t_len)?;
        k.add_rows(&mut x, &h, &ones, t_len, d)?;

        // FFN: x += w2·gelu(w1·LN(x)); MoE: x += Σ softmax(z_k)·expert_k(LN(x))
        k.layer_norm(&x, &layer.mix_norm, &mut h, t_len, d, c.norm_eps)?;
        match &layer.mixer {
            Mixer::Ffn(mlp) => {
                k.mlp(&h, &matrix(&mlp.w1)?, &matrix(&mlp.w2)?, &mut out, t_len)?;
                k.add_rows(&mut x, &out, &ones, t_len, d)?;
            }
            Mixer::Moe { gate, experts } => {
                // Routing on the host: router logits down, mixing weights up.
                let ne = gate.rows;
                let mut zg = k.zeros(t_len * ne)?;
                k.matmul(&h, &matrix(gate)?, &mut zg, t_len)?;
                let zg = k.download(&zg)?;
                let mut weights = vec![vec![0.0f32; t_len]; ne];
                for pos in 0..t_len {
                    let row: Vec<f64> = zg[pos * ne..(pos + 1) * ne].iter().map(|&v| v as f64).collect();
                    for (i, weight) in route(&row, c.top_k as usize) {
                        weights[i][pos] = weight as f32;
                    }
                }
                for (expert, w) in experts.iter().zip(&weights) {
                    if w.iter().all(|&v| v == 0.0) {
                        continue;
                    }
                    k.mlp(&h, &matrix(&expert.w1)?, &matrix(&expert.w2)?, &mut out, t_len)?;
                    k.add_rows(&mut x, &out, &k.floats(w)?, t_len, d)?;
                }
            }
        }
    }
    // logits = lm_head·LN(x)
    k.layer_norm(&x, &m.final_norm, &mut h, t_len, d, c.norm_eps)?;
    let vocab = m.lm_head.rows;
    let mut logits = k.zeros(t_len * vocab)?;
    k.matmul(&h, &matrix(&m.lm_head)?, &mut logits, t_len)?;
    let mut logits = k.download(&logits)?;
    logits.truncate(t_len * vocab);
    Ok(logits)
}

/// The kernels as typed calls on one device, each with the launch the forward pass uses.
struct Kernels<'d, D> {
    device: &'d D,
}

impl<D: Device> Kernels<'_, D> {
    fn run(&self, kernel: Kernel, launch: Launch, args: &mut [Arg<'_, D::Buffer>]) -> anyhow::Result<()> {
        self.device.launch(kernel, launch, args)
    }

    fn floats(&self, v: &[f32]) -> anyhow::Result<D::Buffer> {
        let words: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        self.device.upload(&words)
    }

    fn floats64(&self, v: &[f64]) -> anyhow::Result<D::Buffer> {
        let words: Vec<u32> = v.iter().map(|&x| (x as f32).to_bits()).collect();
        self.device.upload(&words)
    }

    /// `n` zeros (at least one word: a GPU allocation may not be empty).
    fn zeros(&self, n: usize) -> anyhow::Result<D::Buffer> {
        self.device.zeros(n.max(1))
    }

    fn download(&self, b: &D::Buffer) -> anyhow::Result<Vec<f32>> {
        Ok(self.device.download(b)?.into_iter().map(f32::from_bits).collect())
    }

    /// `y[t] = w · x[t]` for `t < t_len`.
    fn matmul(&self, x: &D::Buffer, w: &DeviceMat<D::Buffer>, y: &mut D::Buffer, t_len: usize) -> anyhow::Result<()> {
        let args = &mut [
            Arg::Floats(x),
            Arg::Floats(&w.w),
            Arg::FloatsOut(y),
            Arg::Int(t_len as i32),
            Arg::Int(w.rows as i32),
            Arg::Int(w.cols as i32),
        ];
        self.run(Kernel::Matmul, grid2(w.rows, t_len), args)
    }

    /// `y[t] = LN(x[t])` with `norm`'s weight and bias.
    fn layer_norm(
        &self,
        x: &D::Buffer,
        norm: &crate::reference::Norm,
        y: &mut D::Buffer,
        t_len: usize,
        d: usize,
        eps: f32,
    ) -> anyhow::Result<()> {
        let (w, b) = (self.floats64(&norm.weight)?, self.floats64(&norm.bias)?);
        let args = &mut [
            Arg::Floats(x),
            Arg::Floats(&w),
            Arg::Floats(&b),
            Arg::FloatsOut(y),
            Arg::Int(t_len as i32),
            Arg::Int(d as i32),
            Arg::Float(eps),
        ];
        self.run(Kernel::LayerNorm, grid1(t_len), args)
    }

    /// `x[t] += w[t] · y[t]`.
    fn add_rows(&self, x: &mut D::Buffer, y: &D::Buffer, w: &D::Buffer, t_len: usize, d: usize) -> anyhow::Result<()> {
        let args = &mut [Arg::FloatsOut(x), Arg::Floats(y), Arg::Floats(w), Arg::Int(t_len as i32), Arg::Int(d as i32)];
        self.run(Kernel::AddRows, grid2(d, t_len), args)
    }

    /// `out = w2 · gelu(w1 · h)` for all positions.
    fn mlp(
        &self,
        h: &D::Buffer,
        w1: &DeviceMat<D::Buffer>,
        w2: &DeviceMat<D::Buffer>,
        out: &mut D::Buffer,
        t_len: usize,
    ) -> anyhow::Result<()> {
        let n = t_len * w1.rows;
        let mut hidden = self.zeros(n)?;
        self.matmul(h, w1, &mut hidden, t_len)?;
        self.run(Kernel::Gelu, grid1(n), &mut [Arg::FloatsOut(&mut hidden), Arg::Int(n as i32)])?;
        self.matmul(&hidden, w2, out, t_len)
    }
}

/// A matrix uploaded as f32.
struct DeviceMat<B> {
    rows: usize,
    cols: usize,
    w: B,
}

impl<B> DeviceMat<B> {
    fn new<D: Device<Buffer = B>>(k: &Kernels<'_, D>, m: &Mat) -> anyhow::Result<DeviceMat<B>> {
        Ok(DeviceMat { rows: m.rows, cols: m.cols, w: k.floats64(&m.w)? })
    }
}
