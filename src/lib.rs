//! A `no_std` inference engine for Itera-Lite language models (state-space-model blocks
//! plus Mixture-of-Experts layers): no heap, no `alloc`, weights read in place from a blob
//! in flash or memory, one sequence on a caller's arena, one token at a time.
//!
//! # The API in five steps
//!
//! 1. [`Blob::parse`] checks a blob (`itera-pack convert` writes them) once, in place:
//!    magic, version, CRC-32, every tensor's shape, dtype and quantization parameters.
//! 2. [`Model::new`] makes zero-copy views of its weights; [`Model::arena_bytes`] is the
//!    exact working memory a session needs ([`Model::prefill_arena_bytes`] lets a prompt run
//!    in blocks: faster, the same bits).
//! 3. [`Session::new`] carves its buffers from that arena (an [`Arena`] on a board, any
//!    4-aligned `&mut [u8]` on a host); [`Session::prefill`] and [`Session::step`] return
//!    the next token's logits.
//! 4. [`Sampler`] picks the next token (greedy, or temperature / top-k / top-p with a seeded
//!    [`Rng`]); [`greedy::Greedy`] is the loop a firmware runs, with a checksum of every
//!    logit for comparing targets bit for bit.
//! 5. Every fallible call returns [`Error`]: a typed reason and a one-line message
//!    (`Display`) that says what to do, never a panic.
//!
//! ```no_run
//! use itera_edge::{Arena, Blob, Error, Model, Sampler, Session};
//!
//! /// Generates `out.len()` tokens after `prompt` with the model in `bytes`.
//! fn generate(bytes: &[u8], prompt: &[u32], out: &mut [u32]) -> Result<(), Error> {
//!     let blob = Blob::parse(bytes)?;
//!     let model = Model::new(&blob)?;
//!     // On a board: a `static` sized by the constant `itera-pack inspect` prints.
//!     let mut arena = Arena::<{ 64 * 1024 }>::new();
//!     let mut session = Session::new(&model, arena.as_mut_bytes())?; // ArenaTooSmall if short
//!     let mut sampler = Sampler::greedy();
//!     let mut logits = session.prefill(prompt)?;
//!     for slot in out.iter_mut() {
//!         *slot = sampler.sample(logits);
//!         logits = session.step(*slot)?; // ContextFull after max_seq tokens
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Where things are
//!
//! - [`model`]: the forward pass, top to bottom as the math reads; its fixed-point twin runs
//!   blobs packed with `--quant integer`. [`kernels`]: the matrix products behind one small
//!   interface, a portable reference plus backends chosen once (Cortex-M4 DSP, ARMv6-M,
//!   RV32, x86-64 AVX2/VNNI), the same bits on all of them.
//! - [`format`]: the blob's types; `docs/FORMAT.md` in the repository is the byte-level spec.
//!   [`blob`] parses and validates it; `docs/SECURITY.md` states what hostile input can and
//!   cannot do.
//! - [`tokenizer`], [`sample`], [`greedy`], [`checksum`]: around the model.
//!
//! Accuracy, speed, sizes and the board results are measured in the repository's README,
//! not here: those numbers change with every measurement, the API does not.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing
    )
)]

#[cfg(target_endian = "big")]
compile_error!("itera-edge reads little-endian weights in place and needs a little-endian target");

pub mod blob;
pub mod checksum;
pub mod error;
pub mod fixed;
mod fixed_model;
pub mod format;
pub mod greedy;
// The matvec kernels index inside hot loops. Every index there is bounded by the matrix
// shape that `Matrix::new` checked against the weight slice lengths, and the model hands
// them buffers carved from the arena to the config's exact sizes; `get` in those loops
// would cost bounds-check branches on the MCU for no gain in safety (safe Rust cannot read
// out of bounds either way: a wrong index is a panic, not a read).
#[allow(clippy::indexing_slicing)]
pub mod kernels;
mod layers;
pub mod math;
pub mod model;
pub mod sample;
pub mod session;
pub mod tokenizer;
#[cfg(feature = "verify")]
pub mod verify;

pub use blob::Blob;
pub use error::Error;
pub use format::{Config, DType, Role};
pub use model::Model;
pub use sample::{Rng, Sampler};
pub use session::{Arena, Logits, Session};
pub use tokenizer::Tokenizer;
