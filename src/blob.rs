//! `Blob`: a model file validated once, then read in place (from flash or RAM), never copied.

use crate::error::{Error, TensorName};
use crate::format::{
    crc32, for_each_expected_in, read_u16, read_u32, tensor_count_in, Arithmetic, Config, DType, ManifestHead, Quant,
    Requant, Role, ScaleType, TensorEntry, TokenizerRef, ALIGN, CRC_LEN, FLAG_FIXED_POINT, HEADER_LEN, KNOWN_FLAGS,
    MAGIC, MAX_DIM, MAX_EXPERTS, MAX_LAYERS, MAX_META, MAX_SCALE, TOTAL_LEN_OFFSET, VERSION,
};
use crate::kernels::f16_to_f32;
use crate::tokenizer::Tokenizer;

/// Header bytes format v1 requires to be zero: the flag bits it does not define (bytes
/// 10..12 outside [`KNOWN_FLAGS`]) and the reserved field (24..32). Refusing them keeps a blob
/// that a newer packer marks with a meaning this reader does not know from being misread.
const ZERO_HEADER_BYTES: [core::ops::Range<usize>; 2] = [10..12, 24..32];

/// A validated model blob borrowing its bytes.
///
/// [`Blob::parse`] checks the magic, version, length and CRC32, decodes the manifest, and
/// checks every tensor against the config (role, order, shape, dtype, bounds, alignment), the
/// tokenizer table and the provenance strings. Afterwards nothing is decoded twice and no
/// access can fail or go out of bounds.
///
/// The bytes must start at a 4-aligned address so f32 weights can be read in place; on a
/// host read the file into a `Vec<u32>`-backed buffer, on a board link it with
/// `#[repr(align(16))]` or a linker section.
#[derive(Clone, Copy, Debug)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    head: ManifestHead,
    /// Postcard bytes of the tensor table and provenance, already validated.
    table: &'a [u8],
    /// From the header flags.
    arithmetic: Arithmetic,
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), Error> {
    postcard::take_from_bytes(bytes).map_err(|_| Error::Malformed("manifest does not decode"))
}

impl<'a> Blob<'a> {
    /// Validates `bytes` as a whole blob. Never panics; every defect is a typed [`Error`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let min = HEADER_LEN + CRC_LEN;
        if bytes.len() < min {
            return Err(Error::Truncated { needed: min, available: bytes.len() });
        }
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(Error::BadMagic);
        }
        let version = read_u16(bytes, 8);
        if version != VERSION {
            return Err(Error::UnsupportedVersion { found: version, supported: VERSION });
        }
        let total = read_u32(bytes, TOTAL_LEN_OFFSET) as usize;
        if total != bytes.len() {
            if total > bytes.len() {
                return Err(Error::Truncated { needed: total, available: bytes.len() });
            }
            return Err(Error::LengthMismatch { declared: total, actual: bytes.len() });
        }
        let body = total - CRC_LEN;
        let stored = read_u32(bytes, body);
        // `body < bytes.len()`: `bytes.len() == total >= HEADER_LEN + CRC_LEN` above.
        let Some(covered) = bytes.get(..body) else {
            return Err(Error::Truncated { needed: min, available: bytes.len() });
        };
        let computed = crc32(covered);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        // From here on the bytes are what the packer wrote; the checks below still hold
        // against a packer bug or a crafted blob with a recomputed CRC.
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            return Err(Error::BlobNotAligned);
        }
        let flags = read_u16(bytes, 10);
        let known = |offset: usize| if offset == 10 { KNOWN_FLAGS as u8 } else { 0 };
        for offset in ZERO_HEADER_BYTES.into_iter().flatten() {
            match bytes.get(offset).map(|&b| b & !known(offset)) {
                Some(0) | None => {}
                // `offset < 32`: fits a u8.
                Some(_) => {
                    let value = bytes.get(offset).copied().unwrap_or(0);
                    return Err(Error::ReservedHeaderByte { offset: offset as u8, value });
                }
            }
        }
        let manifest_len = read_u32(bytes, 12) as usize;
        let data_offset = read_u32(bytes, 16) as usize;
        if HEADER_LEN.checked_add(manifest_len).is_none_or(|end| end > data_offset)
            || data_offset > body
            || !data_offset.is_multiple_of(ALIGN)
        {
            return Err(Error::Malformed("header offsets are inconsistent"));
        }
        let manifest = bytes
            .get(HEADER_LEN..HEADER_LEN + manifest_len)
            .ok_or(Error::Malformed("header offsets are inconsistent"))?;
        let (head, table): (ManifestHead, _) = decode(manifest)?;
        check_config(&head.config)?;
        let arithmetic = if flags & FLAG_FIXED_POINT != 0 { Arithmetic::Fixed } else { Arithmetic::Float };
        let blob = Blob { bytes, head, table, arithmetic };
        blob.check_tensors(data_offset, body)?;
        if let Some(t) = head.tokenizer {
            let tokenizer = Tokenizer::new(bytes, &t, data_offset, body)?;
            // Every id the tokenizer names must have an embedding row, or a prompt it encodes
            // fails at run time (`TokenOutOfRange`) instead of here.
            if tokenizer.len() > head.config.vocab {
                return Err(Error::TokenizerLargerThanVocab { count: tokenizer.len(), vocab: head.config.vocab });
            }
        }
        if head.n_meta as usize > MAX_META {
            return Err(Error::Capacity { what: "provenance entries", needed: head.n_meta as usize, max: MAX_META });
        }
        let mut rest = blob.meta_bytes()?;
        for _ in 0..head.n_meta {
            let ((_, _), r): ((&str, &str), _) = decode(rest)?;
            rest = r;
        }
        if !rest.is_empty() {
            return Err(Error::Malformed("trailing bytes after the manifest"));
        }
        Ok(blob)
    }

    fn check_tensors(&self, data_offset: usize, body: usize) -> Result<(), Error> {
        let c = &self.head.config;
        let expected = tensor_count_in(c, self.arithmetic);
        if self.head.n_tensors as usize != expected {
            return Err(Error::TensorCount { expected, found: self.head.n_tensors as usize });
        }
        let mut rest = self.table;
        let mut index = 0;
        for_each_expected_in(c, self.arithmetic, |want| {
            let (e, r): (TensorEntry, _) = decode(rest)?;
            rest = r;
            let expected = TensorName { role: want.role, layer: want.layer, expert: want.expert };
            if e.name() != expected {
                return Err(Error::UnexpectedTensor { index, expected, found: e.name() });
            }
            if e.shape != want.shape {
                return Err(Error::ShapeMismatch {
                    role: e.role,
                    layer: e.layer,
                    expected: want.shape,
                    found: e.shape,
                });
            }
            check_entry(self.bytes, &e, data_offset, body)?;
            index += 1;
            Ok(())
        })?;
        Ok(())
    }

    /// Bytes after the tensor table: the provenance pairs.
    fn meta_bytes(&self) -> Result<&'a [u8], Error> {
        let mut rest = self.table;
        for _ in 0..self.head.n_tensors {
            let (_, r): (TensorEntry, _) = decode(rest)?;
            rest = r;
        }
        Ok(rest)
    }

    /// Float or fixed-point arithmetic ([`crate::format::FLAG_FIXED_POINT`]).
    pub fn arithmetic(&self) -> Arithmetic {
        self.arithmetic
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.head.config
    }

    /// The whole blob.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The tensor table, in canonical order (see [`crate::format::for_each_expected`]).
    pub fn tensors(&self) -> impl Iterator<Item = TensorEntry> + 'a {
        let mut rest = self.table;
        (0..self.head.n_tensors).filter_map(move |_| {
            let (e, r) = postcard::take_from_bytes::<TensorEntry>(rest).ok()?;
            rest = r;
            Some(e)
        })
    }

    /// The element bytes of a tensor (validated in bounds by `parse`).
    pub fn data(&self, e: &TensorEntry) -> &'a [u8] {
        let start = e.offset as usize;
        self.bytes.get(start..start + e.len as usize).unwrap_or(&[])
    }

    /// The scale table of a grouped-quantized tensor, as raw bytes.
    pub fn scales(&self, e: &TensorEntry) -> &'a [u8] {
        match e.quant {
            Quant::Grouped { group, scales_offset, scale_type } => {
                let n = scale_count(e.shape, group).unwrap_or(0);
                let w = scale_width(scale_type);
                let start = scales_offset as usize;
                self.bytes.get(start..start + n * w).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// The tokenizer, if the blob carries one.
    pub fn tokenizer(&self) -> Option<Tokenizer<'a>> {
        let t = self.head.tokenizer?;
        Tokenizer::new(self.bytes, &t, 0, self.bytes.len() - CRC_LEN).ok()
    }

    /// The tokenizer's location, if any.
    pub fn tokenizer_ref(&self) -> Option<TokenizerRef> {
        self.head.tokenizer
    }

    /// Provenance pairs (`source`, `packer`, quantization notes, …).
    pub fn provenance(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut rest = self.meta_bytes().unwrap_or(&[]);
        (0..self.head.n_meta).filter_map(move |_| {
            let (kv, r) = postcard::take_from_bytes::<(&str, &str)>(rest).ok()?;
            rest = r;
            Some(kv)
        })
    }
}

fn scale_width(t: ScaleType) -> usize {
    match t {
        ScaleType::F32 => 4,
        ScaleType::F16 => 2,
        ScaleType::Requant => 4,
    }
}

fn scale_count(shape: [u32; 2], group: u32) -> Option<usize> {
    if group == 0 {
        return None;
    }
    let per_row = (shape[1] as usize).div_ceil(group as usize);
    per_row.checked_mul(shape[0] as usize)
}

/// Whether `v` may be an entry of a scale table: a number in `(0, MAX_SCALE]` (NaN, a
/// negative sign, which flips every weight of a group, and zero, which erases one, are
/// damage: the packer writes 1 for a group of zeros). Subnormal entries are legitimate:
/// the packer may write an f16 subnormal scale for a group of tiny weights.
fn table_scale_ok(v: f32) -> bool {
    v > 0.0 && v <= MAX_SCALE
}

/// Refuses a scale table holding an entry [`table_scale_ok`] refuses.
fn check_scale_table(table: &[u8], scale_type: ScaleType, tensor: TensorName) -> Result<(), Error> {
    if scale_type == ScaleType::Requant {
        for (i, raw) in table.chunks_exact(4).enumerate() {
            let r = Requant::from_bits(read_u32(raw, 0));
            if !r.is_valid() {
                let why = if r.multiplier == 0 { "has a zero multiplier" } else { "has a shift above 62" };
                return Err(Error::BadFixedPoint { tensor, index: i as u32, why });
            }
        }
        return Ok(());
    }
    let width = scale_width(scale_type);
    for (i, raw) in table.chunks_exact(width).enumerate() {
        let value = match (scale_type, raw) {
            (ScaleType::F16, &[a, b]) => f16_to_f32(half::f16::from_bits(u16::from_le_bytes([a, b]))),
            (ScaleType::F32, &[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
            _ => f32::NAN,
        };
        if !table_scale_ok(value) {
            return Err(Error::BadScale { tensor, index: Some(i as u32), value });
        }
    }
    Ok(())
}

fn check_entry(bytes: &[u8], e: &TensorEntry, data_offset: usize, body: usize) -> Result<(), Error> {
    let bad = |why| Error::BadTensor { role: e.role, layer: e.layer, why };
    let n = (e.shape[0] as usize).checked_mul(e.shape[1] as usize).ok_or(bad("element count overflows"))?;
    let start = e.offset as usize;
    let len = e.len as usize;
    if !start.is_multiple_of(ALIGN) {
        return Err(bad("data is not 16-byte aligned"));
    }
    if start < data_offset || start.checked_add(len).is_none_or(|end| end > body) {
        return Err(bad("data lies outside the data section"));
    }
    // Int4 rows are packed independently (each starts on a byte): `rows * ceil(cols / 2)`.
    let expected_len = match e.dtype {
        DType::I4 => (e.shape[0] as usize).checked_mul((e.shape[1] as usize).div_ceil(2)),
        d => d.bytes_for(n),
    };
    if expected_len != Some(len) {
        return Err(bad("data length does not match shape and dtype"));
    }
    match (e.dtype, e.quant) {
        (DType::F32 | DType::F16, Quant::None) => Ok(()),
        (DType::Q16, Quant::None) if is_table(e.role) => {
            // Q30 samples of functions within 0..=1 (sigmoid, Phi, 2^-x) or 0..=ln 2
            // (softplus): the interpolation's integer arithmetic assumes that range.
            let data = bytes.get(start..start + len).unwrap_or(&[]);
            match data.chunks_exact(4).position(|v| !(0..=1 << 30).contains(&(read_u32(v, 0) as i32))) {
                Some(i) => {
                    Err(Error::BadFixedPoint { tensor: e.name(), index: i as u32, why: "lies outside 0..=2^30" })
                }
                None => Ok(()),
            }
        }
        (DType::Q16, Quant::None) => Ok(()),
        (DType::I8, Quant::Grouped { group, scale_type: ScaleType::Requant, .. }) if group != e.shape[1] => {
            Err(bad("integer requantization is per row: its group must equal the row length"))
        }
        (dtype @ (DType::I8 | DType::I4), Quant::PerTensor { scale, zero_point }) => {
            // I8: qint8's range, with which `q - zero_point` lies in -255..=255 and the
            // kernels' arithmetic cannot overflow (`Weights::I8Affine` holds an i8). I4 (int4
            // as published) is symmetric: its zero point is 0.
            if dtype == DType::I4 && zero_point != 0 {
                return Err(bad("int4 with one scale per tensor is symmetric: its zero point must be 0"));
            }
            if i8::try_from(zero_point).is_err() {
                return Err(Error::ZeroPointOutOfRange { tensor: e.name(), zero_point });
            }
            // One scale for the whole tensor: zero or subnormal would flush every weight to
            // (nearly) zero, which no quantizer writes for a real tensor.
            if !(scale.is_normal() && scale > 0.0 && scale <= MAX_SCALE) {
                return Err(Error::BadScale { tensor: e.name(), index: None, value: scale });
            }
            Ok(())
        }
        (DType::I8 | DType::I4, Quant::Grouped { group, scales_offset, scale_type }) => {
            let count = scale_count(e.shape, group).ok_or(bad("quantization group is zero"))?;
            let s = scales_offset as usize;
            let len = count.checked_mul(scale_width(scale_type)).ok_or(bad("scale table overflows"))?;
            if !s.is_multiple_of(4) || s < data_offset || s.checked_add(len).is_none_or(|end| end > body) {
                return Err(bad("scale table is misaligned or outside the data section"));
            }
            let table = bytes.get(s..s + len).ok_or(bad("scale table is misaligned or outside the data section"))?;
            check_scale_table(table, scale_type, e.name())
        }
        _ => Err(bad("dtype and quantization parameters do not go together")),
    }
}

/// Whether `role` is one of a fixed-point blob's activation tables.
fn is_table(role: Role) -> bool {
    matches!(role, Role::SigmoidTable | Role::GeluTable | Role::SoftplusTable | Role::Exp2Table)
}

/// Rejects configs the core cannot run, before any size is computed from them.
fn check_config(c: &Config) -> Result<(), Error> {
    let inv = Error::InvalidConfig;
    if c.vocab == 0 || c.d_model == 0 || c.d_inner == 0 || c.d_state == 0 || c.conv_kernel == 0 || c.max_seq == 0 {
        return Err(inv("a dimension is zero"));
    }
    if !(2..=16).contains(&c.conv_kernel) {
        return Err(inv("conv kernel must be between 2 and 16"));
    }
    if c.n_layers == 0 {
        return Err(inv("the model has no layers"));
    }
    if c.n_layers as usize > MAX_LAYERS {
        return Err(Error::Capacity { what: "layers", needed: c.n_layers as usize, max: MAX_LAYERS });
    }
    // `checked_shr`: with 32 layers every bit may be set (a plain shift by 32 overflows;
    // found by fuzzing).
    if c.moe_layers.checked_shr(c.n_layers).unwrap_or(0) != 0 {
        return Err(inv("a MoE flag names a layer past the last"));
    }
    let any_moe = c.moe_layers != 0;
    let any_ffn = (0..c.n_layers).any(|l| !c.is_moe(l));
    if any_moe {
        if c.n_experts == 0 {
            let layer = (0..c.n_layers).find(|&l| c.is_moe(l)).unwrap_or(0);
            return Err(Error::EmptyMoe { layer });
        }
        if c.n_experts as usize > MAX_EXPERTS {
            return Err(Error::Capacity { what: "experts per layer", needed: c.n_experts as usize, max: MAX_EXPERTS });
        }
        if c.top_k == 0 || c.top_k > c.n_experts {
            return Err(Error::TopKOutOfRange { top_k: c.top_k, n_experts: c.n_experts });
        }
        if c.expert_hidden == 0 {
            return Err(inv("experts have zero width"));
        }
    }
    if any_ffn && c.ffn_hidden == 0 {
        return Err(inv("FFN layers have zero width"));
    }
    if !(c.norm_eps.is_finite() && c.norm_eps > 0.0) {
        return Err(inv("LayerNorm epsilon must be finite and positive"));
    }
    // Every size the core computes is a product of two of these; keep each below 2^24 so
    // no product of two overflows a u64 and every tensor fits a u32 length.
    for v in [c.vocab, c.d_model, c.d_inner, c.d_state, c.conv_kernel, c.max_seq, c.ffn_hidden, c.expert_hidden] {
        if v >= MAX_DIM {
            return Err(inv("a dimension exceeds 2^24"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n_layers: u32, moe_layers: u32) -> Config {
        Config {
            vocab: 8,
            d_model: 4,
            n_layers,
            d_inner: 4,
            d_state: 2,
            conv_kernel: 4,
            max_seq: 4,
            ffn_hidden: 4,
            n_experts: 2,
            expert_hidden: 4,
            top_k: 1,
            moe_layers,
            norm_eps: 1e-5,
            tied_lm_head: true,
        }
    }

    #[test]
    fn moe_flags_are_checked_against_the_layer_count_without_overflow() {
        // 32 layers, all MoE: the shift by 32 once overflowed (found by fuzzing).
        assert_eq!(check_config(&config(32, u32::MAX)), Ok(()));
        assert_eq!(check_config(&config(3, 0b010)), Ok(()));
        assert!(matches!(check_config(&config(3, 0b1000)), Err(Error::InvalidConfig(_))));
        assert!(matches!(check_config(&config(33, 0)), Err(Error::Capacity { .. })));
    }
}
