//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic int8 micro model packed here);
//! see `itera-board-build` for `ITERA_QUANT`, `ITERA_PROMPT` and `ITERA_GENERATE`. The memory
//! map, clock and target are this board's row of `boards/table.rs`.
fn main() {
    itera_board_build::generate();
}
