//! Blob::parse, then Model::new, then a short session on tokens taken from the input.
//! The input is the blob itself; any structural defect must be a typed error, never a panic.
#![no_main]

use itera_edge::format::{seal, CRC_LEN, HEADER_LEN};
use itera_edge::{Blob, Error, Session};
use itera_pack::AlignedBytes;
use itera_test_support::session::open_every_part;
use libfuzzer_sys::fuzz_target;

/// Arenas above this are skipped (parse and `Model::new` still ran).
const MAX_ARENA: usize = 64 << 20;

fn run(data: &[u8]) -> Result<(), Error> {
    let aligned = AlignedBytes::from(data);
    let model = open_every_part(&Blob::parse(&aligned)?, 32)?;
    let c = *model.config();
    // The minimal arena (one token at a time) or the prefill arena (blocks), by one input bit.
    let arena_len =
        if data.first().is_some_and(|b| b & 1 == 1) { model.prefill_arena_bytes() } else { model.arena_bytes() };
    if arena_len > MAX_ARENA {
        return Ok(());
    }
    let mut arena = AlignedBytes::zeroed(arena_len);
    let mut s = Session::new(&model, &mut arena)?;
    // Tokens from the tail of the input (in range or not: both paths are exercised).
    let prompt: Vec<u32> = data.iter().rev().take(11).map(|&b| u32::from(b) % (c.vocab + 2)).collect();
    let _ = s.prefill(&prompt);
    for &b in data.iter().take(3) {
        if let Err(Error::ContextFull { .. }) = s.step(u32::from(b) % c.vocab) {
            s.reset();
        }
    }
    let _ = itera_edge::sample::argmax(s.logits());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // Odd-length inputs run the AVX2 kernels (the core's only `unsafe` code, where ASan
    // would see an out-of-bounds read), even-length ones the portable kernels.
    #[cfg(target_arch = "x86_64")]
    if data.len() % 2 == 1 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU was just checked for AVX2 and F16C.
        unsafe { itera_edge::kernels::enable_avx2() };
    } else {
        itera_edge::kernels::disable_avx2();
    }
    // As given: the magic, version, length and CRC32 checks see every mutation.
    let _ = run(data);
    // With the declared length and the CRC32 patched to match, as a deliberate edit would
    // be: the mutation reaches the manifest decoder, the structural checks and the kernels.
    if data.len() >= HEADER_LEN + CRC_LEN {
        let mut fixed = data.to_vec();
        let len = u32::try_from(fixed.len()).unwrap_or(u32::MAX);
        fixed[20..24].copy_from_slice(&len.to_le_bytes());
        seal(&mut fixed);
        let _ = run(&fixed);
    }
});
