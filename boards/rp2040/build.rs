//! `ITERA_BLOB=path.itb` links that blob (default: a synthetic int8 micro model packed here);
//! see `itera-board-build` for `ITERA_QUANT`, `ITERA_PROMPT` and `ITERA_GENERATE`.
fn main() {
    itera_board_build::Board::new(itera_board_build::memory::RP2040).generate();
}
