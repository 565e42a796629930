//! `itera-sim bench`: prefill and generation speed, against a memory roofline.

use std::path::{Path, PathBuf};

use clap::Args;
use itera_edge::Model;
use itera_sim::bench::{bench, BenchOptions, BenchResult};
use itera_sim::{limits, read_blob};
use serde_json::json;

use super::{load, say, Outcome};

/// Measure prefill and greedy generation speed (tokens per second) on this machine, against
/// a memory roofline.
///
/// Prefill feeds a fixed, deterministic sequence of --length ids (clamped to max_seq) from
/// an empty session, in blocks of 8 tokens (the host's arena is
/// `Model::prefill_arena_bytes()`; only the last token's logits are computed); generation
/// picks the argmax and feeds it back, one token at a time,
/// for --length tokens from a 4-token prompt (starting again, untimed, when the session
/// is full). After a warm-up, each repeat times both; the medians are reported. Without
/// --repeat, as many repeats as fit about one second (at least 3).
///
/// Roofline: the weight bytes one token reads (one embedding and one position row, every
/// matrix and vector of each layer, the router and only top_k of the experts of an MoE
/// layer, the final norm and the whole lm_head; a tied lm_head is the embedding table,
/// counted once; scale tables included) and, in each repeat, the read bandwidth of a
/// buffer of exactly that many bytes (warmed, summed with the kernels' vector width,
/// median). Roofline tok/s = bandwidth / bytes per token; the fraction is measured tok/s
/// over it, for generation and for prefill.
///
/// With --compare, the other blob is measured in the same run, interleaved repeat by
/// repeat, and the speed ratio (this blob / other) is printed.
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim bench micro.itb
  itera-sim bench micro_int8.itb --compare micro.itb          # INT8 vs FP32, same run
  itera-sim bench micro.itb --length 64 --repeat 20 --json
  itera-pack synth --shape tiny --seed 1 -o tiny.itb && itera-sim bench tiny.itb

JSON keys: prefill_tok_per_s, generate_tok_per_s, kernel, macs_per_token, gmacs_per_s
(macs_per_token x prefill_tok_per_s / 1e9), blob_bytes, arena_bytes, prefill_tokens,
generate_tokens, repeats, prefill_runs, generate_runs, bytes_per_token (weight bytes read per
token), read_bandwidth_bytes_per_s, read_bandwidth_runs, roofline_tok_per_s (bandwidth /
bytes_per_token), roofline_fraction (generate_tok_per_s / roofline_tok_per_s),
prefill_roofline_fraction (prefill_tok_per_s / roofline_tok_per_s), roofline_holds (false when
generation beats the roofline: the probe is then no bound on this machine); with --compare also
`compare` (the same keys for the other blob) and `ratio` {prefill, generate} (this / other).
Speeds depend on the machine and its load: compare blobs in one run.")]
pub struct BenchArgs {
    /// The blob (.itb).
    blob: PathBuf,
    /// Tokens per prefill and per generation run (1 to 8192).
    #[arg(long = "length", alias = "tokens", default_value_t = 128, value_name = "N", allow_negative_numbers = true,
          value_parser = limits::BENCH_TOKENS.parser())]
    tokens: usize,
    /// Timed repeats, 1 to 1000 (default: as many as fit about one second, 3 to 101).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = limits::BENCH_REPEATS.parser())]
    repeat: Option<usize>,
    /// Another blob to measure in the same run, interleaved; prints the speed ratio.
    #[arg(long, value_name = "BLOB")]
    compare: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let opts = BenchOptions { tokens: self.tokens, repeat: self.repeat, ..BenchOptions::default() };
        cmd_bench(&self.blob, self.compare.as_deref(), opts, self.json)
    }
}

fn cmd_bench(blob: &Path, other: Option<&Path>, opts: BenchOptions, json: bool) -> anyhow::Result<Outcome> {
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let other_bytes = other.map(read_blob).transpose()?;
    let other_model = match (other, other_bytes.as_ref()) {
        (Some(path), Some(b)) => Some((load(path, b)?, b)),
        _ => None,
    };
    let mut models: Vec<(&Model<'_>, &[u8])> = vec![(&model, &bytes)];
    if let Some((m, b)) = &other_model {
        models.push((m, b));
    }
    if !json {
        match opts.repeat {
            Some(n) => eprintln!("benchmarking {} blob(s): warm-up, then {n} repeats...", models.len()),
            None => eprintln!(
                "benchmarking {} blob(s): warm-up, then about {:.0} s of repeats...",
                models.len(),
                opts.budget.as_secs_f64()
            ),
        }
    }
    let results = bench(&models, &opts)?;
    let report = BenchReport { blobs: std::iter::once(blob).chain(other).zip(&results).collect() };
    say(&if json { format!("{}\n", report.to_json()?) } else { report.render() })?;
    Ok(Outcome::Ok)
}

/// The roofline's two fractions, each with what it means: prefill passes the roofline by
/// design (a block of 8 tokens reads each weight once, and only its last token runs the
/// lm_head), and generation above it says that the probe is no bound on this machine.
fn roofline_fractions(r: &BenchResult) -> String {
    let generate = if r.roofline_holds() {
        format!("generate {:.1}%", 100.0 * r.roofline_fraction)
    } else {
        format!(
            "generate {:.1}%: above 100%, so the probe is no bound here (the weights stay in a cache \
             that the probe's own buffer is not read from at the kernels' speed); compare fractions only \
             between runs of this machine",
            100.0 * r.roofline_fraction
        )
    };
    format!(
        "{generate}; prefill {:.1}% (a block of 8 tokens reads each weight once, so prefill may pass 100%)",
        100.0 * r.prefill_roofline_fraction
    )
}

/// What `bench` reports: each blob's measurements (this one first, then --compare's) and
/// their speed ratio. The text and the JSON are both made from it.
struct BenchReport<'a> {
    blobs: Vec<(&'a Path, &'a BenchResult)>,
}

impl BenchReport<'_> {
    /// (prefill, generate) speed of this blob over the other's, with --compare.
    fn ratio(&self) -> Option<(f64, f64)> {
        let [(_, this), (_, other)] = self.blobs[..] else { return None };
        Some((this.prefill_tok_per_s / other.prefill_tok_per_s, this.generate_tok_per_s / other.generate_tok_per_s))
    }

    /// This blob's keys, `blob`, and with --compare `compare` (the same keys) and `ratio`.
    fn to_json(&self) -> anyhow::Result<serde_json::Value> {
        let keyed = |(path, r): (&Path, &BenchResult)| -> anyhow::Result<serde_json::Value> {
            let mut v = serde_json::to_value(r)?;
            v["blob"] = json!(path.display().to_string());
            v["roofline_holds"] = json!(r.roofline_holds());
            Ok(v)
        };
        let mut v = keyed(self.blobs[0])?;
        if let (Some(&other), Some((p, g))) = (self.blobs.get(1), self.ratio()) {
            v["compare"] = keyed(other)?;
            v["ratio"] = json!({ "prefill": p, "generate": g });
        }
        Ok(v)
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for (path, r) in &self.blobs {
            text += &format!(
                "{}\n  prefill:    {:.0} tok/s ({} tokens, median of {})\n  generate:   {:.0} tok/s ({} tokens, greedy)\n  \
                 compute:    {:.3} GMAC/s ({} MACs/token)\n  roofline:   {:.0} tok/s ({} weight bytes/token at {:.2} GB/s \
                 read bandwidth): {}\n  kernel:     {}\n  blob:       {} bytes, arena {} bytes\n",
                path.display(),
                r.prefill_tok_per_s,
                r.prefill_tokens,
                r.repeats,
                r.generate_tok_per_s,
                r.generate_tokens,
                r.gmacs_per_s,
                r.macs_per_token,
                r.roofline_tok_per_s,
                r.bytes_per_token,
                r.read_bandwidth_bytes_per_s / 1e9,
                roofline_fractions(r),
                r.kernel,
                r.blob_bytes,
                r.arena_bytes
            );
        }
        if let (Some((p, g)), [(this, _), (other, _)]) = (self.ratio(), &self.blobs[..]) {
            text += &format!(
                "ratio {} / {}: prefill {p:.2}x, generate {g:.2}x (same run, interleaved)\n",
                this.display(),
                other.display()
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roofline_that_generation_beats_is_said_to_be_no_bound() {
        let below = BenchResult { roofline_fraction: 0.4, prefill_roofline_fraction: 4.27, ..BenchResult::default() };
        let text = roofline_fractions(&below);
        assert!(text.starts_with("generate 40.0%; prefill 427.0% (a block of 8 tokens"), "{text}");
        assert!(!text.contains("no bound"), "{text}");

        let above = BenchResult { roofline_fraction: 1.16, ..below };
        assert!(!above.roofline_holds());
        let text = roofline_fractions(&above);
        assert!(text.starts_with("generate 116.0%: above 100%, so the probe is no bound here"), "{text}");
    }
}
