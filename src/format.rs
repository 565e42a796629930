//! Blob format v1: the types shared by the reader (this crate) and the writer (`itera-pack`).
//!
//! `docs/FORMAT.md` is the normative description; this module is its Rust transcription.
//! Layout of a blob:
//!
//! ```text
//! 0        8        10      12            16            20          24        32
//! | magic  | version | flags | manifest_len | data_offset | total_len | reserved |
//! | manifest (postcard) ... | zero padding | tensor data (each tensor 16-aligned) ... | CRC32 |
//! ```

use serde::{Deserialize, Serialize};

/// First eight bytes of every blob.
pub const MAGIC: [u8; 8] = *b"ITERAEDG";
/// The format version this crate reads and `itera-pack` writes.
pub const VERSION: u16 = 1;
/// Size of the fixed little-endian header that precedes the manifest.
pub const HEADER_LEN: usize = 32;
/// Every tensor (and the data section itself) starts at a multiple of this, counted from the
/// blob's first byte, so the core can read weights in place (flash) with SIMD-friendly alignment.
pub const ALIGN: usize = 16;
/// Size of the trailing CRC32.
pub const CRC_LEN: usize = 4;
/// Most layers a blob may declare (bounded so the core needs no heap).
pub const MAX_LAYERS: usize = 32;
/// Most experts one MoE layer may declare.
pub const MAX_EXPERTS: usize = 16;
/// Most provenance entries a blob may carry.
pub const MAX_META: usize = 32;
/// Every config dimension is below this (2^24), so no product of two overflows a u64 and
/// every tensor's length fits a u32; a session therefore holds fewer tokens than this.
pub const MAX_DIM: u32 = 1 << 24;
/// Offset of the header's `total_len` (little-endian u32).
pub const TOTAL_LEN_OFFSET: usize = 20;

/// The `total_len` a blob's header declares, when `header` starts with [`MAGIC`] and holds
/// the field: how many bytes to read of a blob before [`crate::Blob::parse`] sees it.
pub fn declared_len(header: &[u8]) -> Option<u32> {
    if !header.starts_with(&MAGIC) {
        return None;
    }
    match header.get(TOTAL_LEN_OFFSET..TOTAL_LEN_OFFSET + 4)? {
        &[a, b, c, d] => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

/// The little-endian u16 at `b[at..at + 2]` (0 past the end: callers read fields whose
/// bounds they checked, so a short read is a bug that must not panic on a board).
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

/// The little-endian u32 at `b[at..at + 4]` (0 past the end, as [`read_u16`]).
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[x, y, z, w]) => u32::from_le_bytes([x, y, z, w]),
        _ => 0,
    }
}

/// Largest quantization scale a blob may hold, per tensor or in a scale table. Above every
/// finite f16 (65504), so it refuses no f16 table entry, and an int8 weight stays within
/// `255 * 65536`, far above any trained weight; a larger scale is damage, not a model.
pub const MAX_SCALE: f32 = 65536.0;

/// Model hyper-parameters. Every tensor shape follows from these.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab: u32,
    /// Width of the residual stream, `d`.
    pub d_model: u32,
    /// Number of SSM blocks (each followed by an FFN or MoE layer).
    pub n_layers: u32,
    /// Width of the SSM's inner stream (`in_proj` produces `2 * d_inner`).
    pub d_inner: u32,
    /// Size `N` of the SSM state (shared by all channels).
    pub d_state: u32,
    /// Causal depthwise convolution kernel length `K`.
    pub conv_kernel: u32,
    /// Rows of the learned position table: the most tokens a session can hold.
    pub max_seq: u32,
    /// Hidden width of the plain FFN layers (0 if every layer is MoE).
    pub ffn_hidden: u32,
    /// Experts per MoE layer (0 if no layer is MoE).
    pub n_experts: u32,
    /// Hidden width of each expert.
    pub expert_hidden: u32,
    /// Experts mixed per token.
    pub top_k: u32,
    /// Bit `i` set: layer `i` is MoE; clear: plain FFN.
    pub moe_layers: u32,
    /// LayerNorm epsilon.
    pub norm_eps: f32,
    /// `lm_head` shares the embedding's storage (its tensor entry points at the same bytes).
    pub tied_lm_head: bool,
}

impl Config {
    /// Whether layer `layer` is a Mixture-of-Experts layer.
    pub fn is_moe(&self, layer: u32) -> bool {
        layer < 32 && (self.moe_layers >> layer) & 1 == 1
    }
}

/// What a tensor is. Together with `layer` and `expert` it names one parameter of the model.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Token embedding `E`, `[vocab, d]`.
    Embedding,
    /// Learned positions `P`, `[max_seq, d]`.
    Position,
    /// SSM block LayerNorm weight, `[d]`.
    SsmNormWeight,
    /// SSM block LayerNorm bias, `[d]`.
    SsmNormBias,
    /// `in_proj`, `[2 d_inner, d]`.
    InProj,
    /// Depthwise conv weight, `[d_inner, K]`.
    ConvWeight,
    /// Depthwise conv bias, `[d_inner]`.
    ConvBias,
    /// `A_log`, `[N]` (`A = -exp(A_log)`).
    ALog,
    /// Input matrix `B`, `[N, d_inner]`.
    B,
    /// Output matrix `C`, `[d_inner, N]`.
    C,
    /// Skip `D`, `[d_inner]`.
    D,
    /// `delta_proj` weight, `[d_inner, d_inner]`.
    DeltaProj,
    /// `delta_proj` bias, `[d_inner]`.
    DeltaBias,
    /// `out_proj`, `[d, d_inner]`.
    OutProj,
    /// FFN/MoE LayerNorm weight, `[d]`.
    MixNormWeight,
    /// FFN/MoE LayerNorm bias, `[d]`.
    MixNormBias,
    /// Plain FFN up projection, `[ffn_hidden, d]`.
    FfnW1,
    /// Plain FFN down projection, `[d, ffn_hidden]`.
    FfnW2,
    /// MoE router, `[n_experts, d]`.
    Gate,
    /// Expert up projection, `[expert_hidden, d]`.
    ExpertW1,
    /// Expert down projection, `[d, expert_hidden]`.
    ExpertW2,
    /// Final LayerNorm weight, `[d]`.
    FinalNormWeight,
    /// Final LayerNorm bias, `[d]`.
    FinalNormBias,
    /// Output projection, `[vocab, d]`.
    LmHead,
    /// Fixed-point blobs only: `sigmoid(k / 32)` for `k = 0..=512` (Q30), see [`TABLES`].
    SigmoidTable,
    /// Fixed-point blobs only: the normal CDF `Phi(k / 32)` for `k = 0..=256` (Q30): GELU.
    GeluTable,
    /// Fixed-point blobs only: `ln(1 + exp(-k / 32))` for `k = 0..=512` (Q30): softplus.
    SoftplusTable,
    /// Fixed-point blobs only: `2^(-k / 64)` for `k = 0..=64` (Q30): every `exp`.
    Exp2Table,
}

/// How a tensor's elements are stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// IEEE binary32, little-endian.
    F32,
    /// IEEE binary16, little-endian (compute in f32).
    F16,
    /// Signed 8-bit integers, one per element; scales per [`Quant`].
    I8,
    /// Signed 4-bit integers, two per byte (low nibble first); scales per [`Quant`].
    I4,
    /// `i32` fixed point with 16 fractional bits (`value = raw / 65536`): a fixed-point
    /// blob's vectors (its tables use the same storage with 30 fractional bits). Appended
    /// after the float formats, so older blobs decode unchanged.
    Q16,
}

impl DType {
    /// Bytes needed for `n` elements.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        match self {
            DType::F32 => n.checked_mul(4),
            DType::F16 => n.checked_mul(2),
            DType::I8 => Some(n),
            DType::I4 => n.checked_add(1).map(|m| m / 2),
            DType::Q16 => n.checked_mul(4),
        }
    }
}

/// Dtype of a quantization scale table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ScaleType {
    /// f32 scales.
    F32,
    /// f16 scales.
    F16,
    /// Fixed-point blobs: one integer requantization per row, a little-endian `u32` holding
    /// `multiplier | shift << 16` with `multiplier · 2^-shift = scale / 127` (see
    /// [`Requant`]). Appended after the float scales, so older blobs decode unchanged.
    Requant,
}

/// One row's integer requantization in a fixed-point blob: the row's weight scale divided by
/// 127 (the int8 input's full scale), as `multiplier · 2^-shift`. The packer normalises the
/// multiplier to `2^15..2^16` (16 significant bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    /// Multiplier, `1..=65535` (the packer writes `32768..=65535`).
    pub multiplier: u16,
    /// Right shift, `0..=`[`MAX_REQUANT_SHIFT`].
    pub shift: u16,
}

/// Largest [`Requant::shift`] a blob may hold: keeps every shift of an `i64` product defined.
pub const MAX_REQUANT_SHIFT: u16 = 62;

impl Requant {
    /// Decodes one table entry.
    pub fn from_bits(bits: u32) -> Self {
        Requant { multiplier: bits as u16, shift: (bits >> 16) as u16 }
    }

    /// Encodes one table entry.
    pub fn to_bits(self) -> u32 {
        u32::from(self.multiplier) | (u32::from(self.shift) << 16)
    }

    /// Whether a reader may use it: a nonzero multiplier and a shift within range.
    pub fn is_valid(self) -> bool {
        self.multiplier > 0 && self.shift <= MAX_REQUANT_SHIFT
    }
}

/// Header flag bit (bytes 10..12): the blob computes in integer arithmetic only (fixed
/// point). Its matrices are int8 with [`ScaleType::Requant`] rows, its vectors [`DType::Q16`],
/// and the activation tables ([`TABLES`]) follow `LmHead` in the tensor table.
pub const FLAG_FIXED_POINT: u16 = 1;

/// Every flag bit this reader knows.
pub const KNOWN_FLAGS: u16 = FLAG_FIXED_POINT;

/// How a blob computes, from its header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arithmetic {
    /// f32 activations; weights f32, f16 or integer (dequantized per product).
    Float,
    /// Integer arithmetic only: fixed-point activations, integer requantization, tables.
    Fixed,
}

/// An activation table of a fixed-point blob: sampled at `k / 2^step_log2` for
/// `k = 0..len`, values in Q30 (`value = raw / 2^30`), linear interpolation between samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Role of the tensor that holds it (`shape [1, len]`, dtype [`DType::Q16`]'s `i32`
    /// storage, but Q30 values).
    pub role: Role,
    /// Samples.
    pub len: u32,
    /// Samples per unit of the argument, as a power of two.
    pub step_log2: u32,
}

/// The tables of a fixed-point blob, in table order after `LmHead`.
pub const TABLES: [TableSpec; 4] = [
    TableSpec { role: Role::SigmoidTable, len: 513, step_log2: 5 },
    TableSpec { role: Role::GeluTable, len: 257, step_log2: 5 },
    TableSpec { role: Role::SoftplusTable, len: 513, step_log2: 5 },
    TableSpec { role: Role::Exp2Table, len: 65, step_log2: 6 },
];

/// Quantization parameters of a tensor.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Quant {
    /// Not quantized (F32, F16).
    None,
    /// One affine pair for the whole tensor: `value = (q - zero_point) * scale`.
    PerTensor {
        /// Scale.
        scale: f32,
        /// Zero point.
        zero_point: i32,
    },
    /// Symmetric scales, one per group of `group` consecutive elements along each row
    /// (`group == cols`: one per row). The scale table lives at `scales_offset` in the blob.
    Grouped {
        /// Elements per group.
        group: u32,
        /// Absolute, 4-aligned offset of the scale table (`rows * ceil(cols / group)` entries).
        scales_offset: u32,
        /// Dtype of the scales.
        scale_type: ScaleType,
    },
}

/// One row of the tensor table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorEntry {
    /// What the tensor is.
    pub role: Role,
    /// Layer index (0 for model-level tensors).
    pub layer: u16,
    /// Expert index (0 unless `role` is `ExpertW1`/`ExpertW2`).
    pub expert: u16,
    /// Element storage.
    pub dtype: DType,
    /// `[rows, cols]`, row-major. Vectors are `[1, n]`; the conv weight `[d_inner, 1, K]` is `[d_inner, K]`.
    pub shape: [u32; 2],
    /// Absolute offset of the first byte, a multiple of [`ALIGN`].
    pub offset: u32,
    /// Bytes of element data (scales excluded).
    pub len: u32,
    /// Quantization parameters.
    pub quant: Quant,
}

impl TensorEntry {
    /// The tensor as messages name it.
    pub fn name(&self) -> crate::error::TensorName {
        crate::error::TensorName { role: self.role, layer: self.layer, expert: self.expert }
    }
}

/// Kind of the optional tokenizer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TokenizerKind {
    /// Lower-cased, whitespace-split words; decoding joins with one space.
    Word,
    /// Single characters; decoding joins with nothing.
    Char,
}

/// Where the tokenizer's string table lives.
///
/// At `offset`: `count + 1` little-endian u32 end-offsets (the first is 0), relative to the
/// start of the string bytes, which follow immediately; token `i` is bytes
/// `ends[i]..ends[i + 1]`, UTF-8.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TokenizerRef {
    /// Word or char level.
    pub kind: TokenizerKind,
    /// Id that unknown input maps to (and that unnamed ids decode as).
    pub unk_id: u32,
    /// Number of ids in the table.
    pub count: u32,
    /// Absolute, 4-aligned offset of the table.
    pub offset: u32,
    /// Bytes of table (offsets plus strings).
    pub len: u32,
}

/// The fixed part of the manifest; `n_tensors` [`TensorEntry`] rows and `n_meta`
/// `(&str, &str)` provenance pairs follow it, each postcard-encoded, in that order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ManifestHead {
    /// Hyper-parameters.
    pub config: Config,
    /// Rows in the tensor table.
    pub n_tensors: u32,
    /// Optional tokenizer.
    pub tokenizer: Option<TokenizerRef>,
    /// Provenance entries.
    pub n_meta: u32,
}

/// One expected tensor: role, layer, expert and shape, in the canonical order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Role.
    pub role: Role,
    /// Layer (0 for model-level tensors).
    pub layer: u16,
    /// Expert (0 unless an expert weight).
    pub expert: u16,
    /// `[rows, cols]`.
    pub shape: [u32; 2],
}

/// The tensors a config implies, in table order: `Embedding`, `Position`, then per layer the
/// SSM block (norm weight and bias, `InProj`, conv weight and bias, `ALog`, `B`, `C`, `D`,
/// `DeltaProj`, `DeltaBias`, `OutProj`) and the mixer (norm weight and bias, then `FfnW1`,
/// `FfnW2`, or `Gate` and `ExpertW1`, `ExpertW2` per expert), then `FinalNormWeight`,
/// `FinalNormBias`, `LmHead`.
///
/// Calls `f` once per tensor and stops at the first error it returns.
pub fn for_each_expected<E>(c: &Config, mut f: impl FnMut(Expected) -> Result<(), E>) -> Result<(), E> {
    let d = c.d_model;
    let di = c.d_inner;
    let one = |role, layer: u32, shape| Expected { role, layer: layer as u16, expert: 0, shape };
    f(one(Role::Embedding, 0, [c.vocab, d]))?;
    f(one(Role::Position, 0, [c.max_seq, d]))?;
    for l in 0..c.n_layers {
        for e in [
            one(Role::SsmNormWeight, l, [1, d]),
            one(Role::SsmNormBias, l, [1, d]),
            one(Role::InProj, l, [2 * di, d]),
            one(Role::ConvWeight, l, [di, c.conv_kernel]),
            one(Role::ConvBias, l, [1, di]),
            one(Role::ALog, l, [1, c.d_state]),
            one(Role::B, l, [c.d_state, di]),
            one(Role::C, l, [di, c.d_state]),
            one(Role::D, l, [1, di]),
            one(Role::DeltaProj, l, [di, di]),
            one(Role::DeltaBias, l, [1, di]),
            one(Role::OutProj, l, [d, di]),
            one(Role::MixNormWeight, l, [1, d]),
            one(Role::MixNormBias, l, [1, d]),
        ] {
            f(e)?;
        }
        if c.is_moe(l) {
            f(one(Role::Gate, l, [c.n_experts, d]))?;
            for x in 0..c.n_experts {
                let h = c.expert_hidden;
                f(Expected { role: Role::ExpertW1, layer: l as u16, expert: x as u16, shape: [h, d] })?;
                f(Expected { role: Role::ExpertW2, layer: l as u16, expert: x as u16, shape: [d, h] })?;
            }
        } else {
            f(one(Role::FfnW1, l, [c.ffn_hidden, d]))?;
            f(one(Role::FfnW2, l, [d, c.ffn_hidden]))?;
        }
    }
    f(one(Role::FinalNormWeight, 0, [1, d]))?;
    f(one(Role::FinalNormBias, 0, [1, d]))?;
    f(one(Role::LmHead, 0, [c.vocab, d]))
}

/// Number of tensors a config implies (saturating; the parser bounds the config first).
pub fn tensor_count(c: &Config) -> usize {
    let mut n = 0usize;
    let _ = for_each_expected::<()>(c, |_| {
        n += 1;
        Ok(())
    });
    n
}

/// [`for_each_expected`], then for a fixed-point blob the [`TABLES`].
pub fn for_each_expected_in<E>(
    c: &Config,
    arithmetic: Arithmetic,
    mut f: impl FnMut(Expected) -> Result<(), E>,
) -> Result<(), E> {
    for_each_expected(c, &mut f)?;
    if arithmetic == Arithmetic::Fixed {
        for t in TABLES {
            f(Expected { role: t.role, layer: 0, expert: 0, shape: [1, t.len] })?;
        }
    }
    Ok(())
}

/// [`tensor_count`] for a blob of `arithmetic`.
pub fn tensor_count_in(c: &Config, arithmetic: Arithmetic) -> usize {
    tensor_count(c) + if arithmetic == Arithmetic::Fixed { TABLES.len() } else { 0 }
}

/// Encodes a manifest into `out` as format v1 lays it out: `head`, then each of `tensors`,
/// then each `meta` pair; returns the bytes written, or `None` if `out` is too short. The
/// reader's inverse; tests and fuzzing use it to re-encode an edited manifest, which
/// postcard's varints may make longer or shorter than before.
pub fn encode_manifest<'m>(
    out: &mut [u8],
    head: &ManifestHead,
    tensors: impl IntoIterator<Item = &'m TensorEntry>,
    meta: impl IntoIterator<Item = (&'m str, &'m str)>,
) -> Option<usize> {
    let mut at = 0;
    let mut put = |v: &dyn erased::Encode| -> Option<()> {
        at += v.encode(out.get_mut(at..)?)?;
        Some(())
    };
    put(head)?;
    for e in tensors {
        put(e)?;
    }
    for kv in meta {
        put(&kv)?;
    }
    Some(at)
}

/// Postcard encoding behind one object-safe call, so `encode_manifest` writes its three
/// kinds of value with one cursor.
mod erased {
    use serde::Serialize;

    pub trait Encode {
        /// Bytes written to `out`, or `None` if it is too short.
        fn encode(&self, out: &mut [u8]) -> Option<usize>;
    }

    impl<T: Serialize> Encode for T {
        fn encode(&self, out: &mut [u8]) -> Option<usize> {
            postcard::to_slice(self, out).ok().map(|used| used.len())
        }
    }
}

/// Writes the CRC32 of everything before the last [`CRC_LEN`] bytes into those bytes, as a
/// blob ends (the writer seals a finished blob this way; tests and fuzzing reseal an edited
/// one). Too short a buffer is left alone.
pub fn seal(bytes: &mut [u8]) {
    if let Some(body) = bytes.len().checked_sub(CRC_LEN) {
        let (data, crc) = bytes.split_at_mut(body);
        crc.copy_from_slice(&crc32(data).to_le_bytes());
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib's `crc32`.
// Indices are `i < 256` and `x & 0xFF` into a 256-entry table: always in bounds.
#[allow(clippy::indexing_slicing)]
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
