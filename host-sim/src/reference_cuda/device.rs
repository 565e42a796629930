//! The small interface between the CUDA reference's forward pass and whatever runs its
//! kernels: buffers of 32-bit words, and launches of a named kernel over a grid.
//!
//! Two implementations: [`crate::reference_cuda::CpuDevice`] (the kernels compiled by the
//! host C++ compiler, each launch run as loops over the grid: CI runs this one) and, with
//! feature `cuda`, an NVIDIA GPU through cudarc.

/// A kernel of `host-sim/cuda/kernels.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `y[t] = w · x[t]`: one thread per (output row, position).
    Matmul,
    /// LayerNorm of each position: one thread per position.
    LayerNorm,
    /// The causal depthwise conv and silu: one thread per (channel, position).
    ConvSilu,
    /// `dt = mean softplus(z + b)`: one thread per position.
    StepSize,
    /// The selective scan: one block, sequential over time, threads over state channels.
    Scan,
    /// `y = (C·s + D ⊙ v) ⊙ silu(g)`: one thread per (channel, position).
    SsmOut,
    /// GELU in place: one thread per element.
    Gelu,
    /// `x[t] += w[t] · y[t]`: one thread per (element, position).
    AddRows,
    /// `x[t] = E[token_t] + P[t]`: one thread per (element, position).
    Embed,
}

impl Kernel {
    /// Every kernel, in the order of `kernels.cu`.
    pub const ALL: [Kernel; 9] = [
        Kernel::Matmul,
        Kernel::LayerNorm,
        Kernel::ConvSilu,
        Kernel::StepSize,
        Kernel::Scan,
        Kernel::SsmOut,
        Kernel::Gelu,
        Kernel::AddRows,
        Kernel::Embed,
    ];

    /// Its name in `kernels.cu` (`extern "C"`, so the same for NVRTC and the host compiler).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Matmul => "matmul",
            Kernel::LayerNorm => "layer_norm",
            Kernel::ConvSilu => "conv_silu",
            Kernel::StepSize => "step_size",
            Kernel::Scan => "scan",
            Kernel::SsmOut => "ssm_out",
            Kernel::Gelu => "gelu",
            Kernel::AddRows => "add_rows",
            Kernel::Embed => "embed",
        }
    }
}

/// A launch configuration: blocks in the grid and threads per block, x, y, z (CUDA's
/// `gridDim` and `blockDim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks along x, y, z.
    pub grid: [u32; 3],
    /// Threads per block along x, y, z.
    pub block: [u32; 3],
}

/// One kernel argument, in the kernel's parameter order.
#[derive(Debug)]
pub enum Arg<'a, B> {
    /// `const float*`: read.
    Floats(&'a B),
    /// `float*`: written (or read and written).
    FloatsOut(&'a mut B),
    /// `const int*`.
    Ints(&'a B),
    /// `int`.
    Int(i32),
    /// `float`.
    Float(f32),
}

impl<B> Arg<'_, B> {
    /// The letter the CPU launcher checks against the kernel's signature (`cpu_launch.cpp`).
    pub fn letter(&self) -> u8 {
        match self {
            Arg::Floats(_) => b'r',
            Arg::FloatsOut(_) => b'w',
            Arg::Ints(_) => b'n',
            Arg::Int(_) => b'i',
            Arg::Float(_) => b'f',
        }
    }
}

/// What runs the kernels. Buffers hold 32-bit words (f32 or i32, by bits) and are as long
/// as they were made; a launch runs to completion before the next call returns data.
pub trait Device {
    /// A buffer on the device.
    type Buffer;

    /// A buffer holding `words`.
    fn upload(&self, words: &[u32]) -> anyhow::Result<Self::Buffer>;

    /// A buffer of `len` zero words.
    fn zeros(&self, len: usize) -> anyhow::Result<Self::Buffer>;

    /// The words of `buffer`.
    fn download(&self, buffer: &Self::Buffer) -> anyhow::Result<Vec<u32>>;

    /// Runs `kernel` over `launch` with `args`.
    fn launch(&self, kernel: Kernel, launch: Launch, args: &mut [Arg<'_, Self::Buffer>]) -> anyhow::Result<()>;
}
