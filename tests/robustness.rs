//! Bad input never panics: corrupt blobs, short arenas, bad tokens, full sessions; crafted
//! blobs (tokenizers that do not fit, set reserved bytes, tensors out of order, a bad top_k)
//! are refused with messages that say what was found.

use itera_edge::error::TensorName;
use itera_edge::format::Role;
use itera_edge::{Blob, Error, Model, Session};
use itera_pack::synthetic::tiny_config;
use itera_pack::AlignedBytes;
use itera_test_support::craft::{edit_bytes, edit_manifest, tiny, with_tokenizer, words, Storage};
use itera_test_support::session::{arena, assert_arena_bounds};
use itera_test_support::tiny_blob;

#[test]
fn every_single_byte_flip_is_refused() {
    let blob = tiny_blob(3);
    assert!(Blob::parse(&blob).is_ok());
    let mut copy = AlignedBytes::from(&blob[..]);
    for i in 0..blob.len() {
        for bit in [0x01u8, 0x80] {
            copy.as_mut()[i] ^= bit;
            assert!(Blob::parse(&copy).is_err(), "flip of bit {bit:#x} in byte {i} of {} accepted", blob.len());
            copy.as_mut()[i] ^= bit;
        }
    }
}

#[test]
fn truncation_and_extension_are_refused_with_typed_errors() {
    let blob = tiny_blob(3);
    for cut in [0, 1, 31, 36, blob.len() / 2, blob.len() - 1] {
        let short = AlignedBytes::from(&blob[..cut]);
        assert!(matches!(Blob::parse(&short), Err(Error::Truncated { .. })), "cut at {cut}");
    }
    let mut long = blob.to_vec();
    long.push(0);
    assert!(matches!(Blob::parse(&AlignedBytes::from(long.as_slice())), Err(Error::LengthMismatch { .. })));
    let mut magic = blob.to_vec();
    magic[0] = b'X';
    assert_eq!(Blob::parse(&AlignedBytes::from(magic.as_slice())).err(), Some(Error::BadMagic));
}

#[test]
fn an_arena_one_byte_short_is_refused_with_the_exact_size() {
    let bytes = tiny_blob(3);
    let blob = Blob::parse(&bytes).expect("parse");
    assert_arena_bounds(&Model::new(&blob).expect("model"));
}

#[test]
fn bad_tokens_and_a_full_session_are_typed_errors_and_leave_the_session_usable() {
    let bytes = tiny_blob(3);
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let c = *model.config();
    let mut words = arena(&model);
    let mut s = Session::new(&model, &mut words).expect("session");
    assert_eq!(s.step(c.vocab).err(), Some(Error::TokenOutOfRange { token: c.vocab, vocab: c.vocab }));
    assert_eq!(
        s.prefill(&[1, 2, c.vocab + 5]).err(),
        Some(Error::TokenOutOfRange { token: c.vocab + 5, vocab: c.vocab })
    );
    assert_eq!(s.position(), 0, "a refused prefill runs nothing");
    let first = s.step(1).expect("step").to_vec();
    for t in 1..c.max_seq {
        s.step(t % c.vocab).expect("within max_seq");
    }
    assert_eq!(s.step(1).err(), Some(Error::ContextFull { max_seq: c.max_seq, needed: c.max_seq + 1 }));
    s.reset();
    assert_eq!(s.step(1).expect("after reset"), first.as_slice(), "reset restores the empty state exactly");
    assert!(s.logits().iter().all(|v| v.is_finite()));
}

#[test]
fn a_token_costs_the_same_work_at_every_position_and_the_state_is_recurrent() {
    // Feeding tokens one by one must equal prefill, bit for bit (same code path, same order).
    let bytes = tiny_blob(3);
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let (mut a, mut b) = (arena(&model), arena(&model));
    let mut s1 = Session::new(&model, &mut a).expect("session");
    let mut s2 = Session::new(&model, &mut b).expect("session");
    let tokens = [5, 9, 11, 2, 40, 7];
    let mut last = Vec::new();
    for &t in &tokens {
        last = s1.step(t).expect("step").to_vec();
    }
    assert_eq!(s2.prefill(&tokens).expect("prefill"), last.as_slice());
}

fn parse_err(bytes: &[u8]) -> Error {
    let aligned = AlignedBytes::from(bytes);
    Blob::parse(&aligned).and_then(|b| Model::new(&b).map(|_| ())).expect_err("refused")
}

#[test]
fn a_tokenizer_whose_unknown_id_is_not_one_of_its_ids_is_refused() {
    let base = tiny(Storage::Int8F16, None);
    for (unk_id, count) in [(5, 5), (6, 5), (u32::MAX, 3)] {
        let tokens = words(count).tokens;
        let err = parse_err(&with_tokenizer(&base, unk_id, &tokens));
        assert_eq!(err, Error::UnknownTokenOutOfRange { unk_id, count });
        assert!(err.to_string().contains(&format!("unknown-token id {unk_id} is not among its {count} ids")), "{err}");
    }
    // The crafting itself is sound: the same table with unk_id in range parses.
    let aligned = AlignedBytes::from(with_tokenizer(&base, 4, &words(5).tokens).as_slice());
    assert_eq!(Blob::parse(&aligned).expect("parses").tokenizer().expect("tokenizer").len(), 5);
}

#[test]
fn a_tokenizer_with_more_ids_than_the_vocab_is_refused() {
    let base = tiny(Storage::Affine, None);
    let vocab = tiny_config().vocab;
    let fits = AlignedBytes::from(with_tokenizer(&base, 0, &words(vocab).tokens).as_slice());
    assert!(Blob::parse(&fits).is_ok(), "a tokenizer of exactly vocab ids fits");
    for count in [vocab + 1, 5000] {
        let err = parse_err(&with_tokenizer(&base, 0, &words(count).tokens));
        assert_eq!(err, Error::TokenizerLargerThanVocab { count, vocab });
        assert!(err.to_string().contains(&format!("names {count} ids but the model's vocabulary has {vocab}")));
    }
}

#[test]
fn set_flag_and_reserved_header_bytes_are_refused() {
    // Flag bit 0 is the fixed-point flag (tests/fixed_point.rs); bit 1 is undefined.
    let base = tiny(Storage::Int4F16, None);
    for (offset, value) in [(10u8, 2u8), (11, 0x80), (24, 1), (31, 0xFF)] {
        let err = parse_err(&edit_bytes(&base, |b| b[offset as usize] = value));
        assert_eq!(err, Error::ReservedHeaderByte { offset, value });
        assert!(err.to_string().contains(&format!("header byte {offset}")), "{err}");
    }
}

#[test]
fn a_tensor_out_of_order_is_named_with_its_layer_and_expert() {
    let base = tiny(Storage::Int8F16, None);
    let swapped = edit_manifest(&base, |m| {
        let a = m.tensors.iter().position(|e| e.role == Role::SsmNormWeight && e.layer == 0).expect("layer 0");
        let b = m.tensors.iter().position(|e| e.role == Role::SsmNormWeight && e.layer == 1).expect("layer 1");
        m.tensors.swap(a, b);
    });
    let err = parse_err(&swapped);
    let name = |role, layer, expert| TensorName { role, layer, expert };
    assert!(matches!(err, Error::UnexpectedTensor { expected, found, .. }
        if expected == name(Role::SsmNormWeight, 0, 0) && found == name(Role::SsmNormWeight, 1, 0)));
    let line = err.to_string();
    assert!(line.contains("expected SsmNormWeight of layer 0, found SsmNormWeight of layer 1"), "{line}");
    let experts = edit_manifest(&base, |m| {
        let a = m.tensors.iter().position(|e| e.role == Role::ExpertW1 && e.expert == 0).expect("expert 0");
        let b = m.tensors.iter().position(|e| e.role == Role::ExpertW1 && e.expert == 2).expect("expert 2");
        m.tensors.swap(a, b);
    });
    let line = parse_err(&experts).to_string();
    assert!(line.contains("expected ExpertW1 of expert 0 of layer 1, found ExpertW1 of expert 2 of layer 1"), "{line}");
}

#[test]
fn a_top_k_of_zero_or_above_the_experts_has_its_own_message() {
    let base = tiny(Storage::Int8F16, None);
    let n_experts = tiny_config().n_experts;
    for top_k in [0, n_experts + 1, u32::MAX] {
        let err = parse_err(&edit_manifest(&base, |m| m.head.config.top_k = top_k));
        assert_eq!(err, Error::TopKOutOfRange { top_k, n_experts });
        let line = err.to_string();
        assert!(line.contains(&format!("top_k is {top_k}")) && line.contains("--top-k"), "{line}");
        assert_eq!(line.contains("at least one expert"), top_k == 0, "{line}");
    }
}

#[test]
fn the_context_message_says_how_long_the_sequence_is_and_not_to_call_reset() {
    let line = Error::ContextFull { max_seq: 128, needed: 201 }.to_string();
    assert!(line.contains("need 201 positions but the model has 128") && line.contains("fewer tokens"), "{line}");
    assert!(!line.contains("reset()"), "{line}");
}
