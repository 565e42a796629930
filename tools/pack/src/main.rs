//! `itera-pack`: checkpoint → blob converter and blob inspector.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use itera_pack::files::{at, refuse_overlap, write_atomically, Access};
use itera_pack::quant::QuantPolicy;
use itera_pack::untrusted::shown;
use itera_pack::{convert, inspect, PackOptions};

const QUANT_HELP: &str = "\
Storage dtype policy: f32 | f16 | int8 | int4 | mixed | keep, optionally PRESET:POLICY_FILE.

  f32    everything f32; PyTorch qint8 tensors are dequantized (default)
  f16    weight matrices f16
  int8   all weight matrices int8 (embedding and positions included), one MSE-chosen f16
         scale per row (positions: per 32); qint8 checkpoint tensors are kept bit-exactly
         (never dequantized and requantized)
  int4   weight matrices int4 (groups of 32, MSE-chosen f16 scales); embedding and
         positions int8
  mixed  recommended for size: embedding and lm_head int4g8 (an f16 scale per 8 values);
         B and C int8; positions, in_proj, delta_proj, out_proj, FFN/expert w1 w2 int4
  keep   f32, except tensors stored as qint8 in the checkpoint, kept as int8

Norms, conv, A_log, D, delta_proj bias and the MoE router gate always stay f32. A tied
lm_head shares the embedding's bytes and dtype. Matrices narrower than one int4 group
(the SSM's C, d_inner x N) take int8 where int4 is asked. Tensors the policy stores as
int8 that the checkpoint already holds as qint8 are kept exactly.

A policy file holds `pattern = dtype` lines over checkpoint tensor names (`*` matches
anything, `#` starts a comment); later lines win, on top of the preset. Example,
used as --quant mixed:policy.txt:

  # keep the first layer's projections precise
  layers.0.ssm.in_proj.weight = int8
  *.out_proj.weight = int4
  *.ssm.ssm.B = f32
  embedding.weight = f16

Dtypes in a policy file: f32, f16, int8, int4 (an f16 scale per 32 values, 4.5 bits a
weight) and int4g8 (an f16 scale per 8 values, 6 bits a weight).

Per-tensor SQNR is recorded in the blob's provenance and shown by `inspect`.";

/// Packs Itera-Lite checkpoints into itera-edge blobs (.itb) and inspects blobs.
///
/// A blob is one flat file the no_std core reads in place: config, tensor table, 16-byte
/// aligned weights, optional tokenizer, provenance and a CRC32 (docs/FORMAT.md).
#[derive(Parser)]
#[command(name = "itera-pack", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a checkpoint (.pt, TorchScript, ONNX or safetensors) into a blob.
    ///
    /// The config is read off the tensor shapes; every tensor is checked against it, and
    /// missing, extra or mis-shaped tensors, NaN/Inf values and empty MoE layers are refused
    /// with the tensor's name. Where the checkpoint says more (a pickled config object, the
    /// traced code's torch.topk, the ONNX graph's TopK node), top-k comes from it and every
    /// field the shapes also give is cross-checked. The pickle inside a .pt is read by a
    /// non-executing interpreter: objects it only constructs are inert data, and it calls
    /// nothing outside an allow-list.
    #[command(after_help = "\
Examples:
  itera-pack convert itera_lite_micro_distilled.pt -o micro.itb --tokenizer tokenizer_2000.json
  itera-pack convert itera_lite_micro_distilled.pt -o micro_int8.itb --quant int8 --json
  itera-pack convert moe.safetensors -o moe.itb --top-k-experts 2 --emit-rust blob_consts.rs")]
    Convert {
        /// Checkpoint: .pt (torch.save zip: a bare state dict, or under `model_state_dict` beside a
        /// config and training state; or a torch.jit.save TorchScript archive), .onnx or .safetensors.
        checkpoint: PathBuf,
        /// Output blob path.
        #[arg(short, long, value_name = "OUT.itb")]
        output: PathBuf,
        /// Tokenizer JSON to embed (word level `token_to_id`/`id_to_token` or char level `token2id`/`id2token`).
        #[arg(long, value_name = "JSON")]
        tokenizer: Option<PathBuf>,
        /// Experts mixed per token in MoE layers. Default: the checkpoint config's
        /// top_k_experts where it has a config, else 2; given, it overrides the config (with a warning).
        #[arg(long = "top-k-experts", alias = "top-k", value_name = "N")]
        top_k: Option<u32>,
        /// Storage dtypes (see --help): f32 | f16 | int8 | int4 | mixed | keep [:POLICY_FILE].
        #[arg(long, default_value = "f32", value_name = "POLICY", long_help = QUANT_HELP)]
        quant: String,
        /// Also write Rust constants for firmware (BLOB_BYTES, exact ARENA_BYTES,
        /// MACS_PER_TOKEN, VOCAB, MAX_SEQ) to this file, to `include!` beside the blob.
        #[arg(long = "emit-rust", value_name = "FILE.rs")]
        emit_rust: Option<PathBuf>,
        /// Most memory, in MiB, the checkpoint reader may hold at once (decompressed entries
        /// and materialized tensors); a checkpoint needing more is refused before it is
        /// allocated. 1 to 16384; the default fits every Itera-Lite model.
        #[arg(long = "max-memory", value_name = "MIB", default_value_t = itera_pack::checkpoint::DEFAULT_MEMORY_BUDGET_BYTES >> 20)]
        max_memory: u64,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a seeded synthetic model of a published shape (random weights, for speed tests).
    ///
    /// Speed can then be measured at every size without checkpoints (`itera-sim bench`). The
    /// state dict has Itera-Lite's names and shapes, weights drawn from --seed and scaled like
    /// a trained model's (norms near 1, projections ~ 1/sqrt(fan-in)); it is packed through the
    /// same path as `convert` (so --quant means what it means there), with a made-up word
    /// tokenizer. The provenance records `synthetic = shape=S seed=N`. The same shape, seed and
    /// --quant always give identical bytes. The text it generates is noise.
    ///
    /// Shapes (vocab, d_model, layers, d_state, experts x width; all with d_inner = 2 d,
    /// conv 4, max_seq 128, MoE on layers 1, 3, 5..., top-2, plain FFN layers as wide as one
    /// expert, tied lm_head):
    ///   micro  2000, 64, 3, 8, 4 x 32      293,656 parameters (the micro checkpoint's shape)
    ///   tiny   8000, 128, 4, 8, 4 x 64     1,886,496 parameters
    ///   small  16000, 256, 6, 16, 8 x 128  9,963,104 parameters
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  itera-pack synth --shape tiny --seed 1 -o tiny_int8.itb --quant int8"
    )]
    Synth {
        /// Published configuration to build.
        #[arg(long, value_enum, value_name = "SHAPE")]
        shape: itera_pack::synthetic::Shape,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 42, value_name = "N")]
        seed: u64,
        /// Output blob path.
        #[arg(short, long, value_name = "OUT.itb")]
        output: PathBuf,
        /// Storage dtypes (see `convert --help`): f32 | f16 | int8 | int4 | mixed | keep [:POLICY_FILE].
        #[arg(long, default_value = "f32", value_name = "POLICY", long_help = QUANT_HELP)]
        quant: String,
        /// Print a JSON summary (the `inspect --json` report, plus `parameters`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make an Ed25519 key pair for signing blobs: NAME.secret (created with mode 0600, never
    /// over an existing file; keep it off devices and out of repositories) and NAME.public
    /// (32 raw bytes; build it into firmware with the `verify` feature).
    #[command(
        after_help = "Example:\n  itera-pack keygen -o release        # writes release.secret and release.public"
    )]
    Keygen {
        /// Base name of the two key files.
        #[arg(short, long, value_name = "NAME")]
        output: PathBuf,
    },
    /// Sign a blob: writes a detached 64-byte Ed25519 signature (default BLOB.sig) that
    /// `itera_edge::verify::parse_signed` checks on the device before using the blob.
    #[command(
        after_help = "Example:\n  itera-pack sign micro.itb --key release.secret          # writes micro.itb.sig"
    )]
    Sign {
        /// The blob.
        blob: PathBuf,
        /// Secret key from `itera-pack keygen` (a public key or any other file is refused).
        #[arg(long, value_name = "NAME.secret")]
        key: PathBuf,
        /// Signature file (default: BLOB.sig).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a blob's detached signature with the core's verifier (exit 1 if it fails).
    #[command(
        after_help = "Example:\n  itera-pack verify micro.itb --public release.public     # reads micro.itb.sig"
    )]
    Verify {
        /// The blob.
        blob: PathBuf,
        /// Public key from `itera-pack keygen`.
        #[arg(long = "public", value_name = "NAME.public")]
        public: PathBuf,
        /// Signature file (default: BLOB.sig).
        #[arg(long = "sig", value_name = "FILE")]
        signature: Option<PathBuf>,
    },
    /// Show a blob's config, tensors (dtype, shape, bytes), size, arena bytes and provenance.
    #[command(after_help = "\
Examples:
  itera-pack inspect micro.itb
  itera-pack inspect micro_int8.itb --json --chart sizes.svg")]
    Inspect {
        /// The blob.
        blob: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Also write an SVG bar chart of the bytes per layer, by dtype.
        #[arg(long, value_name = "SIZES.svg")]
        chart: Option<PathBuf>,
    },
}

/// Parses a finished blob back for its report (parse only: quantized dtypes need not run
/// in this build of the core). A blob that does not parse back is a packer bug, found
/// before anything is written.
fn parse_back(bytes: &[u8]) -> anyhow::Result<(itera_pack::AlignedBytes, inspect::Report)> {
    let aligned = itera_pack::AlignedBytes::from(bytes);
    let report = inspect::report(&aligned)
        .context("the blob just made does not parse back: a bug in itera-pack, please report it")?;
    Ok((aligned, report))
}

/// "N bytes, arena N bytes, N tensors": what `convert` and `synth` say of a written blob.
fn sizes(r: &inspect::Report) -> String {
    format!("{} bytes, arena {} bytes, {} tensors", r.blob_bytes, r.arena_bytes, r.tensors.len())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Convert { checkpoint, output, tokenizer, top_k, quant, emit_rust, max_memory, json } => {
            let mut inputs = vec![("the checkpoint", checkpoint.as_path())];
            inputs.extend(tokenizer.as_deref().map(|t| ("the tokenizer", t)));
            inputs.extend(QuantPolicy::spec_file(&quant).map(|f| ("the policy file", f)));
            let mut outputs = vec![("-o", output.as_path())];
            outputs.extend(emit_rust.as_deref().map(|p| ("--emit-rust", p)));
            refuse_overlap(&inputs, &outputs)?;
            let budget = itera_pack::memory_budget_mib(max_memory).map_err(anyhow::Error::msg)?;
            let quant = QuantPolicy::parse_spec(&quant).map_err(anyhow::Error::msg)?;
            let mut opts = PackOptions { top_k, quant, ..PackOptions::default() };
            if let Some(t) = &tokenizer {
                let (table, source) = convert::read_tokenizer_file(t)?;
                opts.tokenizer = Some(table);
                opts.tokenizer_source = Some(source);
            }
            let bytes = itera_pack::convert_file_within(&checkpoint, &opts, &budget)?;
            let (aligned, report) = parse_back(&bytes)?;
            // Everything is computed before the first write, so a refusal leaves no file.
            let consts = match &emit_rust {
                Some(_) => Some(
                    itera_pack::emit::rust_consts(&aligned)
                        .context("cannot compute the --emit-rust constants: this build of the core cannot run the blob; pack it with another --quant")?,
                ),
                None => None,
            };
            write_atomically(&output, &bytes, Access::Public)?;
            if let (Some(path), Some(consts)) = (&emit_rust, consts) {
                if let Err(e) = write_atomically(path, consts.as_bytes(), Access::Public) {
                    // A blob without the constants it was asked with is half a result.
                    let _ = std::fs::remove_file(&output);
                    return Err(e);
                }
            }
            if json {
                say(format_args!("{}", inspect::to_json(&report)?))?;
            } else {
                let said = |key: &str| report.provenance.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
                if let Some(format) = said("format") {
                    let top_k = report.config.get("top_k").map(|k| k.to_string()).unwrap_or_default();
                    let config = said("config").map(|c| format!("; top-k {top_k} from its {c}")).unwrap_or_default();
                    say(format_args!("read {} ({format}{config})", at(&checkpoint)))?;
                }
                say(format_args!("wrote {} ({})", at(&output), sizes(&report)))?;
                let quantized: Vec<_> = report.tensors.iter().filter_map(|t| t.sqnr_db.map(|d| (t, d))).collect();
                if let Some((worst, db)) = quantized.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
                    say(format_args!(
                        "quantized {} tensors; lowest SQNR {} dB ({})",
                        quantized.len(),
                        itera_pack::quant::format_db(*db),
                        shown(&worst.name)
                    ))?;
                }
            }
        }
        Cmd::Synth { shape, seed, output, quant, json } => {
            let inputs: Vec<_> = QuantPolicy::spec_file(&quant).map(|f| ("the policy file", f)).into_iter().collect();
            refuse_overlap(&inputs, &[("-o", output.as_path())])?;
            let quant = QuantPolicy::parse_spec(&quant).map_err(anyhow::Error::msg)?;
            let bytes = itera_pack::synthetic::synth_blob(shape, seed, &quant)?;
            let (_, report) = parse_back(&bytes)?;
            write_atomically(&output, &bytes, Access::Public)?;
            let parameters = itera_pack::synthetic::param_count(&shape.config());
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["parameters"] = serde_json::json!(parameters);
                say(format_args!("{}", inspect::to_json(&v)?))?;
            } else {
                let what = format!("synthetic {shape}, seed {seed}: {parameters} parameters");
                say(format_args!("wrote {} ({what}; {})", at(&output), sizes(&report)))?;
            }
        }
        Cmd::Keygen { output } => {
            let (secret, public) = itera_pack::sign::keygen(&output)?;
            say(format_args!("wrote {} (secret, mode 0600: keep it safe) and {}", at(&secret), at(&public)))?;
        }
        Cmd::Sign { blob, key, output } => {
            let out = output.unwrap_or_else(|| signature_path(&blob));
            refuse_overlap(&[("the blob", &blob), ("the key", &key)], &[("the signature", &out)])?;
            let bytes = inspect::read_blob(&blob, "", BLOB_FIX)?;
            itera_edge::Blob::parse(&bytes).with_context(|| format!("{} is not a valid blob", at(&blob)))?;
            let signature = itera_pack::sign::sign(&bytes, &key)?;
            write_atomically(&out, &signature, Access::Public)?;
            say(format_args!("wrote {}", at(&out)))?;
        }
        Cmd::Verify { blob, public, signature } => {
            let bytes = inspect::read_blob(&blob, "", BLOB_FIX)?;
            let sig = signature.unwrap_or_else(|| signature_path(&blob));
            itera_pack::sign::verify(&bytes, &sig, &public).with_context(|| at(&blob))?;
            say(format_args!("{}: signature OK", at(&blob)))?;
        }
        Cmd::Inspect { blob, json, chart } => {
            if let Some(path) = &chart {
                refuse_overlap(&[("the blob", &blob)], &[("--chart", path)])?;
            }
            let bytes = inspect::read_blob(&blob, "", BLOB_FIX)?;
            let report = inspect::report(&bytes).with_context(|| format!("{} is not a valid blob", at(&blob)))?;
            if let Some(path) = &chart {
                write_atomically(path, inspect::size_chart_svg(&report).as_bytes(), Access::Public)?;
            }
            if json {
                say(format_args!("{}", inspect::to_json(&report)?))?;
            } else {
                say_raw(format_args!("{}", inspect::render(&report)))?;
            }
        }
    }
    Ok(())
}

/// Writes `line` and a newline to stdout: a closed pipe (`itera-pack inspect x.itb | head`)
/// is an error, not a panic.
fn say(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    say_raw(format_args!("{line}\n"))
}

/// Writes `text` to stdout, as [`say`] without the newline.
fn say_raw(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(text).and_then(|()| out.flush()).context("cannot write to stdout")
}

/// What `itera-pack` says after the cause when a blob cannot be read ([`inspect::read_blob`]).
const BLOB_FIX: &str = "; check the path and that it is a readable file";

/// `BLOB.sig` beside the blob.
fn signature_path(blob: &std::path::Path) -> PathBuf {
    let mut name = blob.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message escapes the untrusted strings it quotes where it is made; this
            // keeps the line one line whatever a lower layer let through.
            eprintln!("error: {}", shown(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
