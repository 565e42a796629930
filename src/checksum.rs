//! A checksum of logits that host and board compute identically, so their outputs can be
//! compared bit for bit over a serial line.

/// FNV-1a (64-bit) with each value's 32-bit IEEE pattern as one symbol, continuing from
/// `state` (start with [`FNV_OFFSET`]). Each step (xor, then multiply by an odd prime) is a
/// bijection of the state, so changing any bit of any single value changes the result.
/// One multiply per value, not per byte: it runs in the firmware's per-token loop.
pub fn fnv1a_f32(state: u64, values: &[f32]) -> u64 {
    fnv1a_words(state, values.iter().map(|v| v.to_bits()))
}

/// FNV-1a over 32-bit words (a fixed-point model's logits: their `i32` bits), continuing
/// from `state`; [`fnv1a_f32`] is this over the f32 bits.
pub fn fnv1a_words(state: u64, words: impl Iterator<Item = u32>) -> u64 {
    let mut h = state;
    for w in words {
        h ^= w as u64;
        #[cfg(itera_armv6m)]
        {
            h = times_prime(h);
        }
        #[cfg(not(itera_armv6m))]
        {
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// `h · FNV_PRIME` (mod 2^64) with `FNV_PRIME = 2^40 + 0x1b3`: a shift plus the low word
/// and the high word times 0x1b3, which cores without a 64-bit multiply (ARMv6-M) do in
/// 32-bit products instead of a library call. Elsewhere the plain multiply is shorter.
#[cfg(any(test, itera_armv6m))]
#[inline(always)]
fn times_prime(h: u64) -> u64 {
    const LOW: u32 = 0x1b3;
    const _: () = assert!(FNV_PRIME == (1 << 40) + LOW as u64);
    let (lo, hi) = (h as u32, (h >> 32) as u32);
    // lo · 0x1b3 in 16-bit halves: each product below 2^25.
    let lo_product = (((lo >> 16) * LOW) as u64) << 16;
    let lo_product = lo_product + ((lo & 0xFFFF) * LOW) as u64;
    let hi_product = (hi.wrapping_mul(LOW) as u64) << 32;
    (h << 40).wrapping_add(hi_product).wrapping_add(lo_product)
}

/// FNV-1a 64-bit offset basis: the checksum of nothing.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_prime_is_the_wrapping_product() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..if cfg!(miri) { 100 } else { 10_000 } {
            assert_eq!(times_prime(h), h.wrapping_mul(FNV_PRIME), "{h:#x}");
            h = h.rotate_left(13) ^ (h >> 7) ^ 0x0123_4567_89ab_cdef;
        }
        assert_eq!(times_prime(u64::MAX), u64::MAX.wrapping_mul(FNV_PRIME));
    }

    #[test]
    fn is_fnv1a_over_words_and_sees_every_bit() {
        let expected = (FNV_OFFSET ^ 0x3f80_0000).wrapping_mul(FNV_PRIME);
        assert_eq!(fnv1a_f32(FNV_OFFSET, &[1.0]), expected);
        for bit in 0..32 {
            let flipped = f32::from_bits(1.0f32.to_bits() ^ (1 << bit));
            assert_ne!(fnv1a_f32(FNV_OFFSET, &[1.0, 2.0]), fnv1a_f32(FNV_OFFSET, &[flipped, 2.0]), "bit {bit}");
        }
        assert_eq!(fnv1a_f32(fnv1a_f32(FNV_OFFSET, &[1.0]), &[2.0]), fnv1a_f32(FNV_OFFSET, &[1.0, 2.0]));
    }
}
