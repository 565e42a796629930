//! The forward pass's elementwise math: fast, branch-free `exp`, `log1p` and `erf` for the
//! activations (SiLU, softplus, GELU), accurate to a few ulp (the forward pass calls them
//! about 1,500 times a token, and libm's versions cost more than the int8 matrix products
//! around them), fixed-order lane sums, LayerNorm and the scan's state update. Pure f32
//! arithmetic in a fixed order, so every target computes the same bits.

/// `e^x` for `x` clamped to [-87, 88] (so `2^n` below is one normal float, and the result
/// stays finite: about 1.6e-38 below, 1.7e38 above), relative error below 2e-7 inside.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_within(x.clamp(-87.0, 88.0))
}

/// [`exp`] of an argument that is never positive (softplus, GELU, the scan's decay, a softmax
/// less its maximum): the same values, guarded only from below (a comparison less).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    exp_within(if x < -87.0 { -87.0 } else { x })
}

/// `e^x` for `x` in [-87, 88].
#[inline(always)]
fn exp_within(x: f32) -> f32 {
    // e^x = 2^n · e^r, n = round(x / ln 2), |r| <= ln2 / 2.
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let shifted = x * core::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // The integer n sits in the low mantissa bits of `shifted` (|n| < 2^22): read it
    // there instead of a saturating float-to-int conversion.
    let ni = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    // r = x - n·ln2 in two parts (Cody-Waite) so the subtraction is exact enough.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    // Degree-5 polynomial, fitted for relative error on |r| <= ln2 / 2 (below 1e-7 there;
    // a Taylor series needs degree 6 for that), with p(0) = 1 exactly.
    let p = 1.0 + r * (0.999_999_7 + r * (0.499_991_48 + r * (0.166_676_39 + r * (0.041_898_16 + r * 0.008_290_272))));
    // 2^n by building the exponent bits: n in [-126, 127] after the clamp.
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `ln(1 + y)` for `y` in [0, 1] as `2·atanh(y / (2 + y))`, relative error below 3e-7.
#[inline(always)]
fn log1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y); // 0 <= s <= 1/3
    let s2 = s * s;
    2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0))))))
}

/// `Σ f(x_i)` in eight interleaved partial sums reduced in a fixed order (as the f32 dot
/// product): it vectorises on every SIMD width, and every target adds in the same order.
#[inline(always)]
pub fn sum_lanes(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, rest) = x.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail = rest.iter().fold(0.0f32, |t, &v| t + f(v));
    reduce8(&acc) + tail
}

/// The fixed reduction order of eight lanes: `((a0+a4) + (a1+a5)) + ((a2+a6) + (a3+a7))`.
#[inline(always)]
pub(crate) fn reduce8(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (`1 − t·P(t)·e^{−x²}`, `t = 1 / (1 + p|x|)`),
/// absolute error below 6e-7 in f32: branch-free, so the GELU loop vectorises (libm's
/// `erff` is a call per element).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp_nonpositive(-a * a);
    if x < 0.0 {
        -e
    } else {
        e
    }
}

/// The exact (erf) GELU, `x · Φ(x)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// LayerNorm, `out = (x − mean) / sqrt(var + eps) ⊙ weight + bias`, with the mean and the
/// variance as [`sum_lanes`] (two passes: no cancellation in the variance).
#[inline]
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = sum_lanes(x, |v| v) / n;
    let var = sum_lanes(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / libm::sqrtf(var + eps);
    for (((o, v), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// One step of the selective scan, `s = exp(dt·A) ⊙ s + dt·(B·u)` with `A = −exp(A_log)`:
/// the state decays by its own rate and takes in the step's input.
#[inline]
pub fn scan_step(state: &mut [f32], a_log: &[f32], bu: &[f32], dt: f32) {
    for ((s, a_log), bu) in state.iter_mut().zip(a_log).zip(bu) {
        *s = exp_nonpositive(-dt * exp(*a_log)) * *s + dt * bu;
    }
}

/// `Σ_i softplus(x_i + bias_i)` over the common length: `Σ max(v, 0) + Σ ln(1 + e^-|v|)`,
/// the second sum taken as the logarithm of a product. Each factor `1 + e^-|v|` lies in
/// (1, 2], so eight lanes multiply runs of up to 32 factors (below 2^32, exact enough: one
/// rounding per factor, as the sum of logarithms has) and take one logarithm per run: one
/// `ln` per 256 values where softplus one at a time needs a division and a logarithm for
/// each. The scan needs only this mean of its step sizes, never the values themselves.
#[inline(always)]
pub fn softplus_sum(x: &[f32], bias: &[f32]) -> f32 {
    let (mut positive, mut logs) = ([0.0f32; 8], [0.0f32; 8]);
    for (x, bias) in x.chunks(256).zip(bias.chunks(256)) {
        let mut product = [1.0f32; 8];
        let step = |(positive, factor): (&mut f32, &mut f32), v: f32| {
            *positive += if v > 0.0 { v } else { 0.0 };
            *factor *= 1.0 + exp_nonpositive(-v.abs());
        };
        let ((xs, xr), (bs, br)) = (x.as_chunks::<8>(), bias.as_chunks::<8>());
        for (x, b) in xs.iter().zip(bs) {
            for (lane, (x, b)) in positive.iter_mut().zip(product.iter_mut()).zip(x.iter().zip(b)) {
                step(lane, x + b);
            }
        }
        for (lane, (x, b)) in positive.iter_mut().zip(product.iter_mut()).zip(xr.iter().zip(br)) {
            step(lane, x + b);
        }
        for (l, p) in logs.iter_mut().zip(product) {
            *l += ln_at_least_one(p);
        }
    }
    reduce8(&positive) + reduce8(&logs)
}

/// `ln(p)` for `p >= 1` (finite): `e·ln 2 + ln(m)` with `p = m·2^e`, `m` in [1, 2). NaN
/// stays NaN (a NaN input must not turn into a step size).
#[inline(always)]
fn ln_at_least_one(p: f32) -> f32 {
    if p.is_nan() {
        return p;
    }
    let bits = p.to_bits();
    let e = (bits >> 23) as i32 - 127;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    e as f32 * core::f32::consts::LN_2 + log1p_unit(m - 1.0)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `ln(1 + e^x)`, computed as `max(x, 0) + ln(1 + e^-|x|)` so it never overflows.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let positive = if x > 0.0 { x } else { 0.0 }; // not `max`: a libm call on some FPUs
    positive + log1p_unit(exp_nonpositive(-x.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b.abs().max(1e-30)).abs()
    }

    #[test]
    fn exp_is_accurate_over_the_range_the_model_uses() {
        let mut worst = 0.0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            worst = worst.max(rel(exp(x), (x as f64).exp()));
        }
        assert!(worst < 2.5e-7, "exp worst relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.0));
        assert_eq!(exp(200.0), exp(88.0));
        assert!(exp(-87.5) < 1e-37 && exp(-87.5) > 0.0 && exp(100.0) > 1e38 && exp(100.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
        for i in 0..=9000 {
            let x = -(i as f32) * 0.01 - 1e-3;
            assert_eq!(exp_nonpositive(x), exp(x), "{x}");
        }
        assert_eq!(exp_nonpositive(-1e30), exp(-1e30));
    }

    #[test]
    fn erf_is_accurate_to_6e7() {
        let mut worst = 0.0f64;
        for i in -6000..=6000 {
            let x = i as f32 * 0.001;
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst < 6e-7, "erf worst absolute error {worst}");
        assert!(erf(0.0).abs() < 6e-7);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn softplus_sum_is_the_sum_of_softplus() {
        let mut rng = crate::Rng::new(3);
        let mut next = || rng.next_f32() - 0.5;
        let sp = |v: f64| if v > 30.0 { v } else { v.exp().ln_1p() };
        for n in [0, 1, 7, 8, 9, 128, 255, 256, 257, 300, 1024, 4096] {
            for scale in [0.01f32, 1.0, 8.0, 200.0] {
                let x: Vec<f32> = (0..n).map(|_| next() * scale).collect();
                let b: Vec<f32> = (0..n).map(|_| next()).collect();
                let want: f64 = x.iter().zip(&b).map(|(&x, &b)| sp((x + b) as f64)).sum();
                let got = softplus_sum(&x, &b) as f64;
                let mag: f64 = x.iter().zip(&b).map(|(&x, &b)| sp((x + b) as f64).abs()).sum();
                assert!((got - want).abs() <= 1e-6 * mag.max(1e-3), "n {n} scale {scale}: {got} vs {want}");
            }
        }
        assert!(softplus_sum(&[1.0, f32::NAN, 2.0], &[0.0; 3]).is_nan());
        assert_eq!(softplus_sum(&[1e30, -1e30], &[0.0, 0.0]), 1e30);
    }

    #[test]
    fn softplus_and_silu_match_their_definitions() {
        let mut worst = (0.0f64, 0.0f64);
        for i in -3000..=3000 {
            let x = i as f32 * 0.01;
            let xd = x as f64;
            let sp = if xd > 20.0 { xd } else { xd.exp().ln_1p() };
            worst.0 = worst.0.max(rel(softplus(x), sp));
            worst.1 = worst.1.max((silu(x) as f64 - xd / (1.0 + (-xd).exp())).abs() / xd.abs().max(1.0));
        }
        assert!(worst.0 < 1e-6 && worst.1 < 1e-6, "softplus {}, silu {}", worst.0, worst.1);
        assert_eq!(softplus(100.0), 100.0);
    }
}
