//! `itera-sim demo`: the whole pipeline on a synthetic model, no files needed.

use std::io::Write;

use clap::Args;
use itera_sim::demo::{run_demo, DemoOptions, SYNTHETIC_NOTE};
use itera_sim::generate::Sampling;
use itera_sim::limits;
use itera_sim::text::for_terminal;

use super::{say, Outcome, SamplingArgs};

/// Run the whole pipeline on a synthetic model: no files, no downloads.
///
/// Builds a seeded random checkpoint with the shapes of itera_lite_micro_distilled.pt
/// (vocab 2000, d_model 64, 3 layers, one MoE layer of 4 experts), gives it a made-up
/// word tokenizer, packs it with the real packer, parses the blob with the core, prefills
/// a prompt and generates. Prints the text, prefill and generation speed, arena and blob
/// bytes, MACs per token and the kernel. The weights are random, so the text is noise.
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim demo
  itera-sim demo --seed 7 -n 64 --temperature 1.0 --top-p 0.9
  itera-sim demo --json

For a real model: itera-pack convert model.pt -o model.itb --tokenizer tokenizer.json
                  itera-sim run model.itb --prompt \"once upon a time\"")]
// The sampling flags are run's; here one seed makes the weights and drives the sampler.
#[command(mut_arg("seed", |a| a.default_value("42").help("Seed of the random weights (and of the sampler when --temperature > 0)")))]
pub struct DemoArgs {
    /// Tokens to generate (1 to 16777215; generation stops when max_seq is reached).
    #[arg(short, long = "max-tokens", default_value_t = 32, value_name = "N", allow_negative_numbers = true,
          value_parser = limits::GENERATE_TOKENS.parser())]
    n: usize,
    /// Prompt text (words outside the made-up vocabulary become <UNK>).
    #[arg(long, short, value_name = "TEXT", default_value = "once upon a time there was a little fox")]
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl DemoArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let sampling = Sampling::from(&self.sampling);
        cmd_demo(DemoOptions { seed: sampling.seed, n: self.n, prompt: self.prompt.clone(), sampling }, self.json)
    }
}

fn cmd_demo(opts: DemoOptions, json: bool) -> anyhow::Result<Outcome> {
    // Refuse bad sampling flags before the lines below are printed.
    opts.sampling.sampler()?;
    if let Some(note) = opts.sampling.greedy_note() {
        eprintln!("note: {note}");
    }
    if json {
        let r = run_demo(&opts, |_| ())?;
        say(&format!("{}\n", serde_json::to_string_pretty(&r)?))?;
        return Ok(Outcome::Ok);
    }
    eprintln!("note: {SYNTHETIC_NOTE}");
    eprintln!("packing a synthetic micro model (seed {}) with itera-pack, parsing it with itera-edge...", opts.seed);
    let mut out = std::io::stdout().lock();
    writeln!(out, "prompt: {}", for_terminal(&opts.prompt))?;
    write!(out, "output: ")?;
    out.flush()?;
    let r = run_demo(&opts, |piece| {
        let _ = out.write_all(for_terminal(piece).as_bytes());
        let _ = out.flush();
    })?;
    writeln!(out)?;
    write!(out, "{}", r.render_summary())?;
    Ok(Outcome::Ok)
}
