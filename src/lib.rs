#![doc = include_str!("../README.md")]
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
