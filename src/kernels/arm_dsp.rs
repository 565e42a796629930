//! Cortex-M4/M7/M33 DSP path: int8 dot products with `SXTB16` (two bytes to two halfwords)
//! and `SMLAD` (two 16x16 multiply-accumulates), four products per word loaded, where the
//! portable code needs a sign-extending load and a multiply-accumulate per product. Exact,
//! so it returns what the portable `dot_i8` returns.

use core::arch::asm;

/// Exact `Σ a·b` over int8.
#[inline]
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
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

/// Per-row-scaled int8 rows, two at a time: `y[r] = (0 + Σ q·xq · scale_r) · sx`, as the
/// portable `row_value`, with the row epilogue written out (no iterator, no closure).
pub(super) fn i8_rows(q: &[i8], cols: usize, xq: &[i8], scales: &super::Scales<'_>, sx: f32, y: &mut [f32]) {
    let cols = cols.max(1);
    // The model's widths: four rows at a time against inputs sign-extended once.
    let done = match cols {
        32 => i8_rows4::<32>(q, xq, scales, sx, y),
        64 => i8_rows4::<64>(q, xq, scales, sx, y),
        128 => i8_rows4::<128>(q, xq, scales, sx, y),
        256 => i8_rows4::<256>(q, xq, scales, sx, y),
        512 => i8_rows4::<512>(q, xq, scales, sx, y),
        _ => 0,
    };
    let (q, y) = (q.get(done * cols..).unwrap_or_default(), y.get_mut(done..).unwrap_or_default());
    let mut r = done;
    let mut pairs = q.chunks_exact(2 * cols);
    let mut outs = y.chunks_exact_mut(2);
    if cols.is_multiple_of(4) && xq.len() >= cols {
        // The model's widths: whole words, no tails.
        let (xw, _) = xq[..cols].as_chunks::<4>();
        for (out, two) in (&mut outs).zip(&mut pairs) {
            let (a, b) = two.split_at(cols);
            let (sa, sb) = dot2_words(a.as_chunks::<4>().0, b.as_chunks::<4>().0, xw);
            out[0] = super::row_value1(sa, scale(scales, r), sx);
            out[1] = super::row_value1(sb, scale(scales, r + 1), sx);
            r += 2;
        }
    } else {
        for (out, two) in (&mut outs).zip(&mut pairs) {
            let (a, b) = two.split_at(cols);
            let (sa, sb) = (dot_i8(a, xq), dot_i8(b, xq));
            out[0] = super::row_value1(sa, scale(scales, r), sx);
            out[1] = super::row_value1(sb, scale(scales, r + 1), sx);
            r += 2;
        }
    }
    if let (Some(out), Some(row)) = (outs.into_remainder().first_mut(), pairs.remainder().get(..cols)) {
        *out = super::row_value1(dot_i8(row, xq), scale(scales, r), sx);
    }
}

/// Rows of `COLS` (a multiple of 8, at most 512) four at a time: `y[r] = (0 + Σ q·xq ·
/// scale_r) · sx` as the portable `row_value`. The inputs are sign-extended into halfword
/// pairs once per product, so each word of a row costs one load, two `SXTB16` and two
/// `SMLAD` (1.31 instructions per MAC with the shared input loads). Returns how many rows
/// it computed (a multiple of 4; the caller does the rest).
fn i8_rows4<const COLS: usize>(q: &[i8], xq: &[i8], scales: &super::Scales<'_>, sx: f32, y: &mut [f32]) -> usize {
    const MAX_WORDS: usize = 128;
    let words = COLS / 4;
    let Some(x) = xq.get(..COLS) else { return 0 };
    let (xw, _) = x.as_chunks::<4>();
    // [x0 x2], [x1 x3] per input word.
    let mut pairs = [[0u32; 2]; MAX_WORDS];
    for (p, w) in pairs.iter_mut().zip(xw) {
        let w = u32::from_le_bytes(w.map(|v| v as u8));
        *p = [sxtb16(w), sxtb16_ror8(w)];
    }
    let rows = y.len().min(q.len() / COLS) / 4 * 4;
    for (r4, (block, out)) in q.chunks_exact(4 * COLS).zip(y.chunks_exact_mut(4)).take(rows / 4).enumerate() {
        let acc = dot4_words::<COLS>(block, &pairs[..words]);
        for (k, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
            *o = super::row_value1(acc, scale(scales, 4 * r4 + k), sx);
        }
    }
    rows
}

/// One input word against four rows (`{c1}`..`{c3}`: byte offsets of rows 1 to 3 from row 0):
/// one `LDRD` of the input pairs, then per row a load, two `SXTB16` and two `SMLAD`.
macro_rules! dot4_word {
    () => {
        concat!(
            "ldrd {x02}, {x13}, [{px}], #8\n",
            "ldr {w}, [{p}, #{c1}]\n",
            "sxtb16 {t}, {w}\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "smlad {a1}, {t}, {x02}, {a1}\n",
            "smlad {a1}, {w}, {x13}, {a1}\n",
            "ldr {w}, [{p}, #{c2}]\n",
            "sxtb16 {t}, {w}\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "smlad {a2}, {t}, {x02}, {a2}\n",
            "smlad {a2}, {w}, {x13}, {a2}\n",
            "ldr {w}, [{p}, #{c3}]\n",
            "sxtb16 {t}, {w}\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "smlad {a3}, {t}, {x02}, {a3}\n",
            "smlad {a3}, {w}, {x13}, {a3}\n",
            "ldr {w}, [{p}], #4\n",
            "sxtb16 {t}, {w}\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "smlad {a0}, {t}, {x02}, {a0}\n",
            "smlad {a0}, {w}, {x13}, {a0}\n",
        )
    };
}

/// Exact dot products of four consecutive rows of `COLS` int8 (`block`, `4 · COLS` bytes)
/// with the input pairs (`COLS / 4` of them), two words per loop iteration.
#[inline(always)]
fn dot4_words<const COLS: usize>(block: &[i8], pairs: &[[u32; 2]]) -> [i32; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
    let iterations = COLS / 8;
    if block.len() < 4 * COLS || pairs.len() < COLS / 4 || iterations == 0 {
        return [0; 4];
    }
    // SAFETY: each iteration reads two words of each of the four rows (row k at byte offset
    // k · COLS from the advancing row-0 pointer) and two pairs of inputs; `iterations`
    // = COLS / 8 of them stay inside `block` (4 · COLS bytes) and `pairs` (COLS / 4, checked
    // above). Register-only DSP instructions otherwise; no stack; `subs` clobbers the flags,
    // which asm! assumes.
    unsafe {
        asm!(
            "2:",
            dot4_word!(),
            dot4_word!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            p = inout(reg) block.as_ptr() => _,
            px = inout(reg) pairs.as_ptr() => _,
            n = inout(reg) iterations => _,
            x02 = out(reg) _,
            x13 = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            c1 = const COLS,
            c2 = const 2 * COLS,
            c3 = const 3 * COLS,
            options(readonly, nostack),
        );
    }
    [a0, a1, a2, a3]
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

/// Row `r`'s scale; normal f16 values take a short path (the same value as `f16_to_f32`).
#[inline(always)]
fn scale(scales: &super::Scales<'_>, r: usize) -> f32 {
    if let super::Scales::F16(s) = scales {
        let Some(h) = s.get(r) else { return 0.0 };
        let h = h.to_bits() as u32;
        // Exponent 1..=30 (normal): rebias it by 127 - 15 in place; sign moves to bit 31.
        if (h & 0x7C00).wrapping_sub(0x0400) < 0x7800 {
            return f32::from_bits(((h & 0x8000) << 16) | (((h & 0x7FFF) << 13) + (112 << 23)));
        }
    }
    scales.get(r)
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
/// at most 512): `y[r] = (0 + Σ_g acc_g · scale_rg) · sx`, as the portable `row_value`.
/// Each word of 8 nibbles is taken unsigned (`q + 8`: top bits flipped), its even and odd
/// nibbles zero-extended by `UXTB16` into halfword pairs and multiplied against the inputs
/// by `SMLAD`; `8 · Σ x` per 8 columns (the same for every row) is subtracted once per
/// word. Returns `false` (and leaves everything alone) for shapes it does not take.
pub(super) fn i4_rows(
    packed: &[u8],
    cols: usize,
    group: usize,
    xq: &[i8],
    scales: &super::Scales<'_>,
    sx: f32,
    y: &mut [f32],
) -> bool {
    const MAX_BLOCKS: usize = 64;
    let blocks = cols / 8;
    if !cols.is_multiple_of(8)
        || !group.is_multiple_of(8)
        || !cols.is_multiple_of(group)
        || blocks > MAX_BLOCKS
        || xq.len() < cols
    {
        return false;
    }
    // Per 8 inputs: the halfword pairs that meet the nibbles ([x0 x4], [x2 x6], [x1 x5],
    // [x3 x7], sign-extended once here, not once per row), and 8 · Σ x (the nibble offset).
    let mut pairs = [[0u32; 4]; MAX_BLOCKS];
    let mut offset = [0i32; MAX_BLOCKS];
    for ((b, p), o) in xq.chunks_exact(8).zip(pairs.iter_mut()).zip(offset.iter_mut()) {
        let even = u32::from_le_bytes([b[0] as u8, b[2] as u8, b[4] as u8, b[6] as u8]);
        let odd = u32::from_le_bytes([b[1] as u8, b[3] as u8, b[5] as u8, b[7] as u8]);
        *p = [sxtb16(even), sxtb16_ror8(even), sxtb16(odd), sxtb16_ror8(odd)];
        *o = 8 * b.iter().map(|&v| v as i32).sum::<i32>();
    }
    let (row_bytes, groups, per_group) = (cols / 2, cols / group, group / 8);
    for (r, (row, out)) in packed.chunks_exact(row_bytes).zip(y.iter_mut()).enumerate() {
        let (words, _) = row.as_chunks::<4>();
        let (mut sum, mut acc, mut left, mut g) = (0.0f32, 0i32, per_group, r * groups);
        for ((w, x), o) in words.iter().zip(&pairs).zip(&offset) {
            let u = u32::from_le_bytes(*w) ^ 0x8888_8888;
            let (lo, hi) = (u & 0x0F0F_0F0F, (u >> 4) & 0x0F0F_0F0F);
            acc = smlad(uxtb16(lo), x[0], acc - o);
            acc = smlad(uxtb16_ror8(lo), x[1], acc);
            acc = smlad(uxtb16(hi), x[2], acc);
            acc = smlad(uxtb16_ror8(hi), x[3], acc);
            left -= 1;
            if left == 0 {
                sum += acc as f32 * scale(scales, g);
                (acc, left, g) = (0, per_group, g + 1);
            }
        }
        *out = sum * sx;
    }
    true
}
