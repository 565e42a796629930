//! The CUDA reference's kernels on an NVIDIA GPU (feature `cuda`): `kernels.cu` compiled at
//! run time by NVRTC, buffers and launches through cudarc on device 0's default stream.

#![allow(unsafe_code)] // probing for the libraries, and kernel launches

use std::sync::Arc;

use anyhow::Context;
use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::device::{Arg, Device, Kernel, Launch};
use super::{CudaError, KERNELS_CU};

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

/// GPU 0 with the kernels loaded.
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
        // SAFETY: as above.
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
        let ptx = no_panic(|| cudarc::nvrtc::compile_ptx(KERNELS_CU))
            .map_err(|p| unavailable(format!("NVRTC could not run: {p}")))?
            .map_err(|e| CudaError::Failed(anyhow::anyhow!("NVRTC could not compile the kernels: {e:?}")))?;
        let module =
            ctx.load_module(ptx).map_err(|e| CudaError::Failed(anyhow::anyhow!("cannot load the kernels: {e}")))?;
        Ok(Gpu { stream: ctx.default_stream(), module })
    }
}

impl Device for Gpu {
    type Buffer = CudaSlice<u32>;

    fn upload(&self, words: &[u32]) -> anyhow::Result<CudaSlice<u32>> {
        Ok(self.stream.clone_htod(words)?)
    }

    fn zeros(&self, len: usize) -> anyhow::Result<CudaSlice<u32>> {
        Ok(self.stream.alloc_zeros::<u32>(len.max(1))?)
    }

    fn download(&self, buffer: &CudaSlice<u32>) -> anyhow::Result<Vec<u32>> {
        Ok(self.stream.clone_dtoh(buffer)?)
    }

    fn launch(&self, kernel: Kernel, launch: Launch, args: &mut [Arg<'_, CudaSlice<u32>>]) -> anyhow::Result<()> {
        let f = self.module.load_function(kernel.name()).with_context(|| format!("kernel {}", kernel.name()))?;
        let mut l = self.stream.launch_builder(&f);
        for arg in args.iter_mut() {
            match arg {
                Arg::Floats(b) | Arg::Ints(b) => l.arg(*b),
                Arg::FloatsOut(b) => l.arg(&mut **b),
                Arg::Int(v) => l.arg(&*v),
                Arg::Float(v) => l.arg(&*v),
            };
        }
        let [gx, gy, gz] = launch.grid;
        let [bx, by, bz] = launch.block;
        let cfg = LaunchConfig { grid_dim: (gx, gy, gz), block_dim: (bx, by, bz), shared_mem_bytes: 0 };
        // SAFETY: the forward pass passes each kernel its parameters in order (the CPU
        // device checks the same argument lists against kernels.cu's signatures in CI), and
        // sizes every buffer for the launch it makes; all work is on one stream.
        unsafe { l.launch(cfg) }.with_context(|| format!("launch of {}", kernel.name()))?;
        Ok(())
    }
}
