//! Bad input never panics: corrupt blobs, short arenas, bad tokens, full sessions.

use itera_edge::{Blob, Error, Model, Session};
use itera_pack::convert::{build, PackOptions};
use itera_pack::inspect::AlignedBytes;
use itera_pack::synthetic::{state_dict, tiny_config};

fn tiny_blob() -> AlignedBytes {
    let bytes =
        build(&state_dict(&tiny_config(), 3), &PackOptions::default()).expect("build").finish().expect("finish");
    AlignedBytes::from(bytes.as_slice())
}

#[test]
fn every_single_byte_flip_is_refused() {
    let blob = tiny_blob();
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
    let blob = tiny_blob();
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
    let bytes = tiny_blob();
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let needed = model.arena_bytes();
    let mut words = vec![0u32; needed.div_ceil(4) + 1];
    let arena: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let err = Session::new(&model, &mut arena[..needed - 1]).err();
    assert_eq!(err, Some(Error::ArenaTooSmall { needed, available: needed - 1 }));
    assert_eq!(Session::new(&model, &mut arena[1..needed + 1]).err(), Some(Error::ArenaNotAligned));
    assert!(Session::new(&model, &mut arena[..needed]).is_ok());
}

#[test]
fn bad_tokens_and_a_full_session_are_typed_errors_and_leave_the_session_usable() {
    let bytes = tiny_blob();
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let c = *model.config();
    let mut words = vec![0u32; model.arena_bytes().div_ceil(4)];
    let mut s = Session::new(&model, bytemuck::cast_slice_mut(&mut words)).expect("session");
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
    let bytes = tiny_blob();
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let mut a = vec![0u32; model.arena_bytes().div_ceil(4)];
    let mut b = a.clone();
    let mut s1 = Session::new(&model, bytemuck::cast_slice_mut(&mut a)).expect("session");
    let mut s2 = Session::new(&model, bytemuck::cast_slice_mut(&mut b)).expect("session");
    let tokens = [5, 9, 11, 2, 40, 7];
    let mut last = Vec::new();
    for &t in &tokens {
        last = s1.step(t).expect("step").to_vec();
    }
    assert_eq!(s2.prefill(&tokens).expect("prefill"), last.as_slice());
}
