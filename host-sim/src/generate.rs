//! Prefill a prompt, then sample tokens one at a time, timing both phases.

use std::time::Instant;

use anyhow::bail;
use itera_edge::{Model, Rng, Sampler};
use serde::Serialize;

use crate::engine::{check_tokens, new_arena, new_session};
use crate::limits;

/// How to pick tokens (validated by [`Sampling::sampler`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sampling {
    /// 0: greedy (largest logit); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` largest logits (0: no limit).
    pub top_k: usize,
    /// Nucleus: keep the smallest set of top tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Seed of the sampler's random generator.
    pub seed: u64,
}

impl Default for Sampling {
    /// Greedy.
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl Sampling {
    /// The core's [`Sampler`], after checking every parameter is in range.
    pub fn sampler(&self) -> anyhow::Result<Sampler> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!("--temperature must be a finite number >= 0 (0 is greedy), got {}", self.temperature);
        }
        limits::TOP_K.check(self.top_k)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1] (1: no limit), got {}", self.top_p);
        }
        Ok(Sampler { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, rng: Rng::new(self.seed) })
    }
}

/// What a generation did, with timings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Generation {
    /// Prompt ids fed.
    pub prompt: Vec<u32>,
    /// Ids generated, in order.
    pub generated: Vec<u32>,
    /// Seconds spent feeding the prompt.
    pub prefill_secs: f64,
    /// Seconds spent generating (sampling and feeding back).
    pub generate_secs: f64,
    /// Generation ended early because the session holds `max_seq` tokens.
    pub stopped_at_max_seq: bool,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tok_per_s(&self) -> f64 {
        rate(self.prompt.len(), self.prefill_secs)
    }

    /// Generated tokens per second.
    pub fn tok_per_s(&self) -> f64 {
        rate(self.generated.len(), self.generate_secs)
    }
}

fn rate(tokens: usize, secs: f64) -> f64 {
    if tokens == 0 {
        0.0
    } else {
        tokens as f64 / secs.max(1e-9)
    }
}

/// Feeds `prompt` from an empty session, then generates up to `n` tokens with `sampler`,
/// calling `on_token(id)` as each is picked (to stream it).
///
/// Generation stops early, without error, when the session is full (`max_seq` tokens fed):
/// the last token picked is the prediction after the final position and is not fed back.
pub fn generate(
    model: &Model<'_>,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32),
) -> anyhow::Result<Generation> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    check_tokens(prompt, model.config())?;
    let max_seq = model.config().max_seq;
    let mut arena = new_arena(model);
    let mut session = new_session(model, &mut arena)?;
    let start = Instant::now();
    session.prefill_logits(prompt)?;
    let prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    // At most the positions left, plus the prediction after the last: never `n` itself,
    // which is the user's number and may be anything.
    let room = (max_seq as usize).saturating_sub(prompt.len()) + 1;
    let mut generated = Vec::with_capacity(n.min(room));
    let mut stopped_at_max_seq = false;
    let mut logits = vec![0.0f32; model.config().vocab as usize];
    while generated.len() < n {
        session.logits_view().copy_to_f32(&mut logits);
        let id = sampler.sample(&logits);
        generated.push(id);
        on_token(id);
        if generated.len() == n {
            break;
        }
        if session.position() >= max_seq {
            stopped_at_max_seq = true;
            break;
        }
        session.step_logits(id)?;
    }
    let generate_secs = start.elapsed().as_secs_f64();
    Ok(Generation { prompt: prompt.to_vec(), generated, prefill_secs, generate_secs, stopped_at_max_seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_pack::inspect::AlignedBytes;

    fn tiny() -> AlignedBytes {
        let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::tiny_config(), 5);
        AlignedBytes::from(itera_pack::convert::build(&sd, &Default::default()).unwrap().finish().unwrap().as_slice())
    }

    #[test]
    fn greedy_generation_matches_stepwise_argmax() {
        let bytes = tiny();
        let model = crate::open_model(&bytes).unwrap();
        let mut streamed = Vec::new();
        let g =
            generate(&model, &[1, 2], 4, &mut Sampling::default().sampler().unwrap(), |id| streamed.push(id)).unwrap();
        assert_eq!(g.generated, streamed);
        assert_eq!(g.generated.len(), 4);
        assert!(!g.stopped_at_max_seq);
        // Same thing by hand.
        let mut seq = vec![1, 2];
        for &id in &g.generated {
            let logits = crate::logits_for_tokens(&model, &seq, |_, _| ()).unwrap();
            let last = &logits[logits.len() - model.config().vocab as usize..];
            assert_eq!(itera_edge::sample::argmax(last), id);
            seq.push(id);
        }
    }

    #[test]
    fn generation_stops_cleanly_at_max_seq() {
        let bytes = tiny();
        let model = crate::open_model(&bytes).unwrap();
        let max_seq = model.config().max_seq as usize; // 16
        let g = generate(&model, &[1; 10], 100, &mut Sampling::default().sampler().unwrap(), |_| ()).unwrap();
        assert!(g.stopped_at_max_seq);
        assert_eq!(g.generated.len(), max_seq - 10 + 1);
        assert!(generate(&model, &[], 3, &mut Sampling::default().sampler().unwrap(), |_| ()).is_err());
    }

    #[test]
    fn bad_sampling_parameters_are_refused() {
        let bad = |s: Sampling| s.sampler().unwrap_err().to_string();
        assert!(bad(Sampling { temperature: -1.0, ..Default::default() }).contains("--temperature"));
        assert!(bad(Sampling { temperature: f32::NAN, ..Default::default() }).contains("--temperature"));
        assert!(bad(Sampling { top_k: 65, ..Default::default() }).contains("--top-k"));
        assert!(bad(Sampling { top_p: 0.0, ..Default::default() }).contains("--top-p"));
        assert!(bad(Sampling { top_p: 1.5, ..Default::default() }).contains("--top-p"));
    }
}
