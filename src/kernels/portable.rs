//! The reference kernels, in portable Rust: what every operation of a [`Backend`] computes,
//! and the code every target runs where its backend has nothing faster.
//!
//! Everything here is plain arithmetic in a fixed order. Integer sums are exact, so an
//! integer kernel may add in any order it likes and still return these bits; float sums
//! follow [`dot_lanes`]'s order (eight interleaved lanes, then the tail), which every
//! backend reproduces lane by lane; every quantized row ends as `(0 + Σ_g acc_g·scale_g) ·
//! sx`, its groups in order ([`row_value1`] for a row of one group).

use half::f16;

use super::{Backend, Scales};
use crate::math::reduce8;

/// The backend with nothing of its own: every operation is the reference below.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(any(itera_arm_dsp, itera_armv6m, target_arch = "riscv32"), allow(dead_code))] // there, only tests run it
pub(super) struct Portable;

impl Backend for Portable {}

/// Quantizes `x` to symmetric int8 in `xq`; returns the scale `sx = max|x| / 127`, or `None`
/// when `x` is all zero, holds a NaN or an infinity, or is so small (below about 4e-37)
/// that `127 / max|x|` overflows (the product is then zero).
#[inline(always)]
pub fn quantize(x: &[f32], xq: &mut [i8]) -> Option<f32> {
    // max|x| as the largest bit pattern with the sign cleared: for non-negative floats the
    // patterns order as the values do, every NaN pattern lies above infinity's (so a NaN
    // anywhere makes `amax` NaN and is refused below), and an integer max vectorises on
    // every target (`f32::max` is a libm call on FPUs without VMAXNM). Eight lanes; max is
    // exact, so the order does not matter.
    let abs_bits = |v: &f32| v.to_bits() & 0x7FFF_FFFF;
    let (chunks, rest) = x.as_chunks::<8>();
    let mut lanes = [0u32; 8];
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(abs_bits(v));
        }
    }
    let bits = rest.iter().map(abs_bits).fold(lanes.into_iter().fold(0, u32::max), u32::max);
    let (inv, sx) = input_scale(bits)?;
    for (q, &v) in xq.iter_mut().zip(x) {
        *q = quantize_one(v, inv);
    }
    Some(sx)
}

/// From the bits of `max|x|`: `(127 / max|x|, max|x| / 127)`, or `None` when `max|x|` is
/// zero, NaN or infinite, or `127 / max|x|` overflows.
#[inline(always)]
pub(super) fn input_scale(amax_bits: u32) -> Option<(f32, f32)> {
    let amax = f32::from_bits(amax_bits);
    let inv = 127.0 / amax;
    (amax > 0.0 && amax.is_finite() && inv.is_finite()).then_some((inv, amax / 127.0))
}

/// Adding 1.5·2^23 rounds to the nearest integer (ties to even) in one exact f32 step.
pub(super) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `round(v · inv)` as int8, `v · inv` rounded to f32 first. With every |v| <= max|x| and
/// inv = 127 / max|x| rounded, |v·inv| <= 127·(1 + 2^-23)^2 < 127.5: the result is within
/// ±127, so no clamp is needed.
#[inline(always)]
pub(super) fn quantize_one(v: f32, inv: f32) -> i8 {
    // The rounded integer sits in the low mantissa bits: read it there (exactly what
    // subtracting the magic number again would give).
    ((v * inv + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) as i8
}

/// The low nibble of `b` as a signed int4.
#[inline]
pub(super) fn lo_nibble(b: u8) -> i8 {
    ((b << 4) as i8) >> 4
}

/// The high nibble of `b` as a signed int4.
#[inline]
pub(super) fn hi_nibble(b: u8) -> i8 {
    (b as i8) >> 4
}

/// Exact `Σ a·b` over int8 (slices of one length): adjacent products are summed in pairs into
/// eight `i32` lanes, the shape of `pmaddwd` (x86) and `SMLAD` (Cortex-M4 DSP).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let (ac, ar) = a.as_chunks::<16>();
    let (bc, br) = b.as_chunks::<16>();
    let mut acc = [0i32; 8];
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..8 {
            let even = x[2 * i] as i16 as i32 * y[2 * i] as i16 as i32;
            let odd = x[2 * i + 1] as i16 as i32 * y[2 * i + 1] as i16 as i32;
            acc[i] += even + odd;
        }
    }
    let tail: i32 = ar.iter().zip(br).map(|(&x, &y)| x as i32 * y as i32).sum();
    acc.iter().sum::<i32>() + tail
}

/// Exact `Σ q·xq` per whole row: `out[r]` for row `r` of the row-major `q` (`cols` per
/// row), `out.len()` rows, against `xq`. Inputs past the end of `xq` count as zero, rows
/// past the end of `q` give zero. Exact (the sums fit an `i32` while `cols` is at most
/// [`super::MAX_INT_COLS`]), so every backend returns these values.
///
/// Four rows at a time, each input loaded once for all four (one load, then per row a load,
/// a multiply and an add): the shape a scalar core with a few registers runs best.
#[inline]
pub(crate) fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let n = cols.min(xq.len());
    let x = &xq[..n];
    let rows = q.len().checked_div(cols).unwrap_or(0).min(out.len());
    let (out, none) = out.split_at_mut(rows);
    none.fill(0);
    let mut blocks = q.chunks_exact(4 * cols.max(1));
    let mut outs = out.chunks_exact_mut(4);
    for (o, b) in (&mut outs).zip(&mut blocks) {
        let row = |k: usize| &b[k * cols..k * cols + n];
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
        let mut acc = [0i32; 4];
        for (j, &v) in x.iter().enumerate() {
            let v = i32::from(v);
            acc[0] += i32::from(r0[j]) * v;
            acc[1] += i32::from(r1[j]) * v;
            acc[2] += i32::from(r2[j]) * v;
            acc[3] += i32::from(r3[j]) * v;
        }
        o.copy_from_slice(&acc);
    }
    for (o, r) in outs.into_remainder().iter_mut().zip(blocks.remainder().chunks_exact(cols.max(1))) {
        *o = r[..n].iter().zip(x).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
    }
}

/// Exact `Σ q·x` where `q` is int4 packed two per byte (low nibble first) and `x` holds the
/// matching int8 values (an odd `x` uses only the last byte's low nibble).
#[inline]
pub fn dot_i4(packed: &[u8], x: &[i8]) -> i32 {
    const B: usize = 16;
    let mut acc = 0i32;
    let (pc, xc) = (packed.chunks_exact(B), x.chunks_exact(2 * B));
    let (pr, xr) = (pc.remainder(), xc.remainder());
    for (p, xs) in pc.zip(xc) {
        let mut w = [0i8; 2 * B];
        for i in 0..B {
            w[2 * i] = lo_nibble(p[i]);
            w[2 * i + 1] = hi_nibble(p[i]);
        }
        let mut lanes = [0i32; 2 * B];
        for i in 0..2 * B {
            lanes[i] = w[i] as i32 * xs[i] as i32;
        }
        acc += lanes.iter().sum::<i32>();
    }
    for (j, &v) in xr.iter().enumerate() {
        let b = pr.get(j / 2).copied().unwrap_or(0);
        let w = if j % 2 == 0 { lo_nibble(b) } else { hi_nibble(b) };
        acc += w as i32 * v as i32;
    }
    acc
}

/// Dot product with eight independent accumulators, a shape LLVM vectorises.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b, |v| v)
}

/// [`dot_f32`] of `a` converted (exactly) to f32, in the same order of operations.
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    dot_lanes(a, b, f16_to_f32)
}

/// Exact binary16 → binary32 (same value as `half`'s; NaNs stay NaN with their payload),
/// branch-free bit arithmetic that vectorises, with no subnormal float arithmetic.
#[inline(always)]
pub fn f16_to_f32(h: f16) -> f32 {
    let h = h.to_bits() as u32;
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1F;
    let mant = h & 0x03FF;
    // Every candidate is computed and one selected, so the loop stays branch-free.
    let normal = ((exp + 112) << 23) | (mant << 13);
    // Zero or subnormal: mant · 2^-24, exact and normal in f32.
    let subnormal = (mant as i32 as f32 * (1.0 / 16_777_216.0)).to_bits();
    let special = 0x7F80_0000 | (mant << 13);
    let bits = if exp == 0 { subnormal } else { normal };
    let bits = if exp == 0x1F { special } else { bits };
    f32::from_bits(sign | bits)
}

/// `Σ f(a_i)·b_i` over the common length of `a` and `b`: eight interleaved lanes
/// (`acc += f(a)·b`, no fused multiply-add), [`reduce8`], then the tail in order. The one
/// order every f32 product of the core follows (the x86 paths reproduce it lane by lane).
#[inline(always)]
pub(super) fn dot_lanes<T: Copy>(a: &[T], b: &[f32], f: impl Fn(T) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (ac, ar) = a[..n].as_chunks::<8>();
    let (bc, br) = b[..n].as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..8 {
            acc[i] += f(x[i]) * y[i];
        }
    }
    let tail = ar.iter().zip(br).fold(0.0f32, |t, (x, y)| t + f(*x) * y);
    reduce8(&acc) + tail
}

/// A quantized row's output from its one group's exact sum `acc` (converted to f32: exact
/// below 2^24, and the same rounding from i32 or i64) and scale: `(0 + acc · scale) · sx`,
/// the one-group case of every row's `(0 + Σ_g acc_g·scale_g) · sx` (see [`i8_group_rows`]).
/// Every kernel path computes these operations in this order, so all give the same bits.
#[inline(always)]
pub(super) fn row_value1(acc: i32, scale: f32, sx: f32) -> f32 {
    (0.0 + acc as f32 * scale) * sx
}

/// `y[r] = W[r]·x` for row-major f32 `w`, one row at a time: the portable build serves FPUs
/// with few registers (Cortex-M4F: 32 singles), where four rows of eight lanes would spill.
#[inline(always)]
pub(super) fn f32_rows(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
        *out = dot_lanes(row, x, |v| v);
    }
}

/// `y_t = W·x_t` for `n` inputs `xs` apart into outputs `ys` apart, each row read once for
/// every input. The caller has checked that the first `n` rows of `x` (`cols` each) and of
/// `y` (one value per row of `w`) are in bounds. Out of line, so its float registers are
/// not saved in the frame of `Matrix::matmul`, which calls the matvec.
#[inline(never)]
pub(super) fn f32_block(w: &[f32], cols: usize, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for t in 0..n {
            y[t * ys + r] = dot_f32(row, &x[t * xs..t * xs + cols]);
        }
    }
}

/// `y[r] = W[r]·x` for row-major f16 `w`, in [`dot_f16`]'s order.
#[inline(always)]
pub(super) fn f16_rows(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
        *out = dot_lanes(row, x, f16_to_f32);
    }
}

/// `y[r] = (Σ (q − zero_point)·x) · scale` per row, the sum in [`dot_f32`]'s order.
#[inline(always)]
pub(super) fn i8_affine_rows(q: &[i8], cols: usize, zero_point: i8, scale: f32, x: &[f32], y: &mut [f32]) {
    for (row, out) in q.chunks_exact(cols).zip(y.iter_mut()) {
        *out = dot_lanes(row, x, |v| affine(v, zero_point)) * scale;
    }
}

/// `y[r] = (Σ q·x) · scale` per row of packed int4 (rows start on a byte), the sum in
/// [`dot_f32`]'s order: eight lanes over the row's first multiple of eight, then the tail.
#[inline(always)]
pub(super) fn i4_tensor_rows(packed: &[u8], cols: usize, scale: f32, x: &[f32], y: &mut [f32]) {
    let row_bytes = cols.div_ceil(2);
    for (row, out) in packed.chunks_exact(row_bytes.max(1)).zip(y.iter_mut()) {
        let n = cols.min(x.len());
        let (xc, xr) = x[..n].as_chunks::<8>();
        let mut acc = [0.0f32; 8];
        let (words, _) = row.as_chunks::<4>();
        for (word, x) in words.iter().zip(xc) {
            // Eight nibbles, low first: value i is bits 4i..4i+4, sign-extended.
            let w = u32::from_le_bytes(*word);
            for i in 0..8 {
                let nibble = ((w >> (4 * i)) & 0xF) as i32;
                acc[i] += ((nibble ^ 8) - 8) as f32 * x[i];
            }
        }
        let done = xc.len() * 8;
        let tail = xr.iter().enumerate().fold(0.0f32, |t, (i, &xv)| {
            let c = done + i;
            let b = row.get(c / 2).copied().unwrap_or(0);
            let q = if c % 2 == 0 { lo_nibble(b) } else { hi_nibble(b) };
            t + f32::from(q) * xv
        });
        *out = (reduce8(&acc) + tail) * scale;
    }
}

/// A weight-only matrix's rows as a blocked product reads them: eight weights at a time
/// converted exactly to f32, single weights for a row's tail, and the factor every row's sum
/// is multiplied by. One implementation per storage format, so the block code is written
/// once (here and in `x86.rs`) and each format only says how its weights are read.
pub(super) trait WeightRows: Copy {
    /// Number of rows.
    fn rows(self) -> usize;
    /// Weights per row.
    fn cols(self) -> usize;
    /// Weights `8k..8k + 8` of row `r` as f32 (`8k + 8 <= cols`, `r < rows`).
    fn chunk8(self, r: usize, k: usize) -> [f32; 8];
    /// Weight `c` of row `r` as f32.
    fn get(self, r: usize, c: usize) -> f32;
    /// What each row's sum is multiplied by, or `None` (used as it is).
    fn scale(self) -> Option<f32>;
}

/// Row-major f32 rows (the AVX2 tiles' f32 product; the reference's is [`f32_block`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(super) struct F32Rows<'a> {
    /// Elements, whole rows of `cols`.
    pub w: &'a [f32],
    /// Weights per row (nonzero).
    pub cols: usize,
}

/// Per-tensor affine int8 rows, [`i8_affine_rows`]'s: `(Σ (q − zero_point)·x) · scale`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AffineRows<'a> {
    /// Elements, whole rows of `cols`.
    pub q: &'a [i8],
    /// Weights per row (nonzero).
    pub cols: usize,
    /// Subtracted from every element.
    pub zero_point: i8,
    /// The tensor's scale.
    pub scale: f32,
}

/// Packed int4 rows with one scale for the tensor, [`i4_tensor_rows`]'s: `(Σ q·x) · scale`.
#[derive(Clone, Copy, Debug)]
pub(super) struct NibbleRows<'a> {
    /// Packed elements, whole rows of `ceil(cols / 2)` bytes.
    pub packed: &'a [u8],
    /// Weights per row (nonzero).
    pub cols: usize,
    /// The tensor's scale.
    pub scale: f32,
}

#[cfg(target_arch = "x86_64")]
impl WeightRows for F32Rows<'_> {
    #[inline(always)]
    fn rows(self) -> usize {
        self.w.len() / self.cols
    }
    #[inline(always)]
    fn cols(self) -> usize {
        self.cols
    }
    #[inline(always)]
    fn chunk8(self, r: usize, k: usize) -> [f32; 8] {
        let at = r * self.cols + 8 * k;
        self.w[at..at + 8].try_into().unwrap_or([0.0; 8])
    }
    #[inline(always)]
    fn get(self, r: usize, c: usize) -> f32 {
        self.w[r * self.cols + c]
    }
    #[inline(always)]
    fn scale(self) -> Option<f32> {
        None
    }
}

impl WeightRows for AffineRows<'_> {
    #[inline(always)]
    fn rows(self) -> usize {
        self.q.len() / self.cols
    }
    #[inline(always)]
    fn cols(self) -> usize {
        self.cols
    }
    #[inline(always)]
    fn chunk8(self, r: usize, k: usize) -> [f32; 8] {
        let at = r * self.cols + 8 * k;
        let q: &[i8; 8] = self.q[at..at + 8].try_into().unwrap_or(&[0; 8]);
        q.map(|v| affine(v, self.zero_point))
    }
    #[inline(always)]
    fn get(self, r: usize, c: usize) -> f32 {
        affine(self.q[r * self.cols + c], self.zero_point)
    }
    #[inline(always)]
    fn scale(self) -> Option<f32> {
        Some(self.scale)
    }
}

impl WeightRows for NibbleRows<'_> {
    #[inline(always)]
    fn rows(self) -> usize {
        self.packed.len() / self.cols.div_ceil(2)
    }
    #[inline(always)]
    fn cols(self) -> usize {
        self.cols
    }
    #[inline(always)]
    fn chunk8(self, r: usize, k: usize) -> [f32; 8] {
        // Eight nibbles, low first: value i is bits 4i..4i+4 of the word, sign-extended.
        let at = r * self.cols.div_ceil(2) + 4 * k;
        let w = u32::from_le_bytes(self.packed[at..at + 4].try_into().unwrap_or([0; 4]));
        core::array::from_fn(|i| ((((w >> (4 * i)) & 0xF) as i32 ^ 8) - 8) as f32)
    }
    #[inline(always)]
    fn get(self, r: usize, c: usize) -> f32 {
        let b = self.packed[r * self.cols.div_ceil(2) + c / 2];
        f32::from(if c.is_multiple_of(2) { lo_nibble(b) } else { hi_nibble(b) })
    }
    #[inline(always)]
    fn scale(self) -> Option<f32> {
        Some(self.scale)
    }
}

/// Weights a blocked product converts at a time (256 bytes of stack, with as much again
/// for the block's accumulators: affordable on a Cortex-M0+).
const CONVERTED: usize = 64;
/// Tokens a row is computed against per conversion: a whole prefill block.
const TOKENS: usize = 8;

/// `y_t = W·x_t` for `n` inputs `xs` apart into outputs `ys` apart, each output in
/// [`dot_f32`]'s order then times [`WeightRows::scale`]: bit for bit what
/// [`i8_affine_rows`] and [`i4_tensor_rows`] give. A row at a time against up to eight
/// inputs: [`CONVERTED`] weights are converted to f32 once for the eight, then each input's
/// eight lanes run over them as [`dot_lanes`] does (a loop every target vectorises as it does
/// the matvec's). The caller has checked that the first `n` rows of `x` (`cols` each) and
/// of `y` (`rows` each) are in bounds.
#[inline(never)]
pub(super) fn weight_rows_block(w: impl WeightRows, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
    let cols = w.cols();
    let body = cols / 8 * 8;
    let mut converted = [0.0f32; CONVERTED];
    for r in 0..w.rows() {
        for t in (0..n).step_by(TOKENS) {
            let tokens = TOKENS.min(n - t);
            let mut acc = [[0.0f32; 8]; TOKENS];
            for start in (0..body).step_by(CONVERTED) {
                let len = CONVERTED.min(body - start);
                let (wc, _) = converted[..len].as_chunks_mut::<8>();
                for (k, c) in wc.iter_mut().enumerate() {
                    *c = w.chunk8(r, start / 8 + k);
                }
                for (m, acc) in acc[..tokens].iter_mut().enumerate() {
                    let at = (t + m) * xs + start;
                    let (xc, _) = x[at..at + len].as_chunks::<8>();
                    for (wv, xv) in wc.iter().zip(xc) {
                        for i in 0..8 {
                            acc[i] += wv[i] * xv[i];
                        }
                    }
                }
            }
            for (m, acc) in acc[..tokens].iter().enumerate() {
                let xt = &x[(t + m) * xs..(t + m) * xs + cols];
                let tail = (body..cols).fold(0.0f32, |s, c| s + w.get(r, c) * xt[c]);
                let sum = reduce8(acc) + tail;
                y[(t + m) * ys + r] = w.scale().map_or(sum, |s| sum * s);
            }
        }
    }
}

/// `q − zero_point` as f32, exact: both are i8, so the difference (−255..=255) fits an i16.
#[inline(always)]
pub(super) fn affine(q: i8, zero_point: i8) -> f32 {
    f32::from(i16::from(q) - i16::from(zero_point))
}

/// Rows of one scale each, `y[r] = (0 + Σ q·xq · scale_r) · sx` ([`row_value1`]), with the
/// whole-row sums from `dots` (`dots(rows, out)` as [`i8_row_dots`] over `cols`-column rows),
/// a block of rows per call.
#[inline(always)]
pub(super) fn i8_rows(
    q: &[i8],
    cols: usize,
    scales: &Scales<'_>,
    sx: f32,
    y: &mut [f32],
    mut dots: impl FnMut(&[i8], &mut [i32]),
) {
    const BLOCK: usize = 8;
    let mut acc = [0i32; BLOCK];
    for (b, (rows, out)) in q.chunks(BLOCK * cols.max(1)).zip(y.chunks_mut(BLOCK)).enumerate() {
        let acc = &mut acc[..out.len()];
        dots(rows, acc);
        for (k, (o, &a)) in out.iter_mut().zip(acc.iter()).enumerate() {
            *o = row_value1(a, scales.get(b * BLOCK + k), sx);
        }
    }
}

/// Int8 rows in groups of `group` along each row against the first `xq.len()` (at most
/// `cols`) columns, each group's exact sum from `dot`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn i8_group_rows(
    q: &[i8],
    cols: usize,
    group: usize,
    xq: &[i8],
    scales: &Scales<'_>,
    sx: f32,
    y: &mut [f32],
    dot: impl Fn(&[i8], &[i8]) -> i32,
) {
    let groups = cols.div_ceil(group);
    for (r, (row, out)) in q.chunks_exact(cols).zip(y.iter_mut()).enumerate() {
        // The row's value: `(0 + Σ_g acc_g·scale_g) · sx`, the groups in order.
        let mut sum = 0.0f32;
        for (g, (wg, xg)) in row[..xq.len()].chunks(group).zip(xq.chunks(group)).enumerate() {
            sum += dot(wg, xg) as f32 * scales.get(r * groups + g);
        }
        *out = sum * sx;
    }
}

/// Int4 rows (`ceil(cols / 2)` bytes each) in groups of `group` along each row, against
/// the first `xq.len()` columns.
#[inline(always)]
pub(super) fn i4_rows(
    packed: &[u8],
    cols: usize,
    group: usize,
    xq: &[i8],
    scales: &Scales<'_>,
    sx: f32,
    y: &mut [f32],
) {
    let groups = cols.div_ceil(group);
    let row_bytes = cols.div_ceil(2);
    // `group` is even (or covers the row), so every group starts on a byte.
    let group_bytes = group.div_ceil(2);
    for (r, (row, out)) in packed.chunks_exact(row_bytes).zip(y.iter_mut()).enumerate() {
        let mut sum = 0.0f32;
        for (g, (pg, xg)) in row.chunks(group_bytes).zip(xq.chunks(group)).enumerate() {
            sum += dot_i4(pg, xg) as f32 * scales.get(r * groups + g);
        }
        *out = sum * sx;
    }
}

/// Index of the largest value; the first of equals. NaN never wins (all NaN: 0).
///
/// Two passes (the maximum in eight independent lanes, then its first position) instead of
/// one index-chasing loop: both vectorise, and `vocab` is the longest vector of a token.
#[inline(always)]
pub(super) fn argmax(v: &[f32]) -> u32 {
    let (chunks, rest) = v.as_chunks::<8>();
    let mut lanes = [f32::NEG_INFINITY; 8];
    // `if` rather than `f32::max` (a libm call on FPUs without VMAXNM); NaN never compares
    // greater, so it is skipped either way.
    let pick = |m: f32, x: f32| if x > m { x } else { m };
    for c in chunks {
        for (lane, &x) in lanes.iter_mut().zip(c) {
            *lane = pick(*lane, x);
        }
    }
    let max = rest.iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |m, &x| pick(m, x)), |m, &x| pick(m, x));
    // The first position of `max`: whole chunks compared at once, then the lane.
    let block = chunks.iter().position(|c| c.iter().fold(false, |hit, &x| hit | (x == max)));
    let at = match block {
        Some(b) => chunks.get(b).and_then(|c| c.iter().position(|&x| x == max)).map(|i| b * 8 + i),
        None => rest.iter().position(|&x| x == max).map(|i| chunks.len() * 8 + i),
    };
    at.unwrap_or(0) as u32
}
