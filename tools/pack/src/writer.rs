//! Writes blob format v1 (see `docs/FORMAT.md`): header, postcard manifest, 64-aligned
//! tensor data, optional tokenizer table, CRC32.

use itera_edge::format::{
    crc32, Config, DType, ManifestHead, Quant, Role, TensorEntry, TokenizerKind, TokenizerRef, ALIGN, CRC_LEN,
    HEADER_LEN, MAGIC, VERSION,
};

/// A tensor's bytes as they go into the blob.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Row-major f32 elements.
    F32(Vec<f32>),
    /// The same bytes as an earlier tensor (index into the builder's list): a tied `lm_head`.
    SameAs(usize),
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
            let (offset, len) = match &t.payload {
                Payload::F32(v) => {
                    let offset = at;
                    at = align(at + v.len() * 4, ALIGN);
                    (offset as u32, (v.len() * 4) as u32)
                }
                Payload::SameAs(i) => {
                    let e = entries.get(*i).ok_or_else(|| anyhow::anyhow!("tied tensor points forward"))?;
                    (e.offset, e.len)
                }
            };
            entries.push(TensorEntry {
                role: t.role,
                layer: t.layer,
                expert: t.expert,
                dtype: DType::F32,
                shape: t.shape,
                offset,
                len,
                quant: Quant::None,
            });
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
        out[12..16].copy_from_slice(&(manifest.len() as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(data_offset as u32).to_le_bytes());
        out[20..24].copy_from_slice(&(total as u32).to_le_bytes());
        out[HEADER_LEN..HEADER_LEN + manifest.len()].copy_from_slice(&manifest);
        for (t, e) in self.tensors.iter().zip(&layout.entries) {
            if let Payload::F32(v) = &t.payload {
                let dst = &mut out[e.offset as usize..(e.offset + e.len) as usize];
                for (d, x) in dst.chunks_exact_mut(4).zip(v) {
                    d.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        if let (Some(r), Some(bytes)) = (layout.tokenizer, tok) {
            out[r.offset as usize..r.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        let crc = crc32(&out[..total - CRC_LEN]);
        out[total - CRC_LEN..].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}
