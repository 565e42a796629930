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
        /// The tensor expected there.
        expected: TensorName,
        /// The tensor found there.
        found: TensorName,
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
    /// A per-tensor zero point outside qint8's range `-128..=127`.
    ZeroPointOutOfRange {
        /// The tensor.
        tensor: TensorName,
        /// The zero point stored.
        zero_point: i32,
    },
    /// A quantization scale that is not a usable number (see [`crate::format::MAX_SCALE`]).
    BadScale {
        /// The tensor.
        tensor: TensorName,
        /// Index in the tensor's scale table (`None`: the per-tensor scale).
        index: Option<u32>,
        /// The scale stored, as f32.
        value: f32,
    },
    /// A fixed-point blob's integer parameter is out of its range: a requantization entry
    /// with a zero multiplier or a shift above 62, or a table value outside `0..=2^30`.
    BadFixedPoint {
        /// The tensor.
        tensor: TensorName,
        /// Index in its requantization table or in the table itself.
        index: u32,
        /// What is wrong, in words.
        why: &'static str,
    },
    /// A float-logits call ([`crate::Session::step`], [`crate::Session::prefill`]) on a
    /// fixed-point model, whose logits are integers: use [`crate::Session::step_logits`].
    FixedPointLogits,
    /// The config's `top_k` is 0 or more than the experts a MoE layer has.
    TopKOutOfRange {
        /// The config's `top_k`.
        top_k: u32,
        /// Experts per MoE layer.
        n_experts: u32,
    },
    /// The tokenizer section is inconsistent.
    BadTokenizer(&'static str),
    /// The tokenizer's unknown-token id is not one of its ids.
    UnknownTokenOutOfRange {
        /// `unk_id` stored.
        unk_id: u32,
        /// Ids in the table.
        count: u32,
    },
    /// The tokenizer names more ids than the model has rows in its embedding.
    TokenizerLargerThanVocab {
        /// Ids in the table.
        count: u32,
        /// The model's vocabulary size.
        vocab: u32,
    },
    /// A header byte that format v1 defines as zero (the flags and reserved fields) is not.
    ReservedHeaderByte {
        /// Offset of the byte in the blob.
        offset: u8,
        /// Its value.
        value: u8,
    },
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
    /// The tokens would run past `max_seq` positions (the position table has no more rows).
    ContextFull {
        /// The model's `max_seq`.
        max_seq: u32,
        /// Positions the sequence would need (saturating).
        needed: u32,
    },
    /// The blob's Ed25519 signature does not verify with the device's public key.
    BadSignature,
}

/// [`crate::format::MAX_SCALE`] as the messages print it (an integer: no float formatting).
const MAX_SCALE_SHOWN: u32 = crate::format::MAX_SCALE as u32;

/// What is wrong with a refused scale, in words.
fn scale_kind(v: f32) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_infinite() {
        "infinite"
    } else if v == 0.0 {
        "zero"
    } else if v < 0.0 {
        "negative"
    } else if v.is_subnormal() {
        "subnormal"
    } else if v > crate::format::MAX_SCALE {
        "too large"
    } else {
        "out of range"
    }
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
                "tensor table has {found} tensors, the config and header flags imply {expected}; repack the checkpoint with `itera-pack convert`"
            ),
            Error::UnexpectedTensor { index, expected, found } => write!(
                f,
                "tensor table row {index}: expected {expected}, found {found}; the table is out of order: repack the checkpoint with `itera-pack convert`"
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
            Error::ZeroPointOutOfRange { tensor, zero_point } => write!(
                f,
                "{tensor}: zero point {zero_point} is outside qint8's range -128..=127; the quantization parameters are corrupt: repack from a sound checkpoint with `itera-pack convert`"
            ),
            Error::BadScale { tensor, index, value } => {
                // Named by kind and bits, not printed as a float: core's float formatting
                // would add about 25 KB of code to every firmware that shows errors.
                let (kind, bits) = (scale_kind(value), value.to_bits());
                match index {
                    Some(i) => write!(f, "{tensor}: scale {i} of its table is {kind} (f32 bits {bits:#010x})"),
                    None => write!(f, "{tensor}: its scale is {kind} (f32 bits {bits:#010x})"),
                }?;
                write!(f, ", outside (0, {MAX_SCALE_SHOWN}]")?;
                write!(f, "; the quantization parameters are corrupt: repack from a sound checkpoint with `itera-pack convert`")
            }
            Error::BadFixedPoint { tensor, index, why } => write!(
                f,
                "{tensor}: entry {index} {why}; the fixed-point parameters are corrupt: repack from a sound checkpoint with `itera-pack convert --quant integer`"
            ),
            Error::FixedPointLogits => write!(
                f,
                "this blob computes in fixed point and its logits are integers: read them with Session::step_logits / prefill_logits (or repack with a float --quant)"
            ),
            Error::TopKOutOfRange { top_k: 0, n_experts } => write!(
                f,
                "the config's top_k is 0: each MoE layer must mix at least one expert; repack with `itera-pack convert --top-k-experts K`, K from 1 to {n_experts}"
            ),
            Error::TopKOutOfRange { top_k, n_experts } => write!(
                f,
                "the config's top_k is {top_k} but MoE layers have {n_experts} experts; repack with `itera-pack convert --top-k-experts K`, K from 1 to {n_experts}"
            ),
            Error::UnknownTokenOutOfRange { unk_id, count } => write!(
                f,
                "tokenizer section: unknown-token id {unk_id} is not among its {count} ids (0..{count}); repack with a valid --tokenizer"
            ),
            Error::TokenizerLargerThanVocab { count, vocab } => write!(
                f,
                "tokenizer section names {count} ids but the model's vocabulary has {vocab}; repack with the tokenizer made for this model (--tokenizer)"
            ),
            Error::ReservedHeaderByte { offset, value } => write!(
                f,
                "blob header byte {offset} ({}) is {value:#04x}; format v1 defines no such bits, so the blob is from a newer or foreign packer: repack it with this `itera-pack convert`",
                if offset < 12 { "flags" } else { "reserved" }
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
            Error::ContextFull { max_seq, needed } => write!(
                f,
                "sequence too long: it would need {needed} positions but the model has {max_seq}; use fewer tokens (a shorter prompt, fewer new tokens) or start a new sequence"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// One tensor of the table, as messages name it: role, layer and, for expert weights, expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorName {
    /// Role.
    pub role: Role,
    /// Layer (0 for model-level tensors).
    pub layer: u16,
    /// Expert (0 unless an expert weight).
    pub expert: u16,
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TensorName { role, layer, expert } = *self;
        match role {
            Role::ExpertW1 | Role::ExpertW2 => write!(f, "{role:?} of expert {expert} of layer {layer}"),
            _ => write!(f, "{role:?} of layer {layer}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages added for hostile input: one line each, naming where, saying what to do.
    #[test]
    fn hostile_input_messages_are_one_line_with_where_and_what_to_do() {
        let tensor = TensorName { role: Role::ExpertW1, layer: 1, expert: 3 };
        let cases = [
            (Error::ZeroPointOutOfRange { tensor, zero_point: i32::MIN }, "ExpertW1 of expert 3 of layer 1", "repack"),
            (Error::BadScale { tensor, index: Some(7), value: f32::NAN }, "scale 7 of its table is NaN", "repack"),
            (Error::BadScale { tensor, index: None, value: 0.0 }, "ExpertW1 of expert 3", "repack"),
            (Error::BadFixedPoint { tensor, index: 3, why: "has a zero multiplier" }, "entry 3 has a zero", "repack"),
            (Error::FixedPointLogits, "fixed point", "step_logits"),
            (Error::TopKOutOfRange { top_k: 0, n_experts: 4 }, "top_k is 0", "--top-k"),
            (Error::TopKOutOfRange { top_k: 5, n_experts: 4 }, "have 4 experts", "--top-k"),
            (Error::UnknownTokenOutOfRange { unk_id: 9, count: 9 }, "unknown-token id 9", "--tokenizer"),
            (Error::TokenizerLargerThanVocab { count: 5001, vocab: 2000 }, "vocabulary has 2000", "--tokenizer"),
            (Error::ReservedHeaderByte { offset: 10, value: 1 }, "byte 10 (flags)", "repack"),
            (Error::ContextFull { max_seq: 128, needed: 203 }, "need 203 positions", "fewer tokens"),
        ];
        for (e, place, todo) in cases {
            let line = e.to_string();
            assert!(!line.contains('\n') && line.contains(place) && line.contains(todo), "{line}");
        }
        let found = TensorName { role: Role::SsmNormWeight, layer: 2, expert: 0 };
        let expected = TensorName { layer: 0, ..found };
        let line = Error::UnexpectedTensor { index: 2, expected, found }.to_string();
        assert!(line.contains("expected SsmNormWeight of layer 0, found SsmNormWeight of layer 2"), "{line}");
    }
}
