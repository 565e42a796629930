#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!("itera-edge reads little-endian weights in place and needs a little-endian target");

pub mod blob;
pub mod checksum;
pub mod error;
pub mod format;
pub mod greedy;
pub mod kernels;
pub mod math;
pub mod model;
pub mod sample;
pub mod session;
pub mod tokenizer;

pub use blob::Blob;
pub use error::Error;
pub use format::{Config, DType, Role};
pub use model::Model;
pub use sample::{Rng, Sampler};
pub use session::{Arena, Session};
pub use tokenizer::Tokenizer;
