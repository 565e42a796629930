//! Fixed-point arithmetic for blobs that compute in integers only
//! ([`crate::format::FLAG_FIXED_POINT`]): the numbers, the activation tables, LayerNorm, the
//! input quantization and the per-row requantization of every product. `fixed_model.rs` is
//! the forward pass written with them.
//!
//! Activations are Q16 (`i32`, `value = raw / 2^16`); table values, the decay of the scan and
//! the router's weights are Q30. Every operation is integer arithmetic with a stated bound,
//! so the results are the same bits on every target, and nothing a blob can hold makes one
//! overflow: products of two `i32` run in `i64`, and every narrowing saturates.

use crate::format::{Requant, TableSpec};

/// Fractional bits of an activation.
pub const FRAC: u32 = 16;

/// 1.0 in Q30.
pub const ONE_Q30: i32 = 1 << 30;

/// `log2(e)` in Q30 (1.442695040888963 · 2^30, rounded).
const LOG2E_Q30: i32 = 1_549_082_005;

/// Saturates an `i64` to `i32`. The common case (it fits: the high word is the low word's
/// sign) is one compare on 32-bit cores, where a 64-bit clamp is a chain of branches.
#[inline(always)]
pub fn saturate(v: i64) -> i32 {
    let lo = v as i32;
    if (v >> 32) as i32 == lo >> 31 {
        lo
    } else if v < 0 {
        i32::MIN
    } else {
        i32::MAX
    }
}

/// `round(v / 2^shift)` (ties toward +inf), for `shift` in `0..=62` and `|v| < 2^62`
/// (every caller's products are: two `i32`, or an `i32` and a 31-bit factor), so adding the
/// half cannot overflow.
#[inline(always)]
fn round_shift(v: i64, shift: u32) -> i64 {
    match shift {
        0 => v,
        s => (v + (1 << (s - 1))) >> s,
    }
}

/// `round(v / 2^shift)` saturated to `i32`, for a shift known only at run time (`0..=62`)
/// and `|v| < 2^62`. On 32-bit cores, from the two 32-bit halves of `v` (a 64-bit shift by
/// a variable amount is a library call on ARMv6-M and a branchy sequence elsewhere); the
/// same value on every target.
#[inline(always)]
pub fn shift_round(v: i64, shift: u32) -> i32 {
    #[cfg(target_pointer_width = "32")]
    return shift_round_halves(v, shift);
    #[cfg(not(target_pointer_width = "32"))]
    return saturate(round_shift(v, shift));
}

/// [`shift_round`] with 32-bit shifts only: `q = floor(v / 2^(shift - 1))` from the halves,
/// then `(q + 1) >> 1`, which is `floor((v + 2^(shift-1)) / 2^shift)`.
#[cfg(any(test, target_pointer_width = "32"))]
#[inline(always)]
fn shift_round_halves(v: i64, shift: u32) -> i32 {
    let Some(t) = shift.checked_sub(1) else {
        return saturate(v);
    };
    let (hi, lo) = ((v >> 32) as i32, v as u32);
    let (q_hi, q_lo) = match t {
        0 => (hi, lo as i32),
        32.. => {
            let q = hi >> (t - 32).min(31);
            (q >> 31, q)
        }
        t => (hi >> t, ((lo >> t) | ((hi as u32) << (32 - t))) as i32),
    };
    if q_hi == q_lo >> 31 {
        // q fits an i32: (q + 1) >> 1 without leaving 32 bits.
        (q_lo >> 1) + (q_lo & 1)
    } else {
        saturate(((((q_hi as i64) << 32) | q_lo as u32 as i64) + 1) >> 1)
    }
}

/// `round(v / 2^shift)` saturated to `i32`: a wide sum back to its Q format.
#[inline(always)]
pub fn narrow(v: i64, shift: u32) -> i32 {
    // Wide sums may reach i64's range (saturated): the rounding half saturates too.
    match shift {
        0 => saturate(v),
        s => saturate(v.saturating_add(1 << (s - 1)) >> s),
    }
}

/// `a · b` exactly, as `i64`. Cores without a 32×32→64 multiply (ARMv6-M) would call the
/// full 64×64 routine for it; there it is four 16×16 products instead. Same value on every
/// target.
#[inline(always)]
pub fn mul_wide(a: i32, b: i32) -> i64 {
    #[cfg(itera_armv6m)]
    return mul_halves(a, b);
    #[cfg(not(itera_armv6m))]
    return a as i64 * b as i64;
}

/// [`mul_wide`] from 16-bit halves: `a = ah·2^16 + al`, `b = bh·2^16 + bl` with `al, bl` in
/// `0..2^16` and `ah, bh` in `±2^15`, so each partial product fits 32 bits.
#[cfg(any(test, itera_armv6m))]
#[inline(always)]
fn mul_halves(a: i32, b: i32) -> i64 {
    let (ah, al, bh, bl) = (a >> 16, (a & 0xFFFF) as u32, b >> 16, (b & 0xFFFF) as u32);
    let high = ((ah * bh) as i64) << 32; // |ah · bh| <= 2^30
    let mid = (ah * bl as i32) as i64 + (al as i32 * bh) as i64; // each below 2^31 in magnitude
    high + (mid << 16) + (al * bl) as i64
}

/// `a · b / 2^shift`, rounded and saturated, for Q-format operands.
#[inline(always)]
pub fn mul_shift(a: i32, b: i32, shift: u32) -> i32 {
    saturate(round_shift(mul_wide(a, b), shift))
}

/// `floor(v · frac / 2^bits)` for `0 <= frac < 2^bits`, `bits <= 16`, in 32-bit arithmetic
/// only (exact: `v` splits into 16-bit halves whose products cannot overflow), so a table
/// lookup costs no 64-bit multiply on cores without one.
#[inline(always)]
fn mul_frac(v: i32, frac: u32, bits: u32) -> i32 {
    let hi = v >> 16; // -2^15..2^15
    let lo = (v & 0xFFFF) as u32; // 0..2^16
                                  // hi · frac < 2^15 · 2^16; shifted left by 16 - bits it stays below 2^31 for bits >= 1.
    (hi * frac as i32) * (1 << (16 - bits)) + ((lo * frac) >> bits) as i32
}

/// A sampled activation function (see [`TableSpec`]): Q30 values at `k / 2^step_log2`.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    values: &'a [i32],
    /// Fractional bits of the argument below one sample step: `FRAC - step_log2`.
    frac_bits: u32,
}

impl<'a> Table<'a> {
    /// A view of `values` sampled as `spec` says; `None` unless the length matches and it
    /// has at least two samples.
    pub fn new(values: &'a [i32], spec: &TableSpec) -> Option<Self> {
        (values.len() == spec.len as usize && values.len() >= 2 && spec.step_log2 < FRAC)
            .then_some(Table { values, frac_bits: FRAC - spec.step_log2 })
    }

    /// `f(x)` in Q30 for a Q16 `x >= 0` (negative: `f(0)`), linearly interpolated; past the
    /// last sample, the last sample.
    #[inline(always)]
    pub fn at(&self, x: i32) -> i32 {
        let x = x.max(0);
        let k = (x >> self.frac_bits) as usize;
        match (self.values.get(k), self.values.get(k + 1)) {
            (Some(&a), Some(&b)) => {
                let frac = (x & ((1 << self.frac_bits) - 1)) as u32;
                // a, b in 0..=2^30 (checked by `Blob::parse`): b - a fits an i32.
                a + mul_frac(b - a, frac, self.frac_bits)
            }
            _ => self.values.last().copied().unwrap_or(0),
        }
    }
}

/// The four tables of a fixed-point blob.
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    /// `sigmoid(x)`, `x >= 0`.
    pub sigmoid: Table<'a>,
    /// `Phi(x)`, `x >= 0` (the normal CDF: GELU).
    pub gelu: Table<'a>,
    /// `ln(1 + exp(-x))`, `x >= 0`.
    pub softplus: Table<'a>,
    /// `2^-x`, `0 <= x <= 1`.
    pub exp2: Table<'a>,
}

impl Tables<'_> {
    /// `exp(-x)` in Q30 for a Q16 `x >= 0`: `2^-(x·log2 e)`, the integer part a shift, the
    /// fraction from the table.
    #[inline]
    pub fn exp_neg(&self, x: i32) -> i32 {
        let t = saturate(mul_wide(x.max(0), LOG2E_Q30) >> 30); // Q16, >= 0
        let whole = (t >> FRAC) as u32;
        if whole >= 31 {
            return 0;
        }
        self.exp2.at(t & ((1 << FRAC) - 1)) >> whole
    }

    /// `sigmoid(x)` in Q30 for a Q16 `x`: `1 - sigmoid(-x)` below zero.
    #[inline(always)]
    fn sigmoid_q30(&self, x: i32) -> i32 {
        let s = self.sigmoid.at(saturate((x as i64).abs()));
        if x < 0 {
            ONE_Q30 - s
        } else {
            s
        }
    }

    /// `silu(x) = x · sigmoid(x)`, Q16.
    #[inline(always)]
    pub fn silu(&self, x: i32) -> i32 {
        mul_shift(x, self.sigmoid_q30(x), 30)
    }

    /// `gelu(x) = x · Phi(x)`, Q16.
    #[inline(always)]
    pub fn gelu(&self, x: i32) -> i32 {
        let p = self.gelu.at(saturate((x as i64).abs()));
        mul_shift(x, if x < 0 { ONE_Q30 - p } else { p }, 30)
    }

    /// `softplus(x) = max(x, 0) + ln(1 + exp(-|x|))`, Q16.
    #[inline(always)]
    pub fn softplus(&self, x: i32) -> i32 {
        let tail = self.softplus.at(saturate((x as i64).abs())) >> (30 - FRAC);
        x.max(0).saturating_add(tail)
    }
}

/// `floor(v / n)` for `n >= 1`: a shift when `n` is a power of two (every published width),
/// which 32-bit cores do inline instead of calling a 64-bit division routine.
#[inline]
pub fn div_floor(v: i64, n: usize) -> i64 {
    match n {
        0 => v,
        n if n.is_power_of_two() => v >> n.trailing_zeros(),
        n => v.div_euclid(n as i64),
    }
}

/// `v / n` for `n >= 1`, as [`div_floor`] for unsigned values.
#[inline]
pub fn div_u64(v: u64, n: usize) -> u64 {
    match n {
        0 => v,
        n if n.is_power_of_two() => v >> n.trailing_zeros(),
        n => v / n as u64,
    }
}

/// `floor(sqrt(v))`, bit by bit (no division, no float).
pub fn isqrt(v: u64) -> u64 {
    let (mut rem, mut root) = (v, 0u64);
    let mut bit = 1u64 << 62;
    while bit > v {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `eps` (an f32's bits) in Q32, rounded, read from the bits without float arithmetic:
/// `norm_eps` is an f32 of the config, and the forward pass adds it to a Q32 variance.
pub fn q32_of_f32_bits(bits: u32) -> u64 {
    let exp = ((bits >> 23) & 0xFF) as i32;
    if bits >> 31 == 1 || exp == 0 {
        return 0; // negative, zero or subnormal (below 2^-126): nothing in Q32
    }
    if exp == 0xFF {
        return u64::MAX >> 2; // infinite or NaN: the most a variance can hold
    }
    let mant = u64::from((bits & 0x7F_FFFF) | 0x80_0000); // value = mant · 2^(exp - 150)
    match exp - 150 + 32 {
        s if s >= 0 => mant.checked_shl(s as u32).filter(|v| *v <= u64::MAX >> 2).unwrap_or(u64::MAX >> 2),
        s if s <= -64 => 0,
        s => (mant + (1 << (-s - 1))) >> -s,
    }
}

/// `out = (x - mean) / sqrt(var + eps) · weight + bias`, all Q16, `eps` in Q32.
///
/// The row is first shifted so that its largest value has 24 significant bits (left for
/// small values, whose mean and deviations then keep their precision; right for large
/// ones): every deviation fits 25 bits, each square 50, and their sum an `i64` for rows up
/// to 2^13 wide (wider rows are processed in the same way, their sums saturating).
/// One division for the mean, one for the variance, an integer square root and one
/// division for the reciprocal per row; per element a subtraction and two 32×32→64
/// products.
pub fn layer_norm(x: &[i32], weight: &[i32], bias: &[i32], eps_q32: u64, out: &mut [i32]) {
    let n = x.len().max(1);
    let amax = x.iter().fold(0u32, |m, v| m.max(v.unsigned_abs()));
    // x_s = x · 2^k (k may be negative): Q(16 + k) with max |x_s| in [2^23, 2^24).
    let k = 24 - (32 - amax.max(1).leading_zeros() as i32);
    let (left, right) = (k.max(0) as u32, (-k).max(0) as u32);
    let scaled = |v: i32| (v << left) >> right;
    let sum: i64 = x.iter().map(|&v| scaled(v) as i64).sum();
    let mean = div_floor(sum, n) as i32; // within the x_s range
    let sq = x.iter().fold(0u64, |acc, &v| {
        let d = (scaled(v) - mean).unsigned_abs() as u64; // < 2^25
        acc.saturating_add(d * d)
    });
    // var + eps in Q(32 + 2k).
    let eps = match 2 * k {
        s if s >= 0 => eps_q32.saturating_mul(1u64.checked_shl(s as u32).unwrap_or(u64::MAX)),
        s => eps_q32.checked_shr(-s as u32).unwrap_or(0),
    };
    let var = div_u64(sq, n).saturating_add(eps).max(1);
    // std · 2^j, the radicand shifted left by an even 2j to keep about 31 significant bits.
    let j = (var.leading_zeros().saturating_sub(2) / 2).min(24);
    let std_scaled = isqrt(var << (2 * j)).max(1); // = std in Q(16 + k), times 2^j
                                                   // norm_q16 = dev · 2^(16 + j) / std_scaled = dev · inv >> (p - 16 - j), with
                                                   // inv = 2^p / std_scaled of about 30 bits; p - 16 - j >= 14 (see the bounds on j).
    let p = 29 + (64 - std_scaled.leading_zeros());
    let inv = ((1u64 << p) / std_scaled) as i32; // below 2^31: std_scaled >= 2^(p - 30)
    let shift = p - FRAC - j;
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        // |dev| < 2^25 and inv < 2^31: the product is below 2^56.
        let norm = shift_round(mul_wide(scaled(v) - mean, inv), shift);
        *o = mul_shift(norm, w, FRAC).saturating_add(b);
    }
}

/// How [`quantize`] scaled a vector: `x ≈ xq · amax' · 2^shift / 127`, with `amax'` in
/// `2^14..2^15` (normalised: `shift` is negative for small vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputScale {
    /// `max|x| · 2^-shift`, in `2^14..2^15`.
    pub amax: u32,
    /// How far `x` was shifted right before scaling (left when negative).
    pub shift: i32,
}

/// Quantizes Q16 `x` to symmetric int8 in `xq` (`xq = round(x · 127 / max|x|)`, within
/// ±127), the integer twin of the float kernels' input quantization; `None` when `x` is all
/// zero (the product is then zero).
pub fn quantize(x: &[i32], xq: &mut [i8]) -> Option<InputScale> {
    let amax = x.iter().fold(0u32, |m, v| m.max(v.unsigned_abs()));
    if amax == 0 {
        return None;
    }
    // x_s = x · 2^-shift with max |x_s| = a in 2^14..2^15 (a left shift only happens when
    // max |x| < 2^14, so it cannot overflow).
    let shift = (32 - amax.leading_zeros()) as i32 - 15;
    let (right, left) = (shift.max(0) as u32, (-shift).max(0) as u32);
    let a = (amax >> right) << left;
    // m = round(127 · 2^24 / a) <= 130,048; |x_s| <= a (+1 after a right shift), so
    // |x_s · m| <= 127 · 2^24 + 2^17 < 2^31: no overflow, and the result is within ±127.
    let m = ((127u32 << 24) + a / 2) / a;
    for (q, &v) in xq.iter_mut().zip(x) {
        *q = ((((v >> right) << left) * m as i32 + (1 << 23)) >> 24) as i8;
    }
    Some(InputScale { amax: a, shift })
}

/// How [`Requantizer`] treats the rows of a matrix with `cols` columns: their sums are at most
/// `128 · 127 · cols` in magnitude (a weight may be -128 in a blob), so they can be shifted
/// left by `29 - bitlen(16256 · cols)` and stay below 2^29; `None` for rows so long (over
/// 33,000 columns) that their sums may not.
pub fn sum_headroom(cols: usize) -> Option<u32> {
    let bound = 16_256u64.saturating_mul(cols as u64);
    29u32.checked_sub(64 - bound.leading_zeros())
}

/// One matrix product's requantization: what [`Requantizer::apply`] needs of the input's
/// scale and of the matrix's width, computed once per product rather than once per row.
#[derive(Clone, Copy, Debug)]
pub struct Requantizer {
    /// The input's `amax'`.
    amax: u32,
    /// `-14 - shift`: a row's `e` is its `requant.shift` plus this.
    e_base: i32,
    /// The sums' headroom ([`sum_headroom`]; 0 when there is none).
    headroom: u32,
    /// `e_base + headroom - 16`: a row's `t - 15` is its `requant.shift` plus this; far
    /// below zero when there is no headroom (every row then takes the 64-bit path).
    t_base: i32,
}

impl Requantizer {
    /// For products of an input scaled as `x` with rows of the given [`sum_headroom`].
    pub fn new(x: InputScale, headroom: Option<u32>) -> Self {
        let e_base = -14 - x.shift;
        let (headroom, t_base) = match headroom {
            Some(h) => (h, e_base + h as i32 - 16),
            None => (0, i32::MIN / 2),
        };
        Requantizer { amax: x.amax, e_base, headroom, t_base }
    }

    /// One row's Q16 output from its integer sum `acc = Σ q·xq` (`|acc| <= 16256 · cols`):
    /// `round(acc · c / 2^e)`, saturated, with `c = round(amax' · multiplier / 2^14)` (17
    /// bits: `amax'` and the multiplier have 15 and 16) and `e = requant.shift - 14 - shift`:
    /// that is `acc · scale / 127 · amax' · 2^shift` to within `c`'s rounding (2^-17
    /// relative). In the usual case it runs in 32-bit arithmetic: with `a = acc << headroom`
    /// (below 2^29, see [`sum_headroom`]) and `t = e + headroom - 1` in `15..47`,
    /// `floor(acc · c / 2^(e - 1)) = floor(a · c / 2^15) >> (t - 15)` exactly, and
    /// `floor(a · c / 2^15)` is below 2^31 ([`mul_floor_shift15`]). Past that (`t >= 47`)
    /// the quotient would be 0 or -1, so the rounded result is 0.
    #[inline(always)]
    pub fn apply(&self, acc: i32, requant: Requant) -> i32 {
        // amax' · multiplier < 2^31, so adding the half stays within u32.
        let c = (self.amax * u32::from(requant.multiplier) + (1 << 13)) >> 14; // 2^15..=2^17
        let shift = i32::from(requant.shift);
        let t15 = shift + self.t_base;
        if (t15 as u32) < 32 {
            let q = mul_floor_shift15(acc << self.headroom, c) >> t15;
            (q >> 1) + (q & 1)
        } else if t15 >= 32 {
            0
        } else {
            requantize_wide(acc, c, shift + self.e_base)
        }
    }
}

/// `floor(a · c / 2^15)` for `|a| < 2^29` and `c <= 2^17`, below 2^31 in magnitude. Cores
/// without a 32×32→64 multiply (ARMv6-M) split `a` at bit 15 (`a = ah · 2^15 + al`):
/// `ah · c + floor(al · c / 2^15)`, two 32-bit products; the same value everywhere.
#[inline(always)]
fn mul_floor_shift15(a: i32, c: u32) -> i32 {
    #[cfg(itera_armv6m)]
    return mul_floor_shift15_halves(a, c);
    #[cfg(not(itera_armv6m))]
    return ((a as i64 * c as i64) >> 15) as i32;
}

/// [`mul_floor_shift15`] in 32-bit products.
#[cfg(any(test, itera_armv6m))]
#[inline(always)]
fn mul_floor_shift15_halves(a: i32, c: u32) -> i32 {
    (a >> 15) * c as i32 + (((a & 0x7FFF) as u32 * c) >> 15) as i32
}

/// [`Requantizer::apply`] when its 32-bit path does not apply: the product in 64 bits (a negative
/// `e` a saturating left shift).
#[inline(never)]
fn requantize_wide(acc: i32, c: u32, e: i32) -> i32 {
    let p = acc as i64 * c as i64; // |p| < 2^47
    match e {
        ..0 => saturate(p.saturating_mul(1 << (-e).min(32))),
        48.. => 0, // |p| / 2^e < 1/2
        e => saturate(round_shift(p, e as u32)),
    }
}

/// One stored weight `q` of a row with `requant` in Q16: `q · 127 · multiplier ·
/// 2^(16 - shift)` (embedding and position lookups).
#[inline(always)]
pub fn dequantize(q: i8, requant: Requant) -> i32 {
    let v = q as i64 * 127 * i64::from(requant.multiplier); // |v| < 2^30
    let s = i32::from(requant.shift) - FRAC as i32;
    if s >= 0 {
        shift_round(v, s as u32)
    } else {
        saturate(v << (-s).min(32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::TABLES;

    fn q16(v: f64) -> i32 {
        (v * 65536.0).round() as i32
    }

    fn real(v: i32) -> f64 {
        v as f64 / 65536.0
    }

    /// The tables as the packer samples them.
    fn sampled(f: impl Fn(f64) -> f64, spec: &TableSpec) -> Vec<i32> {
        let step = 1.0 / (1u32 << spec.step_log2) as f64;
        (0..spec.len).map(|k| (f(k as f64 * step) * (1u64 << 30) as f64).round() as i32).collect()
    }

    fn with_tables<R>(run: impl FnOnce(&Tables<'_>) -> R) -> R {
        let erf = |x: f64| libm::erf(x);
        let s = sampled(|x| 1.0 / (1.0 + (-x).exp()), &TABLES[0]);
        let g = sampled(|x| 0.5 * (1.0 + erf(x / core::f64::consts::SQRT_2)), &TABLES[1]);
        let p = sampled(|x| (-x).exp().ln_1p(), &TABLES[2]);
        let e = sampled(|x| (-x * core::f64::consts::LN_2).exp(), &TABLES[3]);
        let t = Tables {
            sigmoid: Table::new(&s, &TABLES[0]).expect("sigmoid"),
            gelu: Table::new(&g, &TABLES[1]).expect("gelu"),
            softplus: Table::new(&p, &TABLES[2]).expect("softplus"),
            exp2: Table::new(&e, &TABLES[3]).expect("exp2"),
        };
        run(&t)
    }

    #[test]
    fn shift_round_halves_is_the_rounded_shift() {
        let mut rng = crate::Rng::new(8);
        let mut values: std::vec::Vec<i64> =
            std::vec![0, 1, -1, 2, -2, 3, -3, (1 << 62) - 1, -(1 << 62) + 1, 1 << 40, -(1 << 40)];
        values.extend(
            (0..if cfg!(miri) { 30 } else { 3000 })
                .map(|_| ((rng.next_u32() as i64) << 32 | rng.next_u32() as i64) >> (2 + rng.next_u32() % 40)),
        );
        for &v in &values {
            for shift in 0..=62 {
                assert_eq!(shift_round_halves(v, shift), saturate(round_shift(v, shift)), "{v} >> {shift}");
            }
        }
    }

    #[test]
    fn mul_halves_is_the_product() {
        let edge = [i32::MIN, i32::MIN + 1, -65537, -65536, -65535, -1, 0, 1, 65535, 65536, 1 << 30, i32::MAX];
        let mut rng = crate::Rng::new(4);
        let random = (0..if cfg!(miri) { 20 } else { 2000 }).map(|_| rng.next_u32() as i32);
        let values: std::vec::Vec<i32> = edge.into_iter().chain(random).collect();
        for &a in &values {
            for &b in values.iter().step_by(7) {
                assert_eq!(mul_halves(a, b), a as i64 * b as i64, "{a} * {b}");
            }
        }
    }

    #[test]
    fn mul_frac_is_the_exact_floor() {
        for v in [i32::MIN, -1 << 30, -123_456_789, -1, 0, 1, 77, 1 << 29, i32::MAX] {
            for bits in [1, 5, 10, 11, 16] {
                for frac in [0, 1, (1 << bits) / 3, (1 << bits) - 1] {
                    let want = ((v as i64 * frac as i64) >> bits) as i32;
                    assert_eq!(mul_frac(v, frac, bits), want, "{v} {frac} {bits}");
                }
            }
        }
    }

    #[test]
    fn activations_match_their_definitions() {
        with_tables(|t| {
            let mut worst = [0.0f64; 4];
            // Miri runs the same test on a coarser grid (it interprets every instruction).
            let step = if cfg!(miri) { 97 } else { 1 };
            for i in (-20_000..=20_000).step_by(step) {
                let x = i as f64 * 0.001;
                let sig = 1.0 / (1.0 + (-x).exp());
                let phi = 0.5 * (1.0 + libm::erf(x / core::f64::consts::SQRT_2));
                let sp = if x > 30.0 { x } else { x.exp().ln_1p() };
                let errs = [
                    (real(t.silu(q16(x))) - x * sig).abs() / x.abs().max(1.0),
                    (real(t.gelu(q16(x))) - x * phi).abs() / x.abs().max(1.0),
                    (real(t.softplus(q16(x))) - sp).abs(),
                    if x >= 0.0 { (t.exp_neg(q16(x)) as f64 / (1u64 << 30) as f64 - (-x).exp()).abs() } else { 0.0 },
                ];
                for (w, e) in worst.iter_mut().zip(errs) {
                    *w = w.max(e);
                }
            }
            // Linear interpolation at step 1/32 is within h²/8 · max|f''|: sigmoid 1.2e-5,
            // Phi 3.0e-5, ln(1 + e^-x) 1.2e-5 (2^-x at 1/64: 5.8e-6), plus the roundings of the
            // Q16 argument and result (1.5e-5 relative).
            let bounds = [3e-5, 6e-5, 4e-5, 3e-5];
            assert!(worst.iter().zip(bounds).all(|(w, b)| *w < b), "silu, gelu, softplus, exp: {worst:?}");
            assert_eq!(t.exp_neg(i32::MAX), 0);
            assert_eq!(t.exp_neg(0), ONE_Q30);
            // Far out the table's last sample (sigmoid(16)) stands in: silu(-32768) is then
            // -242/65536 instead of about 0, and nothing overflows.
            assert!(t.silu(i32::MIN).unsigned_abs() < 1 << 10 && t.silu(i32::MAX) > i32::MAX - (1 << 10));
        });
    }

    #[test]
    fn requantize_is_the_rounded_product() {
        let mut rng = crate::Rng::new(12);
        for cols in [8usize, 64, 128, 256, 4096, 1 << 16] {
            let headroom = sum_headroom(cols);
            let bound = 16_256 * cols as i64;
            assert!(headroom.is_none_or(|h| bound << h < 1 << 29) && (headroom.is_some() || bound >= 1 << 29));
            for _ in 0..if cfg!(miri) { 50 } else { 5000 } {
                let acc = ((rng.next_u32() as i64 % (2 * bound + 1)) - bound) as i32;
                let acc =
                    if rng.next_u32().is_multiple_of(8) { bound as i32 * if acc < 0 { -1 } else { 1 } } else { acc };
                let x = InputScale {
                    amax: (1 << 14) + rng.next_u32() % (1 << 14),
                    shift: (rng.next_u32() % 32) as i32 - 14,
                };
                let r = Requant {
                    multiplier: (1 << 15) as u16 + (rng.next_u32() % (1 << 15)) as u16,
                    shift: (rng.next_u32() % 63) as u16,
                };
                let c = (x.amax * u32::from(r.multiplier) + (1 << 13)) >> 14;
                let e = i32::from(r.shift) - 14 - x.shift;
                let p = acc as i128 * c as i128;
                let want = if e >= 0 {
                    ((p + (1i128 << e >> 1)) >> e).clamp(i32::MIN as i128, i32::MAX as i128) as i32
                } else {
                    (p << -e).clamp(i32::MIN as i128, i32::MAX as i128) as i32
                };
                assert_eq!(Requantizer::new(x, headroom).apply(acc, r), want, "{acc} {x:?} {r:?} cols {cols}");
            }
        }
    }

    #[test]
    fn split_products_are_exact() {
        let mut rng = crate::Rng::new(13);
        let edges = [(1 << 29) - 1, -(1 << 29) + 1, 0, 1, -1, 0x7FFF, -0x8000];
        for i in 0..if cfg!(miri) { 100 } else { 100_000 } {
            let a = edges.get(i).copied().unwrap_or((rng.next_u32() >> 2) as i32 - (1 << 29) + 1);
            let c = if i % 7 == 0 { 1 << 17 } else { rng.next_u32() % ((1 << 17) + 1) };
            assert_eq!(mul_floor_shift15_halves(a, c) as i64, (a as i64 * c as i64) >> 15, "{a} {c}");
        }
    }

    #[test]
    fn divisions_floor() {
        for v in [i64::MIN / 4, -1_000_001, -65, -64, -1, 0, 1, 63, 64, 1_000_001, i64::MAX / 4] {
            for n in [1usize, 2, 3, 64, 100, 128, 1 << 20] {
                assert_eq!(div_floor(v, n), v.div_euclid(n as i64), "{v} / {n}");
                assert_eq!(div_u64(v.unsigned_abs(), n), v.unsigned_abs() / n as u64, "{v} / {n}");
            }
        }
    }

    #[test]
    fn isqrt_is_the_floor_root() {
        for v in [0u64, 1, 2, 3, 4, 15, 16, 17, 1 << 40, (1 << 62) - 1, u64::MAX] {
            let r = isqrt(v);
            assert!(r * r <= v && (r + 1).checked_mul(r + 1).is_none_or(|s| s > v), "{v}");
        }
    }

    #[test]
    fn eps_from_bits() {
        for eps in [1e-5f32, 1e-6, 1e-12, 0.5, 1.0, 3.0] {
            let want = (eps as f64 * 4_294_967_296.0).round() as u64;
            assert_eq!(q32_of_f32_bits(eps.to_bits()), want, "{eps}");
        }
        assert_eq!(q32_of_f32_bits((-1e-5f32).to_bits()), 0);
        assert_eq!(q32_of_f32_bits(f32::INFINITY.to_bits()), u64::MAX >> 2);
        assert_eq!(q32_of_f32_bits(f32::MAX.to_bits()), u64::MAX >> 2);
    }

    #[test]
    fn layer_norm_matches_the_float_definition() {
        let mut rng = crate::Rng::new(5);
        for scale in [0.01f64, 0.3, 1.0, 20.0, 3000.0] {
            let n = 64;
            let x: Vec<f64> = (0..n).map(|_| (rng.next_f32() as f64 - 0.4) * scale).collect();
            let w: Vec<f64> = (0..n).map(|_| rng.next_f32() as f64 * 2.0).collect();
            let b: Vec<f64> = (0..n).map(|_| rng.next_f32() as f64 - 0.5).collect();
            let xi: Vec<i32> = x.iter().map(|&v| q16(v)).collect();
            let (wi, bi): (Vec<i32>, Vec<i32>) =
                (w.iter().map(|&v| q16(v)).collect(), b.iter().map(|&v| q16(v)).collect());
            // The definition over the Q16 values themselves: LayerNorm's own error, not the
            // inputs' rounding (which a small-scale vector magnifies).
            let (x, w, b): (Vec<f64>, Vec<f64>, Vec<f64>) = (
                xi.iter().map(|&v| real(v)).collect(),
                wi.iter().map(|&v| real(v)).collect(),
                bi.iter().map(|&v| real(v)).collect(),
            );
            let mean = x.iter().sum::<f64>() / n as f64;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let mut out = vec![0; n];
            layer_norm(&xi, &wi, &bi, q32_of_f32_bits(1e-5f32.to_bits()), &mut out);
            for i in 0..n {
                let want = (x[i] - mean) / (var + 1e-5).sqrt() * w[i] + b[i];
                assert!((real(out[i]) - want).abs() < 2e-4, "scale {scale}: {} vs {want}", real(out[i]));
            }
        }
        // Extremes saturate instead of overflowing.
        let mut out = [0; 4];
        layer_norm(&[i32::MIN, i32::MAX, 0, i32::MAX], &[i32::MAX; 4], &[i32::MAX; 4], u64::MAX >> 2, &mut out);
        layer_norm(&[0; 4], &[1 << 16; 4], &[0; 4], 0, &mut out);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn quantize_and_requantize_compute_the_product() {
        let mut rng = crate::Rng::new(9);
        for scale in [1e-4f64, 0.01, 1.0, 100.0, 30000.0] {
            let xi: Vec<i32> = (0..100).map(|_| q16((rng.next_f32() as f64 - 0.5) * scale)).collect();
            let x: Vec<f64> = xi.iter().map(|&v| real(v)).collect();
            let mut xq = vec![0i8; 100];
            let s = quantize(&xi, &mut xq).expect("nonzero");
            assert!(xq.iter().all(|&q| q != i8::MIN));
            assert!(xq.iter().any(|&q| q.unsigned_abs() == 127));
            // A row of ones with weight scale w: y = w · Σ x.
            let w = 0.0123f64;
            let (m, sh) = {
                let v = w / 127.0;
                let sh = (15.0 - v.log2().floor()) as u16;
                ((v * (1u64 << sh) as f64).round() as u16, sh)
            };
            let r = Requant { multiplier: m, shift: sh };
            let acc: i32 = xq.iter().map(|&q| q as i32).sum();
            let y = real(Requantizer::new(s, sum_headroom(100)).apply(acc, r));
            let want: f64 = w * x.iter().sum::<f64>();
            // Input quantization (half a step of max|x| / 127 per element) plus the Q16 rounding
            // of the result.
            let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let bound = w * amax / 254.0 * 100.0 + 1.0 / 65536.0;
            assert!((y - want).abs() <= bound, "scale {scale}: {y} vs {want}");
        }
        assert_eq!(quantize(&[0; 5], &mut [0; 5]), None);
        let mut xq = [0i8; 3];
        let s = quantize(&[i32::MIN, i32::MAX, 1], &mut xq).expect("nonzero");
        assert_eq!(xq, [-127, 127, 0]);
        let r = Requant { multiplier: u16::MAX, shift: 0 };
        assert_eq!(Requantizer::new(s, sum_headroom(3)).apply(16_256 * 3, r), i32::MAX);
        assert_eq!(dequantize(-128, Requant { multiplier: u16::MAX, shift: 0 }), i32::MIN);
    }
}
