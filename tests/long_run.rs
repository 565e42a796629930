//! Long-running robustness: 100,000 tokens through a small-context model, resetting at every
//! `ContextFull`, keep the logits finite; bad ids stay typed errors at every position.
//! (`tests/robustness.rs` covers a bad id on a fresh session, a bad id inside `prefill`, and
//! one full context followed by `reset`.)

use itera_edge::sample::argmax;
use itera_edge::{Blob, Config, Error, Model, Rng, Sampler, Session};
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::tiny_config;
use itera_pack::{AlignedBytes, PackOptions};
use itera_test_support::packed;
use itera_test_support::session::arena;

/// `tiny_config()` with a context of 16 positions, so 100,000 tokens cross it thousands of times.
fn small_context() -> Config {
    Config { max_seq: 16, ..tiny_config() }
}

fn blob(spec: &str) -> AlignedBytes {
    let opts = PackOptions { quant: QuantPolicy::parse_spec(spec).expect("spec"), ..PackOptions::default() };
    packed(&small_context(), 21, &opts)
}

const TOKENS: usize = 100_000;

/// Generates `TOKENS` tokens (greedy with a rotating nudge so the sequence does not settle
/// into one id), resetting on `ContextFull`; returns how many resets happened.
fn generate(spec: &str) -> usize {
    let bytes = blob(spec);
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let c = *model.config();
    assert_eq!(c.max_seq, 16);
    let mut arena = arena(&model);
    let mut s = Session::new(&model, &mut arena).expect("session");
    let mut sampler = Sampler { temperature: 0.8, top_k: 8, top_p: 0.95, rng: Rng::new(7) };
    let mut token = 1u32;
    let mut resets = 0;
    for i in 0..TOKENS {
        let logits = match s.step(token) {
            Ok(l) => l,
            Err(Error::ContextFull { max_seq, needed }) => {
                assert_eq!((max_seq, needed, s.position()), (c.max_seq, c.max_seq + 1, c.max_seq));
                s.reset();
                resets += 1;
                s.step(token).expect("a reset session takes a token")
            }
            Err(e) => panic!("token {i}: unexpected {e:?}"),
        };
        assert_eq!(logits.len(), c.vocab as usize);
        assert!(logits.iter().all(|v| v.is_finite()), "non-finite logit at token {i} ({spec})");
        token = if i % 3 == 0 { sampler.sample(logits) } else { (argmax(logits) + i as u32) % c.vocab };
        if i % 997 == 0 {
            // A bad id at an arbitrary position is refused and changes nothing.
            let pos = s.position();
            assert_eq!(
                s.step(c.vocab + i as u32).err(),
                Some(Error::TokenOutOfRange { token: c.vocab + i as u32, vocab: c.vocab })
            );
            assert_eq!(s.position(), pos);
        }
    }
    resets
}

#[test]
fn a_hundred_thousand_tokens_stay_finite_in_f32() {
    let resets = generate("f32");
    assert_eq!(resets, (TOKENS - 1) / 16);
}

#[test]
fn a_hundred_thousand_tokens_stay_finite_in_int8() {
    let resets = generate("int8");
    assert_eq!(resets, (TOKENS - 1) / 16);
}

#[test]
fn prefill_past_the_context_is_refused_whole_and_mid_sequence() {
    let bytes = blob("f32");
    let blob = Blob::parse(&bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let c = *model.config();
    let mut arena = arena(&model);
    let mut s = Session::new(&model, &mut arena).expect("session");
    let too_long: Vec<u32> = (0..=c.max_seq).map(|t| t % c.vocab).collect();
    assert_eq!(s.prefill(&too_long).err(), Some(Error::ContextFull { max_seq: c.max_seq, needed: c.max_seq + 1 }));
    assert_eq!(s.position(), 0, "a refused prefill runs nothing");
    s.prefill(&too_long[..10]).expect("fits");
    assert_eq!(s.prefill(&too_long[..7]).err(), Some(Error::ContextFull { max_seq: c.max_seq, needed: 17 }));
    assert_eq!(s.position(), 10, "a refused prefill mid-sequence runs nothing");
    s.prefill(&too_long[..6]).expect("exactly fills the context");
    assert_eq!(s.position(), c.max_seq);
    assert_eq!(s.prefill(&[]).map(<[f32]>::len), Ok(c.vocab as usize), "an empty prefill at a full context is fine");
}
