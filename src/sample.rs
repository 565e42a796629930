//! Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling
//! with a small deterministic RNG, all without heap.

use heapless::Vec;
use libm::expf;

/// Most candidates top-k / top-p consider (the highest logits).
pub const MAX_CANDIDATES: usize = 64;

/// PCG32 (XSH RR): small, fast, and the same sequence on every target for a seed.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    const MUL: u64 = 6_364_136_223_846_793_005;
    const INC: u64 = 1_442_695_040_888_963_407;

    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut r = Rng { state: 0 };
        r.next_u32();
        r.state = r.state.wrapping_add(seed);
        r.next_u32();
        r
    }

    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(Self::MUL).wrapping_add(Self::INC);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// How to pick the next token.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// 0 picks the largest logit (greedy); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` largest logits (0: no limit; at most [`MAX_CANDIDATES`]).
    pub top_k: usize,
    /// Keep the smallest set of top tokens whose probability reaches `top_p` (1: no limit).
    pub top_p: f32,
    /// Random source.
    pub rng: Rng,
}

impl Sampler {
    /// Always the largest logit.
    pub fn greedy() -> Self {
        Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, rng: Rng::new(0) }
    }

    /// The next token. With `top_k == 0` and `top_p >= 1` it samples the full distribution;
    /// otherwise from the (at most [`MAX_CANDIDATES`]) highest logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || logits.len() < 2 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weight = |l: f32| expf((l - max) * inv_t);
        if self.top_k == 0 && self.top_p >= 1.0 {
            // Full distribution: two passes, no buffer.
            let total: f32 = logits.iter().map(|&l| weight(l)).sum();
            let mut target = self.rng.next_f32() * total;
            for (i, &l) in logits.iter().enumerate() {
                target -= weight(l);
                if target < 0.0 {
                    return i as u32;
                }
            }
            return argmax(logits);
        }
        let k = if self.top_k == 0 { MAX_CANDIDATES } else { self.top_k.min(MAX_CANDIDATES) };
        let mut top: Vec<(f32, u32), MAX_CANDIDATES> = Vec::new();
        for (i, &l) in logits.iter().enumerate() {
            // Insert keeping `top` sorted by descending logit, ties by lower id first.
            let at = top.iter().position(|&(v, _)| l > v).unwrap_or(top.len());
            if at < k {
                if top.len() == k {
                    top.pop();
                }
                let _ = top.insert(at, (l, i as u32));
            }
        }
        let total: f32 = top.iter().map(|&(l, _)| weight(l)).sum();
        // Nucleus: cut after the probability mass reaches top_p.
        let mut kept = 0;
        let mut mass = 0.0;
        for &(l, _) in &top {
            kept += 1;
            mass += weight(l) / total;
            if mass >= self.top_p {
                break;
            }
        }
        let top = top.get(..kept).unwrap_or(&top);
        let kept_total: f32 = top.iter().map(|&(l, _)| weight(l)).sum();
        let mut target = self.rng.next_f32() * kept_total;
        for &(l, id) in top {
            target -= weight(l);
            if target < 0.0 {
                return id;
            }
        }
        top.first().map_or(0, |&(_, id)| id)
    }
}

/// Greedy choice: the index of the largest logit (the kernels compute it, on the backend the
/// matrix products run on).
pub use crate::kernels::argmax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN, 2.0, 2.0]), 3, "NaN never wins");
        assert_eq!(argmax(&[f32::NAN; 3]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY]), 0);
        let long: [f32; 37] = core::array::from_fn(|i| (i % 11) as f32);
        assert_eq!(argmax(&long), 10);
        assert_eq!(Sampler::greedy().sample(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let a: [u32; 4] = core::array::from_fn({
            let mut r = Rng::new(7);
            move |_| r.next_u32()
        });
        let mut r = Rng::new(7);
        assert_eq!(a, [r.next_u32(), r.next_u32(), r.next_u32(), r.next_u32()]);
        assert_ne!(Rng::new(8).next_u32(), a[0]);
    }

    #[test]
    fn top_k_one_is_greedy_and_sampling_follows_the_distribution() {
        let logits = [0.0, 2.0, 1.0, -1.0];
        let mut s = Sampler { temperature: 1.0, top_k: 1, top_p: 1.0, rng: Rng::new(1) };
        assert!((0..50).all(|_| s.sample(&logits) == 1));
        let mut s = Sampler { temperature: 1.0, top_k: 0, top_p: 1.0, rng: Rng::new(1) };
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[s.sample(&logits) as usize] += 1;
        }
        // p = softmax([0, 2, 1, -1]) = [0.087, 0.644, 0.237, 0.032]
        assert!((2400..2750).contains(&counts[1]), "{counts:?}");
        assert!((800..1100).contains(&counts[2]), "{counts:?}");
        let mut s = Sampler { temperature: 1.0, top_k: 0, top_p: 0.5, rng: Rng::new(1) };
        assert!((0..50).all(|_| s.sample(&logits) == 1), "top-p 0.5 keeps only the 0.64 token");
    }
}
