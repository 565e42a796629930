//! `itera-sim logits`: the logits after each token of a sequence, written as raw f32.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use itera_sim::progress::Progress;
use itera_sim::{golden, logits_for_tokens, parse_tokens, read_blob};
use serde_json::json;

use super::{load, say, Outcome};

/// Feed tokens one by one and write the logits after each (raw little-endian f32).
///
/// The output is row-major [positions][vocab] little-endian f32, the layout of golden
/// `.f32` files: row p holds the logits after tokens[0..=p], from an empty session.
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim logits micro.itb --tokens 5,17,2 -o logits.f32
  itera-sim logits micro.itb --tokens \"5 17 2\" --output logits.f32 --json

Read it back in NumPy: np.fromfile(\"logits.f32\", \"<f4\").reshape(3, vocab)")]
pub struct LogitsArgs {
    /// The blob (.itb).
    blob: PathBuf,
    /// Token ids to feed, separated by commas or spaces.
    #[arg(long, value_name = "IDS", allow_hyphen_values = true)]
    tokens: String,
    /// Output file for the logits.
    #[arg(long, short, value_name = "FILE", alias = "out")]
    output: PathBuf,
    /// Print a JSON summary (positions, vocab, bytes written) instead of text.
    #[arg(long)]
    json: bool,
}

impl LogitsArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        cmd_logits(&self.blob, &self.tokens, &self.output, self.json)
    }
}

fn cmd_logits(blob: &Path, tokens: &str, out: &Path, json: bool) -> anyhow::Result<Outcome> {
    let tokens = parse_tokens(tokens).context("--tokens")?;
    itera_pack::files::refuse_overwriting_input(out, blob, "--output")?;
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let mut progress = Progress::new("logits");
    let logits = logits_for_tokens(&model, &tokens, |d, t| progress.update(d, t))?;
    progress.finish();
    golden::write_f32_le(out, &logits)?;
    let report = LogitsReport { out, positions: tokens.len(), vocab: model.config().vocab, bytes: logits.len() * 4 };
    say(&if json { format!("{}\n", report.to_json()) } else { report.render() })?;
    Ok(Outcome::Ok)
}

/// What `logits` reports of the file it wrote; the text and the JSON are both made from it.
struct LogitsReport<'a> {
    out: &'a Path,
    positions: usize,
    vocab: u32,
    bytes: usize,
}

impl LogitsReport<'_> {
    fn to_json(&self) -> serde_json::Value {
        json!({ "out": self.out.display().to_string(), "positions": self.positions, "vocab": self.vocab, "bytes": self.bytes })
    }

    fn render(&self) -> String {
        format!(
            "wrote {} ({} positions × {} logits, {} bytes, little-endian f32)\n",
            self.out.display(),
            self.positions,
            self.vocab,
            self.bytes
        )
    }
}
