//! Cortex-M4/M7/M33 (DSP) integer row dots: the int8 kernel's four-row assembly loop
//! (`SXTB16`, `SMLAD`: 21 instructions for 16 MACs) with the sums stored as they are, for
//! the fixed-point path's integer requantization. The inputs are sign-extended into halfword
//! pairs once per product. Exact: the same sums as the portable loop.

use core::arch::asm;

// `itera_dsp_dots4_COLS(q, pairs, blocks, out)`: `blocks` (at least 1) blocks of four int8
// rows of COLS bytes from `q` against the COLS / 4 input pairs, four i32 per block to `out`.
// Per input word: one `LDRD` of its two pairs, then per row a load, two `SXTB16` and two
// `SMLAD`. Registers: r0 row 0 (rows 1-3 at COLS, 2·COLS, 3·COLS), r1 pairs, r2 blocks left,
// lr out, r4-r7 sums, r8/r9 a pair, r10/r11 a word, r12 turns left.
core::arch::global_asm!(
    ".macro itera_dsp_word cols",
    "ldrd r8, r9, [r1], #8",
    "ldr r10, [r0, #\\cols]",
    "sxtb16 r11, r10",
    "sxtb16 r10, r10, ror #8",
    "smlad r5, r11, r8, r5",
    "smlad r5, r10, r9, r5",
    "ldr r10, [r0, #(2 * \\cols)]",
    "sxtb16 r11, r10",
    "sxtb16 r10, r10, ror #8",
    "smlad r6, r11, r8, r6",
    "smlad r6, r10, r9, r6",
    "ldr r10, [r0, #(3 * \\cols)]",
    "sxtb16 r11, r10",
    "sxtb16 r10, r10, ror #8",
    "smlad r7, r11, r8, r7",
    "smlad r7, r10, r9, r7",
    "ldr r10, [r0], #4",
    "sxtb16 r11, r10",
    "sxtb16 r10, r10, ror #8",
    "smlad r4, r11, r8, r4",
    "smlad r4, r10, r9, r4",
    ".endm",
    ".macro itera_dsp_dots4 cols, words_per_turn",
    ".section .text.itera_dsp_dots4_\\cols,\"ax\",%progbits",
    ".global itera_dsp_dots4_\\cols",
    ".type itera_dsp_dots4_\\cols,%function",
    ".thumb_func",
    "itera_dsp_dots4_\\cols:",
    "push {{r4-r11, lr}}",
    "mov lr, r3",
    "1:",
    "movs r4, #0",
    "movs r5, #0",
    "movs r6, #0",
    "movs r7, #0",
    "mov r12, #(\\cols / (4 * \\words_per_turn))",
    "2:",
    ".rept \\words_per_turn",
    "itera_dsp_word \\cols",
    ".endr",
    "subs r12, r12, #1",
    "bne 2b",
    "add r0, r0, #(3 * \\cols)",
    "sub r1, r1, #(2 * \\cols)",
    "stmia lr!, {{r4-r7}}",
    "subs r2, r2, #1",
    "bne 1b",
    "pop {{r4-r11, pc}}",
    ".size itera_dsp_dots4_\\cols, . - itera_dsp_dots4_\\cols",
    ".endm",
    "itera_dsp_dots4 8, 2",
    "itera_dsp_dots4 32, 4",
    "itera_dsp_dots4 64, 4",
    "itera_dsp_dots4 128, 4",
    "itera_dsp_dots4 256, 4",
    "itera_dsp_dots4 512, 4",
);

extern "C" {
    fn itera_dsp_dots4_8(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
    fn itera_dsp_dots4_32(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
    fn itera_dsp_dots4_64(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
    fn itera_dsp_dots4_128(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
    fn itera_dsp_dots4_256(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
    fn itera_dsp_dots4_512(q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32);
}

/// `SXTB16` of `x` (bytes 0 and 2 sign-extended to halfwords), and of `x` rotated by 8.
#[inline(always)]
fn sxtb16_pair(x: u32) -> [u32; 2] {
    let (even, odd);
    // SAFETY: two register-only ARMv7E-M DSP instructions (build.rs sets itera_arm_dsp only
    // for such targets); no memory, no flags. `e` is written before `x` is read again, so it
    // is an `out`, never given `x`'s register.
    unsafe {
        asm!("sxtb16 {e}, {x}", "sxtb16 {o}, {x}, ror #8", e = out(reg) even, o = lateout(reg) odd,
             x = in(reg) x, options(pure, nomem, nostack));
    }
    [even, odd]
}

/// Row dots four rows at a time for the model's row lengths; returns how many rows it
/// computed (a multiple of 4; the caller does the rest, and everything for other lengths).
pub(crate) fn dots4(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) -> usize {
    let routine: unsafe extern "C" fn(*const i8, *const [u32; 2], usize, *mut i32) = match cols {
        8 => itera_dsp_dots4_8,
        32 => itera_dsp_dots4_32,
        64 => itera_dsp_dots4_64,
        128 => itera_dsp_dots4_128,
        256 => itera_dsp_dots4_256,
        512 => itera_dsp_dots4_512,
        _ => return 0,
    };
    let blocks = (out.len() / 4).min(q.len() / (4 * cols));
    let Some(x) = xq.get(..cols).filter(|_| blocks > 0) else {
        return 0;
    };
    // [x0 x2], [x1 x3] per input word, for the widest row the routines take.
    let mut pairs = [[0u32; 2]; 128];
    for (p, w) in pairs.iter_mut().zip(x.as_chunks::<4>().0) {
        *p = sxtb16_pair(u32::from_le_bytes(w.map(|v| v as u8)));
    }
    // SAFETY: the routine for `cols` reads 4 · cols · blocks bytes from `q` (at most its
    // length, by `blocks`), the cols / 4 pairs (filled above, at most 128), and writes
    // 4 · blocks i32 to `out` (at most its length); it keeps to the AAPCS (r4-r11 saved, r12
    // clobbered) and touches no other memory.
    unsafe { routine(q.as_ptr(), pairs.as_ptr(), blocks, out.as_mut_ptr()) };
    4 * blocks
}
