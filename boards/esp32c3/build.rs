//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic int8 micro model packed here);
//! see `itera-board-build` for `ITERA_QUANT`, `ITERA_PROMPT` and `ITERA_GENERATE`.
//! esp-hal supplies the memory map (`linkall.x`), so no memory.x here.
fn main() {
    itera_board_build::Board { flash_bytes: 4096 * 1024, ram_bytes: 320 * 1024, memory_x: false, ..Default::default() }
        .generate();
}
