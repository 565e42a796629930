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
//!
//! The code is split by what varies. This module holds the matrix types and writes each
//! product once, against a small backend interface (the private `Backend` trait: quantize
//! the input, rows of each format, exact int8 row dots, argmax). `portable.rs` is the
//! reference every target can run, plain Rust that reads on its own and defines the
//! results. A backend implements the operations its instructions run faster and takes the
//! rest from the reference. Chosen at build time, per target: `arm_dsp.rs` for
//! Cortex-M4/M7/M33 (`SMLAD`: the DSP extension), `armv6m.rs` for Cortex-M0/M0+/M23
//! (`LDRSB`/`MULS`, four rows per input load) and `rv32.rs` for RISC-V with the M
//! extension (immediate offsets); chosen per call on x86-64, `x86.rs` (AVX2, F16C, AVX-512
//! VNNI) once the host has detected the CPU at start and called [`enable_avx2`]. Nothing
//! below that choice tests the target or the CPU again.

use half::f16;

pub use portable::{dot_f16, dot_f32, dot_i4, f16_to_f32, quantize};
#[cfg(target_arch = "x86_64")]
pub use x86::{disable_avx2, enable_avx2, enable_avx512_vnni};

mod portable;
use portable::{affine, hi_nibble, lo_nibble};
// The only unsafe code of the core: SIMD intrinsics behind runtime detection (x86-64), DSP
// instructions the target always has (Cortex-M4 and up) and the Cortex-M0's row loop.
#[cfg(itera_arm_dsp)]
#[allow(unsafe_code)]
mod arm_dsp;
#[cfg(itera_armv6m)]
#[allow(unsafe_code)]
mod armv6m;
// Plain Rust: the host's tests run it too.
#[cfg(any(all(target_arch = "riscv32", target_feature = "m"), test))]
mod rv32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86;

// The backend of this build's target, chosen here, once, for everything below.
#[cfg(itera_arm_dsp)]
use arm_dsp::Dsp as Native;
#[cfg(itera_armv6m)]
use armv6m::Armv6m as Native;
#[cfg(not(any(itera_arm_dsp, itera_armv6m, all(target_arch = "riscv32", target_feature = "m"))))]
use portable::Portable as Native;
#[cfg(all(target_arch = "riscv32", target_feature = "m"))]
use rv32::Rv32 as Native;

/// The operations every matrix kind reduces to, one implementation per backend. Each
/// method defaults to the reference in [`portable`]; a backend overrides the ones it
/// computes faster and returns the same bits (integer sums are exact; float sums keep the
/// reference's order of operations, lane by lane). A backend value is a zero-sized proof
/// that its instructions are available (the target has them, or the host enabled them), so
/// its methods are safe to call; [`Matrix`] picks one per call and runs all its loops on it,
/// so nothing below that choice branches on the CPU or the target.
trait Backend: Copy {
    /// [`quantize`]: `x` to int8 in `xq`, returning the scale.
    #[inline(always)]
    fn quantize(self, x: &[f32], xq: &mut [i8]) -> Option<f32> {
        quantize(x, xq)
    }

    /// `y[r] = W[r]·x` over row-major f32 `w` (`cols` per row, `x` exactly `cols` long),
    /// each row in [`dot_f32`]'s order.
    #[inline(always)]
    fn f32_rows(self, w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
        portable::f32_rows(w, cols, x, y)
    }

    /// `y_t = W·x_t` for `n` inputs `xs` apart into outputs `ys` apart, each as
    /// [`Backend::f32_rows`] gives it; the caller has checked that all are in bounds.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn f32_block(self, w: &[f32], cols: usize, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
        portable::f32_block(w, cols, x, xs, y, ys, n)
    }

    /// `y_t = W·x_t` for `n` inputs `xs` apart into outputs `ys` apart over weight-only rows,
    /// each as [`Backend::i8_affine_rows`] or [`Backend::i4_tensor_rows`] gives it; the caller
    /// has checked that all are in bounds.
    #[inline(always)]
    fn weight_only_block(self, w: WeightOnly<'_>, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
        match w {
            WeightOnly::Affine(w) => portable::weight_rows_block(w, x, xs, y, ys, n),
            WeightOnly::Nibbles(w) => portable::weight_rows_block(w, x, xs, y, ys, n),
        }
    }

    /// `y[r] = W[r]·x` over row-major f16 `w`, each row in [`dot_f16`]'s order.
    #[inline(always)]
    fn f16_rows(self, w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
        portable::f16_rows(w, cols, x, y)
    }

    /// `y[r] = (Σ (q − zero_point)·x) · scale` per row, the sum in [`dot_f32`]'s order.
    #[inline(always)]
    fn i8_affine_rows(self, q: &[i8], cols: usize, zero_point: i8, scale: f32, x: &[f32], y: &mut [f32]) {
        portable::i8_affine_rows(q, cols, zero_point, scale, x, y)
    }

    /// `y[r] = (Σ q·x) · scale` per row of packed int4, the sum in [`dot_f32`]'s order.
    #[inline(always)]
    fn i4_tensor_rows(self, packed: &[u8], cols: usize, scale: f32, x: &[f32], y: &mut [f32]) {
        portable::i4_tensor_rows(packed, cols, scale, x, y)
    }

    /// Exact `Σ a·b` of two int8 slices of one length (one scale group of a row).
    #[inline(always)]
    fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        portable::dot_i8(a, b)
    }

    /// Exact `Σ q·xq` per whole row, as [`i8_row_dots`].
    #[inline(always)]
    fn i8_row_dots(self, q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        portable::i8_row_dots(q, cols, xq, out)
    }

    /// Int8 rows with one scale each against all `cols` inputs:
    /// `y[r] = (0 + Σ q·xq · scale_r) · sx`, by default from [`Backend::i8_row_dots`].
    #[inline(always)]
    fn i8_rows(self, q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
        portable::i8_rows(q, cols, scales, sx, y, |rows, out| self.i8_row_dots(rows, cols, xq, out))
    }

    /// Int4 rows in groups of `group` against the first `xq.len()` (at most `cols`)
    /// inputs: `y[r] = (0 + Σ_g acc_g · scale_rg) · sx`. May reorder `xq`: the caller does
    /// not read it again.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
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
        portable::i4_rows(packed, cols, group, xq, scales, sx, y)
    }

    /// [`argmax`].
    #[inline(always)]
    fn argmax(self, v: &[f32]) -> u32 {
        portable::argmax(v)
    }
}

/// The weight-only matrices ([`Weights::I8Affine`], [`Weights::I4Tensor`]) as a blocked
/// product reads them: their weights convert exactly to f32 and multiply the unquantized
/// input, so a block of tokens reads and converts each weight once for several tokens.
#[derive(Clone, Copy, Debug)]
enum WeightOnly<'a> {
    /// Per-tensor affine int8.
    Affine(portable::AffineRows<'a>),
    /// Int4 with one scale per tensor.
    Nibbles(portable::NibbleRows<'a>),
}

/// `$body` with `$b` bound to the backend this machine runs: on x86-64 the AVX2 one once the
/// host has enabled it, otherwise the target's. The one place that looks at the CPU.
macro_rules! on_backend {
    (|$b:ident| $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if let Some($b) = x86::Avx2::enabled() {
            return $body;
        }
        let $b = Native;
        $body
    }};
}

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
    #[cfg(any(target_arch = "x86_64", itera_arm_dsp))]
    fn skip_rows(&self, rows: usize, groups: usize) -> Self {
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
    /// Int4 as published (fake-quantized int4 checkpoints): packed as [`Weights::I4`], one
    /// scale for the whole tensor, computed weight-only against the unquantized input,
    /// `y = (Σ q·x) · scale` in [`dot_f32`]'s order: what the checkpoint's float model computes.
    I4Tensor {
        /// Packed elements, `rows * ceil(cols / 2)` bytes.
        packed: &'a [u8],
        /// Scale.
        scale: f32,
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

/// A block of vectors in one buffer `data` (a slice, shared or not), vector `t` in
/// `data[t * stride..(t + 1) * stride]`: one row per token of a block. A product's input
/// row holds the matrix's `cols` values at its start, an output row receives its `rows`
/// values there; the rest of a row is neither read nor written.
#[derive(Clone, Copy, Debug)]
pub struct Strided<B> {
    data: B,
    stride: usize,
}

/// The input of [`Matrix::matmul`].
pub type Rows<'b> = Strided<&'b [f32]>;
/// The output of [`Matrix::matmul`].
pub type RowsMut<'b> = Strided<&'b mut [f32]>;

/// Values of `len` that form whole rows of `stride` (none for a stride of 0).
fn whole_rows(len: usize, stride: usize) -> usize {
    len - len.checked_rem(stride).unwrap_or(len)
}

impl<'b> Rows<'b> {
    /// The whole rows of `data`, `stride` values each (a stride of 0: none).
    pub fn new(data: &'b [f32], stride: usize) -> Self {
        Strided { data: data.split_at(whole_rows(data.len(), stride)).0, stride: stride.max(1) }
    }
}

impl<'b> RowsMut<'b> {
    /// The whole rows of `data`, `stride` values each (a stride of 0: none).
    pub fn new(data: &'b mut [f32], stride: usize) -> Self {
        let whole = whole_rows(data.len(), stride);
        Strided { data: data.split_at_mut(whole).0, stride: stride.max(1) }
    }
}

impl<B: AsRef<[f32]>> Strided<B> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.as_ref().len() / self.stride
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.as_ref().is_empty()
    }
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
            Weights::I4Tensor { packed, scale } => {
                Some(packed.len()) == rows.checked_mul(cols.div_ceil(2)) && scale.is_finite()
            }
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
            Weights::I4Tensor { packed, scale } => {
                let bytes = rows.saturating_mul(self.cols.div_ceil(2));
                Weights::I4Tensor { packed: packed.get(..bytes).unwrap_or(packed), scale }
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
            Weights::I4Tensor { .. } if avx2() => "i4w-avx2",
            Weights::I4Tensor { .. } => "i4w-scalar",
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
    pub fn matvec(&self, x: &[f32], y: &mut [f32], scratch: &mut [i8]) {
        on_backend!(|b| self.matvec_on(b, x, y, scratch))
    }

    /// [`Matrix::matvec`] on backend `b`.
    #[inline(always)]
    fn matvec_on(&self, b: impl Backend, x: &[f32], y: &mut [f32], scratch: &mut [i8]) {
        let cols = self.cols.max(1);
        let rows = self.rows.min(y.len());
        let y = &mut y[..rows];
        match self.weights {
            Weights::F32(w) => b.f32_rows(w, cols, &x[..cols.min(x.len())], y),
            Weights::F16(w) => b.f16_rows(w, cols, x, y),
            Weights::I8Affine { q, scale, zero_point } => {
                b.i8_affine_rows(q, cols, zero_point, scale, &x[..cols.min(x.len())], y)
            }
            Weights::I4Tensor { packed, scale } => b.i4_tensor_rows(packed, cols, scale, &x[..cols.min(x.len())], y),
            Weights::I8 { q, scales, group } => {
                let n = cols.min(x.len()).min(scratch.len());
                let xq = &mut scratch[..n];
                let Some(sx) = b.quantize(&x[..n], xq) else {
                    y.iter_mut().for_each(|v| *v = 0.0);
                    return;
                };
                let xq = &*xq;
                if cols.div_ceil(group) == 1 && n == cols {
                    // One scale per row: whole-row integer dots.
                    b.i8_rows(q, cols, xq, &scales, sx, y);
                } else {
                    portable::i8_group_rows(q, cols, group, xq, &scales, sx, y, |w, x| b.dot_i8(w, x));
                }
            }
            Weights::I4 { packed, scales, group } => {
                let n = cols.min(x.len()).min(scratch.len());
                let xq = &mut scratch[..n];
                let Some(sx) = b.quantize(&x[..n], xq) else {
                    y.iter_mut().for_each(|v| *v = 0.0);
                    return;
                };
                b.i4_rows(packed, cols, group, xq, &scales, sx, y);
            }
        }
    }

    /// `y_t = W·x_t` for each row `x_t` of `x` into row `t` of `y` (as many as both have): a
    /// block of tokens at once. Each result is bit for bit what [`Matrix::matvec`] gives for
    /// that row; f32 and weight-only weights are read once per block (each row against every
    /// token), the formats that quantize the input run token by token.
    pub fn matmul(&self, x: Rows<'_>, mut y: RowsMut<'_>, scratch: &mut [i8]) {
        let n = x.len().min(y.len());
        // Every row of a `Rows` lies whole in its buffer, so the rows fit if they are wide
        // enough.
        if n > 1 && x.stride >= self.cols.max(1) && y.stride >= self.rows && self.block(&x, &mut y, n) {
            return;
        }
        for (x, y) in x.data.chunks_exact(x.stride).zip(y.data.chunks_exact_mut(y.stride)) {
            self.matvec(x, y, scratch);
        }
    }

    /// The first `n` rows of `x` into `y` as one blocked product, if this format has one
    /// (`false`: it has not, nothing was written). The caller has checked the strides. Out
    /// of line, so that a single token's product (every one a generated token runs) costs
    /// what it did before blocks.
    #[inline(never)]
    fn block(&self, x: &Rows<'_>, y: &mut RowsMut<'_>, n: usize) -> bool {
        let cols = self.cols.max(1);
        let (x, xs, ys, y) = (x.data, x.stride, y.stride, &mut *y.data);
        let weight_only = match self.weights {
            Weights::F32(w) => {
                return on_backend!(|b| {
                    b.f32_block(w, cols, x, xs, y, ys, n);
                    true
                })
            }
            Weights::I8Affine { q, scale, zero_point } => {
                WeightOnly::Affine(portable::AffineRows { q, cols, zero_point, scale })
            }
            Weights::I4Tensor { packed, scale } => WeightOnly::Nibbles(portable::NibbleRows { packed, cols, scale }),
            Weights::F16(_) | Weights::I8 { .. } | Weights::I4 { .. } => return false,
        };
        on_backend!(|b| {
            b.weight_only_block(weight_only, x, xs, y, ys, n);
            true
        })
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
            Weights::I4Tensor { packed, scale } => {
                let rb = cols.div_ceil(2);
                let r = packed.get(row * rb..(row + 1) * rb).unwrap_or(&[]);
                let n = cols.min(out.len());
                add_nibbles(&mut out[..n], r, scale);
            }
            Weights::I4 { packed, scales, group } => {
                let rb = cols.div_ceil(2);
                let r = packed.get(row * rb..(row + 1) * rb).unwrap_or(&[]);
                let groups = cols.div_ceil(group);
                // `group` is even (or covers the row): each group starts on a byte.
                let n = cols.min(out.len());
                let out = &mut out[..n];
                for (g, (o, bytes)) in out.chunks_mut(group).zip(r.chunks(group.div_ceil(2))).enumerate() {
                    add_nibbles(o, bytes, scales.get(row * groups + g));
                }
            }
        }
    }
}

/// `out[j] += q_j · scale` for the int4 values packed in `bytes` (low nibble first).
fn add_nibbles(out: &mut [f32], bytes: &[u8], scale: f32) {
    for (pair, &b) in out.chunks_mut(2).zip(bytes) {
        for (o, v) in pair.iter_mut().zip([lo_nibble(b), hi_nibble(b)]) {
            *o += v as f32 * scale;
        }
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

/// Index of the largest value; the first of equals. NaN never wins (all NaN: 0).
/// Runs on this machine's backend (`portable.rs` says how; AVX2 where the host enabled it).
#[inline]
pub fn argmax(v: &[f32]) -> u32 {
    on_backend!(|b| b.argmax(v))
}

/// Exact `Σ q·xq` per whole row: `out[r]` for row `r` of the row-major `q` (`cols` per
/// row), `out.len()` rows, against `xq` (`cols` values). Inputs past the end of `xq` count
/// as zero, rows past the end of `q` give zero. Integer sums, exact while `cols` is at most
/// [`MAX_INT_COLS`], so every backend returns the same values.
#[inline]
pub(crate) fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    on_backend!(|b| b.i8_row_dots(q, cols, xq, out))
}

/// Exact `Σ a·b` over two int8 slices of one length, on the target's backend (adjacent
/// products summed in pairs into `i32` lanes: the shape of `pmaddwd` and `SMLAD`).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    Native.dot_i8(a, b)
}

#[cfg(test)]
pub(super) mod tests {
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

    /// `Σ q·xq` per row, one product at a time (missing inputs zero, missing rows zero).
    fn naive_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        for (r, o) in out.iter_mut().enumerate() {
            let row = q.get(r * cols..(r + 1) * cols).filter(|_| cols > 0);
            *o = row.map_or(0, |row| (0..cols).map(|c| i32::from(row[c]) * i32::from(*xq.get(c).unwrap_or(&0))).sum());
        }
    }

    /// Checks `dots` (an `i8_row_dots`) against [`naive_row_dots`] over shapes around every
    /// unrolling and vector width, inputs as short as a row or shorter, more outputs than
    /// rows, and the extremes of int8 on both sides.
    pub(super) fn check_row_dots(dots: impl Fn(&[i8], usize, &[i8], &mut [i32])) {
        let mut rng = crate::Rng::new(5);
        let mut byte = move || rng.next_u32() as u8 as i8;
        // Miri (which interprets every instruction) takes the edge shapes only.
        let all_cols = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 128, 200, 256, 512];
        let all_rows = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13];
        let (cols_list, rows_list): (&[usize], &[usize]) =
            if cfg!(miri) { (&[0, 1, 4, 5, 8, 33], &[0, 1, 4, 5]) } else { (&all_cols, &all_rows) };
        for &cols in cols_list {
            for &rows in rows_list {
                let q: Vec<i8> = (0..rows * cols).map(|_| byte()).collect();
                let xq: Vec<i8> = (0..cols).map(|_| byte()).collect();
                for extreme in [None, Some(i8::MIN), Some(i8::MAX)] {
                    let (mut q, mut xq) = (q.clone(), xq.clone());
                    if let Some(e) = extreme {
                        q.iter_mut().step_by(3).for_each(|v| *v = e);
                        xq.iter_mut().step_by(2).for_each(|v| *v = i8::MIN);
                    }
                    for (xn, extra) in [(cols, 0), (cols / 2, 0), (cols, 3)] {
                        let (mut want, mut got) = (vec![0; rows + extra], vec![7; rows + extra]);
                        naive_row_dots(&q, cols, &xq[..xn], &mut want);
                        dots(&q, cols, &xq[..xn], &mut got);
                        assert_eq!(got, want, "{rows}x{cols}, {xn} inputs, {extra} outputs past the rows");
                    }
                }
            }
        }
    }

    #[test]
    fn every_backend_row_dots_are_exact() {
        check_row_dots(|q, cols, xq, out| portable::Portable.i8_row_dots(q, cols, xq, out));
        check_row_dots(|q, cols, xq, out| rv32::Rv32.i8_row_dots(q, cols, xq, out));
        check_row_dots(|q, cols, xq, out| Native.i8_row_dots(q, cols, xq, out));
        check_row_dots(i8_row_dots);
        // All of a row at its largest: 128 · 128 per product, still exact.
        let (q, xq) = ([i8::MIN; 3 * 512], [i8::MIN; 512]);
        let mut out = [0; 3];
        i8_row_dots(&q, 512, &xq, &mut out);
        assert_eq!(out, [512 * 128 * 128; 3]);
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

    #[test]
    fn int4_as_published_computes_against_the_float_input() {
        // Rows of 19 columns (two lanes of eight and a tail of three, the last byte half
        // used): y = (Σ q·x) · scale in dot_f32's order, against the dequantized f32 row.
        let (rows, cols) = (3usize, 19usize);
        let q: Vec<i8> = (0..rows * cols).map(|i| ((i * 7 + 3) % 16) as i8 - 8).collect();
        let packed: Vec<u8> = q
            .chunks(cols)
            .flat_map(|r| r.chunks(2).map(|p| (p[0] as u8 & 0x0F) | ((*p.get(1).unwrap_or(&0) as u8) << 4)))
            .collect();
        let scale = 0.037f32;
        let m = Matrix::new(rows, cols, Weights::I4Tensor { packed: &packed, scale }).expect("shape");
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 - 9.0) * 0.31).collect();
        let (mut y, mut s) = (vec![0.0; rows], vec![0i8; cols]);
        m.matvec(&x, &mut y, &mut s);
        for (r, &got) in y.iter().enumerate() {
            let row: Vec<f32> = q[r * cols..(r + 1) * cols].iter().map(|&v| f32::from(v)).collect();
            assert_eq!(got.to_bits(), (portable::dot_f32(&row, &x) * scale).to_bits(), "row {r}");
            let mut out = vec![0.0; cols];
            m.add_row(r, &mut out);
            assert!(out.iter().zip(&row).all(|(o, v)| *o == v * scale), "row {r}");
        }
        assert!(!m.needs_scratch());
        assert!(Matrix::new(rows, cols, Weights::I4Tensor { packed: &packed[1..], scale }).is_none());
    }
}
