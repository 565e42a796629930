//! `itera-sim greedy`: the tokens and logits checksum a board's firmware must print.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use itera_sim::{limits, parse_tokens, read_blob};

use super::{load, say, Outcome};

/// Replay a board's greedy run: the tokens and logits checksum its firmware must print.
///
/// Prefills the prompt, generates N tokens greedily and prints `tokens: …` and
/// `logits_fnv1a: …` exactly as the firmware under `boards/` prints them, so the two
/// outputs can be compared line for line (boards/qemu-an386/check.sh does).
#[derive(Args)]
#[command(after_help = "Example:\n  itera-sim greedy micro_int8.itb --tokens 41,13,6,42 -n 16")]
pub struct GreedyArgs {
    /// The blob.
    blob: PathBuf,
    /// Prompt token ids (commas or spaces).
    #[arg(long, value_name = "IDS", allow_hyphen_values = true)]
    tokens: String,
    /// Tokens to generate; the prompt plus N must fit the model's max_seq positions.
    #[arg(short, long = "max-tokens", default_value_t = 16, value_name = "N", allow_negative_numbers = true,
          value_parser = limits::GREEDY_TOKENS.parser())]
    n: usize,
    /// Print one JSON object instead.
    #[arg(long)]
    json: bool,
}

impl GreedyArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        cmd_greedy(&self.blob, &self.tokens, self.n, self.json)
    }
}

fn cmd_greedy(blob: &Path, tokens: &str, n: usize, json: bool) -> anyhow::Result<Outcome> {
    let prompt = parse_tokens(tokens).context("--tokens")?;
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let run = itera_sim::board::greedy_reference(&model, &prompt, n)?;
    say(&if json { format!("{}\n", serde_json::to_string_pretty(&run)?) } else { run.firmware_lines() })?;
    Ok(Outcome::Ok)
}
