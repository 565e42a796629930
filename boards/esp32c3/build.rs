//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic int8 micro model packed here);
//! see `itera-board-build` for `ITERA_QUANT`, `ITERA_PROMPT` and `ITERA_GENERATE`. The memory
//! map, clock and target are this board's row of `boards/table.rs`.
//! esp-hal supplies the memory map (`linkall.x`), so no memory.x here. `rom-functions.x` goes
//! on the link search path ahead of esp-rom-sys's own: the ROM's libgcc float routines are left
//! out, so compiler-builtins' IEEE soft float is linked (see that file).
use std::{env, fs, path::PathBuf};

fn main() {
    itera_board_build::generate();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=rom-functions.x");
    fs::copy("rom-functions.x", out.join("rom-functions.x")).expect("copy rom-functions.x");
    println!("cargo:rustc-link-search={}", out.display());
}
