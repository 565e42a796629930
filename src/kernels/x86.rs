//! The x86-64 backend, [`Avx2`]: taken only after the host has detected AVX2 and F16C and
//! called [`enable_avx2`] (and AVX-512 VNNI's int8 products after [`enable_avx512_vnni`]).
//!
//! They exist because they measurably beat the portable code, which LLVM can only vectorise
//! to SSE2 (x86-64's baseline): see the README's speed table. Four rows are computed at once
//! so each load of `x` serves four rows and four accumulator chains hide latency. Every path
//! returns exactly what the portable kernel returns: integer sums are exact, and the float
//! epilogue performs the portable code's operations in the same order, lane by lane.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicBool, Ordering};

use half::f16;

use super::portable::{AffineRows, F32Rows, NibbleRows, WeightRows};
use super::{portable, Backend, Scales, WeightOnly};

static AVX2: AtomicBool = AtomicBool::new(false);
static VNNI: AtomicBool = AtomicBool::new(false);

/// Lets the int8 kernels use AVX-512 VNNI (`vpdpbusd` on 256-bit registers) from now on.
///
/// # Safety
/// The CPU must support AVX-512 VNNI and AVX-512VL (and AVX2 and F16C, see
/// [`enable_avx2`], which must be called too).
pub unsafe fn enable_avx512_vnni() {
    VNNI.store(true, Ordering::Relaxed);
}

/// Whether [`enable_avx512_vnni`] was called.
#[inline(always)]
pub(super) fn vnni() -> bool {
    VNNI.load(Ordering::Relaxed)
}

/// Lets the kernels use AVX2 and F16C from now on.
///
/// # Safety
/// The CPU running this process must support AVX2 and F16C (check with
/// `std::is_x86_feature_detected!`); otherwise a later matvec faults.
pub unsafe fn enable_avx2() {
    AVX2.store(true, Ordering::Relaxed);
}

/// Back to the portable kernels (they give the same results, more slowly).
pub fn disable_avx2() {
    AVX2.store(false, Ordering::Relaxed);
    VNNI.store(false, Ordering::Relaxed);
}

/// The AVX2 backend: a value exists only once [`enable_avx2`] was called, so holding one
/// proves that this CPU has AVX2 and F16C (and AVX-512 VNNI and VL where `vnni`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2 {
    vnni: bool,
}

impl Avx2 {
    /// The backend, if the host enabled it.
    #[inline(always)]
    pub(super) fn enabled() -> Option<Self> {
        avx2().then(|| Avx2 { vnni: vnni() })
    }
}

// SAFETY (every `unsafe` call below): an `Avx2` exists only after `enable_avx2`, whose caller
// guarantees that this CPU has AVX2 and F16C (and, with `vnni`, after
// `enable_avx512_vnni`, whose caller guarantees AVX-512 VNNI and VL); each function's other
// conditions are stated where it is called.
impl Backend for Avx2 {
    #[inline(always)]
    fn quantize(self, x: &[f32], xq: &mut [i8]) -> Option<f32> {
        // SAFETY: AVX2 (see above).
        unsafe { quantize(x, xq) }
    }

    #[inline(always)]
    fn f32_rows(self, w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: AVX2 (see above); `y.len()` rows of `w`, `x` of `cols` (the caller's
        // shapes, checked by `Matrix::new`).
        unsafe { f32_rows(w, cols, x, y) }
    }

    #[inline(always)]
    fn f32_block(self, w: &[f32], cols: usize, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
        // SAFETY: AVX2 (see above); the caller checked the strides and lengths.
        unsafe { f32_block(w, cols, x, xs, y, ys, n) }
    }

    #[inline(always)]
    fn weight_only_block(self, w: WeightOnly<'_>, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
        // SAFETY: AVX2 (see above); the caller checked the strides and lengths.
        unsafe {
            match w {
                WeightOnly::Affine(w) => affine_block(w, x, xs, y, ys, n),
                WeightOnly::Nibbles(w) => weight_block(w, x, xs, y, ys, n),
            }
        }
    }

    #[inline(always)]
    fn f16_rows(self, w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
        // SAFETY: AVX2 and F16C (see above).
        unsafe { f16_rows(w, cols, x, y) }
    }

    #[inline(always)]
    fn i8_affine_rows(self, q: &[i8], cols: usize, zero_point: i8, scale: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: AVX2 (see above).
        unsafe { i8_affine_rows(q, cols, zero_point, scale, x, y) }
    }

    #[inline(always)]
    fn i4_tensor_rows(self, packed: &[u8], cols: usize, scale: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: AVX2 (see above).
        unsafe { i4_tensor_rows(packed, cols, scale, x, y) }
    }

    #[inline(always)]
    fn i8_row_dots(self, q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
        if self.vnni {
            // SAFETY: AVX2 and AVX-512 VNNI and VL (see above).
            unsafe { i8_row_dots_vnni(q, cols, xq, out) }
        } else {
            // SAFETY: AVX2 (see above).
            unsafe { i8_row_dots(q, cols, xq, out) }
        }
    }

    #[inline(always)]
    fn i8_rows(self, q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
        // SAFETY: AVX2 and F16C, VNNI where `self.vnni` (see above); `q` holds `y.len()`
        // rows of `cols`, `xq` `cols` values (the matvec's shapes).
        unsafe { i8_rows(self.vnni, q, cols, xq, scales, sx, y) }
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
        let whole = xq.len() == cols;
        if let (true, 8 | 32, Scales::F16(s)) = (whole && cols.is_multiple_of(64) && cols <= 512, group, *scales) {
            // SAFETY: AVX2 and F16C, VNNI where `self.vnni` takes it (see above); the sizes
            // were checked by `Matrix::new` and here.
            return unsafe { i4_rows_64(self.vnni)(packed, cols, group, xq, s, sx, y) };
        }
        if group == 32 && whole && cols.is_multiple_of(32) {
            // SAFETY: AVX2 and F16C (see above); `packed` holds `y.len()` rows of `cols / 2`
            // bytes (`Matrix::new`).
            return unsafe { i4_rows(packed, cols, xq, scales, sx, y) };
        }
        portable::i4_rows(packed, cols, group, xq, scales, sx, y)
    }

    #[inline(always)]
    fn argmax(self, v: &[f32]) -> u32 {
        // SAFETY: AVX2 (see above).
        unsafe { argmax(v) }
    }
}

/// [`super::quantize`] with AVX2, the same bits: `max|x|` as an integer max of the bit
/// patterns (sign cleared), then 32 inputs per turn, each `v · inv + 1.5·2^23` in f32 and
/// its low bits taken, packed to bytes (values within ±127, so the saturating packs change
/// nothing).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize(x: &[f32], xq: &mut [i8]) -> Option<f32> {
    let n = x.len().min(xq.len());
    let (x, xq) = (&x[..n], &mut xq[..n]);
    let (chunks, rest) = x.as_chunks::<8>();
    let sign_off = _mm256_set1_epi32(0x7FFF_FFFF);
    let mut m = _mm256_setzero_si256();
    for c in chunks {
        // SAFETY: `c` is 8 readable floats.
        m = _mm256_max_epu32(m, _mm256_and_si256(unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }, sign_off));
    }
    let m = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    let bits = rest.iter().map(|v| v.to_bits() & 0x7FFF_FFFF).fold(_mm_cvtsi128_si32(m) as u32, u32::max);
    let (inv, sx) = portable::input_scale(bits)?;
    let (vinv, magic) = (_mm256_set1_ps(inv), _mm256_set1_ps(portable::ROUND_MAGIC));
    let magic_bits = _mm256_set1_epi32(portable::ROUND_MAGIC.to_bits() as i32);
    let round = |p: *const f32| {
        // SAFETY: the caller passes 8 readable floats.
        let v = unsafe { _mm256_loadu_ps(p) };
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(v, vinv), magic)), magic_bits)
    };
    let (out, out_rest) = xq.as_chunks_mut::<32>();
    let (ins, _) = x.as_chunks::<32>();
    for (o, v) in out.iter_mut().zip(ins) {
        let p = v.as_ptr();
        // SAFETY: `v` is 32 readable floats: four loads of 8.
        let (a, b, c, d) = unsafe { (round(p), round(p.add(8)), round(p.add(16)), round(p.add(24))) };
        // Packs work within 128-bit halves: the dwords come out as a0-3 b0-3 c0-3 d0-3 |
        // a4-7 b4-7 c4-7 d4-7; one permutation puts them in order.
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `o` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), ordered) };
    }
    let done = n - out_rest.len();
    for (q, &v) in out_rest.iter_mut().zip(&x[done..]) {
        *q = portable::quantize_one(v, inv);
    }
    Some(sx)
}

/// [`super::argmax`] compiled for AVX2.
#[target_feature(enable = "avx2")]
unsafe fn argmax(v: &[f32]) -> u32 {
    portable::argmax(v)
}

/// Whether [`enable_avx2`] was called.
#[inline(always)]
pub(super) fn avx2() -> bool {
    AVX2.load(Ordering::Relaxed)
}

#[inline(always)]
unsafe fn load256<T>(p: *const T) -> __m256i {
    // SAFETY: callers pass pointers to at least 32 readable bytes.
    unsafe { _mm256_loadu_si256(p.cast::<__m256i>()) }
}

/// Four horizontal `i32` sums, one per accumulator, as `[s0, s1, s2, s3]`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum4_epi32(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Four rows' scales for group `g` (`groups` per row) starting at row `r`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn scales4(scales: &Scales<'_>, r: usize, groups: usize, g: usize) -> __m128 {
    let at = |k: usize| (r + k) * groups + g;
    let first = at(0);
    match *scales {
        // One scale per row: the four are adjacent.
        Scales::F16(s) if groups == 1 && first + 4 <= s.len() => {
            // SAFETY: the four f16 at `first` are in bounds (checked), 8 bytes.
            _mm_cvtph_ps(unsafe { _mm_loadl_epi64(s.as_ptr().add(first).cast::<__m128i>()) })
        }
        Scales::F32(s) if groups == 1 && first + 4 <= s.len() => {
            // SAFETY: as above, 16 bytes.
            unsafe { _mm_loadu_ps(s.as_ptr().add(first)) }
        }
        Scales::F32(s) => {
            let v = |k| s.get(at(k)).copied().unwrap_or(0.0);
            _mm_setr_ps(v(0), v(1), v(2), v(3))
        }
        Scales::F16(s) => {
            let v = |k| s.get(at(k)).map_or(0, |h: &f16| h.to_bits()) as i16;
            _mm_cvtph_ps(_mm_setr_epi16(v(0), v(1), v(2), v(3), 0, 0, 0, 0))
        }
    }
}

/// `|w| · (x with w's sign)` summed in i32 lanes: exact `w·x` for int8 w in -128..=127 and x
/// in -127..=127 (`vpmaddubsw` pairs stay below 2^15: 2·128·127).
#[inline]
#[target_feature(enable = "avx2")]
fn madd_i8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Per-row-scaled int8 rows: `y[r] = (0 + Σ q·xq · scale_r) · sx`, as
/// [`portable::row_value1`].
///
/// # Safety
/// Needs AVX2 and F16C, and AVX-512 VNNI and VL if `vnni`. `q` holds `y.len()` rows of
/// `cols`, `xq` holds `cols` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i8_rows(vnni: bool, q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    // The model's widths: keep x in registers and unroll the row fully.
    // SAFETY (all arms): as this function's contract; `cols` is the arm's width.
    if vnni {
        // SAFETY: as below; VNNI and AVX-512VL were enabled by `enable_avx512_vnni`.
        match cols.min(xq.len()) {
            64 => return unsafe { i8_rows_n_vnni::<2>(q, xq, scales, sx, y) },
            128 => return unsafe { i8_rows_n_vnni::<4>(q, xq, scales, sx, y) },
            256 => return unsafe { i8_rows_n_vnni::<8>(q, xq, scales, sx, y) },
            _ => {}
        }
    }
    match cols.min(xq.len()) {
        8 => return unsafe { i8_rows_8(q, xq, scales, sx, y) },
        32 => return unsafe { i8_rows_n::<1>(q, xq, scales, sx, y) },
        64 => return unsafe { i8_rows_n::<2>(q, xq, scales, sx, y) },
        128 => return unsafe { i8_rows_n::<4>(q, xq, scales, sx, y) },
        256 => return unsafe { i8_rows_n::<8>(q, xq, scales, sx, y) },
        _ => {}
    }
    let cols = cols.min(xq.len());
    let rows = y.len().min(q.len() / cols.max(1));
    let body = cols / 32 * 32;
    let tail =
        |row: &[i8]| -> i32 { row[body..].iter().zip(&xq[body..cols]).map(|(&a, &b)| a as i32 * b as i32).sum() };
    let vsx = _mm_set1_ps(sx);
    let mut r = 0;
    while r + 4 <= rows {
        let base = q[r * cols..(r + 4) * cols].as_ptr();
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut c = 0;
        while c < body {
            // SAFETY: c + 32 <= body <= cols: inside xq and inside each of the four rows
            // that start at base + k·cols (the slice above covers all four).
            unsafe {
                let x = load256(xq.as_ptr().add(c));
                let p = base.add(c);
                acc[0] = madd_i8(acc[0], load256(p), x);
                acc[1] = madd_i8(acc[1], load256(p.add(cols)), x);
                acc[2] = madd_i8(acc[2], load256(p.add(2 * cols)), x);
                acc[3] = madd_i8(acc[3], load256(p.add(3 * cols)), x);
            }
            c += 32;
        }
        let mut sums = hsum4_epi32(acc[0], acc[1], acc[2], acc[3]);
        if body < cols {
            let t = |k: usize| tail(&q[(r + k) * cols..(r + k + 1) * cols]);
            sums = _mm_add_epi32(sums, _mm_setr_epi32(t(0), t(1), t(2), t(3)));
        }
        let v = _mm_add_ps(_mm_setzero_ps(), _mm_mul_ps(_mm_cvtepi32_ps(sums), scales4(scales, r, 1, 0)));
        // SAFETY: r + 4 <= rows <= y.len().
        unsafe { _mm_storeu_ps(y.as_mut_ptr().add(r), _mm_mul_ps(v, vsx)) };
        r += 4;
    }
    i8_rows_rest(q, cols, xq, scales, sx, &mut y[r..rows], r);
}

/// The rows of [`i8_rows`] from row `r` on (`y` holds just those), fewer than four, by the
/// reference.
#[inline(always)]
fn i8_rows_rest(q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32], r: usize) {
    let q = q.get(r * cols..).unwrap_or_default();
    let dots = |rows: &[i8], out: &mut [i32]| portable::i8_row_dots(rows, cols, xq, out);
    portable::i8_rows(q, cols, &scales.skip_rows(r, 1), sx, y, dots);
}

/// [`portable::i8_row_dots`] with AVX2: four rows at a time (each input load serves four
/// rows), 16 columns per step, weights and inputs sign-extended to halfwords (`vpmovsxbw`)
/// and multiplied in adjacent pairs into `i32` lanes (`vpmaddwd`). Exact for every int8 on
/// both sides ([`madd_i8`]'s sign trick needs inputs within ±127); the last columns and
/// rows by the reference.
///
/// # Safety
/// Needs AVX2.
#[target_feature(enable = "avx2")]
unsafe fn i8_row_dots(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let n = cols.min(xq.len());
    let rows = q.len().checked_div(cols).unwrap_or(0).min(out.len());
    let body = n / 16 * 16;
    let widen = |p: *const i8| {
        // SAFETY: the caller passes 16 readable bytes.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(p.cast::<__m128i>()) })
    };
    let mut r = 0;
    while r + 4 <= rows {
        let p = q[r * cols..(r + 4) * cols].as_ptr();
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut c = 0;
        while c < body {
            let x = widen(xq[c..c + 16].as_ptr());
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: c + 16 <= body <= cols: inside row r + k of the four-row slice above.
                let w = widen(unsafe { p.add(k * cols + c) });
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(w, x));
            }
            c += 16;
        }
        store_dots(q, cols, xq, body, n, r, hsum4_epi32(acc[0], acc[1], acc[2], acc[3]), out);
        r += 4;
    }
    portable::i8_row_dots(&q[r * cols..], cols, xq, &mut out[r..]);
}

/// [`i8_row_dots`] with AVX-512 VNNI's `vpdpbusd`, 32 columns per step: the weights go in as
/// `q + 128` (unsigned), four exact products summed straight into each `i32` lane, and
/// `128 · Σ x` is taken off once per call ([`dpbusd_offset`]). Exact for every int8.
///
/// # Safety
/// Needs AVX2, AVX-512 VNNI and AVX-512VL.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn i8_row_dots_vnni(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) {
    let n = cols.min(xq.len());
    let rows = q.len().checked_div(cols).unwrap_or(0).min(out.len());
    let body = n / 32 * 32;
    let mut init = _mm256_setzero_si256();
    for c in (0..body).step_by(32) {
        // SAFETY: c + 32 <= body <= xq.len().
        init = _mm256_add_epi32(init, dpbusd_offset(unsafe { load256(xq.as_ptr().add(c)) }));
    }
    let mut r = 0;
    while r + 4 <= rows {
        let p = q[r * cols..(r + 4) * cols].as_ptr();
        let mut acc = [init; 4];
        let mut c = 0;
        while c < body {
            // SAFETY: c + 32 <= body <= xq.len().
            let x = unsafe { load256(xq.as_ptr().add(c)) };
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: c + 32 <= body <= cols: inside row r + k of the four-row slice above.
                *a = dpbusd_i8(*a, unsafe { load256(p.add(k * cols + c)) }, x);
            }
            c += 32;
        }
        store_dots(q, cols, xq, body, n, r, hsum4_epi32(acc[0], acc[1], acc[2], acc[3]), out);
        r += 4;
    }
    portable::i8_row_dots(&q[r * cols..], cols, xq, &mut out[r..]);
}

/// Rows `r..r + 4` of an `i8_row_dots`: the four sums of the first `body` columns plus
/// each row's columns `body..n`, into `out`.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn store_dots(q: &[i8], cols: usize, xq: &[i8], body: usize, n: usize, r: usize, sums: __m128i, out: &mut [i32]) {
    let mut s = [0i32; 4];
    // SAFETY: 16 writable bytes.
    unsafe { _mm_storeu_si128(s.as_mut_ptr().cast::<__m128i>(), sums) };
    for (k, (o, v)) in out[r..r + 4].iter_mut().zip(s).enumerate() {
        let row = &q[(r + k) * cols + body..(r + k) * cols + n];
        *o = v + row.iter().zip(&xq[body..n]).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum::<i32>();
    }
}

/// [`i8_rows`] for rows of 8 columns (the SSM's `C`, `d_inner × N`): four rows fill one
/// register, so they take one load and one multiply-add.
///
/// # Safety
/// Needs AVX2 and F16C. `q` holds `y.len()` rows of 8, `xq` at least 8 values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i8_rows_8(q: &[i8], xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    let Some(x8) = xq.first_chunk::<8>() else { return };
    let rows = y.len().min(q.len() / 8);
    let x = _mm256_set1_epi64x(i64::from_le_bytes(x8.map(|v| v as u8)));
    let vsx = _mm_set1_ps(sx);
    let mut r = 0;
    while r + 4 <= rows {
        // SAFETY: rows r..r+4 are the 32 bytes at q[8r..8r+32], in bounds since r + 4 <= rows.
        let w = unsafe { load256(q.as_ptr().add(8 * r)) };
        // Two i32 partial sums per row: [r0 r0 r1 r1 | r2 r2 r3 r3].
        let v = madd_i8(_mm256_setzero_si256(), w, x);
        let h = _mm256_hadd_epi32(v, v); // [r0 r1 r0 r1 | r2 r3 r2 r3]
        let sums = _mm_unpacklo_epi64(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        let v = _mm_add_ps(_mm_setzero_ps(), _mm_mul_ps(_mm_cvtepi32_ps(sums), scales4(scales, r, 1, 0)));
        // SAFETY: r + 4 <= rows <= y.len().
        unsafe { _mm_storeu_ps(y.as_mut_ptr().add(r), _mm_mul_ps(v, vsx)) };
        r += 4;
    }
    i8_rows_rest(q, 8, xq, scales, sx, &mut y[r..rows], r);
}

/// Stamps out [`i8_rows`] for rows of exactly `32 * N` columns, `x` held in registers, with
/// one multiply-accumulate instruction sequence (`$madd`) per 32 columns.
macro_rules! i8_rows_n {
    ($name:ident, $features:literal, $madd:ident, $offset:ident) => {
        /// [`i8_rows`] for rows of exactly `32 * N` columns, `x` held in registers.
        ///
        /// # Safety
        /// Needs AVX2 and F16C. `q` holds `y.len()` rows of `32 * N`, `xq` at least `32 * N` values.
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(q: &[i8], xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
            let cols = 32 * N;
            if xq.len() < cols {
                return;
            }
            let rows = y.len().min(q.len() / cols);
            let mut x = [_mm256_setzero_si256(); N];
            for (i, v) in x.iter_mut().enumerate() {
                // SAFETY: 32·i + 32 <= cols <= xq.len().
                *v = unsafe { load256(xq.as_ptr().add(32 * i)) };
            }
            let vsx = _mm_set1_ps(sx);
            // What `$madd` adds beyond Σ q·x, the same for every row: subtracted up front.
            let init = x.iter().fold(_mm256_setzero_si256(), |a, xv| _mm256_add_epi32(a, $offset(*xv)));
            let mut r = 0;
            while r + 4 <= rows {
                let p = q[r * cols..(r + 4) * cols].as_ptr();
                let mut acc = [init; 4];
                for (k, a) in acc.iter_mut().enumerate() {
                    for (i, xv) in x.iter().enumerate() {
                        // SAFETY: row r + k, chunk i lies inside the four-row slice above.
                        *a = $madd(*a, unsafe { load256(p.add(k * cols + 32 * i)) }, *xv);
                    }
                }
                let sums = hsum4_epi32(acc[0], acc[1], acc[2], acc[3]);
                let v = _mm_add_ps(_mm_setzero_ps(), _mm_mul_ps(_mm_cvtepi32_ps(sums), scales4(scales, r, 1, 0)));
                // SAFETY: r + 4 <= rows <= y.len().
                unsafe { _mm_storeu_ps(y.as_mut_ptr().add(r), _mm_mul_ps(v, vsx)) };
                r += 4;
            }
            i8_rows_rest(q, cols, xq, scales, sx, &mut y[r..rows], r);
        }
    };
}

i8_rows_n!(i8_rows_n, "avx2,f16c", madd_i8, no_offset);
i8_rows_n!(i8_rows_n_vnni, "avx2,f16c,avx512vnni,avx512vl", dpbusd_i8, dpbusd_offset);

/// [`madd_i8`] adds exactly `Σ q·x`: nothing to subtract.
#[inline]
#[target_feature(enable = "avx2")]
fn no_offset(_x: __m256i) -> __m256i {
    _mm256_setzero_si256()
}

/// As [`madd_i8`] with AVX-512 VNNI's `vpdpbusd`, which multiplies unsigned by signed bytes:
/// the weights go in as `q + 128` (sign bit flipped), four products summed straight into
/// each i32 lane: two instructions (`madd_i8` needs five). That adds `128 · Σ x` per
/// lane, which [`dpbusd_offset`] takes off once per product (exact, no saturation).
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn dpbusd_i8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN)), x)
}

/// `−128 · Σ x` per i32 lane (four bytes each) of one 32-byte input chunk.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn dpbusd_offset(x: __m256i) -> __m256i {
    let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), x);
    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(sums))
}

/// Int4 rows in groups of 32 (`cols` a multiple of 32): `y[r] = (0 + Σ_g acc_g · scale_rg) · sx`,
/// as [`portable::i4_rows`]. Reorders `xq` in place (each group of 32 becomes its 16 even then
/// 16 odd elements, matching the low and high nibbles), so the caller must not reuse it.
///
/// # Safety
/// Needs AVX2 and F16C. `packed` holds `y.len()` rows of `cols / 2` bytes, `xq` `cols` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i4_rows(packed: &[u8], cols: usize, xq: &mut [i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    for g in xq.chunks_exact_mut(32) {
        let mut even_odd = [0i8; 32];
        for i in 0..16 {
            even_odd[i] = g[2 * i];
            even_odd[16 + i] = g[2 * i + 1];
        }
        g.copy_from_slice(&even_odd);
    }
    let xq = &*xq;
    // Wider rows with f16 scales take `i4_rows_64()`; what reaches here is 32 columns (the
    // experts' w2) or an unusual shape or scale type.
    // SAFETY (both arms): as this function's contract; `cols` is the arm's width.
    match cols {
        32 => unsafe { i4_rows_n::<1>(packed, xq, scales, sx, y) },
        _ => unsafe { i4_rows_any(packed, cols, xq, scales, sx, y) },
    }
}

/// One row's int4 group: nibbles to signed bytes [lo 16 | hi 16] times the reordered inputs,
/// as eight i32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn i4_group(p: *const u8, x: __m256i) -> __m256i {
    // SAFETY: callers pass 16 readable bytes.
    let p = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(p, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(p), mask);
    let eight = _mm256_set1_epi8(8);
    let w = _mm256_sub_epi8(_mm256_xor_si256(_mm256_set_m128i(hi, lo), eight), eight);
    madd_i8(_mm256_setzero_si256(), w, x)
}

/// [`i4_rows`] for rows of exactly `32 * N` columns (`N` groups), `x` held in registers.
///
/// # Safety
/// Needs AVX2 and F16C. `packed` holds `y.len()` rows of `16 * N` bytes, `xq` `32 * N` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i4_rows_n<const N: usize>(packed: &[u8], xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    let row_bytes = 16 * N;
    if xq.len() < 32 * N {
        return;
    }
    let rows = y.len().min(packed.len() / row_bytes);
    let mut x = [_mm256_setzero_si256(); N];
    for (g, v) in x.iter_mut().enumerate() {
        // SAFETY: 32·g + 32 <= 32·N <= xq.len().
        *v = unsafe { load256(xq.as_ptr().add(32 * g)) };
    }
    let vsx = _mm_set1_ps(sx);
    let mut r = 0;
    while r + 4 <= rows {
        let p = packed[r * row_bytes..(r + 4) * row_bytes].as_ptr();
        // The four rows' scales, row-major [row][group], as f32 once per block.
        let mut sc = [[0.0f32; N]; 4];
        match *scales {
            Scales::F16(s) if s.len() >= (r + 4) * N => {
                let flat = sc.as_flattened_mut();
                for (c, out) in flat.chunks_exact_mut(4).enumerate() {
                    // SAFETY: 4 f16 at r·N + 4c, inside the 4N checked above; 4 f32 out.
                    unsafe {
                        let h = _mm_loadl_epi64(s.as_ptr().add(r * N + 4 * c).cast::<__m128i>());
                        _mm_storeu_ps(out.as_mut_ptr(), _mm_cvtph_ps(h));
                    }
                }
            }
            _ => {
                for (k, row) in sc.iter_mut().enumerate() {
                    for (g, v) in row.iter_mut().enumerate() {
                        *v = scales.get((r + k) * N + g);
                    }
                }
            }
        }
        // Σ_g acc_g·scale_g per row, in group order (lane k = row r + k).
        let mut sum = _mm_setzero_ps();
        for (g, xv) in x.iter().enumerate() {
            // SAFETY: group g of rows r..r+4 lies inside the four-row slice above.
            let sums = unsafe {
                let at = |k: usize| p.add(k * row_bytes + 16 * g);
                hsum4_epi32(i4_group(at(0), *xv), i4_group(at(1), *xv), i4_group(at(2), *xv), i4_group(at(3), *xv))
            };
            let s4 = _mm_setr_ps(sc[0][g], sc[1][g], sc[2][g], sc[3][g]);
            sum = _mm_add_ps(sum, _mm_mul_ps(_mm_cvtepi32_ps(sums), s4));
        }
        // SAFETY: r + 4 <= rows <= y.len().
        unsafe { _mm_storeu_ps(y.as_mut_ptr().add(r), _mm_mul_ps(sum, vsx)) };
        r += 4;
    }
    if r < rows {
        // SAFETY: forwarded contract; only rows r.. remain.
        unsafe { i4_rows_any(&packed[r * row_bytes..], 32 * N, xq, &scales.skip_rows(r, N), sx, &mut y[r..rows]) };
    }
}

/// [`i4_rows`] one row at a time, for any multiple of 32 columns.
///
/// # Safety
/// Needs AVX2 and F16C. `packed` holds `y.len()` rows of `cols / 2` bytes, `xq` `cols` values.
#[target_feature(enable = "avx2,f16c")]
unsafe fn i4_rows_any(packed: &[u8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    let groups = cols / 32;
    let row_bytes = cols / 2;
    let rows = y.len().min(packed.len() / row_bytes.max(1));
    if xq.len() < cols {
        return;
    }
    for (row, out) in y[..rows].iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for g in 0..groups {
            // SAFETY: group g of this row and of xq are in bounds (checked sizes above).
            let v =
                unsafe { i4_group(packed.as_ptr().add(row * row_bytes + g * 16), load256(xq.as_ptr().add(g * 32))) };
            let z = _mm256_setzero_si256();
            let acc = _mm_cvtsi128_si32(hsum4_epi32(v, z, z, z));
            sum += acc as f32 * scales.get(row * groups + g);
        }
        *out = sum * sx;
    }
}

/// `(packed, cols, group, xq, scales, sx, y)`: int4 rows in blocks of 64 columns, groups of
/// 8 or 32 with f16 scales: one 32-byte load holds a row's 64 values. The nibbles are used unsigned (`q + 8`: the top bit flipped), so
/// `vpmaddubsw`/`vpdpbusd` take them as they are, and `8 · Σ x` per 8 columns (the same for
/// every row) is subtracted once: each `i32` lane is then the exact sum of 8 columns.
/// `Σ_g acc_g · scale_g` then runs in group order, lane by lane, as [`portable::i4_rows`]:
/// groups of 32 add their four lanes in integers (two `vphaddd` over four rows); groups of
/// 8 take eight rows and transpose their scaled lanes. The inputs of each 64 columns are
/// split into even and odd elements in registers (to meet the low and high nibbles).
///
/// # Safety
/// Needs AVX2 and F16C. `cols` is a multiple of 64 (at most 512), `group` 8 or 32;
/// `packed` holds `y.len()` rows of `cols / 2` bytes, `xq` `cols` values, `scales`
/// `y.len() · cols / group`.
type I4Blocks = unsafe fn(&[u8], usize, usize, &mut [i8], &[f16], f32, &mut [f32]);

/// The [`I4Blocks`] with AVX-512 VNNI's `vpdpbusd` if `vnni`, else with AVX2's `vpmaddubsw`.
fn i4_rows_64(vnni: bool) -> I4Blocks {
    if vnni {
        i4_blocks_vnni
    } else {
        i4_blocks_avx2
    }
}

/// `y[r..r + n] = rows[..n]`: a whole block as one fixed-size copy (a vector store, not a
/// `memmove` call), a last partial block lane by lane.
#[inline(always)]
fn store_rows<const N: usize>(y: &mut [f32], r: usize, n: usize, rows: [f32; N]) {
    match y.get_mut(r..r + N) {
        Some(block) if n == N => block.copy_from_slice(&rows),
        _ => y.iter_mut().skip(r).zip(&rows[..n.min(N)]).for_each(|(y, v)| *y = *v),
    }
}

/// The 64 bytes at `p` split into their 32 even-indexed and 32 odd-indexed bytes, in order:
/// a byte shuffle within each 128-bit lane, then two cross-lane permutes.
///
/// # Safety
/// `p` points to 64 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn even_odd(p: *const i8) -> (__m256i, __m256i) {
    let split = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
    );
    // SAFETY: 64 readable bytes (contract).
    let (a, b) = unsafe { (load256(p), load256(p.add(32))) };
    // Each: [evens of lane 0 | odds of lane 0 | evens of lane 1 | odds of lane 1] as quads,
    // then [evens (16) | odds (16)].
    let a = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(a, split));
    let b = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(b, split));
    (_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b))
}

/// `acc` plus the products of unsigned nibbles `lo`, `hi` with the signed even and odd
/// inputs, four adjacent bytes per `i32` lane (`vpmaddubsw` pairs stay below 2^15).
#[inline]
#[target_feature(enable = "avx2")]
fn nibble_dot(acc: __m256i, lo: __m256i, hi: __m256i, xe: __m256i, xo: __m256i) -> __m256i {
    let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xe), _mm256_maddubs_epi16(hi, xo));
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// [`nibble_dot`] with AVX-512 VNNI's `vpdpbusd`: two instructions.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn nibble_dot_vnni(acc: __m256i, lo: __m256i, hi: __m256i, xe: __m256i, xo: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(acc, lo, xe), hi, xo)
}

/// Stamps out an [`I4Blocks`] for one set of target features and its `$dot`.
macro_rules! i4_blocks {
    ($name:ident, $features:literal, $dot:ident) => {
        /// An [`I4Blocks`].
        ///
        /// # Safety
        /// As [`I4Blocks`].
        #[target_feature(enable = $features)]
        unsafe fn $name(
            packed: &[u8],
            cols: usize,
            group: usize,
            xq: &mut [i8],
            scales: &[f16],
            sx: f32,
            y: &mut [f32],
        ) {
            const MAX_BLOCKS: usize = 8;
            let blocks = cols / 64;
            if blocks == 0
                || blocks > MAX_BLOCKS
                || !cols.is_multiple_of(64)
                || xq.len() < cols
                || !matches!(group, 8 | 32)
            {
                return;
            }
            // Per block: even inputs, odd inputs, and −8 · Σ x per 8 columns (the nibble offset).
            let zero = _mm256_setzero_si256();
            let mut x = [(zero, zero, zero); MAX_BLOCKS];
            let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
            for (b, v) in xq.chunks_exact(64).zip(x.iter_mut()) {
                // SAFETY: `b` is 64 bytes.
                let (xe, xo) = unsafe { even_odd(b.as_ptr()) };
                let sums = _mm256_add_epi16(_mm256_maddubs_epi16(ones8, xe), _mm256_maddubs_epi16(ones8, xo));
                let sum8 = _mm256_madd_epi16(sums, ones16);
                *v = (xe, xo, _mm256_sub_epi32(zero, _mm256_slli_epi32::<3>(sum8)));
            }
            let (row_bytes, groups) = (cols / 2, cols / group);
            let rows = y.len().min(packed.len() / row_bytes).min(scales.len() / groups);
            let (mask, flip) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x88u8 as i8));
            // Row `row`, block `b`: the eight exact 8-column sums (a macro, so it is always
            // inlined: as a closure LLVM sometimes kept it out of line, at a third of the speed).
            macro_rules! sums8 {
                ($row:expr, $b:expr, $xv:expr) => {{
                    let (xe, xo, offset) = $xv;
                    // SAFETY: row < rows and b < blocks: 32 bytes of the row.
                    let w = unsafe { load256(packed.as_ptr().add($row * row_bytes + 32 * $b)) };
                    // Two's-complement nibble q with its top bit flipped is q + 8.
                    let w = _mm256_xor_si256(w, flip);
                    $dot(offset, _mm256_and_si256(w, mask), _mm256_and_si256(_mm256_srli_epi16::<4>(w), mask), xe, xo)
                }};
            }
            if group == 32 {
                // Four rows: two horizontal adds give [g0 of rows 0..4 | g1 of rows 0..4] for
                // the block's groups 2b and 2b + 1; their scales are a u32 (two f16) per row.
                let order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
                let mut r = 0;
                while r < rows {
                    let n = (rows - r).min(4);
                    let at = [r, r + 1.min(n - 1), r + 2.min(n - 1), r + 3.min(n - 1)];
                    let mut sum = _mm_setzero_ps();
                    for (b, &xv) in x[..blocks].iter().enumerate() {
                        let d =
                            [sums8!(at[0], b, xv), sums8!(at[1], b, xv), sums8!(at[2], b, xv), sums8!(at[3], b, xv)];
                        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
                        // SAFETY: every row in `at` is < rows, so its scales 2b, 2b + 1 (< groups)
                        // are inside `scales`; read as one unaligned u32.
                        let pair = |row: usize| unsafe {
                            scales.as_ptr().add(row * groups + 2 * b).cast::<i32>().read_unaligned()
                        };
                        let sv = _mm256_cvtph_ps(_mm_setr_epi32(pair(at[0]), pair(at[1]), pair(at[2]), pair(at[3])));
                        let p = _mm256_mul_ps(_mm256_cvtepi32_ps(h), _mm256_permutevar8x32_ps(sv, order));
                        sum = _mm_add_ps(_mm_add_ps(sum, _mm256_castps256_ps128(p)), _mm256_extractf128_ps::<1>(p));
                    }
                    let mut out = [0.0f32; 4];
                    // SAFETY: 4 f32 stored into `out`.
                    unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm_mul_ps(sum, _mm_set1_ps(sx))) };
                    store_rows(y, r, n, out);
                    r += n;
                }
                return;
            }
            // Groups of 8: eight rows, scaled, then transposed so each row's groups add in order.
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(8);
                // A last block of fewer than 8 rows recomputes its last row in the spare lanes.
                let mut at = [0usize; 8];
                for (k, a) in at.iter_mut().enumerate() {
                    *a = r + k.min(n - 1);
                }
                let mut sum = _mm256_setzero_ps();
                for (b, &xv) in x[..blocks].iter().enumerate() {
                    let mut p = [_mm256_setzero_ps(); 8];
                    for (v, &row) in p.iter_mut().zip(&at) {
                        // SAFETY: row < rows and b < blocks: the row's 8 scales of this block.
                        let s = unsafe { _mm_loadu_si128(scales.as_ptr().add(row * groups + 8 * b).cast::<__m128i>()) };
                        *v = _mm256_mul_ps(_mm256_cvtepi32_ps(sums8!(row, b, xv)), _mm256_cvtph_ps(s));
                    }
                    for g in transpose8(p) {
                        sum = _mm256_add_ps(sum, g);
                    }
                }
                let mut out = [0.0f32; 8];
                // SAFETY: 8 f32 stored into `out`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(sum, _mm256_set1_ps(sx))) };
                store_rows(y, r, n, out);
                r += n;
            }
        }
    };
}

i4_blocks!(i4_blocks_avx2, "avx2,f16c", nibble_dot);
i4_blocks!(i4_blocks_vnni, "avx2,f16c,avx512vnni,avx512vl", nibble_dot_vnni);

/// 8×8 transpose: lane `k` of output `g` is lane `g` of input `k`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t = |a, b| (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    let ((t0, t1), (t2, t3), (t4, t5), (t6, t7)) = (t(r[0], r[1]), t(r[2], r[3]), t(r[4], r[5]), t(r[6], r[7]));
    let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
    let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
    let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
    let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// f16 rows converted 8 at a time by F16C, then [`super::dot_f16`]'s order of operations.
///
/// # Safety
/// Needs AVX2 and F16C. `w` holds `y.len()` rows of `cols`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_rows(w: &[f16], cols: usize, x: &[f32], y: &mut [f32]) {
    let cols = cols.max(1);
    let n = cols.min(x.len());
    let body = n / 8 * 8;
    for (row, out) in w.chunks_exact(cols).zip(y.iter_mut()) {
        let mut acc = _mm256_setzero_ps();
        let mut c = 0;
        while c < body {
            // SAFETY: c + 8 <= body <= n: 8 f16 of the row and 8 f32 of x.
            unsafe {
                let h = _mm_loadu_si128(row.as_ptr().add(c).cast::<__m128i>());
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(x.as_ptr().add(c))));
            }
            c += 8;
        }
        let tail = row[body..n].iter().zip(&x[body..n]).fold(0.0f32, |t, (a, b)| t + portable::f16_to_f32(*a) * b);
        *out = reduce8_ps(acc) + tail;
    }
}

/// [`portable::i8_affine_rows`] with AVX2: [`weight_block`] of one input, eight rows at a
/// time (same operations in the same order, so the same bits); an input shorter than a row
/// by the reference.
///
/// # Safety
/// Needs AVX2.
#[target_feature(enable = "avx2")]
unsafe fn i8_affine_rows(q: &[i8], cols: usize, zero_point: i8, scale: f32, x: &[f32], y: &mut [f32]) {
    match q.get(..y.len() * cols) {
        // SAFETY: AVX2; one input of `cols` values, `y.len()` rows and outputs.
        Some(q) if x.len() == cols => unsafe {
            affine_block(AffineRows { q, cols, zero_point, scale }, x, cols, y, y.len(), 1)
        },
        _ => portable::i8_affine_rows(q, cols, zero_point, scale, x, y),
    }
}

/// [`portable::i4_tensor_rows`] with AVX2, as [`i8_affine_rows`].
///
/// # Safety
/// Needs AVX2.
#[target_feature(enable = "avx2")]
unsafe fn i4_tensor_rows(packed: &[u8], cols: usize, scale: f32, x: &[f32], y: &mut [f32]) {
    match packed.get(..y.len() * cols.div_ceil(2)) {
        // SAFETY: AVX2; one input of `cols` values, `y.len()` rows and outputs.
        Some(packed) if x.len() == cols => unsafe {
            weight_block(NibbleRows { packed, cols, scale }, x, cols, y, y.len(), 1)
        },
        _ => portable::i4_tensor_rows(packed, cols, scale, x, y),
    }
}

/// A [`WeightRows`] kind as the AVX2 tiles read it: eight weights at once into a vector.
trait Load8: WeightRows {
    /// Whether [`Load8::load8`] converts (more than a load): then a row is worth running
    /// against eight tokens per conversion.
    const CONVERTS: bool;

    /// Weights `c..c + 8` of row `r`, converted exactly to f32 (the lanes of
    /// [`WeightRows::chunk8`]).
    ///
    /// # Safety
    /// Needs AVX2; `r < rows` and `c + 8 <= cols`.
    unsafe fn load8(self, r: usize, c: usize) -> __m256;
}

impl Load8 for F32Rows<'_> {
    const CONVERTS: bool = false;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(self, r: usize, c: usize) -> __m256 {
        // SAFETY: row `r` holds `cols` floats from `r · cols`, and `c + 8 <= cols` (contract).
        unsafe { _mm256_loadu_ps(self.w.as_ptr().add(r * self.cols + c)) }
    }
}

impl AffineRows<'_> {
    /// Weights `c..c + 8` of row `r` sign-extended to i32 lanes, the zero point not yet
    /// subtracted.
    ///
    /// # Safety
    /// As [`Load8::load8`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8_i32(self, r: usize, c: usize) -> __m256i {
        // SAFETY: 8 bytes of row `r` from column `c` (contract).
        _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(self.q.as_ptr().add(r * self.cols + c).cast::<__m128i>()) })
    }
}

impl Load8 for AffineRows<'_> {
    const CONVERTS: bool = true;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(self, r: usize, c: usize) -> __m256 {
        // SAFETY: as this function's contract.
        let q = unsafe { self.load8_i32(r, c) };
        // q − zero_point in i32 lanes (−255..=255), then exactly to f32.
        _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(self.zero_point.into())))
    }
}

/// [`AffineRows`] whose zero point is 0 (symmetric quantization, as PyTorch's qint8
/// checkpoints store their weights): each weight is `q` itself, so the tiles skip the
/// subtraction, a fifth of the one-token product's vector operations. The same values, so
/// the same bits.
#[derive(Clone, Copy, Debug)]
struct SymmetricRows<'a>(AffineRows<'a>);

impl WeightRows for SymmetricRows<'_> {
    #[inline(always)]
    fn rows(self) -> usize {
        self.0.rows()
    }
    #[inline(always)]
    fn cols(self) -> usize {
        self.0.cols()
    }
    #[inline(always)]
    fn chunk8(self, r: usize, k: usize) -> [f32; 8] {
        self.0.chunk8(r, k)
    }
    #[inline(always)]
    fn get(self, r: usize, c: usize) -> f32 {
        self.0.get(r, c)
    }
    #[inline(always)]
    fn scale(self) -> Option<f32> {
        self.0.scale()
    }
}

impl Load8 for SymmetricRows<'_> {
    const CONVERTS: bool = true;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(self, r: usize, c: usize) -> __m256 {
        // SAFETY: as this function's contract; `q` in −128..=127 converts exactly.
        _mm256_cvtepi32_ps(unsafe { self.0.load8_i32(r, c) })
    }
}

impl Load8 for NibbleRows<'_> {
    const CONVERTS: bool = true;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(self, r: usize, c: usize) -> __m256 {
        // SAFETY: `c` is a multiple of 8 and `c + 8 <= cols`: the 4 bytes from `c / 2` lie in
        // row `r`'s `ceil(cols / 2)` (contract).
        let word =
            unsafe { self.packed.as_ptr().add(r * self.cols.div_ceil(2) + c / 2).cast::<u32>().read_unaligned() };
        // Nibble i (bits 4i..4i+4, low first) to the top of lane i, then sign-extended down.
        let top = _mm256_sllv_epi32(_mm256_set1_epi32(word as i32), _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0));
        _mm256_cvtepi32_ps(_mm256_srai_epi32::<28>(top))
    }
}

/// f32 rows against a block of `n` inputs: [`weight_block`] of [`F32Rows`].
///
/// # Safety
/// As [`weight_block`]; `w` holds whole rows of `cols`.
#[target_feature(enable = "avx2")]
unsafe fn f32_block(w: &[f32], cols: usize, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
    // SAFETY: as this function's contract.
    unsafe { weight_block(F32Rows { w, cols: cols.max(1) }, x, xs, y, ys, n) }
}

/// [`weight_block`] of int8 affine rows, read as [`SymmetricRows`] when the zero point is 0:
/// the one place that chooses, for the block and the one-token product alike.
///
/// # Safety
/// As [`weight_block`].
#[target_feature(enable = "avx2")]
unsafe fn affine_block(w: AffineRows<'_>, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
    // SAFETY: as this function's contract.
    unsafe {
        if w.zero_point == 0 {
            weight_block(SymmetricRows(w), x, xs, y, ys, n)
        } else {
            weight_block(w, x, xs, y, ys, n)
        }
    }
}

/// Rows of `w` against a block of `n` inputs (`x` rows `xs` apart, `y` rows `ys` apart), in
/// tiles of 2 rows × 4 inputs: each weight load serves four inputs and each input load two
/// rows. Weights that convert go a row × 8 inputs at a time first (one conversion for eight
/// products). A single input goes 8 rows at a time (eight independent addition chains).
/// Every output is [`super::dot_f32`]'s order of operations, then times the rows' scale, so
/// the same bits as the matvec of those rows.
///
/// # Safety
/// Needs AVX2. The first `n` rows of `x` (`cols` each, `xs >= cols` apart) and of `y`
/// (`rows` each, `ys >= rows` apart) are in bounds.
#[target_feature(enable = "avx2")]
unsafe fn weight_block<W: Load8>(w: W, x: &[f32], xs: usize, y: &mut [f32], ys: usize, n: usize) {
    let rows = w.rows();
    let mut first = 0;
    if W::CONVERTS {
        first = n / 8 * 8;
        for r in 0..rows {
            for t in (0..first).step_by(8) {
                // SAFETY: row r and inputs t..t+8 are in bounds by the contract.
                unsafe { weight_tile::<W, 1, 8>(w, r, x, xs, t, y, ys) };
            }
        }
    }
    let mut r = 0;
    if n == 1 {
        while r + 8 <= rows {
            // SAFETY: rows r..r+8 and input 0 are in bounds by the contract.
            unsafe { weight_tile::<W, 8, 1>(w, r, x, xs, 0, y, ys) };
            r += 8;
        }
    }
    while r < rows && first < n {
        let pair = r + 2 <= rows;
        let mut t = first;
        while t < n {
            // SAFETY (all arms): rows r..r+R and inputs t..t+M are in bounds by the contract.
            unsafe {
                match ((n - t).min(4), pair) {
                    (4, true) => weight_tile::<W, 2, 4>(w, r, x, xs, t, y, ys),
                    (4, false) => weight_tile::<W, 1, 4>(w, r, x, xs, t, y, ys),
                    (3, true) => weight_tile::<W, 2, 3>(w, r, x, xs, t, y, ys),
                    (3, false) => weight_tile::<W, 1, 3>(w, r, x, xs, t, y, ys),
                    (2, true) => weight_tile::<W, 2, 2>(w, r, x, xs, t, y, ys),
                    (2, false) => weight_tile::<W, 1, 2>(w, r, x, xs, t, y, ys),
                    (_, true) => weight_tile::<W, 2, 1>(w, r, x, xs, t, y, ys),
                    (_, false) => weight_tile::<W, 1, 1>(w, r, x, xs, t, y, ys),
                }
            }
            t += 4;
        }
        r += if pair { 2 } else { 1 };
    }
}

/// One tile of [`weight_block`]: rows `r..r+R` against inputs `t..t+M`.
///
/// # Safety
/// Needs AVX2; as [`weight_block`], with rows `r..r+R` and inputs `t..t+M` in bounds.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_tile<W: Load8, const R: usize, const M: usize>(
    w: W,
    r: usize,
    x: &[f32],
    xs: usize,
    t: usize,
    y: &mut [f32],
    ys: usize,
) {
    let cols = w.cols();
    let body = cols / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); M]; R];
    let mut c = 0;
    while c < body {
        // SAFETY: c + 8 <= cols: inside each of the R rows and M inputs (contract).
        unsafe {
            let mut xv = [_mm256_setzero_ps(); M];
            for (m, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(x.as_ptr().add((t + m) * xs + c));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let wv = w.load8(r + i, c);
                for (a, v) in a.iter_mut().zip(xv) {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, v));
                }
            }
        }
        c += 8;
    }
    let tail = |i: usize, m: usize| {
        let xt = &x[(t + m) * xs..(t + m) * xs + cols];
        (body..cols).fold(0.0f32, |s, c| s + w.get(r + i, c) * xt[c])
    };
    let scaled = |v: __m256| w.scale().map_or(v, |s| _mm256_mul_ps(v, _mm256_set1_ps(s)));
    if let (Ok(eight), 2, 4, true) = (<[__m256; 8]>::try_from(acc.as_flattened()), R, M, body == cols) {
        // Two rows by four tokens, no tails: all eight reductions at once, lanes [row r:
        // tokens t..t+4 | row r+1: the same], then each token's two outputs (adjacent in
        // its row of y) as one 8-byte store.
        let v = scaled(reduce8x8(eight));
        let (lo, hi) = (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let (t01, t23) = (_mm_unpacklo_ps(lo, hi), _mm_unpackhi_ps(lo, hi));
        // SAFETY: outputs r, r+1 of tokens t..t+4 are in bounds (contract).
        unsafe {
            let base = y.as_mut_ptr();
            let out = |m: usize, v: __m128| _mm_storeu_si64(base.add((t + m) * ys + r).cast(), _mm_castps_si128(v));
            out(0, t01);
            out(1, _mm_movehl_ps(t01, t01));
            out(2, t23);
            out(3, _mm_movehl_ps(t23, t23));
        }
        return;
    }
    if let (Ok(eight), 1, 8) = (<[__m256; 8]>::try_from(acc.as_flattened()), R, M) {
        // One row of eight tokens: the eight reductions at once, plus the tails; lane m is
        // token t + m's output.
        let mut v = reduce8x8(eight);
        if body < cols {
            let t = |m: usize| tail(0, m);
            v = _mm256_add_ps(v, _mm256_setr_ps(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7)));
        }
        let mut out = [0.0f32; 8];
        // SAFETY: 8 f32 stored into `out`.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), scaled(v)) };
        for (m, v) in out.into_iter().enumerate() {
            y[(t + m) * ys + r] = v;
        }
        return;
    }
    if let (Ok(eight), 8, 1) = (<[__m256; 8]>::try_from(acc.as_flattened()), R, M) {
        // Eight rows of one token: the eight reductions at once, plus the tails, one store.
        let mut v = reduce8x8(eight);
        if body < cols {
            let t = |k: usize| tail(k, 0);
            v = _mm256_add_ps(v, _mm256_setr_ps(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7)));
        }
        // SAFETY: outputs r..r+8 of token t are in bounds (contract).
        unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(t * ys + r), scaled(v)) };
        return;
    }
    for (i, a) in acc.iter().enumerate() {
        for (m, a) in a.iter().enumerate() {
            let sum = reduce8_ps(*a) + tail(i, m);
            y[(t + m) * ys + r + i] = w.scale().map_or(sum, |s| sum * s);
        }
    }
}

/// [`reduce8_ps`] of eight accumulators at once: lane k of the result is the reduction of
/// `a[k]`, in the same order (`((a0+a4) + (a1+a5)) + ((a2+a6) + (a3+a7))`): 16 instructions
/// (4 additions, 3 horizontal additions, 9 shuffles) where eight at a time one by one take
/// 48 (24 additions, 24 shuffles and extracts).
#[inline]
#[target_feature(enable = "avx2")]
fn reduce8x8(a: [__m256; 8]) -> __m256 {
    // [lo(p) + hi(p) | lo(q) + hi(q)]: the four sums a0+a4, a1+a5, a2+a6, a3+a7 of each.
    let halves = |p, q| _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(p, q), _mm256_permute2f128_ps::<0x31>(p, q));
    let (b01, b23, b45, b67) = (halves(a[0], a[1]), halves(a[2], a[3]), halves(a[4], a[5]), halves(a[6], a[7]));
    // `hadd` adds neighbours within each 128-bit half: (b0+b1), (b2+b3), then their sum,
    // leaving [r0 r2 r4 r6 | r1 r3 r5 r7].
    let d = _mm256_hadd_ps(_mm256_hadd_ps(b01, b23), _mm256_hadd_ps(b45, b67));
    _mm256_permutevar8x32_ps(d, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `((a0+a4) + (a1+a5)) + ((a2+a6) + (a3+a7))`, as [`crate::math::reduce8`].
#[inline]
#[target_feature(enable = "avx2")]
fn reduce8_ps(v: __m256) -> f32 {
    let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let t = _mm_add_ps(v, _mm_shuffle_ps::<0b10_11_00_01>(v, v));
    _mm_cvtss_f32(_mm_add_ss(t, _mm_movehl_ps(t, t)))
}

/// Eight-row f32 matvec, same order as [`super::dot_f32`]: lane-wise `acc += w·x` (no FMA),
/// the fixed eight-lane reduction, then the scalar tail.
///
/// # Safety
/// Needs AVX2. `w` holds `y.len()` rows of `cols`, `x` holds `cols` values.
#[target_feature(enable = "avx2")]
unsafe fn f32_rows(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    let cols = cols.min(x.len());
    let rows = y.len().min(w.len() / cols.max(1));
    let body = cols / 8 * 8;
    let tail = |row: &[f32]| row[body..cols].iter().zip(&x[body..cols]).fold(0.0f32, |t, (a, b)| t + a * b);
    let mut r = 0;
    // Eight rows at a time: eight independent addition chains (four left the adder idle at
    // these short rows), and their reductions as one.
    while r + 8 <= rows {
        let base = w[r * cols..(r + 8) * cols].as_ptr();
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut c = 0;
        while c < body {
            // SAFETY: c + 8 <= body <= cols: inside x and inside each of the eight rows that
            // start at base + k·cols (the slice above covers all eight).
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(c));
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(base.add(k * cols + c)), xv));
                }
            }
            c += 8;
        }
        let mut sums = reduce8x8(acc);
        if body < cols {
            let t = |k: usize| tail(&w[(r + k) * cols..(r + k + 1) * cols]);
            sums = _mm256_add_ps(sums, _mm256_setr_ps(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7)));
        }
        // SAFETY: r + 8 <= rows <= y.len().
        unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(r), sums) };
        r += 8;
    }
    for (k, out) in y[r..rows].iter_mut().enumerate() {
        *out = portable::dot_f32(&w[(r + k) * cols..(r + k + 1) * cols], x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform noise in [-0.5, 0.5) from `seed`, if this CPU has AVX2 (the tests comparing
    /// the AVX2 kernels with the portable ones have nothing to compare without it).
    fn avx2_and_noise(seed: u64) -> Option<impl FnMut() -> f32> {
        let mut rng = crate::Rng::new(seed);
        std::is_x86_feature_detected!("avx2").then(move || move || rng.next_f32() - 0.5)
    }

    #[test]
    fn avx2_quantize_gives_the_portable_bits() {
        let Some(mut next) = avx2_and_noise(7) else { return };
        for n in [0, 1, 7, 8, 31, 32, 33, 64, 100, 128, 256] {
            for scale in [1e-30f32, 1e-3, 1.0, 1e4, 3e38] {
                let mut x: Vec<f32> = (0..n).map(|_| next() * scale).collect();
                if n > 5 && scale == 1.0 {
                    x[5] = 0.5 * (x[4] + x[3]); // ties and repeats
                }
                let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
                let pa = portable::quantize(&x, &mut a);
                // SAFETY: AVX2 was detected above.
                let pb = unsafe { quantize(&x, &mut b) };
                assert_eq!(pa.map(f32::to_bits), pb.map(f32::to_bits), "n {n} scale {scale}");
                assert_eq!(a, b, "n {n} scale {scale}");
                if n > 9 {
                    x[9] = f32::NAN;
                    // SAFETY: as above.
                    assert_eq!((portable::quantize(&x, &mut a), unsafe { quantize(&x, &mut b) }), (None, None));
                }
            }
        }
    }

    #[test]
    fn avx2_f32_products_give_the_portable_bits() {
        let Some(mut next) = avx2_and_noise(11) else { return };
        for (rows, cols) in [(1, 8), (7, 5), (8, 64), (13, 64), (16, 19), (24, 128), (3, 200)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let n = 7;
            let x: Vec<f32> = (0..n * cols).map(|_| next() * 3.0).collect();
            let want: Vec<f32> = (0..n * rows)
                .map(|i| portable::dot_f32(&w[i % rows * cols..][..cols], &x[i / rows * cols..][..cols]))
                .collect();
            let mut y = vec![0.0f32; rows];
            // SAFETY: AVX2 was detected; the sizes match.
            unsafe { f32_rows(&w, cols, &x[..cols], &mut y) };
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want[..rows].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "rows {rows} cols {cols}"
            );
            let mut block = vec![0.0f32; n * rows];
            // SAFETY: as above; n inputs `cols` apart, n outputs `rows` apart.
            unsafe { f32_block(&w, cols, &x, cols, &mut block, rows, n) };
            assert_eq!(
                block.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "block {rows}x{cols}"
            );
        }
    }

    #[test]
    fn avx2_row_dots_are_exact() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let vnni = std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl");
        for b in [Some(Avx2 { vnni: false }), vnni.then_some(Avx2 { vnni: true })].into_iter().flatten() {
            crate::kernels::tests::check_row_dots(|q, cols, xq, out| b.i8_row_dots(q, cols, xq, out));
        }
    }
}
