//! `itera-sim`: the itera-edge core on a host. Thin command line over the `itera_sim` library:
//! this file parses and dispatches; each command is a module of `commands`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use commands::Outcome;
use itera_pack::untrusted::shown;

mod commands;

const MAIN_EXAMPLES: &str = "\
Examples:
  # See the whole pipeline run, no files needed (synthetic weights, so the text is noise):
  itera-sim demo

  # Pack a real checkpoint, then generate from it:
  itera-pack convert itera_lite_micro_distilled.pt -o micro.itb --tokenizer tokenizer_2000.json
  itera-sim run micro.itb --prompt \"once upon a time\" -n 40

  # Prove the engine computes what the published model computes:
  itera-sim check micro.itb --golden golden/micro_distilled_random40.json

  # Dump raw logits for your own comparison:
  itera-sim logits micro.itb --tokens 5,17,2 -o logits.f32

  # Perplexity on text, and agreement (KL divergence, top-1) with a reference blob:
  itera-sim eval micro_int8.itb --text tinystories_train.txt --tokenizer tokenizer_2000.json \
      --compare micro.itb --truncate 2048

  # Speed (prefill and generation tok/s), two blobs interleaved in one run:
  itera-sim bench micro_int8.itb --compare micro.itb

  # Check the engine against the independent f64 reference forward pass (no golden needed):
  itera-sim check micro_int8.itb --reference cpu --json

Flags mean one thing in every command of itera-sim and itera-pack (docs/CLI.md):
--tokens IDS is always token ids, -n/--max-tokens always tokens to generate, --top-k always
sampling, -o/--output always the output file.

Exit status: 0 on success (check: PASS), 1 on any error, a failed check or a blob that does
not fit the board named in `fit --board`, 3 when
`check --reference cuda` cannot run here (built without the cuda feature, no CUDA driver,
no CUDA device, or NVRTC missing).";

/// Runs itera-edge model blobs on this machine with the same no_std core a board runs:
/// generate text, dump logits, and check them against golden references.
///
/// Blobs (.itb) come from `itera-pack convert`. Every command validates the blob first
/// (magic, version, CRC32, every tensor), so a corrupt or truncated file is an error, not a
/// crash.
#[derive(Parser)]
#[command(name = "itera-sim", version, about, long_about, after_help = MAIN_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Logits(commands::logits::LogitsArgs),
    Check(commands::check::CheckArgs),
    Run(commands::run::RunArgs),
    Eval(commands::eval::EvalArgs),
    Bench(commands::bench::BenchArgs),
    Greedy(commands::greedy::GreedyArgs),
    Fit(commands::fit::FitArgs),
    Demo(commands::demo::DemoArgs),
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match &cli.cmd {
        Cmd::Logits(a) => a.run(),
        Cmd::Check(a) => a.run(),
        Cmd::Run(a) => a.run(),
        Cmd::Eval(a) => a.run(),
        Cmd::Bench(a) => a.run(),
        Cmd::Greedy(a) => a.run(),
        Cmd::Fit(a) => a.run(),
        Cmd::Demo(a) => a.run(),
    }
}

/// Clap's usage error as one line: its first paragraph (the error, with any list of
/// missing arguments on the lines under it) joined, escaped (it quotes the user's
/// arguments, which may hold control characters), and where to look for the usage.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // No command at all: clap would print the whole help as the "error".
        let names: Vec<String> =
            Cli::command().get_subcommands().map(|c| c.get_name().to_string()).filter(|n| n != "help").collect();
        return format!("no command given: give one of {}; see `itera-sim --help`", names.join(", "));
    }
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let what = first.join(" ");
    let what = what.strip_prefix("error: ").unwrap_or(&what);
    let sub = std::env::args().nth(1).filter(|a| Cli::command().find_subcommand(a).is_some());
    let help = sub.map_or_else(|| "itera-sim --help".to_string(), |s| format!("itera-sim {s} --help"));
    format!("{}; see `{help}`", shown(what))
}

fn main() -> ExitCode {
    if let Err(e) = itera_sim::engine::select_kernels_checked() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version go to stdout with status 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // Usage errors are errors (1), on one line like every other.
        Err(e) => {
            eprintln!("error: {}", usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        // Messages are escaped where they quote untrusted text; escaping the whole line
        // again here (a no-op on escaped text) keeps every error one line without control
        // characters, whatever a cause deeper down (an I/O error, a path) holds.
        Ok(Outcome::Failed(why)) => {
            eprintln!("error: {}", shown(&why));
            ExitCode::FAILURE
        }
        Ok(Outcome::Unavailable(why)) => {
            eprintln!("error: {}", shown(&why));
            ExitCode::from(itera_sim::reference_cuda::EXIT_UNAVAILABLE)
        }
        Err(e) => {
            eprintln!("error: {}", shown(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
