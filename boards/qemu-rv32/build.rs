//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic micro model packed here,
//! `ITERA_QUANT`, default `int8`); see `itera-board-build` for `ITERA_PROMPT` and
//! `ITERA_GENERATE`. memory.x gives 8 MiB of QEMU virt's DRAM to code and blob, 8 MiB to data
//! (boards/memory.rs).
fn main() {
    itera_board_build::Board::new(itera_board_build::memory::QEMU_RV32).generate();
}
