//! `itera-sim`: the itera-edge core on a host. Thin command line over the `itera_sim` library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use itera_edge::Model;
use itera_pack::untrusted::shown;
use itera_sim::bench::{bench, BenchOptions, BenchResult};
use itera_sim::demo::{run_demo, DemoOptions, SYNTHETIC_NOTE};
use itera_sim::engine::provenance_source;
use itera_sim::eval::evaluate;
use itera_sim::generate::{generate, ContextPolicy, Sampling};
use itera_sim::progress::Progress;
use itera_sim::text::{
    decode, encode, encode_iter, for_terminal, unknown_pieces, TableVocab, TextStream, Unknown, Vocab,
};
use itera_sim::{golden, limits, logits_for_tokens, open_model, parse_tokens, read_blob, Bounds, Golden};
use serde_json::json;

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
    /// Feed tokens one by one and write the logits after each (raw little-endian f32).
    ///
    /// The output is row-major [positions][vocab] little-endian f32, the layout of golden
    /// `.f32` files: row p holds the logits after tokens[0..=p], from an empty session.
    #[command(after_help = "\
Examples:
  itera-sim logits micro.itb --tokens 5,17,2 -o logits.f32
  itera-sim logits micro.itb --tokens \"5 17 2\" --output logits.f32 --json

Read it back in NumPy: np.fromfile(\"logits.f32\", \"<f4\").reshape(3, vocab)")]
    Logits {
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
    },
    /// Compare the engine's logits with a golden reference, or with an independent reference
    /// forward pass, over a whole sequence.
    ///
    /// Runs the tokens from an empty session and reports max |Δlogit|, RMSE, the cosine
    /// similarity of the flattened logits and top-1 agreement (fraction of positions whose
    /// argmax matches). Passes when max_abs_diff <= --tol and top1_agreement >= --min-top1;
    /// otherwise says which bound failed and exits with status 1.
    ///
    /// With --reference, the expected logits come from a reference forward pass over the
    /// blob's own weights (dequantized, whole sequence): `cpu` in f64, `cuda` in f32 on GPU 0
    /// (needs a build with `--features cuda`). The tokens are the golden's (--golden), or
    /// --tokens, or a fixed 64-token sequence; the report adds kld_mean, the mean over
    /// positions of KL(reference ‖ engine).
    #[command(after_help = "\
Examples:
  itera-sim check micro.itb --golden golden/micro_distilled_random40.json
  itera-sim check micro.itb --golden golden/micro_distilled_story128.json --tol 1e-4 --json
  itera-sim check micro_int8.itb --reference cpu --tol 0.5 --min-top1 0.9
  itera-sim check micro.itb --reference cuda --golden golden/micro_distilled_story128.json --json

The golden JSON gives `tokens`, `positions`, `vocab` and `logits_file` (relative to the
JSON's folder); that file is row-major [positions][vocab] little-endian f32.

Exit status: 0 PASS; 1 FAIL or any error; 3 --reference cuda cannot run here (built without
the cuda feature, no CUDA driver, no CUDA device, or NVRTC missing; one line on stderr says
which).")]
    Check {
        /// The blob (.itb).
        blob: PathBuf,
        /// Golden description (JSON); its logits file is found next to it. With --reference,
        /// only its tokens are used.
        #[arg(long, value_name = "JSON", required_unless_present = "reference")]
        golden: Option<PathBuf>,
        /// Compare with a reference forward pass instead of golden logits: cpu (f64) or
        /// cuda (f32, NVIDIA GPU).
        #[arg(long, value_enum, value_name = "WHERE")]
        reference: Option<RefKind>,
        /// Token ids for --reference (default: the golden's tokens, or a fixed 64-token
        /// sequence).
        #[arg(long, value_name = "IDS", requires = "reference", conflicts_with = "golden", allow_hyphen_values = true)]
        tokens: Option<String>,
        /// Largest accepted |Δlogit|.
        #[arg(long, default_value_t = 1e-3, value_name = "X", allow_negative_numbers = true)]
        tol: f64,
        /// Smallest accepted fraction of positions whose top-1 token agrees.
        #[arg(long = "min-top1", default_value_t = 1.0, value_name = "F", allow_negative_numbers = true)]
        min_top1: f64,
        /// Print one JSON object (max_abs_diff, rmse, cosine, top1_agreement, positions,
        /// vocab, pass, ...) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt, streaming tokens to stdout as they come.
    ///
    /// The prompt is encoded with the blob's tokenizer (word level: lower-cased,
    /// whitespace-split words; char level: characters; unknown input becomes the unknown id),
    /// fed in one prefill, then --max-tokens tokens are sampled one at a time. A summary (prompt and
    /// generated tokens, tok/s) goes to stderr. Generation stops early, cleanly, when the
    /// model's max_seq positions are used up, unless --context slide (upstream's policy).
    #[command(after_help = "\
Examples:
  itera-sim run micro.itb --prompt \"once upon a time\"                 # greedy, 40 tokens
  itera-sim run micro.itb --prompt \"the fox\" -n 20 --temperature 0.8 --top-k 40 --seed 7
  itera-sim run micro.itb --tokens 4,16,6 --json                      # ids in, ids out
  itera-sim run micro.itb --prompt \"once upon a time\" -n 300 --context slide   # past max_seq

A blob packed without --tokenizer has no text side: give --tokens instead of --prompt.
Token text is the blob's: control characters in it other than newline and tab are shown
escaped (\\u{1b}); --json gives the exact text.")]
    #[command(group(ArgGroup::new("input").required(true).args(["prompt", "tokens"])))]
    Run {
        /// The blob (.itb).
        blob: PathBuf,
        /// Prompt text, encoded with the blob's tokenizer.
        #[arg(long, short, value_name = "TEXT")]
        prompt: Option<String>,
        /// Prompt as token ids (commas or spaces); output is ids unless the blob has a tokenizer.
        #[arg(long, value_name = "IDS", allow_hyphen_values = true)]
        tokens: Option<String>,
        /// Tokens to generate (1 to 16777215; generation stops when max_seq is reached, unless --context slide).
        #[arg(short, long = "max-tokens", default_value_t = 40, value_name = "N", allow_negative_numbers = true,
              value_parser = limits::GENERATE_TOKENS.parser())]
        n: usize,
        /// Print the prompt (as the model sees it, unknown words shown as such) before the output.
        #[arg(long)]
        echo: bool,
        /// Stream token ids even when the blob has a tokenizer.
        #[arg(long)]
        ids: bool,
        /// At max_seq tokens: `full` stops (the default); `slide` goes on as upstream's
        /// generate() does, predicting each further token from the last max_seq tokens run
        /// again from an empty state (positions from 0): max_seq times the work per token.
        #[arg(long, value_enum, default_value_t = ContextPolicy::Full, value_name = "POLICY")]
        context: ContextPolicy,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Print one JSON object (prompt_tokens, generated ids, text, tok_per_s, ...) at the
        /// end instead of streaming.
        #[arg(long)]
        json: bool,
    },
    /// Perplexity of a blob on a text file, optionally with its agreement with a reference blob.
    ///
    /// The text is encoded with the blob's tokenizer, or the tokenizer JSON (word level: lower-cased, whitespace-split
    /// words; char level: characters; unknown input becomes the unknown id), truncated to
    /// --truncate tokens, and cut into consecutive windows of the model's max_seq positions, each
    /// from an empty session. Within a window the logits after position p predict token p+1;
    /// perplexity is exp(mean NLL) over all predicted positions.
    ///
    /// With --compare, both blobs run the same windows and, over the same positions, the
    /// report adds KL(reference ‖ this) per position (softmax in f64: mean, 99th percentile,
    /// max), top-1 agreement, mean |Δp| of the reference's top token, RMSE and cosine of the
    /// logits, and the reference's perplexity.
    #[command(after_help = "\
Examples:
  itera-sim eval micro.itb --text tinystories_train.txt        # a blob packed with --tokenizer
  itera-sim eval micro.itb --text tinystories_train.txt --tokenizer tokenizer_2000.json
  itera-sim eval micro_int8.itb --text tinystories_train.txt --tokenizer tokenizer_2000.json \\
      --compare micro.itb --truncate 2048 --json

The report says how many of the tokens are the tokenizer's unknown id: a model sees every
unknown word as the same token, so the perplexity of a text mostly unknown to the
tokenizer says little about the text.

JSON keys: perplexity, mean_nll, positions, tokens, windows, window, unknown_tokens,
unknown_share, tokenizer (\"blob\" or the JSON's path), reference_perplexity,
kld_mean, kld_p99, kld_max, top1_agreement, mean_abs_dp_top, rmse, cosine (the reference
keys are null without --compare; a non-finite value is null).")]
    Eval {
        /// The blob (.itb) to evaluate.
        blob: PathBuf,
        /// Plain text file to evaluate on.
        #[arg(long, value_name = "FILE")]
        text: PathBuf,
        /// Tokenizer JSON (token_to_id/id_to_token, or token2id/id2token with "level": "char").
        /// Default: the blob's own; a tokenizer of another kind (word or char) than the blob's
        /// is refused.
        #[arg(long, value_name = "JSON")]
        tokenizer: Option<PathBuf>,
        /// Reference blob (e.g. the FP32 model) to compare with, on the same windows.
        #[arg(long = "compare", alias = "reference", value_name = "BLOB")]
        reference: Option<PathBuf>,
        /// Evaluate only the first N tokens of the text (default: all; 2 to 16777216).
        #[arg(long = "truncate", alias = "max-tokens", value_name = "N", allow_negative_numbers = true,
              value_parser = limits::EVAL_TOKENS.parser())]
        max_tokens: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
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
prefill_roofline_fraction (prefill_tok_per_s / roofline_tok_per_s); with --compare also
`compare` (the same keys for the other blob) and `ratio` {prefill, generate} (this / other).
Speeds depend on the machine and its load: compare blobs in one run.")]
    Bench {
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
    },
    /// Replay a board's greedy run: the tokens and logits checksum its firmware must print.
    ///
    /// Prefills the prompt, generates N tokens greedily and prints `tokens: …` and
    /// `logits_fnv1a: …` exactly as the firmware under `boards/` prints them, so the two
    /// outputs can be compared line for line (boards/qemu-an386/check.sh does).
    #[command(after_help = "Example:\n  itera-sim greedy micro_int8.itb --tokens 41,13,6,42 -n 16")]
    Greedy {
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
    },
    /// Does a blob fit each board's flash and RAM, and how fast would it run there?
    ///
    /// Flash needed = blob + firmware code; RAM needed = arena (exact) + stack + statics.
    /// Firmware costs are estimates measured on each board's ELF (the stack on the QEMU
    /// boards); with `--elf` the firmware's real section sizes replace the flash and static
    /// estimates (the stack, which no ELF shows, stays estimated). Speed: instructions per
    /// token measured in QEMU for the board's instruction set and the preset the blob was
    /// packed with (`itera-pack convert --quant`; micro model), scaled by the blob's MACs per token; tokens/s at the board's clock
    /// assumes one instruction per cycle: an instruction count, not a cycle count.
    #[command(after_help = "\
Examples:
  itera-sim fit micro_int8.itb                      # every board; exit 0 whatever fits
  itera-sim fit micro_int8.itb --board stm32f411    # exit 1 if it does not fit the STM32F411
  itera-sim fit micro_int8.itb --board stm32f411 --elf firmware.elf --json

Exit status: 0 when the blob fits the board named with --board (or, without --board, after
the table of every board); 1 when it does not fit that board, when the ELF's firmware cost
is outside the estimate's margin, or on any error.")]
    Fit {
        /// The blob.
        blob: PathBuf,
        /// Only this board (qemu-an386, qemu-v6m, qemu-rv32, stm32f411, rp2040, esp32c3).
        #[arg(long, value_name = "NAME")]
        board: Option<String>,
        /// A firmware ELF built with this blob linked in: use its section sizes.
        #[arg(long, value_name = "FILE")]
        elf: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole pipeline on a synthetic model: no files, no downloads.
    ///
    /// Builds a seeded random checkpoint with the shapes of itera_lite_micro_distilled.pt
    /// (vocab 2000, d_model 64, 3 layers, one MoE layer of 4 experts), gives it a made-up
    /// word tokenizer, packs it with the real packer, parses the blob with the core, prefills
    /// a prompt and generates. Prints the text, prefill and generation speed, arena and blob
    /// bytes, MACs per token and the kernel. The weights are random, so the text is noise.
    #[command(after_help = "\
Examples:
  itera-sim demo
  itera-sim demo --seed 7 -n 64 --temperature 1.0 --top-p 0.9
  itera-sim demo --json

For a real model: itera-pack convert model.pt -o model.itb --tokenizer tokenizer.json
                  itera-sim run model.itb --prompt \"once upon a time\"")]
    Demo {
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
    },
}

/// Where `check --reference` computes its expected logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RefKind {
    /// f64 on the CPU (itera_sim::reference).
    Cpu,
    /// f32 on an NVIDIA GPU (itera_sim::reference_cuda; build with --features cuda).
    Cuda,
}

#[derive(Args)]
struct SamplingArgs {
    /// Temperature: 0 picks the most likely token (greedy); higher is more random.
    #[arg(long, default_value_t = 0.0, value_name = "T", allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: no limit, at most 64).
    #[arg(long = "top-k", default_value_t = 0, value_name = "K", allow_negative_numbers = true,
          value_parser = limits::TOP_K.parser())]
    top_k: usize,
    /// Keep the smallest set of likely tokens whose probability reaches P (1: no limit).
    #[arg(long = "top-p", default_value_t = 1.0, value_name = "P", allow_negative_numbers = true)]
    top_p: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl From<&SamplingArgs> for Sampling {
    fn from(a: &SamplingArgs) -> Self {
        Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed }
    }
}

/// What a command reports besides printing: success, or a failed check (already explained).
enum Outcome {
    Ok,
    Failed(String),
    /// The requested reference cannot run on this machine or build (exit status 3).
    Unavailable(String),
}

/// Writes to stdout; a closed pipe is an error, not a panic.
fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout")
}

fn load<'b>(path: &Path, bytes: &'b [u8]) -> anyhow::Result<Model<'b>> {
    open_model(bytes).with_context(|| format!("{} is not a usable blob", path.display()))
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
    let vocab = model.config().vocab;
    if json {
        let v = json!({ "out": out.display().to_string(), "positions": tokens.len(), "vocab": vocab, "bytes": logits.len() * 4 });
        say(&format!("{v}\n"))?;
    } else {
        say(&format!(
            "wrote {} ({} positions × {vocab} logits, {} bytes, little-endian f32)\n",
            out.display(),
            tokens.len(),
            logits.len() * 4
        ))?;
    }
    Ok(Outcome::Ok)
}

fn check_bounds(bounds: &Bounds) -> anyhow::Result<()> {
    let tol_ok = bounds.tol >= 0.0; // false for NaN too
    if !tol_ok {
        bail!("--tol must be >= 0, got {}", bounds.tol);
    }
    if !(0.0..=1.0).contains(&bounds.min_top1) {
        bail!("--min-top1 must be between 0 and 1, got {}", bounds.min_top1);
    }
    Ok(())
}

struct RefCheckArgs<'a> {
    blob: &'a Path,
    golden: Option<&'a Path>,
    kind: RefKind,
    tokens: Option<&'a str>,
    bounds: Bounds,
    json: bool,
}

fn cmd_check_reference(a: RefCheckArgs<'_>) -> anyhow::Result<Outcome> {
    use itera_sim::reference::{default_tokens, Backend, RefModel, RefReport};
    use itera_sim::reference_cuda::{self, CudaError};
    check_bounds(&a.bounds)?;
    let bytes = read_blob(a.blob)?;
    let model = load(a.blob, &bytes)?;
    let (tokens, from) = match (a.golden, a.tokens) {
        (Some(g), _) => (Golden::load(g)?.tokens, g.display().to_string()),
        (None, Some(list)) => (parse_tokens(list).context("--tokens")?, "--tokens".to_string()),
        (None, None) => (default_tokens(model.config()), "default 64-token sequence".to_string()),
    };
    itera_sim::engine::check_table_tokens(&tokens, model.config())?;
    let reference = RefModel::from_bytes(&bytes)
        .with_context(|| format!("the reference cannot read the weights of {}", a.blob.display()))?;
    // The reference before the engine: when the GPU cannot run, say so before any work.
    let (backend, expected) = match a.kind {
        RefKind::Cpu => {
            let logits = reference.logits(&tokens)?;
            (Backend::Cpu, logits.iter().map(|&v| v as f32).collect::<Vec<f32>>())
        }
        RefKind::Cuda => match reference_cuda::logits(&reference, &tokens) {
            Ok(l) => (Backend::Cuda, l),
            Err(CudaError::Unavailable(why)) => return Ok(Outcome::Unavailable(format!("--reference cuda: {why}"))),
            Err(e) => return Err(e.into()),
        },
    };
    let mut progress = Progress::new("check");
    let core = logits_for_tokens(&model, &tokens, |d, t| progress.update(d, t))?;
    progress.finish();
    let r = RefReport::new(backend, &core, &expected, model.config().vocab as usize, from)?;
    if a.json {
        say(&format!("{}\n", r.to_json(&a.bounds)))?;
    } else {
        say(&r.render(&a.bounds))?;
    }
    Ok(match r.metrics.verdict(&a.bounds) {
        Ok(()) => Outcome::Ok,
        Err(why) => Outcome::Failed(format!("check failed: {}", why.join("; "))),
    })
}

fn cmd_check(blob: &Path, golden: &Path, bounds: Bounds, json: bool) -> anyhow::Result<Outcome> {
    check_bounds(&bounds)?;
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let g = Golden::load(golden)?;
    let top_k = g.top_k_warning(model.config());
    let checkpoint = g.checkpoint_warning(provenance_source(&bytes).as_deref());
    let warnings: Vec<&String> = [&top_k, &checkpoint].into_iter().flatten().collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut progress = Progress::new("check");
    let m = g
        .check(&model, |d, t| progress.update(d, t))
        .with_context(|| format!("cannot check against {}", golden.display()))?;
    progress.finish();
    if json {
        let mut v = m.to_json(&bounds);
        v["warnings"] = json!(warnings);
        say(&format!("{v}\n"))?;
    } else {
        say(&m.render(&bounds))?;
    }
    Ok(match m.verdict(&bounds) {
        Ok(()) => Outcome::Ok,
        // A failure the golden's own provenance predicts says so on the same line.
        Err(why) => Outcome::Failed(match &warnings[..] {
            [] => format!("check failed: {}", why.join("; ")),
            w => format!(
                "check failed: {}; expected, since {}",
                why.join("; "),
                w.iter().map(|w| w.split("; ").next().unwrap_or(w)).collect::<Vec<_>>().join(", and ")
            ),
        }),
    })
}

struct RunArgs<'a> {
    blob: &'a Path,
    prompt: Option<&'a str>,
    tokens: Option<&'a str>,
    n: usize,
    echo: bool,
    ids: bool,
    context: ContextPolicy,
    sampling: Sampling,
    json: bool,
}

fn cmd_run(a: RunArgs<'_>) -> anyhow::Result<Outcome> {
    let mut sampler = a.sampling.sampler()?;
    if let Some(note) = a.sampling.greedy_note() {
        eprintln!("note: {note}");
    }
    let bytes = read_blob(a.blob)?;
    let model = load(a.blob, &bytes)?;
    let tok = model.tokenizer();
    let mut unknown = None;
    let prompt = match (a.prompt, a.tokens) {
        (Some(text), _) => {
            let tok = tok.with_context(|| {
                format!(
                    "{} has no tokenizer, so --prompt cannot be encoded; repack it with `itera-pack convert ... --tokenizer tokenizer.json`, or give token ids with --tokens 1,2,3",
                    a.blob.display()
                )
            })?;
            let ids = encode(tok, text);
            if ids.is_empty() {
                bail!("--prompt has no tokens (it is empty or only whitespace): give some text, or ids with --tokens 1,2,3");
            }
            let u = Unknown::count(tok.unk_id(), &ids);
            if u.unknown > 0 {
                let pieces: Vec<String> = unknown_pieces(tok, text).iter().map(|p| shown(p)).collect();
                eprintln!(
                    "note: {} of the prompt are not in the blob's tokenizer, so the model sees each as its one unknown token: {}",
                    u.describe(),
                    pieces.join(" ")
                );
            }
            unknown = Some(u);
            ids
        }
        (None, Some(list)) => parse_tokens(list).context("--tokens")?,
        (None, None) => bail!("give a prompt: --prompt \"text\" or --tokens 1,2,3"),
    };
    // Text out when there is a tokenizer (and ids were not asked for), ids otherwise.
    let text_tok = tok.filter(|_| !a.ids);
    let stream = !a.json;
    let mut out = std::io::stdout().lock();
    if a.echo && stream {
        match text_tok {
            Some(t) => write!(out, "{}", for_terminal(&decode(t, &prompt)))?,
            None => write!(out, "{}", join_ids(&prompt))?,
        }
    }
    let mut text = TextStream::new();
    if a.echo {
        text = TextStream::continuing();
    }
    let mut first = !a.echo;
    let mut write_err = None;
    let g = generate(&model, &prompt, a.n, &mut sampler, a.context, |id| {
        if !stream || write_err.is_some() {
            return;
        }
        let piece = match text_tok {
            Some(t) => for_terminal(&text.piece(t, id)),
            None if first => id.to_string(),
            None => format!(" {id}"),
        };
        first = false;
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("cannot write to stdout");
    }
    let text = tok.map(|t| decode(t, &g.generated));
    if a.json {
        let v = json!({
            "prompt_tokens": g.prompt.len(),
            "prompt_ids": g.prompt,
            "prompt_unknown": unknown.map(|u| u.unknown),
            "generated": g.generated,
            "text": text,
            "tok_per_s": g.tok_per_s(),
            "prefill_tok_per_s": g.prefill_tok_per_s(),
            "stopped_at_max_seq": g.stopped_at_max_seq,
            "window_reruns": g.window_reruns,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
    }
    drop(out);
    if g.stopped_at_max_seq {
        eprintln!(
            "stopped: the session holds the model's {} positions (max_seq); {} of {} tokens generated",
            model.config().max_seq,
            g.generated.len(),
            a.n
        );
    }
    if g.window_reruns > 0 {
        eprintln!(
            "--context slide: {} tokens past the window, each from a re-run of the last {} tokens",
            g.window_reruns,
            model.config().max_seq
        );
    }
    eprintln!(
        "prompt: {} tokens ({:.0} tok/s prefill), generated: {} tokens ({:.1} tok/s)",
        g.prompt.len(),
        g.prefill_tok_per_s(),
        g.generated.len(),
        g.tok_per_s()
    );
    Ok(Outcome::Ok)
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

struct EvalArgs<'a> {
    blob: &'a Path,
    text: &'a Path,
    tokenizer: Option<&'a Path>,
    reference: Option<&'a Path>,
    max_tokens: Option<usize>,
    json: bool,
}

fn cmd_eval(a: EvalArgs<'_>) -> anyhow::Result<Outcome> {
    let bytes = read_blob(a.blob)?;
    let model = load(a.blob, &bytes)?;
    let own = model.tokenizer();
    let table = a.tokenizer.map(itera_pack::convert::read_tokenizer).transpose()?;
    let table_vocab = table.as_ref().map(TableVocab::new);
    let (vocab, tokenizer): (&dyn Vocab, String) = match (&own, &table_vocab, a.tokenizer) {
        (Some(own), Some(given), Some(path)) if own.kind() != given.kind() => bail!(
            "{} is a {} tokenizer but {} was packed with a {} one: leave out --tokenizer to use the blob's own, or give a {} tokenizer",
            path.display(),
            kind_name(given.kind()),
            a.blob.display(),
            kind_name(own.kind()),
            kind_name(own.kind())
        ),
        (_, Some(given), Some(path)) => (given as &dyn Vocab, path.display().to_string()),
        (Some(own), _, _) => (*own as &dyn Vocab, "blob".to_string()),
        _ => bail!(
            "{} has no tokenizer: give the one it was trained with (--tokenizer tokenizer.json), or repack it with `itera-pack convert ... --tokenizer tokenizer.json`",
            a.blob.display()
        ),
    };
    let text = itera_sim::eval::read_text(a.text, limits::MAX_EVAL_TEXT_BYTES)?;
    // Encode no more than can be evaluated: one token past the limit tells a text that is
    // too long (without --truncate) from one that fits.
    let limit = a.max_tokens.unwrap_or(limits::EVAL_TOKENS.max);
    let mut tokens: Vec<u32> = encode_iter(vocab, &text).take(limit + 1).collect();
    if tokens.len() > limit {
        if a.max_tokens.is_none() {
            bail!(
                "{} has more than {limit} tokens, the most eval holds in memory: give --truncate {limit} (or fewer) to evaluate its start",
                a.text.display()
            );
        }
        tokens.truncate(limit);
    }
    let unknown = Unknown::count(vocab.unk_id(), &tokens);
    let ref_bytes = a.reference.map(read_blob).transpose()?;
    let reference = match (a.reference, ref_bytes.as_ref()) {
        (Some(path), Some(b)) => Some(load(path, b)?),
        _ => None,
    };
    let mut progress = Progress::new("eval");
    let r = evaluate(&model, reference.as_ref(), &tokens, |d, t| progress.update(d, t))
        .with_context(|| format!("cannot evaluate {} on {}", a.blob.display(), a.text.display()))?;
    progress.finish();
    if unknown.share() >= UNKNOWN_WARNING_SHARE {
        eprintln!(
            "warning: {} of {} are the tokenizer's unknown id: the perplexity mostly measures predicting it; evaluate on text the tokenizer covers",
            unknown.describe(),
            a.text.display()
        );
    }
    if a.json {
        let mut v = r.to_json();
        v["unknown_tokens"] = json!(unknown.unknown);
        v["unknown_share"] = json!(unknown.share());
        v["tokenizer"] = json!(tokenizer);
        say(&format!("{v}\n"))?;
    } else {
        let source = if tokenizer == "blob" { "the blob's".to_string() } else { tokenizer };
        say(&format!("{}unknown:     {} are unknown to the tokenizer ({source})\n", r.render(), unknown.describe()))?;
    }
    Ok(Outcome::Ok)
}

/// Above this share of unknown tokens, `eval` warns that its perplexity says little.
const UNKNOWN_WARNING_SHARE: f64 = 0.05;

/// "word" or "char".
fn kind_name(kind: itera_edge::format::TokenizerKind) -> &'static str {
    match kind {
        itera_edge::format::TokenizerKind::Word => "word",
        itera_edge::format::TokenizerKind::Char => "char",
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
    let this = &results[0];
    let ratio = results
        .get(1)
        .map(|o| (this.prefill_tok_per_s / o.prefill_tok_per_s, this.generate_tok_per_s / o.generate_tok_per_s));
    if json {
        let mut v = serde_json::to_value(this)?;
        v["blob"] = json!(blob.display().to_string());
        if let (Some(o), Some((p, g)), Some(path)) = (results.get(1), ratio, other) {
            let mut ov = serde_json::to_value(o)?;
            ov["blob"] = json!(path.display().to_string());
            v["compare"] = ov;
            v["ratio"] = json!({ "prefill": p, "generate": g });
        }
        say(&format!("{v}\n"))?;
        return Ok(Outcome::Ok);
    }
    let mut text = String::new();
    let named: Vec<(&Path, &BenchResult)> = std::iter::once(blob).chain(other).zip(&results).collect();
    for (path, r) in &named {
        text += &format!(
            "{}\n  prefill:    {:.0} tok/s ({} tokens, median of {})\n  generate:   {:.0} tok/s ({} tokens, greedy)\n  \
             compute:    {:.3} GMAC/s ({} MACs/token)\n  roofline:   {:.0} tok/s ({} weight bytes/token at {:.2} GB/s \
             read bandwidth): generate {:.1}%, prefill {:.1}%\n  kernel:     {}\n  blob:       {} bytes, arena {} bytes\n",
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
            100.0 * r.roofline_fraction,
            100.0 * r.prefill_roofline_fraction,
            r.kernel,
            r.blob_bytes,
            r.arena_bytes
        );
    }
    if let (Some((p, g)), Some(o)) = (ratio, other) {
        text += &format!(
            "ratio {} / {}: prefill {p:.2}x, generate {g:.2}x (same run, interleaved)\n",
            blob.display(),
            o.display()
        );
    }
    say(&text)?;
    Ok(Outcome::Ok)
}

fn cmd_greedy(blob: &Path, tokens: &str, n: usize, json: bool) -> anyhow::Result<Outcome> {
    let prompt = parse_tokens(tokens).context("--tokens")?;
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let run = itera_sim::board::greedy_reference(&model, &prompt, n)?;
    say(&if json { format!("{}\n", serde_json::to_string_pretty(&run)?) } else { run.firmware_lines() })?;
    Ok(Outcome::Ok)
}

fn cmd_fit(blob: &Path, board: Option<&str>, elf: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    use itera_sim::board::{
        elf_sizes, fit, quant_preset, BlobCost, FirmwareCost, BOARDS, ESTIMATE_MARGIN, SPEED_BASIS,
    };
    let bytes = read_blob(blob)?;
    let model = load(blob, &bytes)?;
    let boards: Vec<_> = match board {
        Some(name) => vec![*BOARDS.iter().find(|b| b.name == name).with_context(|| {
            let names: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
            format!("unknown board '{}' (known: {})", shown(name), names.join(", "))
        })?],
        None => BOARDS.to_vec(),
    };
    let mut measured = None;
    let mut elf_report = None;
    let mut within_margin = None;
    if let Some(path) = elf {
        let [board] = boards[..] else { bail!("--elf describes one firmware: name its board with --board") };
        let file = itera_pack::files::read_at_most(
            path,
            limits::MAX_ELF_BYTES,
            "firmware ELF",
            "give the board's firmware ELF",
        )?;
        let sizes = elf_sizes(&file).map_err(anyhow::Error::msg).with_context(|| path.display().to_string())?;
        // The ELF already holds the blob and the arena: what is left is the firmware's own.
        let cost = FirmwareCost {
            code_bytes: sizes.flash_bytes.saturating_sub(bytes.len()),
            static_bytes: sizes.ram_bytes.saturating_sub(model.arena_bytes()),
            stack_bytes: board.firmware.stack_bytes,
        };
        within_margin = Some(
            board.firmware.code_bytes.abs_diff(cost.code_bytes) <= ESTIMATE_MARGIN
                && board.firmware.static_bytes.abs_diff(cost.static_bytes) <= ESTIMATE_MARGIN,
        );
        measured = Some(cost);
        elf_report = Some(sizes);
    }
    let quant = quant_preset(&bytes);
    let cost = BlobCost {
        blob_bytes: bytes.len(),
        arena_bytes: model.arena_bytes(),
        macs_per_token: model.macs_per_token(),
        quant: quant.as_deref(),
    };
    let fits = fit(&cost, measured.as_ref(), &boards);
    let estimated = fits.iter().any(|f| f.speed.is_some());
    if json {
        let v = json!({
            "blob_bytes": bytes.len(), "arena_bytes": model.arena_bytes(), "macs_per_token": model.macs_per_token(),
            "quant": quant, "elf": elf_report, "elf_firmware": measured, "estimate_within_margin": within_margin,
            "estimate_margin_bytes": ESTIMATE_MARGIN, "speed_basis": SPEED_BASIS, "boards": fits,
        });
        say(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let mut text = format!(
            "blob {} B, arena {} B, {} MACs/token, --quant {}\n",
            bytes.len(),
            model.arena_bytes(),
            model.macs_per_token(),
            quant.as_deref().map_or_else(|| "unknown (no quant provenance)".to_string(), shown)
        );
        if let (Some(m), Some(ok), [board]) = (&measured, within_margin, &boards[..]) {
            text += &format!(
                "firmware from ELF: code {} B, statics {} B (estimate {} B, {} B: {} the {} B margin); stack {} B (measured on the QEMU boards)\n",
                m.code_bytes,
                m.static_bytes,
                board.firmware.code_bytes,
                board.firmware.static_bytes,
                if ok { "within" } else { "OUTSIDE" },
                ESTIMATE_MARGIN,
                m.stack_bytes
            );
        }
        text += &format!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}  {:<4}  {:<12} {:>5} {:>12} {:>8}\n",
            "board", "flash need", "flash has", "RAM need", "RAM has", "fits", "isa", "MHz", "insn/token", "tok/s"
        );
        for f in &fits {
            let mhz = f.board.clock_mhz.map_or_else(|| "-".to_string(), |m| m.to_string());
            let (insn, tps) = match f.speed {
                Some(s) => (
                    s.instructions_per_token.to_string(),
                    s.tokens_per_second.map_or_else(|| "-".to_string(), |t| format!("{t:.1}")),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            text += &format!(
                "{:<12} {:>10} {:>10} {:>10} {:>10}  {:<4}  {:<12} {:>5} {:>12} {:>8}\n",
                f.board.name,
                f.flash_needed,
                f.board.flash_bytes,
                f.ram_needed,
                f.board.ram_bytes,
                if f.fits { "yes" } else { "NO" },
                f.board.isa.name(),
                mhz,
                insn,
                tps
            );
        }
        if estimated {
            text += &format!("speed: {SPEED_BASIS}\n");
        } else {
            text += "speed: no estimate: instructions per token are measured for --quant f32, int8 and mixed only\n";
        }
        say(&text)?;
    }
    // With an ELF this is a check: the firmware must fit and match its estimate.
    if within_margin == Some(false) {
        return Ok(Outcome::Failed(format!(
            "the ELF's firmware cost is outside the {ESTIMATE_MARGIN} B margin of the board's estimate; update BOARDS"
        )));
    }
    // With a named board this is a gate a CI script can use: the blob must fit it.
    if let (Some(_), Some(f)) = (board, fits.iter().find(|f| !f.fits)) {
        let what = if measured.is_some() { "the firmware with this blob" } else { "this blob" };
        return Ok(Outcome::Failed(format!(
            "{what} does not fit {}: flash {} of {} B, RAM {} of {} B; pack it smaller (itera-pack convert --quant int8 or mixed) or pick a larger board",
            f.board.name, f.flash_needed, f.board.flash_bytes, f.ram_needed, f.board.ram_bytes
        )));
    }
    Ok(Outcome::Ok)
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

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match &cli.cmd {
        Cmd::Logits { blob, tokens, output, json } => cmd_logits(blob, tokens, output, *json),
        Cmd::Check { blob, golden, reference, tokens, tol, min_top1, json } => {
            let bounds = Bounds { tol: *tol, min_top1: *min_top1 };
            match (reference, golden) {
                (Some(kind), _) => cmd_check_reference(RefCheckArgs {
                    blob,
                    golden: golden.as_deref(),
                    kind: *kind,
                    tokens: tokens.as_deref(),
                    bounds,
                    json: *json,
                }),
                (None, Some(golden)) => cmd_check(blob, golden, bounds, *json),
                (None, None) => bail!("give --golden JSON or --reference cpu|cuda"),
            }
        }
        Cmd::Run { blob, prompt, tokens, n, echo, ids, context, sampling, json } => cmd_run(RunArgs {
            blob,
            prompt: prompt.as_deref(),
            tokens: tokens.as_deref(),
            n: *n,
            echo: *echo,
            ids: *ids,
            context: *context,
            sampling: sampling.into(),
            json: *json,
        }),
        Cmd::Eval { blob, text, tokenizer, reference, max_tokens, json } => cmd_eval(EvalArgs {
            blob,
            text,
            tokenizer: tokenizer.as_deref(),
            reference: reference.as_deref(),
            max_tokens: *max_tokens,
            json: *json,
        }),
        Cmd::Bench { blob, tokens, repeat, compare, json } => {
            let opts = BenchOptions { tokens: *tokens, repeat: *repeat, ..BenchOptions::default() };
            cmd_bench(blob, compare.as_deref(), opts, *json)
        }
        Cmd::Greedy { blob, tokens, n, json } => cmd_greedy(blob, tokens, *n, *json),
        Cmd::Fit { blob, board, elf, json } => cmd_fit(blob, board.as_deref(), elf.as_deref(), *json),
        Cmd::Demo { seed, n, prompt, temperature, top_k, top_p, json } => {
            let sampling = Sampling { temperature: *temperature, top_k: *top_k, top_p: *top_p, seed: *seed };
            cmd_demo(DemoOptions { seed: *seed, n: *n, prompt: prompt.clone(), sampling }, *json)
        }
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
