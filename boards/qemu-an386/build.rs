//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic micro model packed here,
//! `ITERA_QUANT`, default `int8`); see `itera-board-build` for `ITERA_PROMPT` and
//! `ITERA_GENERATE`. QEMU's mps2-an386 has 4 MiB of SSRAM for code and blob, 4 MiB for data
//! (boards/memory.rs).
fn main() {
    itera_board_build::Board::new(itera_board_build::memory::QEMU_AN386).generate();
}
