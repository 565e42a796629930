//! `itera-sim`: runs the itera-edge core on a host, exactly as a board would, and checks
//! it against reference logits.
//!
//! The binary of the same name is a thin command line over this library:
//!
//! * [`engine`]: load a blob into a 4-aligned buffer, parse it, give a session its arena,
//!   compute logits for a token sequence;
//! * [`golden`]: read and write golden logits (JSON description + row-major `.f32` file);
//! * [`compare`](mod@compare): agreement metrics between two logit tables (max |Δ|, RMSE, cosine, top-1);
//! * [`text`]: prompt encoding and streamed decoding with a blob's tokenizer;
//! * [`generate`]: prefill + sampling loop with timings;
//! * [`eval`]: perplexity on text and agreement with a reference model (KL divergence, ...);
//! * [`reference`]: an independent f64 forward pass over a whole sequence (CPU), and
//!   [`reference_cuda`] the same in f32 as CUDA kernels, on an NVIDIA GPU (feature `cuda`)
//!   or compiled for the CPU (always);
//! * [`bench`]: prefill and generation speed, several models interleaved in one run;
//! * [`limits`]: the accepted range of every count a user gives (tokens, repeats);
//! * [`demo`]: the whole pipeline (synthetic checkpoint → packer → blob → session) with no
//!   input files.
//!
//! ```
//! use itera_sim::{compare, demo};
//!
//! // Pack a seeded synthetic model and generate a few tokens, all in memory.
//! let report = demo::run_demo(&demo::DemoOptions { n: 4, ..Default::default() }, |_| ())?;
//! assert_eq!(report.generated.len(), 4);
//!
//! // Identical tables agree perfectly.
//! let m = compare::compare(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0], 2)?;
//! assert_eq!((m.max_abs_diff, m.top1_agreement), (0.0, 1.0));
//! # Ok::<(), anyhow::Error>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod bench;
pub mod compare;
pub mod demo;
pub mod engine;
pub mod eval;
pub mod generate;
pub mod golden;
pub mod limits;
pub mod progress;
pub mod reference;
pub mod reference_cuda;
pub mod text;

pub use compare::{compare, Bounds, Metrics};
pub use engine::{logits_for_tokens, new_arena, open_model, parse_tokens, read_blob};
pub use golden::Golden;
/// Board support: the reference run firmware is checked against, and board fit.
pub mod board;
