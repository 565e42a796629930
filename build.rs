//! Tells the core which optional instruction sets its target has (stable Rust exposes no
//! `target_feature` cfg for Arm's DSP extension).
fn main() {
    println!("cargo:rustc-check-cfg=cfg(itera_arm_dsp)");
    println!("cargo:rustc-check-cfg=cfg(itera_arm_fp16)");
    println!("cargo:rustc-check-cfg=cfg(itera_armv6m)");
    println!("cargo:rustc-check-cfg=cfg(itera_rv32m)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Cortex-M0/M0+ (ARMv6-M) and Cortex-M23 (ARMv8-M Baseline): Thumb-1 only, eight low
    // registers for loads and multiplies, no multiply-accumulate, no 32×32→64 multiply.
    if target.starts_with("thumbv6m") || target.starts_with("thumbv8m.base") {
        println!("cargo:rustc-cfg=itera_armv6m");
    }
    // RV32 with the M extension (RV32IMC: the ESP32-C3): `MUL`, immediate-offset loads.
    let isa = target.split('-').next().unwrap_or_default();
    if let Some(ext) = isa.strip_prefix("riscv32") {
        if ext.contains('m') {
            println!("cargo:rustc-cfg=itera_rv32m");
        }
    }
    // Cortex-M4/M7 (ARMv7E-M) and Cortex-M33 (ARMv8-M Mainline with DSP) have SMLAD/SXTB16.
    if target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main") {
        println!("cargo:rustc-cfg=itera_arm_dsp");
        // Their hard-float targets have an FPU with the half-precision conversions
        // (VCVTB/VCVTT: FPv4-SP and FPv5), one instruction per f16 scale.
        if target.ends_with("eabihf") {
            println!("cargo:rustc-cfg=itera_arm_fp16");
        }
    }
}
