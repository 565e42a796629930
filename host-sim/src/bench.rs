//! Speed of a model on this machine: prefill (tokens fed back to back) and greedy
//! generation (logits → argmax → feed, one token at a time), the median of several timed
//! repeats after a warm-up. Several models can be measured in the same run, interleaved, so
//! their ratio is not skewed by the machine warming up or getting busy.

use std::time::{Duration, Instant};

use anyhow::bail;
use itera_edge::sample::argmax;
use itera_edge::{Model, Session};
use serde::Serialize;

use crate::engine::{new_arena, new_session};

/// Benchmark settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchOptions {
    /// Tokens per prefill and per generation run (clamped to the model's `max_seq`).
    pub tokens: usize,
    /// Timed repeats; `None`: as many as fit `budget` (at least 3, at most 101).
    pub repeat: Option<usize>,
    /// Time to aim for when `repeat` is `None`.
    pub budget: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { tokens: 128, repeat: None, budget: Duration::from_secs(1) }
    }
}

/// One model's speed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchResult {
    /// Median prefill speed, tokens per second.
    pub prefill_tok_per_s: f64,
    /// Median greedy generation speed, tokens per second.
    pub generate_tok_per_s: f64,
    /// Matrix kernel the core runs on ([`Model::kernel_name`]).
    pub kernel: String,
    /// Multiply-accumulates per token ([`Model::macs_per_token`]).
    pub macs_per_token: usize,
    /// `macs_per_token × prefill_tok_per_s / 1e9`.
    pub gmacs_per_s: f64,
    /// Bytes of the blob.
    pub blob_bytes: usize,
    /// Bytes of arena one session needs.
    pub arena_bytes: usize,
    /// Tokens per prefill run (after clamping to `max_seq`).
    pub prefill_tokens: usize,
    /// Tokens per generation run.
    pub generate_tokens: usize,
    /// Timed repeats (the medians are over these).
    pub repeats: usize,
    /// Prefill speed of each repeat, tokens per second.
    pub prefill_runs: Vec<f64>,
    /// Generation speed of each repeat, tokens per second.
    pub generate_runs: Vec<f64>,
}

/// A deterministic token sequence of length `n` within `vocab` (a fixed stride walk).
pub fn bench_tokens(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u64).map(|i| ((i * 7919 + 13) % vocab as u64) as u32).collect()
}

/// The median (mean of the two middle values for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// One model under test: its session and what to feed it.
struct Runner<'s, 'a> {
    session: Session<'s, 'a>,
    prompt: Vec<u32>,
    generate_tokens: usize,
    prefill_runs: Vec<f64>,
    generate_runs: Vec<f64>,
}

impl Runner<'_, '_> {
    /// Seconds for one prefill of the prompt from an empty session.
    fn prefill(&mut self) -> anyhow::Result<f64> {
        self.session.reset();
        let start = Instant::now();
        std::hint::black_box(self.session.prefill(&self.prompt)?);
        Ok(start.elapsed().as_secs_f64())
    }

    /// Seconds to generate `generate_tokens` greedily from a 4-token prompt, starting again
    /// (reset + prompt, not timed) whenever the session is full.
    fn generate(&mut self) -> anyhow::Result<f64> {
        let prompt = &self.prompt[..self.prompt.len().min(4)];
        let max_seq = self.session.model().config().max_seq;
        self.session.reset();
        self.session.prefill(prompt)?;
        let mut secs = 0.0;
        let mut start = Instant::now();
        for _ in 0..self.generate_tokens {
            let id = argmax(self.session.logits());
            if self.session.position() >= max_seq {
                secs += start.elapsed().as_secs_f64();
                self.session.reset();
                self.session.prefill(prompt)?;
                start = Instant::now();
            }
            std::hint::black_box(self.session.step(id)?);
        }
        Ok(secs + start.elapsed().as_secs_f64())
    }
}

fn rate(tokens: usize, secs: f64) -> f64 {
    tokens as f64 / secs.max(1e-9)
}

/// Benchmarks `models` (each with its blob's size in bytes) in one run: a warm-up, then
/// repeats in which every model runs a prefill and a generation in turn.
pub fn bench(models: &[(&Model<'_>, usize)], opts: &BenchOptions) -> anyhow::Result<Vec<BenchResult>> {
    if opts.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    if opts.repeat == Some(0) {
        bail!("--repeat must be at least 1");
    }
    let mut arenas: Vec<Vec<u32>> = models.iter().map(|(m, _)| new_arena(m)).collect();
    let mut runners = Vec::with_capacity(models.len());
    for ((model, _), arena) in models.iter().zip(arenas.iter_mut()) {
        let c = model.config();
        let n = opts.tokens.min(c.max_seq as usize);
        runners.push(Runner {
            session: new_session(model, arena)?,
            prompt: bench_tokens(n, c.vocab),
            generate_tokens: opts.tokens,
            prefill_runs: Vec::new(),
            generate_runs: Vec::new(),
        });
    }
    // Warm-up (caches, branch predictors, clock): whole rounds for about a tenth of the
    // budget (at least one), also timed to size the repeats.
    let warm_up = Instant::now();
    let (mut rounds, mut per_round) = (0usize, 0.0);
    while rounds == 0 || (rounds < 100 && warm_up.elapsed() < opts.budget / 10) {
        rounds += 1;
        per_round = 0.0;
        for r in &mut runners {
            per_round += r.prefill()? + r.generate()?;
        }
    }
    let repeats = opts.repeat.unwrap_or_else(|| {
        let fit = (opts.budget.as_secs_f64() / per_round.max(1e-9)) as usize;
        fit.clamp(3, 101)
    });
    for _ in 0..repeats {
        for r in &mut runners {
            let p = r.prefill()?;
            r.prefill_runs.push(rate(r.prompt.len(), p));
            let g = r.generate()?;
            r.generate_runs.push(rate(r.generate_tokens, g));
        }
    }
    Ok(runners
        .into_iter()
        .zip(models)
        .map(|(r, (model, blob_bytes))| {
            let prefill = median(&r.prefill_runs);
            BenchResult {
                prefill_tok_per_s: prefill,
                generate_tok_per_s: median(&r.generate_runs),
                kernel: model.kernel_name().into(),
                macs_per_token: model.macs_per_token(),
                gmacs_per_s: model.macs_per_token() as f64 * prefill / 1e9,
                blob_bytes: *blob_bytes,
                arena_bytes: model.arena_bytes(),
                prefill_tokens: r.prompt.len(),
                generate_tokens: r.generate_tokens,
                repeats,
                prefill_runs: r.prefill_runs,
                generate_runs: r.generate_runs,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_pack::inspect::AlignedBytes;

    #[test]
    fn medians_and_tokens() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let t = bench_tokens(100, 48);
        assert_eq!(t, bench_tokens(100, 48));
        assert!(t.iter().all(|&id| id < 48));
    }

    #[test]
    fn bench_reports_positive_rates_and_clamps_to_max_seq() {
        let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::tiny_config(), 4);
        let bytes = AlignedBytes::from(
            itera_pack::convert::build(&sd, &Default::default()).unwrap().finish().unwrap().as_slice(),
        );
        let model = crate::open_model(&bytes).unwrap();
        let opts = BenchOptions { tokens: 40, repeat: Some(3), ..Default::default() };
        let r = bench(&[(&model, bytes.len()), (&model, bytes.len())], &opts).unwrap();
        assert_eq!(r.len(), 2);
        for b in &r {
            assert_eq!((b.prefill_tokens, b.generate_tokens, b.repeats), (16, 40, 3));
            assert!(b.prefill_tok_per_s > 0.0 && b.generate_tok_per_s > 0.0 && b.gmacs_per_s > 0.0);
            assert_eq!(b.prefill_runs.len(), 3);
        }
        assert!(bench(&[(&model, 0)], &BenchOptions { tokens: 0, ..Default::default() }).is_err());
    }
}
