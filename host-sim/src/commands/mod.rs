//! One module per `itera-sim` command: its flags (a clap `Args` struct, with its help and
//! examples) and what it does with them. What the commands share lives here.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use itera_edge::Model;
use itera_sim::generate::Sampling;
use itera_sim::{limits, open_model};

pub mod bench;
pub mod check;
pub mod demo;
pub mod eval;
pub mod fit;
pub mod greedy;
pub mod logits;
pub mod run;

/// What a command reports besides printing: success, or a failed check (already explained).
pub enum Outcome {
    /// Exit status 0.
    Ok,
    /// Exit status 1, with the one line that says why.
    Failed(String),
    /// The requested reference cannot run on this machine or build (exit status 3).
    Unavailable(String),
}

/// Writes to stdout; a closed pipe is an error, not a panic.
pub fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout")
}

/// Parses and checks the blob at `path` (already read into `bytes`) as a model.
pub fn load<'b>(path: &Path, bytes: &'b [u8]) -> anyhow::Result<Model<'b>> {
    open_model(bytes).with_context(|| format!("{} is not a usable blob", path.display()))
}

/// The sampling flags of every command that generates (`run`, `demo`).
#[derive(Args)]
pub struct SamplingArgs {
    /// Temperature: 0 picks the most likely token (greedy); higher is more random.
    #[arg(long, default_value_t = 0.0, value_name = "T", allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: no limit, at most 64).
    #[arg(long = "top-k", default_value_t = 0, value_name = "K", allow_negative_numbers = true,
          value_parser = limits::TOP_K.parser())]
    pub top_k: usize,
    /// Keep the smallest set of likely tokens whose probability reaches P (1: no limit).
    #[arg(long = "top-p", default_value_t = 1.0, value_name = "P", allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl From<&SamplingArgs> for Sampling {
    fn from(a: &SamplingArgs) -> Self {
        Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed }
    }
}
