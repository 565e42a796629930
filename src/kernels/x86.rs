//! x86-64 paths, taken only after the host has detected AVX2 and F16C and called
//! [`enable_avx2`].
//!
//! They exist because they measurably beat the portable code, which LLVM can only vectorise
//! to SSE2 (x86-64's baseline): see the README's speed table. Four rows are computed at once
//! so each load of `x` serves four rows and four accumulator chains hide latency. Every path
//! returns exactly what the portable kernel returns: integer sums are exact, and the float
//! epilogue performs the portable code's operations in the same order, lane by lane.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicBool, Ordering};

use half::f16;

use super::Scales;

static AVX2: AtomicBool = AtomicBool::new(false);

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
        Scales::One(s) => _mm_set1_ps(s),
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

/// Per-row-scaled int8 rows: `y[r] = (0 + Σ q·xq · scale_r) · sx`, as [`super::row_value`].
///
/// # Safety
/// Needs AVX2 and F16C. `q` holds `y.len()` rows of `cols`, `xq` holds `cols` values.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn i8_rows(q: &[i8], cols: usize, xq: &[i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
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
    for (k, out) in y[r..rows].iter_mut().enumerate() {
        let acc = super::dot_i8(&q[(r + k) * cols..(r + k + 1) * cols], xq);
        *out = super::row_value(core::iter::once((acc as i64, scales.get(r + k))), sx);
    }
}

/// Int4 rows in groups of 32 (`cols` a multiple of 32): `y[r] = (0 + Σ_g acc_g · scale_rg) · sx`,
/// as [`super::row_value`]. Reorders `xq` in place (each group of 32 becomes its 16 even then
/// 16 odd elements, matching the low and high nibbles), so the caller must not reuse it.
///
/// # Safety
/// Needs AVX2 and F16C. `packed` holds `y.len()` rows of `cols / 2` bytes, `xq` `cols` values.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn i4_rows(packed: &[u8], cols: usize, xq: &mut [i8], scales: &Scales<'_>, sx: f32, y: &mut [f32]) {
    let groups = cols / 32;
    for g in xq.chunks_exact_mut(32) {
        let mut even_odd = [0i8; 32];
        for i in 0..16 {
            even_odd[i] = g[2 * i];
            even_odd[16 + i] = g[2 * i + 1];
        }
        g.copy_from_slice(&even_odd);
    }
    let row_bytes = cols / 2;
    let rows = y.len().min(packed.len() / row_bytes.max(1));
    let mask = _mm_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    // One row's group: nibbles to signed bytes [lo 16 | hi 16] times the reordered inputs,
    // as eight i32 partial sums.
    let group = |p: *const u8, x: __m256i| -> __m256i {
        // SAFETY: callers pass 16 readable bytes.
        let p = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
        let lo = _mm_and_si128(p, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(p), mask);
        let w = _mm256_sub_epi8(_mm256_xor_si256(_mm256_set_m128i(hi, lo), eight), eight);
        madd_i8(_mm256_setzero_si256(), w, x)
    };
    let mut r = 0;
    while r + 4 <= rows {
        let mut sum = _mm_setzero_ps();
        for g in 0..groups {
            // SAFETY: group g of every row lies inside its `row_bytes`, and of xq inside `cols`.
            let sums = unsafe {
                let x = load256(xq.as_ptr().add(g * 32));
                let at = |k: usize| packed.as_ptr().add((r + k) * row_bytes + g * 16);
                hsum4_epi32(group(at(0), x), group(at(1), x), group(at(2), x), group(at(3), x))
            };
            sum = _mm_add_ps(sum, _mm_mul_ps(_mm_cvtepi32_ps(sums), scales4(scales, r, groups, g)));
        }
        let v = _mm_mul_ps(sum, _mm_set1_ps(sx));
        let mut out = [0.0f32; 4];
        // SAFETY: `out` has room for four f32.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), v) };
        y[r..r + 4].copy_from_slice(&out);
        r += 4;
    }
    for (k, out) in y[r..rows].iter_mut().enumerate() {
        let row = r + k;
        let mut sum = 0.0f32;
        for g in 0..groups {
            // SAFETY: as above.
            let v = unsafe { group(packed.as_ptr().add(row * row_bytes + g * 16), load256(xq.as_ptr().add(g * 32))) };
            let z = _mm256_setzero_si256();
            let acc = _mm_cvtsi128_si32(hsum4_epi32(v, z, z, z));
            sum += acc as f32 * scales.get(row * groups + g);
        }
        *out = sum * sx;
    }
}

/// Four-row f32 matvec, same order as [`super::dot_f32`]: lane-wise `acc += w·x` (no FMA),
/// the fixed eight-lane reduction, then the scalar tail.
///
/// # Safety
/// Needs AVX2. `w` holds `y.len()` rows of `cols`, `x` holds `cols` values.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn f32_rows(w: &[f32], cols: usize, x: &[f32], y: &mut [f32]) {
    let cols = cols.min(x.len());
    let rows = y.len().min(w.len() / cols.max(1));
    let body = cols / 8 * 8;
    let reduce = |v: __m256| -> f32 {
        // ((a0+a4) + (a1+a5)) + ((a2+a6) + (a3+a7)), as `reduce8`.
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t = _mm_add_ps(v, _mm_shuffle_ps::<0b10_11_00_01>(v, v));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_movehl_ps(t, t)))
    };
    let tail = |row: &[f32]| row[body..cols].iter().zip(&x[body..cols]).fold(0.0f32, |t, (a, b)| t + a * b);
    let mut r = 0;
    while r + 4 <= rows {
        let base = w[r * cols..(r + 4) * cols].as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < body {
            // SAFETY: c + 8 <= body <= cols: inside x and inside each of the four rows that
            // start at base + k·cols (the slice above covers all four).
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(c));
                let p = base.add(c);
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(_mm256_loadu_ps(p), xv));
                acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(_mm256_loadu_ps(p.add(cols)), xv));
                acc[2] = _mm256_add_ps(acc[2], _mm256_mul_ps(_mm256_loadu_ps(p.add(2 * cols)), xv));
                acc[3] = _mm256_add_ps(acc[3], _mm256_mul_ps(_mm256_loadu_ps(p.add(3 * cols)), xv));
            }
            c += 8;
        }
        for (k, a) in acc.iter().enumerate() {
            let t = if body == cols { 0.0 } else { tail(&w[(r + k) * cols..(r + k + 1) * cols]) };
            y[r + k] = reduce(*a) + t;
        }
        r += 4;
    }
    for (k, out) in y[r..rows].iter_mut().enumerate() {
        *out = super::dot_f32(&w[(r + k) * cols..(r + k + 1) * cols], x);
    }
}
