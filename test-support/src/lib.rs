//! The workspace's test helpers, written once and used only as a dev-dependency: tiny
//! synthetic blobs packed by the real packer ([`blobs`]) and crafted past its checks
//! ([`craft`]), sessions and their arenas
//! ([`session`]), the fixtures folder ([`fixtures`]), scratch folders ([`Scratch`]),
//! seeded noise ([`gaussian`]) and PyTorch checkpoints written by hand ([`torch`]).
//!
//! It depends on `itera-edge` and `itera-pack`, so integration tests (and the unit tests
//! of `itera-sim`) share their types with it. The packer's own unit tests use only its
//! byte-level writers ([`torch`], [`gaussian`], [`fixtures`]): a dev-dependency on this
//! crate hands them a second copy of the packer, whose types are not theirs. The core's
//! unit tests do not use it at all.

#![deny(missing_docs)]

pub mod blobs;
pub mod craft;
pub mod fixtures;
pub mod session;
pub mod torch;

mod noise;
mod scratch;

pub use blobs::{builder, packed, tiny_blob, tiny_blob_with};
pub use itera_pack::AlignedBytes;
pub use noise::{gaussian, XorShift64};
pub use scratch::Scratch;
