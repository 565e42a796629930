//! `itera-sim check`: the engine's logits against a golden file or an independent reference forward pass, as a pass/fail verdict.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use itera_sim::engine::provenance_source;
use itera_sim::progress::Progress;
use itera_sim::{logits_for_tokens, parse_tokens, read_blob, Bounds, Golden};
use serde_json::json;

use super::{load, say, Outcome};

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
/// (needs a build with `--features cuda`), `cuda-cpu` the same CUDA kernels compiled for
/// this CPU (any build, no GPU: what CI runs). The tokens are the golden's (--golden), or
/// --tokens, or a fixed 64-token sequence; the report adds kld_mean, the mean over
/// positions of KL(reference ‖ engine).
#[derive(Args)]
#[command(after_help = "\
Examples:
  itera-sim check micro.itb --golden golden/micro_distilled_random40.json
  itera-sim check micro.itb --golden golden/micro_distilled_story128.json --tol 1e-4 --json
  itera-sim check micro_int8.itb --reference cpu --tol 0.5 --min-top1 0.9
  itera-sim check micro.itb --reference cuda --golden golden/micro_distilled_story128.json --json
  itera-sim check micro.itb --reference cuda-cpu --golden golden/micro_distilled_story128.json

The golden JSON gives `tokens`, `positions`, `vocab` and `logits_file` (relative to the
JSON's folder); that file is row-major [positions][vocab] little-endian f32.

Exit status: 0 PASS; 1 FAIL or any error; 3 --reference cuda cannot run here (built without
the cuda feature, no CUDA driver, no CUDA device, or NVRTC missing; one line on stderr says
which).")]
pub struct CheckArgs {
    /// The blob (.itb).
    blob: PathBuf,
    /// Golden description (JSON); its logits file is found next to it. With --reference,
    /// only its tokens are used.
    #[arg(long, value_name = "JSON", required_unless_present = "reference")]
    golden: Option<PathBuf>,
    /// Compare with a reference forward pass instead of golden logits: cpu (f64), cuda
    /// (f32, NVIDIA GPU) or cuda-cpu (the CUDA kernels run on this CPU).
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
}

impl CheckArgs {
    /// Runs the command.
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let bounds = Bounds { tol: self.tol, min_top1: self.min_top1 };
        match (self.reference, &self.golden) {
            (Some(kind), _) => cmd_check_reference(RefCheckArgs {
                blob: &self.blob,
                golden: self.golden.as_deref(),
                kind,
                tokens: self.tokens.as_deref(),
                bounds,
                json: self.json,
            }),
            (None, Some(golden)) => cmd_check(&self.blob, golden, bounds, self.json),
            (None, None) => bail!("give --golden JSON or --reference cpu|cuda"),
        }
    }
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
        RefKind::CudaCpu => (Backend::CudaCpu, reference_cuda::logits_on_cpu(&reference, &tokens)?),
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

/// Where `check --reference` computes its expected logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RefKind {
    /// f64 on the CPU (itera_sim::reference).
    Cpu,
    /// f32 on an NVIDIA GPU (itera_sim::reference_cuda; build with --features cuda).
    Cuda,
    /// The CUDA kernels compiled for this CPU, each launch run as loops over its grid.
    CudaCpu,
}
