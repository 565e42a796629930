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
    match cols {
        8 => dots4_of::<8, 2>(q, xq, out, itera_dsp_dots4_8),
        32 => dots4_of::<32, 8>(q, xq, out, itera_dsp_dots4_32),
        64 => dots4_of::<64, 16>(q, xq, out, itera_dsp_dots4_64),
        128 => dots4_of::<128, 32>(q, xq, out, itera_dsp_dots4_128),
        256 => dots4_of::<256, 64>(q, xq, out, itera_dsp_dots4_256),
        512 => dots4_of::<512, 128>(q, xq, out, itera_dsp_dots4_512),
        _ => 0,
    }
}

/// [`dots4`] for rows of `COLS` (`WORDS = COLS / 4`) with its routine.
#[inline(always)]
fn dots4_of<const COLS: usize, const WORDS: usize>(
    q: &[i8],
    xq: &[i8],
    out: &mut [i32],
    routine: unsafe extern "C" fn(*const i8, *const [u32; 2], usize, *mut i32),
) -> usize {
    let blocks = (out.len() / 4).min(q.len() / (4 * COLS));
    let Some(x) = xq.get(..COLS).filter(|_| blocks > 0 && WORDS * 4 == COLS) else {
        return 0;
    };
    // [x0 x2], [x1 x3] per input word, sized to the row.
    let mut pairs = [[0u32; 2]; WORDS];
    for (p, w) in pairs.iter_mut().zip(x.as_chunks::<4>().0) {
        *p = sxtb16_pair(u32::from_le_bytes(w.map(|v| v as u8)));
    }
    // SAFETY: the routine for COLS reads 4 · COLS · blocks bytes from `q` (at most its
    // length, by `blocks`), the COLS / 4 pairs, and writes 4 · blocks i32 to `out` (at most
    // its length); it keeps to the AAPCS (r4-r11 saved, r12 clobbered) and touches no other
    // memory.
    unsafe { routine(q.as_ptr(), pairs.as_ptr(), blocks, out.as_mut_ptr()) };
    4 * blocks
}
