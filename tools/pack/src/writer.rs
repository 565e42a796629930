//! Writes blob format v1 (see `docs/FORMAT.md`): header, postcard manifest, 16-aligned
//! tensor data, optional tokenizer table, CRC32.

use half::f16;
use itera_edge::format::{
    seal, Config, DType, ManifestHead, Quant, Role, ScaleType, TensorEntry, TokenizerKind, TokenizerRef, ALIGN,
    CRC_LEN, HEADER_LEN, MAGIC, VERSION,
};

/// A tensor's bytes as they go into the blob.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Row-major f32 elements.
    F32(Vec<f32>),
    /// Row-major f16 elements (computed in f32).
    F16(Vec<f16>),
    /// Row-major symmetric int8 with one f32 scale per `group` elements of a row
    /// (`group == cols`: per row): `value = q * scales[row * groups_per_row + col / group]`.
    I8Grouped {
        /// Elements.
        q: Vec<i8>,
        /// Elements per scale.
        group: u32,
        /// Scales, `rows * ceil(cols / group)`.
        scales: Vec<f32>,
        /// Store the scales as f16 (each must be exactly representable: round first).
        f16_scales: bool,
    },
    /// Row-major int8 with one affine pair (PyTorch per-tensor affine, kept exactly):
    /// `value = (q - zero_point) * scale`.
    I8PerTensor {
        /// Elements.
        q: Vec<i8>,
        /// Scale.
        scale: f32,
        /// Zero point.
        zero_point: i32,
    },
    /// Row-major int4 in -8..=7 with one f32 scale for the whole tensor (int4 as a
    /// fake-quantized checkpoint publishes it, kept exactly; computed weight-only):
    /// `value = q * scale`. Packed as [`Payload::I4Grouped`].
    I4PerTensor {
        /// Elements, each in -8..=7.
        q: Vec<i8>,
        /// Scale.
        scale: f32,
    },
    /// Row-major int4 in -8..=7 (one value per `i8` here; packed two per byte, low nibble
    /// first, when written), one f16 scale per `group` elements of a row.
    I4Grouped {
        /// Elements, each in -8..=7.
        q: Vec<i8>,
        /// Elements per scale.
        group: u32,
        /// Scales, `rows * ceil(cols / group)`.
        scales: Vec<f16>,
    },
    /// Row-major symmetric int8 with one integer requantization per row (fixed-point blobs):
    /// `value = q · 127 · multiplier · 2^-shift`, each row's entry `Requant::to_bits`.
    I8Requant {
        /// Elements.
        q: Vec<i8>,
        /// One entry per row.
        requant: Vec<u32>,
    },
    /// Q16 fixed-point values (fixed-point blobs' vectors; its tables, Q30, in the same
    /// storage).
    Q16(Vec<i32>),
    /// The same bytes as an earlier tensor (index into the builder's list): a tied `lm_head`.
    SameAs(usize),
}

impl Payload {
    /// Dtype, element bytes, and scale-table bytes (empty if none) as written.
    fn encode(&self, cols: usize) -> Option<(DType, Vec<u8>, Vec<u8>, Quant)> {
        let none = Quant::None;
        Some(match self {
            Payload::F32(v) => (DType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect(), Vec::new(), none),
            Payload::F16(v) => (DType::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect(), Vec::new(), none),
            Payload::I8Grouped { q, group, scales, f16_scales } => {
                let (s, scale_type) = if *f16_scales {
                    (scales.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(), ScaleType::F16)
                } else {
                    (scales.iter().flat_map(|x| x.to_le_bytes()).collect(), ScaleType::F32)
                };
                let quant = Quant::Grouped { group: *group, scales_offset: 0, scale_type };
                (DType::I8, q.iter().map(|&x| x as u8).collect(), s, quant)
            }
            Payload::I8PerTensor { q, scale, zero_point } => {
                let quant = Quant::PerTensor { scale: *scale, zero_point: *zero_point };
                (DType::I8, q.iter().map(|&x| x as u8).collect(), Vec::new(), quant)
            }
            Payload::I4PerTensor { q, scale } => {
                (DType::I4, pack_int4(q, cols), Vec::new(), Quant::PerTensor { scale: *scale, zero_point: 0 })
            }
            Payload::I4Grouped { q, group, scales } => {
                let s = scales.iter().flat_map(|x| x.to_le_bytes()).collect();
                let quant = Quant::Grouped { group: *group, scales_offset: 0, scale_type: ScaleType::F16 };
                (DType::I4, pack_int4(q, cols), s, quant)
            }
            Payload::I8Requant { q, requant } => {
                let quant = Quant::Grouped { group: cols as u32, scales_offset: 0, scale_type: ScaleType::Requant };
                let r = requant.iter().flat_map(|x| x.to_le_bytes()).collect();
                (DType::I8, q.iter().map(|&x| x as u8).collect(), r, quant)
            }
            Payload::Q16(v) => (DType::Q16, v.iter().flat_map(|x| x.to_le_bytes()).collect(), Vec::new(), none),
            Payload::SameAs(_) => return None,
        })
    }
}

/// Int4 values two per byte, low nibble first, each row packed on its own so that every row
/// starts on a byte (cols is even for every Itera-Lite matrix; an odd row ends in a zero high
/// nibble).
fn pack_int4(q: &[i8], cols: usize) -> Vec<u8> {
    if cols == 0 {
        return Vec::new();
    }
    q.chunks(cols)
        .flat_map(|row| row.chunks(2).map(|p| (p[0] as u8 & 0x0F) | ((*p.get(1).unwrap_or(&0) as u8) << 4)))
        .collect()
}

/// One tensor to write.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingTensor {
    /// Role.
    pub role: Role,
    /// Layer.
    pub layer: u16,
    /// Expert.
    pub expert: u16,
    /// `[rows, cols]`.
    pub shape: [u32; 2],
    /// Data.
    pub payload: Payload,
}

/// A tokenizer table: `tokens[id]` is the id's text (empty: unnamed).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerTable {
    /// Word or char level.
    pub kind: TokenizerKind,
    /// Id of the unknown token.
    pub unk_id: u32,
    /// Text per id.
    pub tokens: Vec<String>,
}

/// Everything a blob holds, before layout.
#[derive(Clone, Debug, Default)]
pub struct BlobBuilder {
    /// Hyper-parameters (required).
    pub config: Option<Config>,
    /// Tensors in canonical order.
    pub tensors: Vec<PendingTensor>,
    /// Optional tokenizer.
    pub tokenizer: Option<TokenizerTable>,
    /// Provenance pairs.
    pub meta: Vec<(String, String)>,
    /// Header flags (`itera_edge::format::FLAG_FIXED_POINT`).
    pub flags: u16,
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Where each piece of data lands, for a given start of the data section.
struct Layout {
    entries: Vec<TensorEntry>,
    tokenizer: Option<TokenizerRef>,
    end: usize,
}

impl BlobBuilder {
    fn tokenizer_bytes(&self) -> Option<Vec<u8>> {
        let t = self.tokenizer.as_ref()?;
        let mut ends = vec![0u32];
        let mut strings = Vec::new();
        for s in &t.tokens {
            strings.extend_from_slice(s.as_bytes());
            ends.push(strings.len() as u32);
        }
        let mut out: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
        out.extend_from_slice(&strings);
        Some(out)
    }

    fn layout(&self, data_offset: usize, tokenizer_len: Option<usize>) -> anyhow::Result<Layout> {
        let mut at = data_offset;
        let mut entries: Vec<TensorEntry> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let entry = match &t.payload {
                Payload::SameAs(i) => {
                    let e = entries.get(*i).ok_or_else(|| anyhow::anyhow!("tied tensor points forward"))?;
                    TensorEntry { role: t.role, layer: t.layer, expert: t.expert, shape: t.shape, ..*e }
                }
                p => {
                    let (dtype, data, scales, mut quant) =
                        p.encode(t.shape[1] as usize).ok_or_else(|| anyhow::anyhow!("unencodable tensor"))?;
                    let offset = at as u32;
                    at = align(at + data.len(), ALIGN);
                    if let Quant::Grouped { scales_offset, .. } = &mut quant {
                        *scales_offset = at as u32;
                        at = align(at + scales.len(), ALIGN);
                    }
                    TensorEntry {
                        role: t.role,
                        layer: t.layer,
                        expert: t.expert,
                        dtype,
                        shape: t.shape,
                        offset,
                        len: data.len() as u32,
                        quant,
                    }
                }
            };
            entries.push(entry);
        }
        let tokenizer = match (&self.tokenizer, tokenizer_len) {
            (Some(t), Some(len)) => {
                let r = TokenizerRef {
                    kind: t.kind,
                    unk_id: t.unk_id,
                    count: t.tokens.len() as u32,
                    offset: at as u32,
                    len: len as u32,
                };
                at = align(at + len, ALIGN);
                Some(r)
            }
            _ => None,
        };
        Ok(Layout { entries, tokenizer, end: at })
    }

    fn manifest(&self, config: &Config, layout: &Layout) -> anyhow::Result<Vec<u8>> {
        let head = ManifestHead {
            config: *config,
            n_tensors: layout.entries.len() as u32,
            tokenizer: layout.tokenizer,
            n_meta: self.meta.len() as u32,
        };
        let mut out = postcard::to_allocvec(&head)?;
        for e in &layout.entries {
            out.extend(postcard::to_allocvec(e)?);
        }
        for (k, v) in &self.meta {
            out.extend(postcard::to_allocvec(&(k.as_str(), v.as_str()))?);
        }
        Ok(out)
    }

    /// Lays out and serialises the blob.
    pub fn finish(&self) -> anyhow::Result<Vec<u8>> {
        let config = self.config.ok_or_else(|| anyhow::anyhow!("blob has no config"))?;
        let tok = self.tokenizer_bytes();
        // The manifest holds data offsets, which depend on the manifest's length: grow the
        // data offset until the manifest encoded with it fits in front of it.
        let mut data_offset = align(HEADER_LEN, ALIGN);
        let (layout, manifest) = loop {
            let layout = self.layout(data_offset, tok.as_ref().map(Vec::len))?;
            let manifest = self.manifest(&config, &layout)?;
            let needed = align(HEADER_LEN + manifest.len(), ALIGN);
            if needed <= data_offset {
                break (layout, manifest);
            }
            data_offset = needed;
        };
        let total = layout.end + CRC_LEN;
        anyhow::ensure!(total <= u32::MAX as usize, "blob would exceed 4 GiB");
        let mut out = vec![0u8; total];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&(manifest.len() as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(data_offset as u32).to_le_bytes());
        out[20..24].copy_from_slice(&(total as u32).to_le_bytes());
        out[HEADER_LEN..HEADER_LEN + manifest.len()].copy_from_slice(&manifest);
        for (t, e) in self.tensors.iter().zip(&layout.entries) {
            if let Some((_, data, scales, _)) = t.payload.encode(t.shape[1] as usize) {
                out[e.offset as usize..e.offset as usize + data.len()].copy_from_slice(&data);
                if let Quant::Grouped { scales_offset, .. } = e.quant {
                    out[scales_offset as usize..scales_offset as usize + scales.len()].copy_from_slice(&scales);
                }
            }
        }
        if let (Some(r), Some(bytes)) = (layout.tokenizer, tok) {
            out[r.offset as usize..r.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        seal(&mut out);
        Ok(out)
    }
}
