//! `itera-pack`: checkpoint → blob converter and blob inspector.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use itera_pack::{convert, inspect, PackOptions};

/// Packs Itera-Lite checkpoints into itera-edge blobs (.itb) and inspects blobs.
///
/// A blob is one flat file the no_std core reads in place: config, tensor table, 64-byte
/// aligned weights, optional tokenizer, provenance and a CRC32 (docs/FORMAT.md).
#[derive(Parser)]
#[command(name = "itera-pack", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a PyTorch .pt (zip) or safetensors checkpoint into a blob.
    ///
    /// The config is read off the tensor shapes; every tensor is checked against it, and
    /// missing, extra or mis-shaped tensors, NaN/Inf values and empty MoE layers are refused
    /// with the tensor's name. The pickle inside a .pt is read by an allow-list
    /// interpreter: nothing in it is executed.
    ///
    /// Example: itera-pack convert itera_lite_micro_distilled.pt -o micro.itb --tokenizer tokenizer_2000.json
    Convert {
        /// Checkpoint: .pt (PyTorch zip; bare state dict or under `model_state_dict`) or .safetensors.
        checkpoint: PathBuf,
        /// Output blob path.
        #[arg(short, long, value_name = "OUT.itb")]
        output: PathBuf,
        /// Tokenizer JSON to embed (word level `token_to_id`/`id_to_token` or char level `token2id`/`id2token`).
        #[arg(long, value_name = "JSON")]
        tokenizer: Option<PathBuf>,
        /// Experts mixed per token in MoE layers (not stored in checkpoints).
        #[arg(long = "top-k", default_value_t = 2, value_name = "N")]
        top_k: u32,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a blob's config, tensors (dtype, shape, bytes), size, arena bytes and provenance.
    Inspect {
        /// The blob.
        blob: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Convert { checkpoint, output, tokenizer, top_k, json } => {
            let mut opts = PackOptions { top_k, ..PackOptions::default() };
            if let Some(t) = &tokenizer {
                opts.tokenizer = Some(convert::read_tokenizer(t)?);
            }
            let bytes = itera_pack::convert_file(&checkpoint, &opts)
                .with_context(|| format!("cannot convert {}", checkpoint.display()))?;
            std::fs::write(&output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
            let report = inspect::report(&inspect::AlignedBytes::from(bytes.as_slice()))
                .context("the blob just written does not parse back (packer bug)")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "wrote {} ({} bytes, arena {} bytes, {} tensors)",
                    output.display(),
                    report.blob_bytes,
                    report.arena_bytes,
                    report.tensors.len()
                );
            }
        }
        Cmd::Inspect { blob, json } => {
            let bytes = inspect::read_aligned(&blob).with_context(|| format!("cannot read {}", blob.display()))?;
            let report = inspect::report(&bytes).with_context(|| format!("{} is not a valid blob", blob.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render(&report));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
