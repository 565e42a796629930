//! Speed of a model on this machine: prefill (tokens fed back to back) and greedy
//! generation (logits → argmax → feed, one token at a time), the median of several timed
//! repeats after a warm-up. Several models can be measured in the same run, interleaved, so
//! their ratio is not skewed by the machine warming up or getting busy.
//!
//! Each model also gets a **roofline**: the weight bytes one token reads
//! ([`weight_bytes_per_token`]) and this machine's read bandwidth for a buffer of exactly
//! that size ([`ReadProbe`]), sampled in the same repeats. Bandwidth ÷ bytes per token is
//! the fastest a token can go if it only had to stream its weights once; the measured speed
//! over that is the fraction of the roofline reached.

use std::time::{Duration, Instant};

use anyhow::Context;
use itera_edge::format::Role;
use itera_edge::{Blob, Model, Session};
use serde::Serialize;

use crate::engine::{new_arena, new_session};
use crate::limits;

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
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
    /// Weight bytes one generated token reads ([`weight_bytes_per_token`]).
    pub bytes_per_token: usize,
    /// Median read bandwidth of a buffer of `bytes_per_token` bytes, bytes per second
    /// ([`ReadProbe`]).
    pub read_bandwidth_bytes_per_s: f64,
    /// `read_bandwidth_bytes_per_s / bytes_per_token`: tokens per second if a token cost
    /// nothing but reading its weights once.
    pub roofline_tok_per_s: f64,
    /// `generate_tok_per_s / roofline_tok_per_s`.
    pub roofline_fraction: f64,
    /// `prefill_tok_per_s / roofline_tok_per_s` (above 1 when prefill reuses weights across
    /// tokens, or skips the `lm_head` of positions whose logits nobody reads).
    pub prefill_roofline_fraction: f64,
    /// Read bandwidth of each repeat, bytes per second.
    pub read_bandwidth_runs: Vec<f64>,
}

impl BenchResult {
    /// Whether the roofline bounds generation, as a roofline should. It does not when the
    /// weights stay in a cache that the probe, a second buffer of the same size, does not
    /// read at the kernels' speed: then its fraction is only relative (the same model and
    /// probe on another build or blob).
    pub fn roofline_holds(&self) -> bool {
        self.roofline_fraction <= 1.0
    }
}

/// Weight bytes one token reads in [`Session::step`]: each byte of the blob the forward pass
/// touches, counted once (element bytes plus the scale table of grouped int8/int4 tensors):
///
/// * one row of the embedding and one row of the position table;
/// * every per-layer matrix and vector: norms, `in_proj`, conv weight and bias, `A_log`, `B`,
///   `C`, `D`, `delta_proj` and its bias, `out_proj`, the FFN's `w1`/`w2`, the MoE router;
/// * in an MoE layer, only `top_k` of its `n_experts` experts' `w1`/`w2`: `top_k / n_experts`
///   of the layer's expert bytes (exact when the experts share a dtype, as every preset
///   stores them; a mean otherwise);
/// * the final norm and the whole `lm_head`. A tied `lm_head` is the embedding table, so its
///   bytes are the table's, and the embedding row, inside it, is not counted again.
///
/// Activations, the arena and the per-tensor scale of a PyTorch affine int8 tensor (held in
/// the manifest) are not weight bytes.
pub fn weight_bytes_per_token(blob: &Blob<'_>) -> usize {
    let c = blob.config();
    let mut total = 0usize;
    let mut experts = vec![0usize; c.n_layers as usize];
    let mut embedding: Option<(u32, usize)> = None;
    for e in blob.tensors() {
        let bytes = e.len as usize + blob.scales(&e).len();
        let row = bytes / (e.shape[0] as usize).max(1);
        match e.role {
            Role::Embedding => {
                embedding = Some((e.offset, row));
                total += row;
            }
            Role::Position => total += row,
            Role::ExpertW1 | Role::ExpertW2 => {
                if let Some(x) = experts.get_mut(e.layer as usize) {
                    *x += bytes;
                }
            }
            Role::LmHead => {
                total += bytes;
                // A tied head points at the embedding's bytes: the row counted above is in them.
                if let Some((_, row)) = embedding.filter(|(offset, _)| *offset == e.offset) {
                    total = total.saturating_sub(row);
                }
            }
            _ => total += bytes,
        }
    }
    if c.n_experts > 0 {
        let k = c.top_k.min(c.n_experts) as usize;
        total += experts.iter().map(|x| x * k / c.n_experts as usize).sum::<usize>();
    }
    total
}

/// A buffer whose read bandwidth is measured: `bytes` bytes (rounded up to 8), starting on
/// a 64-byte cache line, summed as 64-bit words, 16 independent sums at a time, with the
/// widest loads the kernels use (AVX2 when the core runs its AVX2 path, the portable code's
/// otherwise). An upper bound for the weights' reads: no load splits a cache line.
pub struct ReadProbe {
    /// Backing store, 8 words longer than the buffer so that it can start on a cache line.
    store: Vec<u64>,
    /// The buffer: `store[start..start + len]`.
    start: usize,
    len: usize,
    avx2: bool,
}

impl ReadProbe {
    /// A probe of `bytes` bytes (at least 128), filled with a fixed non-zero pattern.
    pub fn new(bytes: usize) -> Self {
        let len = bytes.div_ceil(8).max(16);
        let store: Vec<u64> = (0..(len + 8) as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).collect();
        // Words to skip to reach a 64-byte boundary (the allocation is 8-aligned).
        let start = (64 - store.as_ptr() as usize % 64) % 64 / 8;
        #[cfg(target_arch = "x86_64")]
        let avx2 = itera_edge::kernels::simd_path() != "scalar" && std::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        ReadProbe { store, start, len, avx2 }
    }

    /// The buffer.
    fn words(&self) -> &[u64] {
        self.store.get(self.start..self.start + self.len).unwrap_or(&[])
    }

    /// Bytes read per pass.
    pub fn bytes(&self) -> usize {
        self.len * 8
    }

    /// Passes a sample takes: enough to read at least 64 MiB, and at least 8 (fewer read
    /// less than the buffer sustains right after the model ran: 24.5 instead of 28 GB/s
    /// for 7 MB on the 2-core development machine with 3 passes).
    pub fn default_passes(&self) -> usize {
        (64usize << 20).div_ceil(self.bytes()).max(8)
    }

    /// One measurement: a pass to warm the caches (untimed), then `passes` timed passes
    /// over the buffer; returns bytes read per second.
    pub fn sample(&self, passes: usize) -> f64 {
        std::hint::black_box(self.sum());
        let start = Instant::now();
        for _ in 0..passes {
            std::hint::black_box(self.sum());
        }
        rate(passes * self.bytes(), start.elapsed().as_secs_f64())
    }

    /// The sum of every word, read afresh (the buffer goes through `black_box`, so no pass
    /// can be folded into another).
    #[allow(unsafe_code)] // the AVX2 build of the same loop, only where AVX2 was detected
    fn sum(&self) -> u64 {
        let words = std::hint::black_box(self.words());
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where `is_x86_feature_detected!("avx2")` said so.
            return unsafe { sum_words_avx2(words) };
        }
        sum_words(words)
    }
}

/// Wrapping sum of `words` in 16 independent lanes (so loads, not one add chain, limit it).
#[inline(always)]
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 16];
    let chunks = words.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(0u64, |a, &w| a.wrapping_add(w));
    for chunk in chunks {
        for (a, &w) in acc.iter_mut().zip(chunk) {
            *a = a.wrapping_add(w);
        }
    }
    acc.iter().fold(rest, |a, &x| a.wrapping_add(x))
}

/// [`sum_words`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_words_avx2(words: &[u64]) -> u64 {
    sum_words(words)
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
    bytes_per_token: usize,
    probe: ReadProbe,
    bandwidth_runs: Vec<f64>,
}

impl Runner<'_, '_> {
    /// Seconds for one prefill of the prompt from an empty session.
    fn prefill(&mut self) -> anyhow::Result<f64> {
        self.session.reset();
        let start = Instant::now();
        std::hint::black_box(self.session.prefill_logits(&self.prompt)?);
        Ok(start.elapsed().as_secs_f64())
    }

    /// Seconds to generate `generate_tokens` greedily from a 4-token prompt, starting again
    /// (reset + prompt, not timed) whenever the session is full.
    fn generate(&mut self) -> anyhow::Result<f64> {
        let prompt = &self.prompt[..self.prompt.len().min(4)];
        let max_seq = self.session.model().config().max_seq;
        self.session.reset();
        self.session.prefill_logits(prompt)?;
        let mut secs = 0.0;
        let mut start = Instant::now();
        for _ in 0..self.generate_tokens {
            let id = self.session.logits_view().argmax();
            if self.session.position() >= max_seq {
                secs += start.elapsed().as_secs_f64();
                self.session.reset();
                self.session.prefill_logits(prompt)?;
                start = Instant::now();
            }
            std::hint::black_box(self.session.step_logits(id)?);
        }
        Ok(secs + start.elapsed().as_secs_f64())
    }
}

fn rate(tokens: usize, secs: f64) -> f64 {
    tokens as f64 / secs.max(1e-9)
}

/// Benchmarks `models` (each with the blob bytes it was opened from) in one run: a warm-up,
/// then repeats in which every model runs a prefill, a generation and a read-bandwidth
/// sample of its [`weight_bytes_per_token`] in turn.
pub fn bench(models: &[(&Model<'_>, &[u8])], opts: &BenchOptions) -> anyhow::Result<Vec<BenchResult>> {
    limits::BENCH_TOKENS.check(opts.tokens)?;
    if let Some(n) = opts.repeat {
        limits::BENCH_REPEATS.check(n)?;
    }
    let mut arenas: Vec<Vec<u32>> = models.iter().map(|(m, _)| new_arena(m)).collect();
    let mut runners = Vec::with_capacity(models.len());
    for ((model, bytes), arena) in models.iter().zip(arenas.iter_mut()) {
        let c = model.config();
        let n = opts.tokens.min(c.max_seq as usize);
        let bytes_per_token = weight_bytes_per_token(&Blob::parse(bytes).context("the benchmarked blob")?);
        runners.push(Runner {
            session: new_session(model, arena)?,
            prompt: bench_tokens(n, c.vocab),
            generate_tokens: opts.tokens,
            prefill_runs: Vec::new(),
            generate_runs: Vec::new(),
            bytes_per_token,
            probe: ReadProbe::new(bytes_per_token),
            bandwidth_runs: Vec::new(),
        });
    }
    // Warm-up (caches, branch predictors, clock): whole rounds for about a tenth of the
    // budget (at least one), also timed to size the repeats.
    let warm_up = Instant::now();
    let (mut rounds, mut per_round) = (0usize, 0.0);
    while rounds == 0 || (rounds < 100 && warm_up.elapsed() < opts.budget / 10) {
        rounds += 1;
        let round = Instant::now();
        for r in &mut runners {
            r.prefill()?;
            r.generate()?;
            r.probe.sample(r.probe.default_passes());
        }
        per_round = round.elapsed().as_secs_f64();
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
            r.bandwidth_runs.push(r.probe.sample(r.probe.default_passes()));
        }
    }
    Ok(runners
        .into_iter()
        .zip(models)
        .map(|(r, (model, blob))| {
            let prefill = median(&r.prefill_runs);
            let generate = median(&r.generate_runs);
            let bandwidth = median(&r.bandwidth_runs);
            let roofline = bandwidth / r.bytes_per_token.max(1) as f64;
            BenchResult {
                prefill_tok_per_s: prefill,
                generate_tok_per_s: generate,
                kernel: model.kernel_name().into(),
                macs_per_token: model.macs_per_token(),
                gmacs_per_s: model.macs_per_token() as f64 * prefill / 1e9,
                blob_bytes: blob.len(),
                arena_bytes: model.arena_bytes(),
                prefill_tokens: r.prompt.len(),
                generate_tokens: r.generate_tokens,
                repeats,
                prefill_runs: r.prefill_runs,
                generate_runs: r.generate_runs,
                bytes_per_token: r.bytes_per_token,
                read_bandwidth_bytes_per_s: bandwidth,
                roofline_tok_per_s: roofline,
                roofline_fraction: generate / roofline,
                prefill_roofline_fraction: prefill / roofline,
                read_bandwidth_runs: r.bandwidth_runs,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_test_support::{packed, tiny_blob};

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
    fn weight_bytes_per_token_of_the_test_config_by_hand() {
        // tiny_config, all f32: vocab 48, d 8, 2 layers, d_inner 16, N 4, K 4, 16 positions,
        // FFN 8 on layer 0, layer 1 MoE with 3 experts of width 8, top-2.
        let ssm = 8 + 8 // SSM norm weight, bias
            + 32 * 8 // in_proj
            + 16 * 4 + 16 // conv weight, bias
            + 4 // A_log
            + 4 * 16 + 16 * 4 // B, C
            + 16 // D
            + 16 * 16 + 16 // delta_proj, bias
            + 8 * 16 // out_proj
            + 8 + 8; // mix norm weight, bias
        assert_eq!(ssm, 916);
        let floats = 8 // one position row
            + 2 * ssm
            + 2 * 8 * 8 // layer 0 FFN w1, w2
            + 3 * 8 // router
            + 2 * (2 * 8 * 8) // two of the three experts
            + 8 + 8 // final norm
            + 48 * 8; // the tied lm_head: the whole embedding table, which holds the looked-up row
        let tied = tiny_blob(4);
        assert_eq!(weight_bytes_per_token(&Blob::parse(&tied).unwrap()), floats * 4);
        assert_eq!(floats * 4, 10_592);
        // Untied: the embedding row is read on its own, the head is its own table.
        let config = itera_edge::Config { tied_lm_head: false, ..itera_pack::synthetic::tiny_config() };
        let untied = packed(&config, 4, &Default::default());
        assert_eq!(weight_bytes_per_token(&Blob::parse(&untied).unwrap()), (floats + 8) * 4);
    }

    #[test]
    fn the_read_probe_reads_its_whole_buffer() {
        let probe = ReadProbe::new(1000);
        assert_eq!(probe.bytes(), 1000);
        assert_eq!(ReadProbe::new(3).bytes(), 128);
        assert_eq!(probe.words().as_ptr() as usize % 64, 0);
        assert_eq!(probe.words().len(), 125);
        assert_eq!(probe.sum(), sum_words(probe.words()));
        let plain: u64 = probe.words().iter().fold(0, |a, &w| a.wrapping_add(w));
        assert_eq!(probe.sum(), plain);
        assert!(probe.default_passes() >= 8 && probe.sample(3) > 0.0);
    }

    #[test]
    fn bench_reports_positive_rates_and_clamps_to_max_seq() {
        let bytes = tiny_blob(4);
        let model = crate::open_model(&bytes).unwrap();
        let opts = BenchOptions { tokens: 40, repeat: Some(3), ..Default::default() };
        let r = bench(&[(&model, &*bytes), (&model, &*bytes)], &opts).unwrap();
        assert_eq!(r.len(), 2);
        for b in &r {
            assert_eq!((b.prefill_tokens, b.generate_tokens, b.repeats), (16, 40, 3));
            assert!(b.prefill_tok_per_s > 0.0 && b.generate_tok_per_s > 0.0 && b.gmacs_per_s > 0.0);
            assert_eq!((b.prefill_runs.len(), b.read_bandwidth_runs.len()), (3, 3));
            assert_eq!(b.bytes_per_token, 10_592);
            assert!(b.read_bandwidth_bytes_per_s > 0.0 && b.roofline_tok_per_s > 0.0);
            let fraction = b.generate_tok_per_s / b.roofline_tok_per_s;
            assert!((b.roofline_fraction - fraction).abs() <= 1e-12 * fraction);
            assert!(b.prefill_roofline_fraction > 0.0);
        }
        assert!(bench(&[(&model, &*bytes)], &BenchOptions { tokens: 0, ..Default::default() }).is_err());
    }
}
