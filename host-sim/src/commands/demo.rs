//! `itera-sim demo`: the whole pipeline on a synthetic model, no files needed.

use std::io::Write;

use clap::Args;
use itera_sim::demo::{run_demo, DemoOptions, SYNTHETIC_NOTE};
use itera_sim::generate::Sampling;
use itera_sim::limits;
use itera_sim::text::for_terminal;

use super::{say, Outcome};

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
pub struct DemoArgs {
    /// Seed of the random weights (and of the sampler when --temperature > 0).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tokens to generate (1 to 16777215; generation stops when max_seq is reached).
    #[arg(short, long = "max-tokens", default_value_t = 32, value_name = "N", allow_negative_numbers = true,
          value_parser = limits::GENERATE_TOKENS.parser())]
    n: usize,
    /// Prompt text (words outside the made-up vocabulary become <UNK>).
    #[arg(long, short, value_name = "TEXT", default_value = "once upon a time there was a little fox")]
    prompt: String,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.0, value_name = "T", allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: no limit, at most 64).
    #[arg(long = "top-k", default_value_t = 0, value_name = "K", allow_negative_numbers = true,
          value_parser = limits::TOP_K.parser())]
    top_k: usize,
    /// Nucleus sampling mass (1: no limit).
    #[arg(long = "top-p", default_value_t = 1.0, value_name = "P", allow_negative_numbers = true)]
    top_p: f32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl DemoArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let sampling =
            Sampling { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, seed: self.seed };
        cmd_demo(DemoOptions { seed: self.seed, n: self.n, prompt: self.prompt.clone(), sampling }, self.json)
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
    writeln!(out, "synthetic:  yes (random weights, seed {}): the text above is noise", r.seed)?;
    writeln!(out, "generate:   {} tokens, {:.0} tok/s", r.generated.len(), r.tok_per_s)?;
    writeln!(out, "prefill:    {} tokens, {:.0} tok/s", r.prompt_tokens, r.prefill_tok_per_s)?;
    writeln!(out, "arena:      {} bytes per session", r.arena_bytes)?;
    writeln!(out, "blob:       {} bytes (made and packed in {:.0} ms)", r.blob_bytes, r.pack_secs * 1e3)?;
    writeln!(out, "macs/token: {}", r.macs_per_token)?;
    writeln!(out, "kernel:     {}", r.kernel)?;
    if r.stopped_at_max_seq {
        writeln!(out, "stopped early: the session reached the model's max_seq positions")?;
    }
    writeln!(out, "real models: itera-pack convert model.pt -o model.itb --tokenizer tokenizer.json")?;
    writeln!(out, "             itera-sim run model.itb --prompt \"once upon a time\"")?;
    Ok(Outcome::Ok)
}
