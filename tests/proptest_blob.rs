//! Property tests: any single mutation of a valid blob is refused with a typed `Error`, or
//! the blob parses and the whole runtime path (parse, `Model::new`, a session prefilling and
//! stepping a few tokens, the tokenizer and provenance accessors) runs without a panic.
//!
//! No `catch_unwind` here on purpose: a panic anywhere fails the test. Reading outside the
//! blob or the arena cannot happen silently: the core is safe Rust (`#![deny(unsafe_code)]`
//! outside the x86 kernels, whose bounds come from `Matrix::new`), so an out-of-range index
//! would be a panic, which these properties would catch.
//!
//! Mutations with the trailing CRC32 recomputed model a deliberate edit: they get past the
//! integrity check and exercise the structural checks behind it (manifest decoding, config
//! limits, tensor table bounds and alignment, tokenizer table) and the kernels on arbitrary
//! weight bits (NaN, Inf, subnormals).

use std::sync::LazyLock;

use itera_edge::format::{seal, CRC_LEN, HEADER_LEN};
use itera_edge::sample::argmax;
use itera_edge::{Blob, Error, Session};
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::tiny_config;
use itera_pack::tokenizer_json::parse_tokenizer;
use itera_pack::{AlignedBytes, PackOptions};
use itera_test_support::session::{open_every_part, prefill_arena};
use itera_test_support::tiny_blob_with;
use proptest::prelude::*;

/// Largest arena a mutated config may ask for before the session part is skipped (the
/// parse and `Model::new` still ran); keeps a crafted `max_seq`/width from eating the host.
const MAX_TEST_ARENA: usize = 64 << 20;

/// f32, int8, and f32 with a word-level tokenizer table (so the tokenizer checks are hit).
static BLOBS: LazyLock<[Vec<u8>; 3]> = LazyLock::new(|| {
    let int8 = PackOptions { quant: QuantPolicy::parse_spec("int8").expect("int8 spec"), ..PackOptions::default() };
    let words: Vec<String> = (0..tiny_config().vocab).map(|i| format!("\"w{i}\": {i}")).collect();
    let json = format!("{{\"token_to_id\": {{\"<unk>\": 0, {}}}}}", words[1..].join(", "));
    let table = parse_tokenizer(&json).expect("tokenizer json");
    let with_tok = PackOptions { tokenizer: Some(table), ..PackOptions::default() };
    let blobs = [PackOptions::default(), int8, with_tok].map(|opts| tiny_blob_with(11, &opts).to_vec());
    for b in &blobs {
        exercise(b).expect("the unmutated blob runs");
    }
    blobs
});

/// Runs everything a firmware would run on `bytes`; any refusal is a typed `Error`.
fn exercise(bytes: &[u8]) -> Result<(), Error> {
    let aligned = AlignedBytes::from(bytes);
    let model = open_every_part(&Blob::parse(&aligned)?, 64)?;
    let c = *model.config();
    // The prefill arena: prompts run in blocks (the minimal arena is the fuzz target's other half).
    let needed = model.prefill_arena_bytes();
    if needed > MAX_TEST_ARENA {
        return Ok(());
    }
    let mut arena = prefill_arena(&model);
    let mut s = Session::new(&model, &mut arena)?;
    let prompt: Vec<u32> = (0..c.max_seq.min(11)).map(|i| (i * 7 + 1) % c.vocab).collect();
    s.prefill(&prompt)?;
    for _ in 0..2 {
        let next = argmax(s.logits()) % c.vocab;
        match s.step(next) {
            Ok(logits) => assert_eq!(logits.len(), c.vocab as usize),
            Err(Error::ContextFull { .. }) => s.reset(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    seal(&mut bytes);
    bytes
}

fn data_offset(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// A single flipped byte anywhere is caught (by the CRC, or before it by magic/version/length).
    #[test]
    fn a_flipped_byte_is_refused(which in 0..3usize, at in any::<prop::sample::Index>(), x in 1..=255u8) {
        let mut b = BLOBS[which].clone();
        let i = at.index(b.len());
        b[i] ^= x;
        prop_assert!(exercise(&b).is_err(), "flip {x:#x} at {i} accepted");
    }

    #[test]
    fn a_truncated_blob_is_refused(which in 0..3usize, at in any::<prop::sample::Index>()) {
        let b = &BLOBS[which];
        let cut = at.index(b.len());
        prop_assert!(matches!(exercise(&b[..cut]), Err(Error::Truncated { .. } | Error::BadMagic)), "cut {cut}");
    }

    #[test]
    fn an_extended_blob_is_refused(which in 0..3usize, tail in prop::collection::vec(any::<u8>(), 1..64)) {
        let mut b = BLOBS[which].clone();
        b.extend_from_slice(&tail);
        prop_assert!(matches!(exercise(&b), Err(Error::LengthMismatch { .. })), "extension accepted");
    }

    /// Deliberate edits to the header or manifest (tensor table, config, tokenizer reference,
    /// provenance) with the CRC recomputed: typed error or a model that runs.
    #[test]
    fn a_manifest_edit_with_a_fixed_crc_never_panics(
        which in 0..3usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let mut b = BLOBS[which].clone();
        let end = data_offset(&b);
        for (at, x) in edits {
            b[8 + at.index(end - 8)] ^= x;
        }
        let _ = exercise(&with_crc(b));
    }

    /// Manifest bytes overwritten (not flipped), biased to the tensor table and config.
    #[test]
    fn a_manifest_overwrite_with_a_fixed_crc_never_panics(
        which in 0..3usize,
        at in any::<prop::sample::Index>(),
        new in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let mut b = BLOBS[which].clone();
        let end = data_offset(&b);
        let start = HEADER_LEN + at.index(end - HEADER_LEN);
        for (i, v) in new.into_iter().enumerate() {
            if let Some(slot) = b.get_mut(start + i).filter(|_| start + i < end) {
                *slot = v;
            }
        }
        let _ = exercise(&with_crc(b));
    }

    /// Weight, scale and tokenizer bytes edited with the CRC recomputed: arbitrary bit
    /// patterns (NaN, Inf) reach the kernels, which must still not panic.
    #[test]
    fn a_data_edit_with_a_fixed_crc_never_panics(
        which in 0..3usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut b = BLOBS[which].clone();
        let start = data_offset(&b);
        let body = b.len() - CRC_LEN;
        for (at, v) in edits {
            b[start + at.index(body - start)] = v;
        }
        let _ = exercise(&with_crc(b));
    }
}

/// The CRC-fixed properties above are only worth something if edits get past the parser:
/// check, exhaustively for one bit per byte, that some header/manifest edits and most data
/// edits still parse and run (so the session path is what those properties exercise).
#[test]
fn crc_fixed_edits_reach_the_model_and_session() {
    for (which, b) in BLOBS.iter().enumerate() {
        let end = data_offset(b);
        let body = b.len() - CRC_LEN;
        let run = |range: std::ops::Range<usize>| {
            range
                .filter(|&i| {
                    let mut m = b.clone();
                    m[i] ^= 0x01;
                    exercise(&with_crc(m)).is_ok()
                })
                .count()
        };
        let (manifest_ok, data_ok) = (run(8..end), run(end..body));
        eprintln!(
            "blob {which}: {manifest_ok}/{} header+manifest and {data_ok}/{} data edits run",
            end - 8,
            body - end
        );
        assert!(manifest_ok > 0, "no manifest edit gets past the parser");
        assert!(data_ok * 2 > body - end, "most data edits should run");
    }
}
