//! The RV32IM backend, [`Rv32`] (riscv32 targets with the M extension, chosen at build time):
//! exact int8 row dots shaped for `LB` with immediate offsets, `MUL` and `ADD`, in portable
//! Rust. The portable reference keeps a pointer per row and advances each one per column,
//! 4.75 instructions per MAC (5.0 measured with its loop overhead); here the row width is a
//! constant, so one pointer and immediate offsets reach a block of rows (every offset fits
//! the 12-bit immediate) and each turn of columns costs one pointer step and one branch:
//! 3.375 instructions per MAC in the loop at best. Measured in QEMU (`-icount`, whole calls
//! over 4,096 weights): 3.42-3.70 at the model's widths (3.47 at 64 columns, the output
//! head's), against 5.1-5.8 for the reference; how many of the loop's values the compiler
//! keeps in registers varies a little from build to build.

use super::{portable, Backend};

/// The RV32IM backend: plain Rust, so any value will do.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rv32;

impl Backend for Rv32 {
    #[inline(always)]
    fn i8_row_dots(self, q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        i8_row_dots(q, cols, xq, out)
    }
}

/// Exact `Σ q·xq` per whole row, as the portable `i8_row_dots`: the model's widths in
/// blocks of rows by [`rows`] (eight rows by two columns a turn, four by four where that
/// measured faster: at 8 columns, and at 512, where eight rows' offsets outgrow the
/// immediate), the rest by the reference.
pub(super) fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let done = match cols {
        8 => rows::<4, 8, 4>(q, xq, out),
        32 => rows::<8, 32, 2>(q, xq, out),
        64 => rows::<8, 64, 2>(q, xq, out),
        128 => rows::<8, 128, 2>(q, xq, out),
        256 => rows::<8, 256, 2>(q, xq, out),
        512 => rows::<4, 512, 4>(q, xq, out),
        _ => 0,
    };
    portable::i8_row_dots(&q[done * cols..], cols, xq, &mut out[done..]);
}

/// The whole blocks of `R` rows of `COLS` against the first `COLS` inputs (if `xq` holds
/// them), `C` columns per turn: one pointer for the block (each row at an immediate offset),
/// per turn `C` input loads, then per row and column a load, a multiply and an add. Eight
/// rows by two columns is 54 instructions per 16 MACs (3.375), four by four 55; more of
/// either and the loads the scheduler puts first no longer fit the registers. Returns how
/// many rows it computed. Out of line, one function per shape: inlined together, the
/// shapes' register allocation went wrong for some of them (up to 3.8 instructions per MAC).
#[inline(never)]
fn rows<const R: usize, const COLS: usize, const C: usize>(q: &[i8], xq: &[i8], out: &mut [i32]) -> usize {
    let Some(x) = xq.first_chunk::<COLS>() else { return 0 };
    let (blocks, _) = q.as_chunks::<COLS>().0.as_chunks::<R>();
    let (outs, _) = out.as_chunks_mut::<R>();
    // The turns per row, hidden from the optimiser: unrolled whole (at 32 columns it was),
    // the loop's loads are all scheduled first and spill.
    let turns = core::hint::black_box(COLS / C).min(COLS / C);
    let mut done = 0;
    for (rows, o) in blocks.iter().zip(outs) {
        let mut acc = [0i32; R];
        for c in (0..turns).map(|t| C * t) {
            let xv: [i32; C] = core::array::from_fn(|i| i32::from(x[c + i]));
            for (a, row) in acc.iter_mut().zip(rows) {
                let mut s = *a;
                for (i, &v) in xv.iter().enumerate() {
                    s += i32::from(row[c + i]) * v;
                }
                *a = s;
            }
        }
        *o = acc;
        done += R;
    }
    done
}
