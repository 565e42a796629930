//! The Cortex-M4/M7/M33 backend, [`Dsp`] (every ARMv7E-M or ARMv8-M Mainline target with the
//! DSP extension, chosen at build time): int8 dot products with `SXTB16` (two bytes to two
//! halfwords) and `SMLAD` (two 16x16 multiply-accumulates), four products per word loaded,
//! where the portable code needs a sign-extending load and a multiply-accumulate per
//! product. Exact, so it returns what the portable `dot_i8` returns. On targets with an FPU,
//! rows with one f16 scale each run in assembly routines that also do the float epilogue
//! (`itera_rows4`).

use core::arch::asm;

use super::{portable, Backend, Scales};

/// The DSP backend: the target has the instructions, so any value will do.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dsp;

impl Backend for Dsp {
    #[inline(always)]
    fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        dot_i8(a, b)
    }

    #[inline(always)]
    fn i8_row_dots(self, q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        i8_row_dots(q, cols, xq, out)
    }

    #[inline(always)]
    fn i8_rows(self, q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
        i8_rows(q, cols, xq, scales, sx, y)
    }

    #[inline(always)]
    fn i4_rows(
        self,
        packed: &[u8],
        cols: usize,
        group: usize,
        xq: &mut [i8],
        scales: &Scales<'_>,
        sx: f32,
        y: &mut [f32],
    ) {
        if xq.len() == cols && i4_rows(packed, cols, group, xq, scales, sx, y) {
            return;
        }
        portable::i4_rows(packed, cols, group, xq, scales, sx, y)
    }
}

/// Exact `Σ a·b` over int8.
#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (ac, ar) = a[..n].as_chunks::<4>();
    let (bc, br) = b[..n].as_chunks::<4>();
    let mut acc: i32 = 0;
    for (x, y) in ac.iter().zip(bc) {
        let (wx, wy) = (u32::from_le_bytes(x.map(|v| v as u8)), u32::from_le_bytes(y.map(|v| v as u8)));
        acc = smlad(sxtb16(wx), sxtb16(wy), acc);
        acc = smlad(sxtb16_ror8(wx), sxtb16_ror8(wy), acc);
    }
    acc + ar.iter().zip(br).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>()
}

/// Per-row-scaled int8 rows: `y[r] = (0 + Σ q·xq · scale_r) · sx`, as the portable
/// `row_value1`. Blocks of four rows of the model's widths with f16 scales run in assembly,
/// their epilogue included; whatever they leave, from [`i8_row_dots`].
fn i8_rows(q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    let cols = cols.max(1);
    // The model's widths: four rows at a time against inputs sign-extended once.
    let done = match cols {
        8 => i8_rows4::<8, 2>(q, xq, scales, sx, y),
        32 => i8_rows4::<32, 8>(q, xq, scales, sx, y),
        64 => i8_rows4::<64, 16>(q, xq, scales, sx, y),
        128 => i8_rows4::<128, 32>(q, xq, scales, sx, y),
        256 => i8_rows4::<256, 64>(q, xq, scales, sx, y),
        512 => i8_rows4::<512, 128>(q, xq, scales, sx, y),
        _ => 0,
    };
    if done < y.len() {
        i8_rows_rest(q, cols, xq, scales, sx, y, done);
    }
}

/// The rows of [`i8_rows`] from row `done` on, from [`i8_row_dots`]. Out of line: the
/// model's matrices never get here, and inlined it cost `Matrix::matvec` registers.
#[inline(never)]
fn i8_rows_rest(q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32], done: usize) {
    let (q, y) = (q.get(done * cols..).unwrap_or_default(), y.get_mut(done..).unwrap_or_default());
    let dots = |rows: &[i8], out: &mut [i32]| i8_row_dots(rows, cols, xq, out);
    portable::i8_rows(q, cols, &scales.skip_rows(done, 1), sx, y, dots);
}

/// Exact `Σ q·xq` per whole row, as the portable `i8_row_dots`: the model's widths four rows
/// at a time ([`i8_dots4`]); the rest two rows at a time sharing each input word
/// ([`dot2_words`]) where the rows are whole words, else [`dot_i8`] a row at a time.
fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let done = match cols {
        8 => i8_dots4::<8, 2>(q, xq, out),
        32 => i8_dots4::<32, 8>(q, xq, out),
        64 => i8_dots4::<64, 16>(q, xq, out),
        128 => i8_dots4::<128, 32>(q, xq, out),
        256 => i8_dots4::<256, 64>(q, xq, out),
        512 => i8_dots4::<512, 128>(q, xq, out),
        _ => 0,
    };
    let (q, out) = (q.get(done * cols..).unwrap_or_default(), out.get_mut(done..).unwrap_or_default());
    i8_row_dots_pairs(q, cols, xq, out);
}

/// [`i8_row_dots`] two rows at a time.
fn i8_row_dots_pairs(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let n = cols.min(xq.len());
    let x = &xq[..n];
    let rows = q.len().checked_div(cols).unwrap_or(0).min(out.len());
    let (out, none) = out.split_at_mut(rows);
    none.fill(0);
    let words = Some(x.as_chunks::<4>().0).filter(|_| n == cols && cols.is_multiple_of(4));
    let mut pairs = q.chunks_exact(2 * cols.max(1));
    let mut outs = out.chunks_exact_mut(2);
    for (o, two) in (&mut outs).zip(&mut pairs) {
        let (a, b) = two.split_at(cols);
        let (sa, sb) = match words {
            Some(xw) => dot2_words(a.as_chunks::<4>().0, b.as_chunks::<4>().0, xw),
            None => (dot_i8(&a[..n], x), dot_i8(&b[..n], x)),
        };
        o[0] = sa;
        o[1] = sb;
    }
    if let (Some(o), Some(row)) = (outs.into_remainder().first_mut(), pairs.remainder().get(..n)) {
        *o = dot_i8(row, x);
    }
}

/// Rows of `COLS` four at a time, for one f16 scale per row: `y[r] = (0 + Σ q·xq ·
/// scale_r) · sx` as the portable `row_value1`. The inputs are sign-extended into halfword
/// pairs once per product, then [`itera_i8_rows4`] runs every block of four rows, its
/// epilogue included. Returns how many rows it computed (a multiple of 4; the caller does
/// the rest, and everything on targets or scale formats this does not take).
#[cfg_attr(not(itera_arm_fp16), allow(unused_variables))]
fn i8_rows4<const COLS: usize, const WORDS: usize>(
    q: &[i8],
    xq: &[i8],
    scales: &Scales<'_>,
    sx: f32,
    y: &mut [f32],
) -> usize {
    #[cfg(itera_arm_fp16)]
    if let (Some(x), Scales::F16(s), true) = (xq.get(..COLS), scales, WORDS * 4 == COLS) {
        let rows = y.len().min(q.len() / COLS).min(s.len()) / 4 * 4;
        let routine: unsafe extern "C" fn(*const i8, *const [u32; 2], usize, *const half::f16, *mut f32, f32) =
            match COLS {
                8 => itera_i8_rows4_8,
                32 => itera_i8_rows4_32,
                64 => itera_i8_rows4_64,
                128 => itera_i8_rows4_128,
                256 => itera_i8_rows4_256,
                512 => itera_i8_rows4_512,
                _ => return 0,
            };
        if rows == 0 {
            return 0;
        }
        // [x0 x2], [x1 x3] per input word (sized to the row: zeroing a worst-case array
        // cost as much as filling it).
        let mut pairs = [[0u32; 2]; WORDS];
        for (p, w) in pairs.iter_mut().zip(x.as_chunks::<4>().0) {
            let w = u32::from_le_bytes(w.map(|v| v as u8));
            *p = [sxtb16(w), sxtb16_ror8(w)];
        }
        // SAFETY: the routine for `COLS` reads `rows` rows of `COLS` bytes from `q`, the
        // `COLS / 4` pairs, and `rows` f16 scales, and writes `rows` floats to `y`: all
        // checked above (`rows` is at most each length, and at least 4). It keeps to the
        // AAPCS-VFP (r4-r11 saved, only s0-s9 and r12 clobbered) and touches no other memory.
        unsafe { routine(q.as_ptr(), pairs.as_ptr(), rows / 4, s.as_ptr(), y.as_mut_ptr(), sx) };
        return rows;
    }
    0
}

// `itera_i8_rows4_COLS(q, pairs, blocks, scales, y, sx)`: `blocks` (at least 1) blocks of
// four int8 rows of COLS bytes from `q`, against the `COLS / 4` input pairs, with one f16
// scale per row from `scales` and the results to `y`. Per input word: one `LDRD` of its two
// pairs, then per row a load, two `SXTB16` and two `SMLAD`, 21 instructions for 16 MACs
// (four words per loop turn; two for 8 columns, the scan's `C`). Per block, the epilogue converts the four scales (`VCVTB`,
// `VCVTT`) and computes each row as `(0 + acc · scale) · sx`, the portable `row_value1`'s
// operations in its order. In assembly because the accumulators, pointers and counters
// need every core register, which the compiler's code around an inline loop spilled and
// reloaded four times per block. Registers: r0 row 0 (rows 1-3 at COLS, 2·COLS, 3·COLS),
// r1 pairs, r2 blocks left, r3 scales, lr y, r4-r7 sums, r8/r9 a pair, r10/r11 a word,
// r12 turns left; s0 sx, s1 zero, s2-s5 scales, s6 a result.
#[cfg(itera_arm_fp16)]
core::arch::global_asm!(
    ".fpu fpv4-sp-d16",
    ".macro itera_dot4_word cols",
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
    ".macro itera_row_out acc, scale, offset",
    "vmov s6, \\acc",
    "vcvt.f32.s32 s6, s6",
    "vmul.f32 s6, s6, \\scale",
    "vadd.f32 s6, s1, s6",
    "vmul.f32 s6, s6, s0",
    "vstr s6, [lr, #\\offset]",
    ".endm",
    // One block of four rows: the sums in r4-r7, then q to the next block and the pairs
    // back to their start.
    ".macro itera_sums4 cols, words_per_turn",
    "movs r4, #0",
    "movs r5, #0",
    "movs r6, #0",
    "movs r7, #0",
    "mov r12, #(\\cols / (4 * \\words_per_turn))",
    "2:",
    ".rept \\words_per_turn",
    "itera_dot4_word \\cols",
    ".endr",
    "subs r12, r12, #1",
    "bne 2b",
    "add r0, r0, #(3 * \\cols)",
    "sub r1, r1, #(2 * \\cols)",
    ".endm",
    ".macro itera_rows4 cols, words_per_turn",
    ".section .text.itera_i8_rows4_\\cols,\"ax\",%progbits",
    ".global itera_i8_rows4_\\cols",
    ".type itera_i8_rows4_\\cols,%function",
    ".thumb_func",
    "itera_i8_rows4_\\cols:",
    "push {{r4-r11, lr}}",
    "ldr lr, [sp, #36]",
    "movs r4, #0",
    "vmov s1, r4",
    "1:",
    "itera_sums4 \\cols, \\words_per_turn",
    "ldr r8, [r3], #4",
    "ldr r9, [r3], #4",
    "vmov s3, r8",
    "vmov s5, r9",
    "vcvtb.f32.f16 s2, s3",
    "vcvtt.f32.f16 s3, s3",
    "vcvtb.f32.f16 s4, s5",
    "vcvtt.f32.f16 s5, s5",
    "itera_row_out r4, s2, 0",
    "itera_row_out r5, s3, 4",
    "itera_row_out r6, s4, 8",
    "itera_row_out r7, s5, 12",
    "add lr, lr, #16",
    "subs r2, r2, #1",
    "bne 1b",
    "pop {{r4-r11, pc}}",
    ".size itera_i8_rows4_\\cols, . - itera_i8_rows4_\\cols",
    ".endm",
    "itera_rows4 8, 2",
    "itera_rows4 32, 4",
    "itera_rows4 64, 4",
    "itera_rows4 128, 4",
    "itera_rows4 256, 4",
    "itera_rows4 512, 4",
    // `itera_i8_dots4_COLS(q, pairs, blocks, out)`: the same loop, the four sums stored as
    // they are (the fixed-point path's integer requantization follows).
    ".macro itera_dots4 cols, words_per_turn",
    ".section .text.itera_i8_dots4_\\cols,\"ax\",%progbits",
    ".global itera_i8_dots4_\\cols",
    ".type itera_i8_dots4_\\cols,%function",
    ".thumb_func",
    "itera_i8_dots4_\\cols:",
    "push {{r4-r11, lr}}",
    "mov lr, r3",
    "1:",
    "itera_sums4 \\cols, \\words_per_turn",
    "stmia lr!, {{r4-r7}}",
    "subs r2, r2, #1",
    "bne 1b",
    "pop {{r4-r11, pc}}",
    ".size itera_i8_dots4_\\cols, . - itera_i8_dots4_\\cols",
    ".endm",
    "itera_dots4 8, 2",
    "itera_dots4 32, 4",
    "itera_dots4 64, 4",
    "itera_dots4 128, 4",
    "itera_dots4 256, 4",
    "itera_dots4 512, 4",
);

/// Declares assembly routines that share one signature (the parameter list, then the names).
macro_rules! routines {
    ($params:tt $($name:ident),*) => {
        #[cfg(itera_arm_fp16)]
        extern "C" {
            $(fn $name $params;)*
        }
    };
}

routines!(
    (q: *const i8, pairs: *const [u32; 2], blocks: usize, scales: *const half::f16, y: *mut f32, sx: f32)
    itera_i8_rows4_8,
    itera_i8_rows4_32,
    itera_i8_rows4_64,
    itera_i8_rows4_128,
    itera_i8_rows4_256,
    itera_i8_rows4_512
);

routines!(
    (q: *const i8, pairs: *const [u32; 2], blocks: usize, out: *mut i32)
    itera_i8_dots4_8,
    itera_i8_dots4_32,
    itera_i8_dots4_64,
    itera_i8_dots4_128,
    itera_i8_dots4_256,
    itera_i8_dots4_512
);

/// Rows of `COLS` four at a time, their exact sums to `out` by [`itera_i8_dots4`] (21
/// instructions per 16 MACs) against the inputs sign-extended into halfword pairs once.
/// Returns how many rows it computed (a multiple of 4; the caller does the rest, and
/// everything on targets without the routines).
#[cfg_attr(not(itera_arm_fp16), allow(unused_variables))]
fn i8_dots4<const COLS: usize, const WORDS: usize>(q: &[i8], xq: &[i8], out: &mut [i32]) -> usize {
    #[cfg(itera_arm_fp16)]
    if let (Some(x), true) = (xq.get(..COLS), WORDS * 4 == COLS) {
        let blocks = (out.len() / 4).min(q.len() / (4 * COLS));
        let routine: unsafe extern "C" fn(*const i8, *const [u32; 2], usize, *mut i32) = match COLS {
            8 => itera_i8_dots4_8,
            32 => itera_i8_dots4_32,
            64 => itera_i8_dots4_64,
            128 => itera_i8_dots4_128,
            256 => itera_i8_dots4_256,
            512 => itera_i8_dots4_512,
            _ => return 0,
        };
        if blocks == 0 {
            return 0;
        }
        let mut pairs = [[0u32; 2]; WORDS];
        for (p, w) in pairs.iter_mut().zip(x.as_chunks::<4>().0) {
            let w = u32::from_le_bytes(w.map(|v| v as u8));
            *p = [sxtb16(w), sxtb16_ror8(w)];
        }
        // SAFETY: the routine for `COLS` reads 4 · COLS · blocks bytes from `q` (at most its
        // length, by `blocks`) and the `COLS / 4` pairs, and writes 4 · blocks i32 to `out`
        // (at most its length); it keeps to the AAPCS (r4-r11 saved, r12 clobbered) and
        // touches no other memory.
        unsafe { routine(q.as_ptr(), pairs.as_ptr(), blocks, out.as_mut_ptr()) };
        return 4 * blocks;
    }
    0
}

/// One word of [`dot2_words`]'s loop: four products for each of two rows, from three loads,
/// six `SXTB16` and four `SMLAD`.
macro_rules! dot2_word {
    () => {
        concat!(
            "ldr {wx}, [{px}], #4\n",
            "ldr {wa}, [{pa}], #4\n",
            "ldr {wb}, [{pb}], #4\n",
            "sxtb16 {x02}, {wx}\n",
            "sxtb16 {wx}, {wx}, ror #8\n",
            "sxtb16 {t}, {wa}\n",
            "sxtb16 {wa}, {wa}, ror #8\n",
            "smlad {acc_a}, {t}, {x02}, {acc_a}\n",
            "smlad {acc_a}, {wa}, {wx}, {acc_a}\n",
            "sxtb16 {t}, {wb}\n",
            "sxtb16 {wb}, {wb}, ror #8\n",
            "smlad {acc_b}, {t}, {x02}, {acc_b}\n",
            "smlad {acc_b}, {wb}, {wx}, {acc_b}\n",
        )
    };
}

/// The loop of [`dot2_words`] with `$words` words per iteration (count and branch once per
/// iteration); `$iterations` must be at least 1.
macro_rules! dot2_loop {
    ($a:expr, $b:expr, $x:expr, $iterations:expr, $acc_a:ident, $acc_b:ident, $($word:tt)*) => {
        asm!(
            "2:",
            $(dot2_word!$word,)*
            "subs {n}, {n}, #1",
            "bne 2b",
            pa = inout(reg) $a.as_ptr() => _,
            pb = inout(reg) $b.as_ptr() => _,
            px = inout(reg) $x.as_ptr() => _,
            n = inout(reg) $iterations => _,
            wa = out(reg) _,
            wb = out(reg) _,
            wx = out(reg) _,
            x02 = out(reg) _,
            t = out(reg) _,
            acc_a = inout(reg) $acc_a,
            acc_b = inout(reg) $acc_b,
            options(readonly, nostack),
        )
    };
}

/// Two rows' exact dot products with `x` over whole words, the loop itself in assembly, unrolled to four words (two,
/// one) per iteration when the count allows.
#[inline(always)]
fn dot2_words(a: &[[i8; 4]], b: &[[i8; 4]], x: &[[i8; 4]]) -> (i32, i32) {
    let n = a.len().min(b.len()).min(x.len());
    let (mut acc_a, mut acc_b) = (0i32, 0i32);
    if n == 0 {
        return (0, 0);
    }
    // SAFETY (all three): each loop reads exactly `n` words from each of `a`, `b` and `x`,
    // which all hold at least `n` (the minimum above, n >= 1), in n / words iterations; the
    // pointers and count are copies the asm advances; register-only DSP instructions
    // otherwise; no stack; `subs` clobbers the flags, which asm! assumes.
    unsafe {
        if n.is_multiple_of(4) {
            dot2_loop!(a, b, x, n / 4, acc_a, acc_b, ()()()());
        } else if n.is_multiple_of(2) {
            dot2_loop!(a, b, x, n / 2, acc_a, acc_b, ()());
        } else {
            dot2_loop!(a, b, x, n, acc_a, acc_b, ());
        }
    }
    (acc_a, acc_b)
}

/// One DSP instruction on registers: `$op rd, rn` (optionally `, ror #8`).
macro_rules! dsp1 {
    ($name:ident, $asm:literal) => {
        #[inline(always)]
        fn $name(x: u32) -> u32 {
            let out;
            // SAFETY: one register-only ARMv7E-M DSP instruction (see build.rs); no memory,
            // no flags.
            unsafe { asm!($asm, d = lateout(reg) out, x = in(reg) x, options(pure, nomem, nostack)) };
            out
        }
    };
}

dsp1!(uxtb16, "uxtb16 {d}, {x}");
dsp1!(uxtb16_ror8, "uxtb16 {d}, {x}, ror #8");
dsp1!(sxtb16, "sxtb16 {d}, {x}");
dsp1!(sxtb16_ror8, "sxtb16 {d}, {x}, ror #8");

/// `acc + a.lo·b.lo + a.hi·b.hi` over signed halfwords.
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let out;
    // SAFETY: as `dsp1!`.
    unsafe {
        asm!("smlad {d}, {a}, {b}, {c}", d = lateout(reg) out, a = in(reg) a, b = in(reg) b, c = in(reg) acc,
             options(pure, nomem, nostack))
    };
    out
}

/// Int4 rows in groups of a multiple of 8 (8, 32, or whole rows of a multiple of 8 columns,
/// at most 512): `y[r] = (0 + Σ_g acc_g · scale_rg) · sx`, as the portable `i4_rows`.
/// Each word of 8 nibbles is taken unsigned (`q + 8`: top bits flipped), its even and odd
/// nibbles zero-extended by `UXTB16` into halfword pairs and multiplied against the inputs
/// by `SMLAD`; `8 · Σ x` per 8 columns (the same for every row) is subtracted once per
/// word. Returns `false` (and leaves everything alone) for shapes it does not take.
fn i4_rows(packed: &[u8], cols: usize, group: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) -> bool {
    if !cols.is_multiple_of(8) || !group.is_multiple_of(8) || !cols.is_multiple_of(group) || xq.len() < cols {
        return false;
    }
    // The per-8-input table sized to the row where the model's widths allow (zeroing the
    // largest one cost as much as filling it).
    let xq = xq.get(..cols).unwrap_or(xq);
    let rows = |table: &[[u32; 5]]| i4_rows_with(packed, cols, group, table, scales, sx, y);
    match cols / 8 {
        4 => with_table::<4>(xq, rows),
        8 => with_table::<8>(xq, rows),
        16 => with_table::<16>(xq, rows),
        32 => with_table::<32>(xq, rows),
        blocks if blocks <= 64 => with_table::<64>(xq, rows),
        _ => return false,
    }
    true
}

/// Calls `rows` with the table of [`i4_rows`] for the first `BLOCKS` · 8 inputs of `xq`: per
/// 8 inputs, the halfword pairs that meet the nibbles ([x0 x4], [x2 x6], [x1 x5], [x3 x7],
/// sign-extended once here, not once per row), then 8 · Σ x (the nibble offset). Not
/// inlined: each size's table then lives only in its own frame, not all of them in the
/// caller's.
#[inline(never)]
fn with_table<const BLOCKS: usize>(xq: &[i8], rows: impl FnOnce(&[[u32; 5]])) {
    let mut table = [[0u32; 5]; BLOCKS];
    for (b, t) in xq.chunks_exact(8).zip(table.iter_mut()) {
        let even = u32::from_le_bytes([b[0] as u8, b[2] as u8, b[4] as u8, b[6] as u8]);
        let odd = u32::from_le_bytes([b[1] as u8, b[3] as u8, b[5] as u8, b[7] as u8]);
        let offset = 8 * b.iter().map(|&v| v as i32).sum::<i32>();
        *t = [sxtb16(even), sxtb16_ror8(even), sxtb16(odd), sxtb16_ror8(odd), offset as u32];
    }
    rows(table.get(..xq.len() / 8).unwrap_or(&table));
}

/// The rows of [`i4_rows`] against a filled table (one entry per 8 columns): the assembly
/// routine for f16 scales per 8 or 32, otherwise Rust with the DSP intrinsics, a row at a
/// time. Not generic, so one copy serves every table size.
fn i4_rows_with(
    packed: &[u8],
    cols: usize,
    group: usize,
    table: &[[u32; 5]],
    scales: &Scales<'_>,
    sx: f32,
    y: &mut [f32],
) {
    let (row_bytes, groups, per_group) = (cols / 2, cols / group, group / 8);
    #[cfg(itera_arm_fp16)]
    if let (Scales::F16(s), 8 | 32) = (scales, group) {
        let rows = y.len().min(packed.len() / row_bytes).min(s.len() / groups);
        let routine: unsafe extern "C" fn(*const u8, *const [u32; 5], usize, *const half::f16, *mut f32, usize, f32) =
            if group == 8 { itera_i4_rows_g8 } else { itera_i4_rows_g32 };
        if rows > 0 && table.len() == cols / 8 {
            // SAFETY: the routine reads `rows` rows of `cols / 2` bytes from `packed`, the
            // table's `cols / 8` entries (`group / 8` per group, `groups` groups a row),
            // `rows · groups` f16 scales, and writes `rows` floats to `y`: all checked above
            // (`rows` is at most each length; `groups` >= 1 as `group` divides `cols` > 0).
            // It keeps to the AAPCS-VFP (r4-r11 saved, its 8 bytes of stack given back, only
            // s0-s4 and r12 clobbered) and touches no other memory.
            unsafe { routine(packed.as_ptr(), table.as_ptr(), rows, s.as_ptr(), y.as_mut_ptr(), groups, sx) };
            return;
        }
    }
    for (r, (row, out)) in packed.chunks_exact(row_bytes).zip(y.iter_mut()).enumerate() {
        let (words, _) = row.as_chunks::<4>();
        let (mut sum, mut acc, mut left, mut g) = (0.0f32, 0i32, per_group, r * groups);
        for (w, t) in words.iter().zip(table) {
            let u = u32::from_le_bytes(*w) ^ 0x8888_8888;
            let (lo, hi) = (u & 0x0F0F_0F0F, (u >> 4) & 0x0F0F_0F0F);
            acc = smlad(uxtb16(lo), t[0], acc - t[4] as i32);
            acc = smlad(uxtb16_ror8(lo), t[1], acc);
            acc = smlad(uxtb16(hi), t[2], acc);
            acc = smlad(uxtb16_ror8(hi), t[3], acc);
            left -= 1;
            if left == 0 {
                sum += acc as f32 * scales.get(g);
                (acc, left, g) = (0, per_group, g + 1);
            }
        }
        *out = sum * sx;
    }
}

// `itera_i4_rows_gGROUP(packed, table, rows, scales, y, groups, sx)`: `rows` (at least 1)
// int4 rows of `groups` (at least 1) groups of GROUP values, one f16 scale per group, as
// `i4_rows_with`'s loop computes them. Per word of 8 nibbles: flip to unsigned, split even and
// odd nibbles, load the word's four input pairs and offset, four `UXTB16` and four `SMLAD`
// (15 instructions for 8 MACs); per group the scale by `VCVTB` and `sum += acc · scale`
// (`VMLA`, rounded product then sum, as Rust's `+=` of a product); per row `sum · sx`.
// Registers: r0 packed, r1 table, r2 groups left, r3 scales, lr y, r4 acc, r5/r6 even/odd
// nibbles, r7 scratch, r8-r11 a word's pairs, r12 0x0F0F0F0F; the rows left and the groups
// per row on the stack; s0 sx, s1 sum, s2 zero, s3/s4 scratch.
#[cfg(itera_arm_fp16)]
core::arch::global_asm!(
    ".fpu fpv4-sp-d16",
    ".macro itera_i4_word",
    "ldr r5, [r0], #4",
    "eor r5, r5, #0x88888888",
    "and r6, r12, r5, lsr #4",
    "and r5, r5, r12",
    "ldm r1!, {{r8-r11}}",
    "ldr r7, [r1], #4",
    "sub r4, r4, r7",
    "uxtb16 r7, r5",
    "smlad r4, r7, r8, r4",
    "uxtb16 r7, r5, ror #8",
    "smlad r4, r7, r9, r4",
    "uxtb16 r7, r6",
    "smlad r4, r7, r10, r4",
    "uxtb16 r7, r6, ror #8",
    "smlad r4, r7, r11, r4",
    ".endm",
    ".macro itera_i4_rows group",
    ".section .text.itera_i4_rows_g\\group,\"ax\",%progbits",
    ".global itera_i4_rows_g\\group",
    ".type itera_i4_rows_g\\group,%function",
    ".thumb_func",
    "itera_i4_rows_g\\group:",
    "push {{r4-r11, lr}}",
    "sub sp, sp, #8",
    "ldr lr, [sp, #44]",
    "ldr r4, [sp, #48]",
    "str r2, [sp]",
    "str r4, [sp, #4]",
    "movw r12, #0x0F0F",
    "movt r12, #0x0F0F",
    "movs r4, #0",
    "vmov s2, r4",
    "1:",
    "ldr r2, [sp, #4]",
    "vmov.f32 s1, s2",
    "2:",
    "movs r4, #0",
    ".rept \\group / 8",
    "itera_i4_word",
    ".endr",
    "ldrh r7, [r3], #2",
    "vmov s3, r7",
    "vcvtb.f32.f16 s3, s3",
    "vmov s4, r4",
    "vcvt.f32.s32 s4, s4",
    "vmla.f32 s1, s4, s3",
    "subs r2, r2, #1",
    "bne 2b",
    "vmul.f32 s1, s1, s0",
    "vstmia lr!, {{s1}}",
    "ldr r2, [sp, #4]",
    "mov r7, #(\\group / 8 * 20)",
    "mls r1, r2, r7, r1",
    "ldr r2, [sp]",
    "subs r2, r2, #1",
    "str r2, [sp]",
    "bne 1b",
    "add sp, sp, #8",
    "pop {{r4-r11, pc}}",
    ".size itera_i4_rows_g\\group, . - itera_i4_rows_g\\group",
    ".endm",
    "itera_i4_rows 8",
    "itera_i4_rows 32",
);

routines!(
    (packed: *const u8, table: *const [u32; 5], rows: usize, scales: *const half::f16, y: *mut f32, groups: usize, sx: f32)
    itera_i4_rows_g8,
    itera_i4_rows_g32
);
