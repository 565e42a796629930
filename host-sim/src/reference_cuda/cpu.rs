//! The CUDA reference's kernels on the CPU: `host-sim/cuda/kernels.cu`, compiled by the host
//! C++ compiler behind a few lines of shim (`cpu_shim.h`, built by `host-sim/build.rs`),
//! each launch run as loops over its grid and blocks (`cpu_launch.cpp`).
//!
//! It makes the GPU path testable without a GPU: same source, same launch configurations,
//! same argument lists, so a wrong index, grid size or argument order shows up in CI as wrong
//! logits (or as an error), not first on a GPU. The launcher refuses what a GPU would
//! refuse: an argument list that does not match the kernel's signature, a launch outside
//! CUDA's limits. Every buffer sits between two guard bands of NaN: a kernel that reads past
//! a buffer (within 1,024 words) gets NaN into the logits, and one that writes past it is
//! an error.

use std::ffi::{c_char, c_int, c_void, CString};

use anyhow::{bail, Context};

use super::device::{Arg, Device, Kernel, Launch};

extern "C" {
    /// `cpu_launch.cpp`: 0 ran; 1 no such kernel; 2 arguments not the kernel's; 3 launch
    /// outside CUDA's limits.
    fn itera_cuda_cpu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        args: *mut *mut c_void,
        kinds: *const c_char,
        count: usize,
    ) -> c_int;
}

/// Words of guard band on each side of a buffer.
const GUARD: usize = 1024;
/// What the guard bands hold: a signalling NaN. Reading one poisons the result with NaN;
/// any arithmetic on it gives a quiet NaN, other bits, so even a kernel that writes back
/// what it read past the end (in place: gelu of NaN is NaN) changes the band.
const CANARY: u32 = 0x7f80_0bad;

/// The CPU device: the kernels run on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuDevice;

/// A buffer of the CPU device: `len` words between two guard bands.
#[derive(Debug)]
pub struct CpuBuffer {
    words: Vec<u32>,
    len: usize,
}

impl CpuBuffer {
    fn new(data: &[u32]) -> CpuBuffer {
        let mut words = vec![CANARY; GUARD];
        words.extend_from_slice(data);
        words.resize(GUARD + data.len() + GUARD, CANARY);
        CpuBuffer { words, len: data.len() }
    }

    fn data(&self) -> &[u32] {
        &self.words[GUARD..GUARD + self.len]
    }

    fn guards_hold(&self) -> bool {
        let (front, rest) = self.words.split_at(GUARD);
        front.iter().chain(&rest[self.len..]).all(|&w| w == CANARY)
    }
}

/// One argument's value, where the launcher can point at it.
enum Slot {
    Pointer(*mut c_void),
    Int(i32),
    Float(f32),
}

impl Device for CpuDevice {
    type Buffer = CpuBuffer;

    fn upload(&self, words: &[u32]) -> anyhow::Result<CpuBuffer> {
        Ok(CpuBuffer::new(words))
    }

    fn zeros(&self, len: usize) -> anyhow::Result<CpuBuffer> {
        Ok(CpuBuffer::new(&vec![0; len]))
    }

    fn download(&self, buffer: &CpuBuffer) -> anyhow::Result<Vec<u32>> {
        Ok(buffer.data().to_vec())
    }

    fn launch(&self, kernel: Kernel, launch: Launch, args: &mut [Arg<'_, CpuBuffer>]) -> anyhow::Result<()> {
        let kinds: Vec<u8> = args.iter().map(Arg::letter).collect();
        let kinds = CString::new(kinds).context("argument letters")?;
        let name = CString::new(kernel.name()).context("kernel name")?;
        // The argument values, then (as cuLaunchKernel takes them) a pointer to each. `slots`
        // is not touched again until the launch returns, so those pointers stay valid.
        let mut slots: Vec<Slot> = args
            .iter_mut()
            .map(|a| match a {
                Arg::Floats(b) | Arg::Ints(b) => Slot::Pointer(b.words[GUARD..].as_ptr() as *mut c_void),
                Arg::FloatsOut(b) => Slot::Pointer(b.words[GUARD..].as_mut_ptr() as *mut c_void),
                Arg::Int(v) => Slot::Int(*v),
                Arg::Float(v) => Slot::Float(*v),
            })
            .collect();
        let mut pointers: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| match s {
                Slot::Pointer(p) => p as *mut *mut c_void as *mut c_void,
                Slot::Int(v) => v as *mut i32 as *mut c_void,
                Slot::Float(v) => v as *mut f32 as *mut c_void,
            })
            .collect();
        // SAFETY: `name` and `kinds` are NUL-terminated; `pointers[i]` points at argument i,
        // of the type its letter in `kinds` names, and the launcher calls the kernel only if
        // those letters are the kernel's signature. Buffer pointers point into live `Vec`s
        // (read-only ones are only read: their kernel parameters are `const`). What the
        // kernels index is the forward pass's business, as on a GPU; the guard bands make a
        // small overrun visible instead of silent.
        #[allow(unsafe_code)]
        let status = unsafe {
            itera_cuda_cpu_launch(
                name.as_ptr(),
                launch.grid.as_ptr(),
                launch.block.as_ptr(),
                pointers.as_mut_ptr(),
                kinds.as_ptr(),
                pointers.len(),
            )
        };
        let letters = kinds.to_string_lossy();
        match status {
            0 => {}
            1 => bail!("kernel {} is not in kernels.cu", kernel.name()),
            2 => bail!("kernel {} launched with arguments `{letters}`, which are not its signature", kernel.name()),
            3 => bail!("kernel {} launched as {launch:?}, outside CUDA's limits", kernel.name()),
            s => bail!("kernel {}: launcher status {s}", kernel.name()),
        }
        for arg in args.iter() {
            if let Arg::FloatsOut(b) = arg {
                if !b.guards_hold() {
                    bail!("kernel {} wrote outside a buffer of {} words", kernel.name(), b.len);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f32]) -> CpuBuffer {
        CpuBuffer::new(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    }

    fn values(b: &CpuBuffer) -> Vec<f32> {
        b.data().iter().map(|&w| f32::from_bits(w)).collect()
    }

    const ONE_BLOCK: Launch = Launch { grid: [1, 1, 1], block: [128, 1, 1] };

    #[test]
    fn a_launch_runs_every_thread_of_its_grid() {
        // gelu over 300 values: three blocks of 128 threads, the last partly idle.
        let mut x = floats(&(0..300).map(|i| i as f32 / 100.0 - 1.5).collect::<Vec<_>>());
        let launch = Launch { grid: [3, 1, 1], block: [128, 1, 1] };
        CpuDevice.launch(Kernel::Gelu, launch, &mut [Arg::FloatsOut(&mut x), Arg::Int(300)]).unwrap();
        for (i, got) in values(&x).into_iter().enumerate() {
            let v = i as f64 / 100.0 - 1.5;
            let want = 0.5 * v * (1.0 + crate::reference::erf(v / 2f64.sqrt()));
            assert!((got as f64 - want).abs() < 1e-5, "gelu({v}) = {got}, want {want}");
        }
    }

    #[test]
    fn arguments_that_are_not_the_kernels_signature_are_refused() {
        let mut x = floats(&[1.0; 4]);
        let swapped = CpuDevice.launch(Kernel::Gelu, ONE_BLOCK, &mut [Arg::Int(4), Arg::FloatsOut(&mut x)]);
        assert!(format!("{:#}", swapped.unwrap_err()).contains("not its signature"));
        let missing = CpuDevice.launch(Kernel::Gelu, ONE_BLOCK, &mut [Arg::FloatsOut(&mut x)]);
        assert!(format!("{:#}", missing.unwrap_err()).contains("`w`"));
        let read_only = CpuDevice.launch(Kernel::Gelu, ONE_BLOCK, &mut [Arg::Floats(&floats(&[1.0])), Arg::Int(1)]);
        assert!(read_only.is_err(), "a kernel that writes got a read-only buffer");
        assert_eq!(values(&x), [1.0; 4], "a refused launch ran");
    }

    #[test]
    fn launches_outside_cudas_limits_are_refused() {
        let mut x = floats(&[1.0; 4]);
        for launch in [
            Launch { grid: [1, 1, 1], block: [2048, 1, 1] },
            Launch { grid: [1, 1, 1], block: [64, 32, 1] },
            Launch { grid: [0, 1, 1], block: [1, 1, 1] },
            Launch { grid: [1, 70_000, 1], block: [1, 1, 1] },
        ] {
            let r = CpuDevice.launch(Kernel::Gelu, launch, &mut [Arg::FloatsOut(&mut x), Arg::Int(4)]);
            assert!(format!("{:#}", r.unwrap_err()).contains("outside CUDA's limits"), "{launch:?}");
        }
    }

    #[test]
    fn reading_or_writing_past_a_buffer_is_caught() {
        // Told there are 8 values where there are 4: gelu writes 4 words past the end.
        let mut x = floats(&[1.0; 4]);
        let r = CpuDevice.launch(Kernel::Gelu, ONE_BLOCK, &mut [Arg::FloatsOut(&mut x), Arg::Int(8)]);
        assert!(format!("{:#}", r.unwrap_err()).contains("wrote outside a buffer of 4 words"));
        // A read past the end reads the guard band's NaN.
        let (e, p, ids) = (floats(&[1.0; 4]), floats(&[0.0; 4]), CpuBuffer::new(&[1]));
        let mut out = floats(&[0.0; 4]);
        let args = &mut [
            Arg::Floats(&e),
            Arg::Floats(&p),
            Arg::Ints(&ids),
            Arg::FloatsOut(&mut out),
            Arg::Int(1),
            Arg::Int(4),
        ];
        // Token 1 of a 4-wide table with one row: row 1 lies past the end.
        CpuDevice.launch(Kernel::Embed, ONE_BLOCK, args).unwrap();
        assert!(values(&out).iter().all(|v| v.is_nan()), "{:?}", values(&out));
    }
}
