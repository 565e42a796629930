//! The kernels: every weight matrix of the model is a [`Matrix`], and the forward pass only
//! ever asks one for `y = W·x` or for one of its rows. Each storage format (f32, f16, int8,
//! int4) implements those two operations here and nowhere else.
//!
//! Integer matrices compute with integers: [`Matrix::matvec`] quantizes the input once per
//! call to symmetric int8 (`sx = max|x| / 127`, `xq = round(x · 127 / max|x|)`, within ±127) into a
//! caller-provided scratch buffer, accumulates `q·xq` exactly in `i32` per scale group, and
//! rescales once per group: `y = (Σ_g (Σ q·xq) as f32 · scale_g) · sx`. Integer sums
//! are exact and every float operation runs in a fixed order (no fused multiply-add), so the
//! result is bit-identical on every target.

use half::f16;

use crate::math::reduce8;

// The only unsafe code of the core: SIMD intrinsics behind runtime detection (x86-64) and
// DSP instructions the target always has (Cortex-M4 and up).
#[cfg(itera_arm_dsp)]
#[allow(unsafe_code)]
mod arm_dsp;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86;

/// Longest row (`cols`) an integer matrix may have: keeps every per-group `i32` sum of
/// `q · xq` (each at most 128 · 127 in magnitude) far from overflow.
pub const MAX_INT_COLS: usize = 1 << 16;

/// A quantized matrix's scale table, borrowed from the blob.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    /// One f32 scale per group.
    F32(&'a [f32]),
    /// One f16 scale per group (converted exactly to f32 when used).
    F16(&'a [f16]),
}

impl Scales<'_> {
    /// Scale number `i` (row-major over `rows × groups_per_row`).
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match *self {
            Scales::F32(s) => s.get(i).copied().unwrap_or(0.0),
            Scales::F16(s) => s.get(i).map_or(0.0, |v| f16_to_f32(*v)),
        }
    }

    /// The scales from row `rows` on (`groups` per row).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn skip_rows(&self, rows: usize, groups: usize) -> Self {
        let from = rows.saturating_mul(groups);
        match *self {
            Scales::F32(s) => Scales::F32(s.get(from..).unwrap_or(&[])),
            Scales::F16(s) => Scales::F16(s.get(from..).unwrap_or(&[])),
        }
    }

    /// The first `count` scales (all of them if fewer).
    fn head(&self, count: usize) -> Self {
        match *self {
            Scales::F32(s) => Scales::F32(s.get(..count).unwrap_or(s)),
            Scales::F16(s) => Scales::F16(s.get(..count).unwrap_or(s)),
        }
    }

    /// Whether the table holds the `count` scales a matrix needs.
    fn holds(&self, count: usize) -> bool {
        match self {
            Scales::F32(s) => s.len() == count,
            Scales::F16(s) => s.len() == count,
        }
    }
}

/// How a matrix's elements are stored, borrowed in place from the blob.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// Row-major f32.
    F32(&'a [f32]),
    /// Row-major IEEE binary16, computed in f32.
    F16(&'a [f16]),
    /// Row-major symmetric int8: `value = q · scale_g`, one scale per `group` consecutive
    /// elements of a row (`group >= cols`: one per row). Products run in integers against
    /// the input quantized to int8 (see the module docs).
    I8 {
        /// Elements, `rows * cols`.
        q: &'a [i8],
        /// Scales, `rows * ceil(cols / group)`.
        scales: Scales<'a>,
        /// Elements per scale along a row.
        group: usize,
    },
    /// Row-major int8 with one affine pair for the whole tensor (PyTorch's per-tensor
    /// `qint8`): `value = (q − zero_point) · scale`. Weight-only: products run in f32 against
    /// the unquantized input, `y = (Σ (q − zero_point)·x) · scale` in [`dot_f32`]'s order, so
    /// a checkpoint kept as it is computes what its dequantized float model computes.
    I8Affine {
        /// Elements, `rows * cols`.
        q: &'a [i8],
        /// Scale.
        scale: f32,
        /// Zero point subtracted from every `q`: qint8's own range, so `q − zero_point` lies in
        /// −255..=255 and no arithmetic on it can overflow.
        zero_point: i8,
    },
    /// Row-major int4 in −8..=7, two per byte (low nibble first); every row starts on a byte
    /// (`ceil(cols / 2)` bytes per row). `value = q · scale_g`, one scale per `group` elements
    /// of a row; `group` is even unless it covers the whole row.
    I4 {
        /// Packed elements, `rows * ceil(cols / 2)` bytes.
        packed: &'a [u8],
        /// Scales, `rows * ceil(cols / group)`.
        scales: Scales<'a>,
        /// Elements per scale along a row.
        group: usize,
    },
}

/// A `rows × cols` row-major weight matrix.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    rows: usize,
    cols: usize,
    weights: Weights<'a>,
}

impl<'a> Matrix<'a> {
    /// A matrix over `weights`; `None` unless they hold exactly `rows * cols` elements (and,
    /// for quantized weights, the scales those need, a nonzero group, at most
    /// [`MAX_INT_COLS`] columns, and for int4 an even group or one group per row).
    pub fn new(rows: usize, cols: usize, weights: Weights<'a>) -> Option<Self> {
        let n = rows.checked_mul(cols)?;
        let scale_count = |group: usize| rows.checked_mul(cols.div_ceil(group));
        let ok = match weights {
            Weights::F32(w) => w.len() == n,
            Weights::F16(w) => w.len() == n,
            Weights::I8 { q, scales, group } => {
                group > 0 && cols <= MAX_INT_COLS && q.len() == n && scales.holds(scale_count(group)?)
            }
            Weights::I8Affine { q, scale, .. } => q.len() == n && scale.is_finite(),
            Weights::I4 { packed, scales, group } => {
                group > 0
                    && (group % 2 == 0 || group >= cols)
                    && cols <= MAX_INT_COLS
                    && Some(packed.len()) == rows.checked_mul(cols.div_ceil(2))
                    && scales.holds(scale_count(group)?)
            }
        };
        ok.then_some(Matrix { rows, cols, weights })
    }

    /// The first `rows` rows (all of them if fewer), as a matrix of their own: a view of the
    /// same storage, each row computed exactly as before.
    pub fn top(&self, rows: usize) -> Self {
        let rows = rows.min(self.rows);
        let head = |len: usize| len.min(rows.saturating_mul(self.cols));
        let groups = |group: usize| rows.saturating_mul(self.cols.div_ceil(group.max(1)));
        let weights = match self.weights {
            Weights::F32(w) => Weights::F32(w.get(..head(w.len())).unwrap_or(w)),
            Weights::F16(w) => Weights::F16(w.get(..head(w.len())).unwrap_or(w)),
            Weights::I8 { q, scales, group } => {
                Weights::I8 { q: q.get(..head(q.len())).unwrap_or(q), scales: scales.head(groups(group)), group }
            }
            Weights::I8Affine { q, scale, zero_point } => {
                Weights::I8Affine { q: q.get(..head(q.len())).unwrap_or(q), scale, zero_point }
            }
            Weights::I4 { packed, scales, group } => {
                let bytes = rows.saturating_mul(self.cols.div_ceil(2));
                Weights::I4 { packed: packed.get(..bytes).unwrap_or(packed), scales: scales.head(groups(group)), group }
            }
        };
        Matrix { rows, cols: self.cols, weights }
    }

    /// Output length of [`Matrix::matvec`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input length of [`Matrix::matvec`].
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage this matrix reads.
    pub fn weights(&self) -> &Weights<'a> {
        &self.weights
    }

    /// Whether [`Matrix::matvec`] needs `cols` bytes of int8 scratch.
    pub fn needs_scratch(&self) -> bool {
        matches!(self.weights, Weights::I8 { .. } | Weights::I4 { .. })
    }

    /// Which kernel computes with this matrix (for reports).
    pub fn kernel_name(&self) -> &'static str {
        match self.weights {
            Weights::F32(_) if avx2() => "f32-avx2",
            Weights::F32(_) => "f32-scalar",
            Weights::F16(_) if avx2() => "f16-f16c",
            Weights::F16(_) => "f16-scalar",
            Weights::I8Affine { .. } if avx2() => "i8w-avx2",
            Weights::I8Affine { .. } => "i8w-scalar",
            Weights::I8 { .. } if simd_path() == "avx2-vnni" => "i8-avx2-vnni",
            Weights::I8 { .. } if simd_path() == "avx2" => "i8-avx2",
            Weights::I8 { .. } => "i8-scalar",
            Weights::I4 { .. } if avx2() => "i4-avx2",
            Weights::I4 { .. } => "i4-scalar",
        }
    }

    /// `y = W·x`. `x` must hold `cols` values and `y` `rows`; integer matrices also need
    /// `scratch` of `cols` bytes (float ones ignore it). Shorter slices compute a prefix (the
    /// model sizes every buffer from the same config, so they always match). Never panics.
    #[allow(unsafe_code)] // calls into `x86`, only once AVX2 was enabled
    pub fn matvec(&self, x: &[f32], y: &mut [f32], scratch: &mut [i8]) {
        let cols = self.cols.max(1);
        let rows = self.rows.min(y.len());
        let y = &mut y[..rows];
        match self.weights {
            Weights::F32(w) => {
                let x = &x[..cols.min(x.len())];
                #[cfg(target_arch = "x86_64")]
                if x86::avx2() {
                    // SAFETY: `x86::avx2()` is true only after `enable_avx2`, whose caller
                    // guarantees that this CPU has AVX2.
                    return unsafe { x86::f32_rows(w, cols, x, y) };
                }
                f32_rows(w, cols, x, y);
            }
            Weights::F16(w) => {
                #[cfg(target_arch = "x86_64")]
                if x86::avx2() {
                    // SAFETY: AVX2 and F16C are present (see `enable_avx2`).
                    return unsafe { x86::f16_rows(w, cols, x, y) };
                }
                for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
                    *out = dot_f16(row, x);
                }
            }
            Weights::I8Affine { q, scale, zero_point } => {
                let x = &x[..cols.min(x.len())];
                #[cfg(target_arch = "x86_64")]
                if x86::avx2() {
                    // SAFETY: AVX2 is present (see `enable_avx2`).
                    return unsafe { x86::i8_affine_rows(q, cols, zero_point, scale, x, y) };
                }
                i8_affine_rows(q, cols, zero_point, scale, x, y);
            }
            Weights::I8 { q, scales, group } => {
                let n = cols.min(x.len()).min(scratch.len());
                let xq = &mut scratch[..n];
                let Some(sx) = quantize_input(&x[..n], xq) else {
                    y.iter_mut().for_each(|v| *v = 0.0);
                    return;
                };
                let xq = &*xq;
                let groups = cols.div_ceil(group);
                if groups == 1 && n == cols {
                    // One scale per row: whole-row integer dots, four rows at a time.
                    #[cfg(target_arch = "x86_64")]
                    if x86::avx2() {
                        // SAFETY: as above, AVX2 is present; q holds rows x cols, xq cols.
                        unsafe { x86::i8_rows(q, cols, xq, &scales, sx, y) };
                        return;
                    }
                    #[cfg(itera_arm_dsp)]
                    arm_dsp::i8_rows(q, cols, xq, &scales, sx, y);
                    #[cfg(not(itera_arm_dsp))]
                    {
                        let row_sum = |r: usize, acc: i32| row_value1(acc, scales.get(r), sx);
                        i8_rows(q, cols, xq, y, row_sum);
                    }
                    return;
                }
                for (r, (row, out)) in q.chunks_exact(cols).zip(y.iter_mut()).enumerate() {
                    let accs = row[..n]
                        .chunks(group)
                        .zip(xq.chunks(group))
                        .enumerate()
                        .map(|(g, (wg, xg))| (dot_i8(wg, xg) as f32, scales.get(r * groups + g)));
                    *out = row_value(accs, sx);
                }
            }
            Weights::I4 { packed, scales, group } => {
                let n = cols.min(x.len()).min(scratch.len());
                let xq = &mut scratch[..n];
                let Some(sx) = quantize_input(&x[..n], xq) else {
                    y.iter_mut().for_each(|v| *v = 0.0);
                    return;
                };
                #[cfg(itera_arm_dsp)]
                if n == cols && arm_dsp::i4_rows(packed, cols, group, xq, &scales, sx, y) {
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if let (true, 8 | 32, Scales::F16(s)) =
                    (x86::avx2() && n == cols && cols.is_multiple_of(64) && cols <= 512, group, scales)
                {
                    // SAFETY: AVX2 and F16C are present (VNNI where `i4_rows_64` takes it); the
                    // sizes were checked by `Matrix::new` and above.
                    unsafe { x86::i4_rows_64()(packed, cols, group, xq, s, sx, y) };
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if x86::avx2() && group == 32 && n == cols && cols.is_multiple_of(32) {
                    // SAFETY: as above, AVX2 is present; packed holds rows x cols/2 bytes.
                    unsafe { x86::i4_rows(packed, cols, xq, &scales, sx, y) };
                    return;
                }
                let xq = &*xq;
                let groups = cols.div_ceil(group);
                let row_bytes = cols.div_ceil(2);
                // `group` is even (or covers the row), so every group starts on a byte.
                let group_bytes = group.div_ceil(2);
                for (r, (row, out)) in packed.chunks_exact(row_bytes).zip(y.iter_mut()).enumerate() {
                    let accs = row
                        .chunks(group_bytes)
                        .zip(xq.chunks(group))
                        .enumerate()
                        .map(|(g, (pg, xg))| (dot_i4(pg, xg) as f32, scales.get(r * groups + g)));
                    *out = row_value(accs, sx);
                }
            }
        }
    }

    /// `y_t = W·x_t` for the first `n` rows `x_t` of `x` (`x_stride` apart) into the rows
    /// of `y` (`y_stride` apart): a block of tokens at once. Each result is bit for bit
    /// what [`Matrix::matvec`] gives for that row; f32 weights are read once per block
    /// (each row against every token), the other formats run token by token.
    #[allow(unsafe_code)] // calls into `x86`, only once AVX2 was enabled
    pub fn matmul(&self, x: &[f32], x_stride: usize, y: &mut [f32], y_stride: usize, n: usize, scratch: &mut [i8]) {
        let (cols, rows) = (self.cols.max(1), self.rows);
        if let Weights::F32(w) = self.weights {
            let fits = x_stride >= cols
                && y_stride >= rows
                && n.checked_mul(x_stride).is_some_and(|l| l <= x.len() + x_stride - cols)
                && n.checked_mul(y_stride).is_some_and(|l| l <= y.len() + y_stride - rows);
            if n > 1 && fits {
                #[cfg(target_arch = "x86_64")]
                if x86::avx2() {
                    // SAFETY: AVX2 is present (see `enable_avx2`); `fits` checked the strides.
                    return unsafe { x86::f32_block(w, cols, x, x_stride, y, y_stride, n) };
                }
                for (r, row) in w.chunks_exact(cols).enumerate() {
                    for t in 0..n {
                        y[t * y_stride + r] = dot_f32(row, &x[t * x_stride..t * x_stride + cols]);
                    }
                }
                return;
            }
        }
        let xs = x.chunks(x_stride.max(1));
        for (x, y) in xs.zip(y.chunks_mut(y_stride.max(1))).take(n) {
            self.matvec(x, y, scratch);
        }
    }

    /// `out += W[row, ..]` (embedding and position lookup), dequantizing as stored.
    pub fn add_row(&self, row: usize, out: &mut [f32]) {
        if row >= self.rows {
            return;
        }
        let cols = self.cols;
        match self.weights {
            Weights::F32(w) => {
                let r = w.get(row * cols..(row + 1) * cols).unwrap_or(&[]);
                for (o, v) in out.iter_mut().zip(r) {
                    *o += v;
                }
            }
            Weights::F16(w) => {
                let r = w.get(row * cols..(row + 1) * cols).unwrap_or(&[]);
                for (o, v) in out.iter_mut().zip(r) {
                    *o += f16_to_f32(*v);
                }
            }
            Weights::I8 { q, scales, group } => {
                let r = q.get(row * cols..(row + 1) * cols).unwrap_or(&[]);
                let groups = cols.div_ceil(group);
                for (g, (o, r)) in out.chunks_mut(group).zip(r.chunks(group)).enumerate() {
                    let s = scales.get(row * groups + g);
                    for (o, &v) in o.iter_mut().zip(r) {
                        *o += v as f32 * s;
                    }
                }
            }
            Weights::I8Affine { q, scale, zero_point } => {
                let r = q.get(row * cols..(row + 1) * cols).unwrap_or(&[]);
                for (o, &v) in out.iter_mut().zip(r) {
                    *o += affine(v, zero_point) * scale;
                }
            }
            Weights::I4 { packed, scales, group } => {
                let rb = cols.div_ceil(2);
                let r = packed.get(row * rb..(row + 1) * rb).unwrap_or(&[]);
                let groups = cols.div_ceil(group);
                // `group` is even (or covers the row): each group starts on a byte.
                let n = cols.min(out.len());
                let out = &mut out[..n];
                for (g, (o, bytes)) in out.chunks_mut(group).zip(r.chunks(group.div_ceil(2))).enumerate() {
                    let s = scales.get(row * groups + g);
                    for (pair, &b) in o.chunks_mut(2).zip(bytes) {
                        for (o, v) in pair.iter_mut().zip([lo_nibble(b), hi_nibble(b)]) {
                            *o += v as f32 * s;
                        }
                    }
                }
            }
        }
    }
}

/// One row's output from its integer group sums (converted to f32: exact below 2^24, and
/// the same rounding from i32 or i64) and their scales, in a fixed order:
/// `(0 + Σ_g acc_g·scale_g) · sx`. Every kernel path ends here, so all give the same bits.
#[inline(always)]
fn row_value(groups: impl Iterator<Item = (f32, f32)>, sx: f32) -> f32 {
    let mut sum = 0.0f32;
    for (acc, scale) in groups {
        sum += acc * scale;
    }
    sum * sx
}

/// [`row_value`] of a row with one scale: `(0 + acc · scale) · sx`.
#[inline(always)]
pub(crate) fn row_value1(acc: i32, scale: f32, sx: f32) -> f32 {
    (0.0 + acc as f32 * scale) * sx
}

/// `y[r] = W[r]·x` for row-major f32 `w`, one row at a time: the portable build serves FPUs
/// with few registers (Cortex-M4F: 32 singles), where four rows of eight lanes would spill.
/// x86-64 takes `x86::f32_rows`, four rows at a time, with the same per-row order.
#[inline(always)]
fn f32_rows(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
        *out = dot_f32(row, x);
    }
}

/// `y[r] = (Σ (q − zero_point)·x) · scale` per row, the sum in [`dot_f32`]'s order.
#[inline(always)]
fn i8_affine_rows(q: &[i8], cols: usize, zero_point: i8, scale: f32, x: &[f32], y: &mut [f32]) {
    for (row, out) in q.chunks_exact(cols).zip(y.iter_mut()) {
        *out = dot_lanes(row, x, |v| affine(v, zero_point)) * scale;
    }
}

/// `q − zero_point` as f32, exact: both are i8, so the difference (−255..=255) fits an i16.
#[inline(always)]
fn affine(q: i8, zero_point: i8) -> f32 {
    f32::from(i16::from(q) - i16::from(zero_point))
}

/// Whole-row int8 dots, four rows at a time; `finish(row, acc)` turns each into the output.
#[inline(always)]
#[cfg_attr(itera_arm_dsp, allow(dead_code))]
pub(crate) fn i8_rows(q: &[i8], cols: usize, xq: &[i8], y: &mut [f32], finish: impl Fn(usize, i32) -> f32) {
    let mut r = 0;
    let mut rows = q.chunks_exact(cols);
    let mut outs = y.chunks_exact_mut(4);
    for out in &mut outs {
        let (Some(a), Some(b), Some(c), Some(d)) = (rows.next(), rows.next(), rows.next(), rows.next()) else {
            return;
        };
        let acc = [dot_i8(a, xq), dot_i8(b, xq), dot_i8(c, xq), dot_i8(d, xq)];
        for (k, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
            *o = finish(r + k, acc);
        }
        r += 4;
    }
    for (k, (out, row)) in outs.into_remainder().iter_mut().zip(rows).enumerate() {
        *out = finish(r + k, dot_i8(row, xq));
    }
}

/// Which SIMD path the kernels take on this machine: `"avx2"` after [`enable_avx2`] on
/// x86-64 (`"avx2-vnni"` with AVX-512 VNNI int8 products too), otherwise `"scalar"`
/// (portable code, auto-vectorised for the build target).
pub fn simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if x86::avx2() {
        return if x86::vnni() { "avx2-vnni" } else { "avx2" };
    }
    "scalar"
}

/// Whether the x86-64 AVX2 paths are enabled (false on every other target).
#[inline(always)]
pub(crate) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::avx2();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
pub use x86::{disable_avx2, enable_avx2, enable_avx512_vnni};

/// [`crate::sample::argmax`] on the fastest path.
#[inline]
#[allow(unsafe_code)] // calls into `x86`, only once AVX2 was enabled
pub(crate) fn argmax(v: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if x86::avx2() {
        // SAFETY: AVX2 is present (see `enable_avx2`).
        return unsafe { x86::argmax(v) };
    }
    crate::sample::argmax_portable(v)
}

/// [`quantize`] on the fastest path.
#[inline(always)]
#[allow(unsafe_code)] // calls into `x86`, only once AVX2 was enabled
fn quantize_input(x: &[f32], xq: &mut [i8]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if x86::avx2() {
        // SAFETY: AVX2 is present (see `enable_avx2`).
        return unsafe { x86::quantize(x, xq) };
    }
    quantize(x, xq)
}

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
fn input_scale(amax_bits: u32) -> Option<(f32, f32)> {
    let amax = f32::from_bits(amax_bits);
    let inv = 127.0 / amax;
    (amax > 0.0 && amax.is_finite() && inv.is_finite()).then_some((inv, amax / 127.0))
}

/// Adding 1.5·2^23 rounds to the nearest integer (ties to even) in one exact f32 step.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `round(v · inv)` as int8, `v · inv` rounded to f32 first. With every |v| <= max|x| and
/// inv = 127 / max|x| rounded, |v·inv| <= 127·(1 + 2^-23)^2 < 127.5: the result is within
/// ±127, so no clamp is needed.
#[inline(always)]
fn quantize_one(v: f32, inv: f32) -> i8 {
    // The rounded integer sits in the low mantissa bits: read it there (exactly what
    // subtracting the magic number again would give).
    ((v * inv + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) as i8
}

/// The low nibble of `b` as a signed int4.
#[inline]
fn lo_nibble(b: u8) -> i8 {
    ((b << 4) as i8) >> 4
}

/// The high nibble of `b` as a signed int4.
#[inline]
fn hi_nibble(b: u8) -> i8 {
    (b as i8) >> 4
}

/// Exact `Σ a·b` over int8: adjacent products are summed in pairs into eight `i32` lanes,
/// the shape of `pmaddwd` (x86) and `SMLAD` (Cortex-M4 DSP).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(itera_arm_dsp)]
    return arm_dsp::dot_i8(a, b);
    #[cfg(not(itera_arm_dsp))]
    dot_i8_portable(a, b)
}

/// [`dot_i8`] in portable Rust.
#[inline]
#[cfg_attr(itera_arm_dsp, allow(dead_code))]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
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
fn dot_lanes<T: Copy>(a: &[T], b: &[f32], f: impl Fn(T) -> f32) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_the_definition() {
        let w: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = Matrix::new(2, 3, Weights::F32(&w)).expect("shape");
        let mut y = [0.0; 2];
        m.matvec(&[1.0, 0.5, -1.0], &mut y, &mut []);
        assert_eq!(y, [1.0 + 1.0 - 3.0, 4.0 + 2.5 - 6.0]);
        assert!(Matrix::new(4, 2, Weights::F32(&w)).is_none());
    }

    #[test]
    fn dot_handles_remainders() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b = [2.0f32; 19];
        assert_eq!(dot_f32(&a, &b), 2.0 * (0..19).sum::<i32>() as f32);
    }

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (ours, theirs) = (f16_to_f32(h), h.to_f32());
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
                assert_eq!(ours.to_bits() & 0x8000_0000, theirs.to_bits() & 0x8000_0000);
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn quantize_refuses_what_it_cannot_scale_and_never_leaves_127() {
        let mut xq = [0i8; 9];
        assert_eq!(quantize(&[0.0; 9], &mut xq), None);
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 7, 8] {
                let mut x = [0.5f32; 9];
                x[at] = bad;
                assert_eq!(quantize(&x, &mut xq), None, "{bad} at {at}");
            }
        }
        // 127 / 1e-38 overflows: refused rather than scaled by infinity.
        assert_eq!(quantize(&[1e-38, -1e-38], &mut xq[..2]), None);
        // The largest magnitude maps to exactly ±127 over many scales.
        for k in 0..2000 {
            let m = f32::from_bits(0x0300_0000 + k * 0x3_0001);
            let x = [m, -m, m * 0.999_999_9, 0.5 * m, -m * 0.999_999_9, m, 0.0, -m, m];
            let sx = quantize(&x, &mut xq).expect("finite, nonzero");
            assert_eq!((xq[0], xq[1], xq[7]), (127, -127, -127), "max {m}");
            assert!(xq.iter().all(|&q| q != i8::MIN) && sx > 0.0);
        }
    }

    /// Uniform noise in [-0.5, 0.5) from `seed`, if this CPU has AVX2 (the tests comparing
    /// the AVX2 kernels with the portable ones have nothing to compare without it).
    #[cfg(target_arch = "x86_64")]
    fn avx2_and_noise(seed: u64) -> Option<impl FnMut() -> f32> {
        let mut rng = crate::Rng::new(seed);
        std::is_x86_feature_detected!("avx2").then(move || move || rng.next_f32() - 0.5)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn avx2_quantize_gives_the_portable_bits() {
        let Some(mut next) = avx2_and_noise(7) else { return };
        for n in [0, 1, 7, 8, 31, 32, 33, 64, 100, 128, 256] {
            for scale in [1e-30f32, 1e-3, 1.0, 1e4, 3e38] {
                let mut x: Vec<f32> = (0..n).map(|_| next() * scale).collect();
                if n > 5 && scale == 1.0 {
                    x[5] = 0.5 * (x[4] + x[3]); // ties and repeats
                }
                let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
                let pa = quantize(&x, &mut a);
                // SAFETY: AVX2 was detected above.
                let pb = unsafe { x86::quantize(&x, &mut b) };
                assert_eq!(pa.map(f32::to_bits), pb.map(f32::to_bits), "n {n} scale {scale}");
                assert_eq!(a, b, "n {n} scale {scale}");
                if n > 9 {
                    x[9] = f32::NAN;
                    // SAFETY: as above.
                    assert_eq!((quantize(&x, &mut a), unsafe { x86::quantize(&x, &mut b) }), (None, None));
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn avx2_f32_products_give_the_portable_bits() {
        let Some(mut next) = avx2_and_noise(11) else { return };
        for (rows, cols) in [(1, 8), (7, 5), (8, 64), (13, 64), (16, 19), (24, 128), (3, 200)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let n = 7;
            let x: Vec<f32> = (0..n * cols).map(|_| next() * 3.0).collect();
            let want: Vec<f32> =
                (0..n * rows).map(|i| dot_f32(&w[i % rows * cols..][..cols], &x[i / rows * cols..][..cols])).collect();
            let mut y = vec![0.0f32; rows];
            // SAFETY: AVX2 was detected; the sizes match.
            unsafe { x86::f32_rows(&w, cols, &x[..cols], &mut y) };
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want[..rows].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "rows {rows} cols {cols}"
            );
            let mut block = vec![0.0f32; n * rows];
            // SAFETY: as above; n inputs `cols` apart, n outputs `rows` apart.
            unsafe { x86::f32_block(&w, cols, &x, cols, &mut block, rows, n) };
            assert_eq!(
                block.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "block {rows}x{cols}"
            );
        }
    }

    #[test]
    fn nibbles_sign_extend() {
        for v in -8i8..=7 {
            let b = (v as u8 & 0x0F) | ((v as u8) << 4);
            assert_eq!(lo_nibble(b), v);
            assert_eq!(hi_nibble(b), v);
        }
    }

    #[test]
    fn int8_matvec_is_exact_on_representable_inputs() {
        // x = [127, -127, 0] quantizes with sx = 1 exactly; scales are powers of two.
        let q: [i8; 6] = [1, 2, 3, -4, 5, -6];
        let scales = [0.5f32, 0.25];
        let m = Matrix::new(2, 3, Weights::I8 { q: &q, scales: Scales::F32(&scales), group: 3 }).expect("shape");
        let mut y = [0.0; 2];
        let mut s = [0i8; 3];
        m.matvec(&[127.0, -127.0, 0.0], &mut y, &mut s);
        assert_eq!(y, [(127.0 - 254.0) * 0.5, (-508.0 - 635.0) * 0.25]);
        // Per-tensor affine, weight-only: (q - zp) * scale against the float input.
        let m = Matrix::new(2, 3, Weights::I8Affine { q: &q, scale: 0.5, zero_point: 1 }).expect("shape");
        m.matvec(&[127.0, -127.0, 0.0], &mut y, &mut s);
        assert_eq!(y, [(0.0 - 127.0) * 0.5, (-5.0 * 127.0 - 4.0 * 127.0) * 0.5]);
        let mut row = [0.0; 3];
        m.add_row(1, &mut row);
        assert_eq!(row, [-2.5, 2.0, -3.5]);
        // Zero input: zero output.
        m.matvec(&[0.0; 3], &mut y, &mut s);
        assert_eq!(y, [0.0; 2]);
    }

    #[test]
    fn int4_rows_start_on_a_byte() {
        // 2 x 3, rows packed separately: [1, -2, 3 | pad], [-8, 7, -1 | pad].
        let packed = [0xE1u8, 0x03, 0x78, 0x0F];
        let scales = [f16::from_f32(1.0), f16::from_f32(2.0)];
        let m =
            Matrix::new(2, 3, Weights::I4 { packed: &packed, scales: Scales::F16(&scales), group: 3 }).expect("shape");
        let mut row = [0.0; 3];
        m.add_row(1, &mut row);
        assert_eq!(row, [-16.0, 14.0, -2.0]);
        let mut y = [0.0; 2];
        let mut s = [0i8; 3];
        m.matvec(&[127.0, 0.0, -127.0], &mut y, &mut s);
        assert_eq!(y, [(127.0 - 381.0), (-1016.0 + 127.0) * 2.0]);
        assert!(Matrix::new(2, 4, Weights::I4 { packed: &packed, scales: Scales::F16(&scales), group: 2 }).is_none());
        let odd = Matrix::new(1, 6, Weights::I4 { packed: &packed[..3], scales: Scales::F16(&scales), group: 3 });
        assert!(odd.is_none(), "an odd group that splits a row is refused");
    }
}
