//! The workspace's test helpers, written once and used only as a dev-dependency: tiny
//! synthetic blobs packed by the real packer ([`blobs`]) and crafted past its checks
//! ([`craft`]), sessions and their arenas ([`session`]), the fixtures folder
//! ([`fixtures`]) and its golden logits ([`golden`]), scratch folders ([`Scratch`]), seeded numbers ([`gaussian`],
//! [`XorShift64`]) and PyTorch checkpoints written by hand ([`torch`]).
//!
//! It depends on `itera-edge` and `itera-pack`, so integration tests (and the unit tests
//! of `itera-sim`) share their types with it. In the packer's own unit tests this crate's
//! packer is a second copy, whose types are not theirs: they use only what deals in plain
//! bytes and numbers (the [`torch`] writers, [`gaussian`], [`XorShift64`], [`fixtures`],
//! a blob's bytes). The core's unit tests do not use it at all.

#![deny(missing_docs)]

pub mod blobs;
pub mod craft;
pub mod fixtures;
pub mod golden;
pub mod session;
pub mod torch;

mod noise;
mod scratch;

pub use blobs::{builder, packed, tiny_blob, tiny_blob_with};
pub use noise::{gaussian, XorShift64};
pub use scratch::Scratch;
