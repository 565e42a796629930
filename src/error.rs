//! The one error type of the core. Every message says what is wrong and what to do.

use core::fmt;

use crate::format::{DType, Role};

/// Everything that can go wrong while parsing a blob or running a session.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The blob ends before a structure it declares.
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The first eight bytes are not `ITERAEDG`.
    BadMagic,
    /// The blob was written for another format version.
    UnsupportedVersion {
        /// Version in the blob.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The header's total length disagrees with the buffer's length.
    LengthMismatch {
        /// Length the header declares.
        declared: usize,
        /// Length of the buffer given.
        actual: usize,
    },
    /// The CRC32 over the blob does not match: the blob is corrupt.
    ChecksumMismatch {
        /// CRC stored in the blob.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A header or manifest field is inconsistent.
    Malformed(&'static str),
    /// The config is impossible or outside what this build supports.
    InvalidConfig(&'static str),
    /// A MoE layer with no experts (the router would have nothing to pick).
    EmptyMoe {
        /// The layer.
        layer: u32,
    },
    /// The tensor table does not have the tensors the config implies.
    TensorCount {
        /// Tensors the config implies.
        expected: usize,
        /// Tensors in the table.
        found: usize,
    },
    /// A table row is not the tensor expected at that position.
    UnexpectedTensor {
        /// Row index.
        index: usize,
        /// Role expected there.
        expected: Role,
        /// Role found.
        found: Role,
        /// Layer expected.
        layer: u16,
    },
    /// A tensor's shape disagrees with the config.
    ShapeMismatch {
        /// Role.
        role: Role,
        /// Layer.
        layer: u16,
        /// Shape the config implies.
        expected: [u32; 2],
        /// Shape in the table.
        found: [u32; 2],
    },
    /// A tensor's bytes are misplaced, misaligned, out of bounds or of the wrong length.
    BadTensor {
        /// Role.
        role: Role,
        /// Layer.
        layer: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// This build cannot compute with a tensor stored this way.
    UnsupportedDType {
        /// Role.
        role: Role,
        /// Layer.
        layer: u16,
        /// Stored dtype.
        dtype: DType,
    },
    /// The model needs more of a fixed capacity than this build has.
    Capacity {
        /// What ran out.
        what: &'static str,
        /// How many the model needs.
        needed: usize,
        /// How many this build holds.
        max: usize,
    },
    /// The tokenizer section is inconsistent.
    BadTokenizer(&'static str),
    /// The blob's first byte is not 4-aligned in memory, so f32 weights cannot be read in place.
    BlobNotAligned,
    /// The arena given to a session is smaller than `Model::arena_bytes()`.
    ArenaTooSmall {
        /// Bytes a session needs.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// The arena's first byte is not 4-aligned.
    ArenaNotAligned,
    /// A token id is not below the vocabulary size.
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab: u32,
    },
    /// The session already holds `max_seq` tokens (the position table has no more rows).
    ContextFull {
        /// The model's `max_seq`.
        max_seq: u32,
    },
    /// The blob's Ed25519 signature does not verify with the device's public key.
    BadSignature,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { needed, available } => write!(
                f,
                "blob truncated: needs {needed} bytes, has {available}; copy or flash the whole .itb file"
            ),
            Error::BadMagic => write!(
                f,
                "not an itera-edge blob (magic is not ITERAEDG); create one with `itera-pack convert`"
            ),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "blob format version {found}, this build reads version {supported}; repack with a matching itera-pack"
            ),
            Error::LengthMismatch { declared, actual } => write!(
                f,
                "blob header declares {declared} bytes but {actual} were given; pass exactly the .itb contents"
            ),
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "blob corrupt: CRC32 {computed:#010x} does not match stored {stored:#010x}; re-copy or re-flash the blob"
            ),
            Error::Malformed(why) => write!(f, "malformed blob: {why}; repack it with `itera-pack convert`"),
            Error::InvalidConfig(why) => write!(f, "invalid model config: {why}"),
            Error::EmptyMoe { layer } => write!(
                f,
                "layer {layer} is a MoE layer with zero experts: the router cannot pick any; the checkpoint is broken"
            ),
            Error::TensorCount { expected, found } => write!(
                f,
                "tensor table has {found} tensors, the config implies {expected}; repack the checkpoint"
            ),
            Error::UnexpectedTensor { index, expected, found, layer } => write!(
                f,
                "tensor {index}: expected {expected:?} of layer {layer}, found {found:?}; repack the checkpoint"
            ),
            Error::ShapeMismatch { role, layer, expected, found } => write!(
                f,
                "{role:?} of layer {layer} has shape {found:?}, the config implies {expected:?}"
            ),
            Error::BadTensor { role, layer, why } => write!(f, "{role:?} of layer {layer}: {why}"),
            Error::UnsupportedDType { role, layer, dtype } => write!(
                f,
                "{role:?} of layer {layer} is stored as {dtype:?}, which this build cannot compute with; repack with `--quant f32`"
            ),
            Error::Capacity { what, needed, max } => write!(
                f,
                "model needs {needed} {what}, this build holds at most {max}"
            ),
            Error::BadTokenizer(why) => write!(f, "tokenizer section: {why}; repack with a valid --tokenizer"),
            Error::BlobNotAligned => write!(
                f,
                "blob is not 4-byte aligned in memory; place it at an aligned address (see Blob docs)"
            ),
            Error::ArenaTooSmall { needed, available } => write!(
                f,
                "arena too small: a session needs {needed} bytes, got {available}; size it with Model::arena_bytes()"
            ),
            Error::ArenaNotAligned => write!(f, "arena is not 4-byte aligned; use an aligned buffer such as `Arena<N>`"),
            Error::TokenOutOfRange { token, vocab } => write!(
                f,
                "token id {token} is out of range: the vocabulary has {vocab} ids (0..{vocab})"
            ),
            Error::BadSignature => write!(
                f,
                "blob signature does not verify: the blob was altered or signed with another key; install a blob signed by `itera-pack sign`"
            ),
            Error::ContextFull { max_seq } => write!(
                f,
                "session is full: the model has {max_seq} positions; call reset() to start a new sequence"
            ),
        }
    }
}

impl core::error::Error for Error {}
