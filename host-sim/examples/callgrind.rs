//! The region `scripts/callgrind-counts` counts instructions in: one [`Session::step`] (a
//! generated token, after a one-block prompt) or one [`Session::prefill`] (a 128-token
//! prompt, or the model's `max_seq` if shorter), on a kernel backend named explicitly.
//!
//! Reading and parsing the blob, building the model and the session happen outside the
//! `#[inline(never)]` functions [`counted_step`] and [`counted_prefill`], which the script
//! passes to `valgrind --tool=callgrind --toggle-collect=...`: only what runs inside them is
//! counted.
//!
//! ```sh
//! cargo build --release -p itera-sim --example callgrind
//! valgrind --tool=callgrind --toggle-collect='callgrind::counted_step' \
//!     target/release/examples/callgrind micro_int8.itb step scalar
//! ```
//!
//! Exit status: 0 when the region ran, 2 when the backend is not available on this CPU (the
//! script skips that configuration), 1 on any other error.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use itera_edge::Session;
use itera_sim::bench::bench_tokens;

/// The prompt [`counted_prefill`] feeds, capped at the model's positions.
const PREFILL_TOKENS: usize = 128;

/// What a step-mode run prefills (uncounted) before the counted token: one block, so the
/// counted step is a generated token after a prompt, not the first token of a sequence.
const STEP_PROMPT_TOKENS: usize = 8;

/// Exit status when the requested backend cannot run on this CPU.
const UNAVAILABLE: u8 = 2;

/// One token through the whole model, logits included: the counted region in step mode.
#[inline(never)]
fn counted_step(session: &mut Session<'_, '_>, token: u32) -> Result<(), itera_edge::Error> {
    black_box(session.step_logits(black_box(token))?);
    Ok(())
}

/// A prompt through the model, logits of the last token only: the counted region in
/// prefill mode.
#[inline(never)]
fn counted_prefill(session: &mut Session<'_, '_>, tokens: &[u32]) -> Result<(), itera_edge::Error> {
    black_box(session.prefill_logits(black_box(tokens))?);
    Ok(())
}

/// Switches the core to `backend` and says whether this CPU runs it: `scalar` (the portable
/// code, never switched) or `avx2` (AVX2 and F16C; never AVX-512, which valgrind does not
/// emulate).
fn pin_backend(backend: &str) -> anyhow::Result<bool> {
    match backend {
        "scalar" => Ok(true),
        "avx2" => {
            // `select_kernels` reads ITERA_KERNELS: `avx2` stops it short of AVX-512 VNNI.
            std::env::set_var("ITERA_KERNELS", "avx2");
            Ok(itera_sim::engine::select_kernels() == "avx2")
        }
        other => bail!("unknown backend '{other}': give scalar or avx2"),
    }
}

fn run(blob: &Path, op: &str, backend: &str) -> anyhow::Result<ExitCode> {
    if !matches!(op, "step" | "prefill") {
        bail!("unknown operation '{op}': give step or prefill");
    }
    if !pin_backend(backend)? {
        eprintln!("backend {backend} is not available on this CPU");
        return Ok(ExitCode::from(UNAVAILABLE));
    }
    let bytes = itera_sim::read_blob(blob)?;
    let model =
        itera_sim::open_model(&bytes).with_context(|| format!("{}: not a blob this core runs", blob.display()))?;
    let config = model.config();
    let mut arena = itera_sim::new_arena(&model);
    let mut session = itera_sim::engine::new_session(&model, &mut arena)?;
    let tokens = bench_tokens(PREFILL_TOKENS.min(config.max_seq as usize), config.vocab);
    if op == "step" {
        let (prompt, rest) = tokens.split_at(STEP_PROMPT_TOKENS.min(tokens.len().saturating_sub(1)));
        let Some(&next) = rest.first() else {
            bail!("{}: the model holds no positions (max_seq 0): nothing to step", blob.display());
        };
        session.prefill_logits(prompt)?;
        counted_step(&mut session, next)?;
    } else {
        counted_prefill(&mut session, &tokens)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [blob, op, backend] = args.as_slice() else {
        eprintln!("usage: callgrind BLOB step|prefill scalar|avx2");
        return ExitCode::FAILURE;
    };
    match run(Path::new(blob), op, backend) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
