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

    /// What to tell a user who set `--top-k` or `--top-p` at temperature 0: greedy always
    /// takes the most likely token, so they change nothing.
    pub fn greedy_note(&self) -> Option<String> {
        let limits = [(self.top_k != 0).then_some("--top-k"), (self.top_p != 1.0).then_some("--top-p")];
        let set: Vec<&str> = limits.into_iter().flatten().collect();
        (self.temperature == 0.0 && !set.is_empty()).then(|| {
            format!(
                "--temperature 0 is greedy (always the most likely token), so {} change nothing; give --temperature 0.8 (say) to sample",
                set.join(" and ")
            )
        })
    }
}

/// What generation does when the session holds `max_seq` tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextPolicy {
    /// Stop: the core's own answer (`Error::ContextFull`), the typed default.
    #[default]
    Full,
    /// Upstream `generate()`'s policy: keep the last `max_seq` tokens and run them again from
    /// an empty state, positions from 0, for every token past the window. Each such token
    /// costs a prefill of `max_seq` tokens instead of one step.
    Slide,
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
    /// Tokens past the window, each predicted from a re-run of the last `max_seq` tokens
    /// ([`ContextPolicy::Slide`]).
    pub window_reruns: usize,
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
/// With [`ContextPolicy::Full`] generation stops early, without error, when the session is full
/// (`max_seq` tokens fed): the last token picked is the prediction after the final position
/// and is not fed back. With [`ContextPolicy::Slide`] it goes on as upstream does: each token past
/// the window is predicted from the last `max_seq` tokens run again from an empty state
/// (a longer prompt starts from its last `max_seq` tokens).
pub fn generate(
    model: &Model<'_>,
    prompt: &[u32],
    n: usize,
    sampler: &mut Sampler,
    context: ContextPolicy,
    mut on_token: impl FnMut(u32),
) -> anyhow::Result<Generation> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    let max_seq = model.config().max_seq;
    let window = |seq: &[u32]| seq.len().saturating_sub(max_seq as usize);
    let fed = match context {
        ContextPolicy::Full => prompt,
        ContextPolicy::Slide => &prompt[window(prompt)..],
    };
    match context {
        ContextPolicy::Full => check_tokens(prompt, model.config())?,
        // Every id in range; only the last window is fed, so only its length matters.
        ContextPolicy::Slide => {
            prompt.chunks(max_seq.max(1) as usize).try_for_each(|c| check_tokens(c, model.config()))?
        }
    }
    let mut arena = new_arena(model);
    let mut session = new_session(model, &mut arena)?;
    let start = Instant::now();
    session.prefill_logits(fed)?;
    let prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    // At most the positions left, plus the prediction after the last: never `n` itself,
    // which is the user's number and may be anything.
    let room = match context {
        ContextPolicy::Full => (max_seq as usize).saturating_sub(prompt.len()) + 1,
        ContextPolicy::Slide => n,
    };
    let mut generated = Vec::with_capacity(n.min(room).min(1 << 16));
    let mut stopped_at_max_seq = false;
    let mut window_reruns = 0;
    // The sequence so far, for the window (Slide only).
    let mut seq: Vec<u32> = if context == ContextPolicy::Slide { fed.to_vec() } else { Vec::new() };
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
            if context == ContextPolicy::Full {
                stopped_at_max_seq = true;
                break;
            }
            // Upstream: the last max_seq tokens, from an empty state, positions from 0.
            seq.push(id);
            let last = &seq[window(&seq)..];
            session.reset();
            session.prefill_logits(last)?;
            window_reruns += 1;
            continue;
        }
        if context == ContextPolicy::Slide {
            seq.push(id);
        }
        session.step_logits(id)?;
    }
    let generate_secs = start.elapsed().as_secs_f64();
    Ok(Generation {
        prompt: prompt.to_vec(),
        generated,
        prefill_secs,
        generate_secs,
        stopped_at_max_seq,
        window_reruns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_test_support::tiny_blob;

    #[test]
    fn greedy_generation_matches_stepwise_argmax() {
        let bytes = tiny_blob(5);
        let model = crate::open_model(&bytes).unwrap();
        let mut streamed = Vec::new();
        let g = generate(&model, &[1, 2], 4, &mut Sampling::default().sampler().unwrap(), ContextPolicy::Full, |id| {
            streamed.push(id)
        })
        .unwrap();
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
        let bytes = tiny_blob(5);
        let model = crate::open_model(&bytes).unwrap();
        let max_seq = model.config().max_seq as usize; // 16
        let g =
            generate(&model, &[1; 10], 100, &mut Sampling::default().sampler().unwrap(), ContextPolicy::Full, |_| ())
                .unwrap();
        assert!(g.stopped_at_max_seq);
        assert_eq!(g.generated.len(), max_seq - 10 + 1);
        assert!(
            generate(&model, &[], 3, &mut Sampling::default().sampler().unwrap(), ContextPolicy::Full, |_| ()).is_err()
        );
    }

    #[test]
    fn sliding_past_max_seq_reruns_the_last_window() {
        let bytes = tiny_blob(5);
        let model = crate::open_model(&bytes).unwrap();
        let max_seq = model.config().max_seq as usize; // 16
                                                       // A prompt longer than the window starts from its last max_seq tokens.
        let prompt: Vec<u32> = (0..20).map(|i| i % 7 + 1).collect();
        let g =
            generate(&model, &prompt, 12, &mut Sampling::default().sampler().unwrap(), ContextPolicy::Slide, |_| ())
                .unwrap();
        assert!(!g.stopped_at_max_seq);
        assert_eq!((g.generated.len(), g.window_reruns), (12, 11));
        let mut seq = prompt.clone();
        for &id in &g.generated {
            let window = &seq[seq.len().saturating_sub(max_seq)..];
            let logits = crate::logits_for_tokens(&model, window, |_, _| ()).unwrap();
            assert_eq!(itera_edge::sample::argmax(&logits[logits.len() - model.config().vocab as usize..]), id);
            seq.push(id);
        }
        // With Full the same long prompt is refused.
        let full =
            generate(&model, &prompt, 1, &mut Sampling::default().sampler().unwrap(), ContextPolicy::Full, |_| ());
        assert!(full.unwrap_err().to_string().contains("do not fit"));
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
