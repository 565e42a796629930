//! A checksum of logits that host and board compute identically, so their outputs can be
//! compared bit for bit over a serial line.

/// FNV-1a (64-bit) over the IEEE bit patterns of `values`, little-endian, continuing from
/// `state` (start with [`FNV_OFFSET`]). Any change in any bit of any value changes it.
pub fn fnv1a_f32(state: u64, values: &[f32]) -> u64 {
    let mut h = state;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// FNV-1a 64-bit offset basis: the checksum of nothing.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_fnv1a_and_sees_every_bit() {
        // FNV-1a 64 of the bytes 00 00 80 3f (1.0f32 little-endian).
        let mut h = FNV_OFFSET;
        for b in [0x00u8, 0x00, 0x80, 0x3f] {
            h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
        }
        assert_eq!(fnv1a_f32(FNV_OFFSET, &[1.0]), h);
        assert_ne!(fnv1a_f32(FNV_OFFSET, &[1.0]), fnv1a_f32(FNV_OFFSET, &[f32::from_bits(1.0f32.to_bits() ^ 1)]));
        assert_eq!(fnv1a_f32(fnv1a_f32(FNV_OFFSET, &[1.0]), &[2.0]), fnv1a_f32(FNV_OFFSET, &[1.0, 2.0]));
    }
}
