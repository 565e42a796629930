//! The Cortex-M0/M0+/M23 backend, [`Armv6m`] (ARMv6-M and ARMv8-M Baseline, chosen at build
//! time): exact int8 row dots for a core whose loads and multiplies only reach the eight low
//! registers and that has no multiply-accumulate.
//!
//! Four rows share each input load, as in the portable reference: per column one `LDRSB`
//! of the input, then per row an `LDRSB` (register offset: row pointer plus a column index
//! that counts up to zero), a `MULS` and an `ADD` into an accumulator, 3.56 instructions
//! per MAC with the index step and the branch over four columns (57 per 16), 3.69-3.84
//! measured in QEMU with each call's and each block's setup (128 to 32 columns; the
//! reference 5.6-6.1, a `dot_i8` per row 7.3-8.8). That needs
//! four row pointers, the input pointer, the index, the loaded input and the product in
//! the eight low registers and the four sums in high ones (`ADD` is the one arithmetic
//! instruction that reaches them), which the compiler does not do: it keeps the sums low
//! and reloads a row pointer from the stack before every load, 5.5 instructions per MAC.
//! So the loop is an assembly routine, [`itera_v6m_dots4`], that runs every block of four
//! rows of a matrix in one call.

use super::{portable, Backend};

/// The ARMv6-M backend: the target has the instructions, so any value will do.
#[derive(Clone, Copy, Debug)]
pub(super) struct Armv6m;

impl Backend for Armv6m {
    #[inline(always)]
    fn i8_row_dots(self, q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        i8_row_dots(q, cols, xq, out)
    }
}

/// Exact `Σ q·xq` per whole row, as the portable `i8_row_dots`: every whole block of four
/// rows by [`itera_v6m_dots4`] over the first multiple of four columns (the model's widths
/// are all of them), the last columns of those rows and the last rows by the reference.
pub(super) fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let m = cols.min(xq.len());
    let n = m / 4 * 4;
    let rows = q.len().checked_div(cols).unwrap_or(0).min(out.len());
    let blocks = rows / 4;
    let mut done = 0;
    if n > 0 && blocks > 0 {
        // SAFETY: the routine reads `blocks` blocks of four rows `cols` apart from `q`, the
        // first `n` bytes of each (4 · blocks <= rows, and each row holds cols >= n bytes
        // of `q`), the first `n` bytes of `xq` (n <= xq.len()), and writes 4 · blocks i32
        // to `out` (<= out.len()); `n` is a nonzero multiple of 4 and `blocks` nonzero, as
        // it needs. It keeps to the AAPCS (r4-r11 saved, 8 bytes of stack given back) and
        // touches no other memory.
        unsafe { itera_v6m_dots4(q.as_ptr(), xq.as_ptr(), n, cols, blocks, out.as_mut_ptr()) };
        done = 4 * blocks;
        if n < m {
            for (row, o) in q.chunks_exact(cols).zip(&mut out[..done]) {
                *o += row[n..m].iter().zip(&xq[n..m]).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum::<i32>();
            }
        }
    }
    portable::i8_row_dots(&q[done * cols..], cols, xq, &mut out[done..]);
}

extern "C" {
    /// `itera_v6m_dots4(q, x, n, stride, blocks, out)`: for each of `blocks` (at least 1)
    /// blocks of four rows `stride` bytes apart from `q` (block `b` starts at row `4b`),
    /// `out[4b + k] = Σ_{c < n} q[(4b + k)·stride + c] · x[c]`, exactly (wrapping `i32`
    /// sums); `n` a multiple of 4, at least 4.
    fn itera_v6m_dots4(q: *const i8, x: *const i8, n: usize, stride: usize, blocks: usize, out: *mut i32);
}

// Registers: r0-r3 the four rows' pointers and r4 the input's, each at column `n` (the end),
// r5 the column index from −n up to 0, r6 a product, r7 an input; r8-r11 the four sums,
// r12 −n, lr the output; the row stride and the output's end on the stack.
core::arch::global_asm!(
    ".macro itera_v6m_column",
    "ldrsb r7, [r4, r5]",
    "ldrsb r6, [r0, r5]",
    "muls r6, r7, r6",
    "add r8, r6",
    "ldrsb r6, [r1, r5]",
    "muls r6, r7, r6",
    "add r9, r6",
    "ldrsb r6, [r2, r5]",
    "muls r6, r7, r6",
    "add r10, r6",
    "ldrsb r6, [r3, r5]",
    "muls r6, r7, r6",
    "add r11, r6",
    "adds r5, #1",
    ".endm",
    ".section .text.itera_v6m_dots4,\"ax\",%progbits",
    ".global itera_v6m_dots4",
    ".type itera_v6m_dots4,%function",
    ".thumb_func",
    "itera_v6m_dots4:",
    "push {{r4, r5, r6, r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4, r5, r6, r7}}",
    "sub sp, #8",
    // The stack arguments, above the 36 bytes pushed and the 8 reserved.
    "ldr r4, [sp, #44]",
    "ldr r5, [sp, #48]",
    "mov lr, r5",
    "lsls r4, r4, #4",
    "adds r4, r4, r5",
    "str r4, [sp, #4]",
    "str r3, [sp, #0]",
    "adds r4, r1, r2",
    "negs r5, r2",
    "mov r12, r5",
    "adds r0, r0, r2",
    "adds r1, r0, r3",
    "adds r2, r1, r3",
    "adds r3, r2, r3",
    "1:",
    "mov r5, r12",
    "movs r6, #0",
    "mov r8, r6",
    "mov r9, r6",
    "mov r10, r6",
    "mov r11, r6",
    "2:",
    "itera_v6m_column",
    "itera_v6m_column",
    "itera_v6m_column",
    "itera_v6m_column",
    "bne 2b",
    "mov r6, lr",
    "mov r7, r8",
    "str r7, [r6, #0]",
    "mov r7, r9",
    "str r7, [r6, #4]",
    "mov r7, r10",
    "str r7, [r6, #8]",
    "mov r7, r11",
    "str r7, [r6, #12]",
    "adds r6, #16",
    "mov lr, r6",
    "ldr r7, [sp, #0]",
    "adds r0, r3, r7",
    "adds r1, r0, r7",
    "adds r2, r1, r7",
    "adds r3, r2, r7",
    "ldr r7, [sp, #4]",
    "cmp r6, r7",
    "bne 1b",
    "add sp, #8",
    "pop {{r4, r5, r6, r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4, r5, r6, r7, pc}}",
    ".size itera_v6m_dots4, . - itera_v6m_dots4",
);
