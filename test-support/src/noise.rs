//! Seeded numbers for tests: roughly gaussian weights for the quantizer tests ([`gaussian`])
//! and a xorshift64 stream for the readers' mutation tests ([`XorShift64`]), each the one
//! the tests used before they shared it, so their data did not change.

/// Deterministic, roughly gaussian values (sum of four uniforms from a 64-bit LCG seeded
/// with `seed`), std about `0.058 * amp`: weights for quantizer tests.
pub fn gaussian(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..4)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .sum::<f32>()
                * amp
        })
        .collect()
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17) from a nonzero seed: cheap deterministic
/// numbers for tests that mutate inputs.
pub struct XorShift64(pub u64);

impl XorShift64 {
    /// The next number (the state after one step).
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }
}
