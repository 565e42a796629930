//! Builds the CUDA reference's kernels for the CPU: `cuda/kernels.cu` behind the shim of
//! `cuda/cpu_shim.h`, with the launcher of `cuda/cpu_launch.cpp`, by the host C++ compiler.
fn main() {
    for f in ["cuda/kernels.cu", "cuda/cpu_shim.h", "cuda/cpu_launch.cpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cuda/cpu_launch.cpp")
        // f32 as the kernels are written: no fused multiply-adds the source does not ask for.
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .extra_warnings(true)
        .compile("itera_cuda_cpu");
}
