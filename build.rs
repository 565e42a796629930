//! Tells the core which optional instruction sets its target has (stable Rust exposes no
//! `target_feature` cfg for Arm's DSP extension).
fn main() {
    println!("cargo:rustc-check-cfg=cfg(itera_arm_dsp)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Cortex-M4/M7 (ARMv7E-M) and Cortex-M33 (ARMv8-M Mainline with DSP) have SMLAD/SXTB16.
    if target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main") {
        println!("cargo:rustc-cfg=itera_arm_dsp");
    }
}
