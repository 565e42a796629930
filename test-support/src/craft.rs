//! Blobs crafted past the packer's own checks, as an attacker or a buggy packer would write
//! them: a packed blob's manifest decoded, edited, re-encoded (the data section moved when
//! the manifest outgrows its padding) and resealed, or its bytes edited and resealed.
//!
//! The core's tests and the hostile-input suite (`host-sim/tests/hostile/blobs.rs`) craft
//! blobs this one way.

use itera_edge::format::{encode_manifest, seal, ManifestHead, Quant, Role, TensorEntry, ALIGN, CRC_LEN, HEADER_LEN};
use itera_edge::Blob;
use itera_pack::convert::PackOptions;
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::tiny_config;
use itera_pack::writer::{BlobBuilder, Payload, TokenizerTable};
use itera_pack::AlignedBytes;

/// How the tiny model's matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Per-tensor affine int8 (`Quant::PerTensor`, zero point 0), as `--quant keep` writes a
    /// PyTorch `qint8` tensor.
    Affine,
    /// Int8 with one f16 scale per row (`--quant int8`).
    Int8F16,
    /// Int4 with f16 scales per 32 (`--quant int4`).
    Int4F16,
    /// Int8 with one f32 scale per row, as `--quant keep` writes a symmetric `qint8`.
    Int8F32,
    /// A fixed-point blob (`--quant integer`): int8 rows with integer requantization, Q16
    /// vectors, activation tables.
    Integer,
}

/// Matrices the core computes with in any dtype (the rest stay f32).
pub fn is_matrix(role: Role) -> bool {
    use Role::*;
    matches!(
        role,
        Embedding
            | Position
            | InProj
            | B
            | C
            | DeltaProj
            | OutProj
            | FfnW1
            | FfnW2
            | Gate
            | ExpertW1
            | ExpertW2
            | LmHead
    )
}

/// The tiny synthetic model (seed 1) packed with its matrices stored as `storage`, with an
/// optional tokenizer; the packer's own output, so it parses.
pub fn tiny(storage: Storage, tokenizer: Option<TokenizerTable>) -> Vec<u8> {
    let spec = match storage {
        Storage::Int8F16 => "int8",
        Storage::Int4F16 => "int4",
        Storage::Integer => "integer",
        Storage::Affine | Storage::Int8F32 => "f32",
    };
    let quant = QuantPolicy::parse_spec(spec).expect("a preset");
    let opts = PackOptions { quant, tokenizer, ..PackOptions::default() };
    let mut b: BlobBuilder = crate::builder(&tiny_config(), 1, &opts);
    if matches!(storage, Storage::Affine | Storage::Int8F32) {
        for t in b.tensors.iter_mut().filter(|t| is_matrix(t.role)) {
            let Payload::F32(w) = &t.payload else { continue };
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            let scale = amax / 127.0;
            let q: Vec<i8> = w.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8).collect();
            t.payload = match storage {
                Storage::Affine => Payload::I8PerTensor { q, scale, zero_point: 0 },
                _ => Payload::I8Grouped {
                    q,
                    group: t.shape[1],
                    scales: vec![scale; t.shape[0] as usize],
                    f16_scales: false,
                },
            };
        }
    }
    b.finish().expect("the tiny model packs")
}

/// A word-level tokenizer naming `count` ids (`<unk>` = 0, then `w1`, `w2`, ...).
pub fn words(count: u32) -> TokenizerTable {
    let tokens = (0..count).map(|i| if i == 0 { "<unk>".to_string() } else { format!("w{i}") }).collect();
    TokenizerTable { kind: itera_edge::format::TokenizerKind::Word, unk_id: 0, tokens }
}

/// A blob's manifest, decoded from a blob that parses.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The fixed part (its counts are rewritten from the lists below when encoded).
    pub head: ManifestHead,
    /// The tensor table.
    pub tensors: Vec<TensorEntry>,
    /// Provenance pairs.
    pub meta: Vec<(String, String)>,
}

impl Manifest {
    /// The manifest of `bytes`, which must parse.
    pub fn of(bytes: &[u8]) -> Manifest {
        let aligned = AlignedBytes::from(bytes);
        let blob = Blob::parse(&aligned).expect("the blob to edit parses");
        let tensors: Vec<TensorEntry> = blob.tensors().collect();
        let meta = blob.provenance().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let head = ManifestHead {
            config: *blob.config(),
            n_tensors: tensors.len() as u32,
            tokenizer: blob.tokenizer_ref(),
            n_meta: meta.len() as u32,
        };
        Manifest { head, tensors, meta }
    }

    /// The first entry of `role` in `layer`.
    pub fn tensor_mut(&mut self, role: Role, layer: u16) -> &mut TensorEntry {
        self.tensors.iter_mut().find(|e| e.role == role && e.layer == layer).expect("the tensor")
    }

    /// Every entry quantized per tensor.
    pub fn per_tensor(&self) -> impl Iterator<Item = &TensorEntry> {
        self.tensors.iter().filter(|e| matches!(e.quant, Quant::PerTensor { .. }))
    }

    /// Every entry with a scale table.
    pub fn grouped(&self) -> impl Iterator<Item = &TensorEntry> {
        self.tensors.iter().filter(|e| matches!(e.quant, Quant::Grouped { .. }))
    }

    fn encode(&self, shift: u32) -> Vec<u8> {
        let moved = |o: u32| o + shift;
        let mut head = self.head;
        head.n_tensors = self.tensors.len() as u32;
        head.n_meta = self.meta.len() as u32;
        if let Some(t) = head.tokenizer.as_mut() {
            t.offset = moved(t.offset);
        }
        let tensors: Vec<TensorEntry> = self
            .tensors
            .iter()
            .map(|e| {
                let mut e = *e;
                e.offset = moved(e.offset);
                if let Quant::Grouped { scales_offset, .. } = &mut e.quant {
                    *scales_offset = moved(*scales_offset);
                }
                e
            })
            .collect();
        let mut out = vec![0u8; 1 << 20];
        let meta = self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let n = encode_manifest(&mut out, &head, &tensors, meta).expect("a manifest under 1 MiB");
        out.truncate(n);
        out
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `bytes` with its manifest edited by `edit`, re-encoded and resealed. Offsets in the table
/// are absolute, so when the new manifest outgrows the padding before the data section, the
/// data section moves by a multiple of 16 and every offset with it.
pub fn edit_manifest(bytes: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let mut m = Manifest::of(bytes);
    edit(&mut m);
    let data_offset = read_u32(bytes, 16) as usize;
    let body = bytes.len() - CRC_LEN;
    let mut shift = 0;
    let manifest = loop {
        let enc = m.encode(shift as u32);
        if HEADER_LEN + enc.len() <= data_offset + shift {
            break enc;
        }
        shift += ALIGN;
    };
    let new_offset = data_offset + shift;
    let mut out = bytes[..HEADER_LEN].to_vec();
    out.extend_from_slice(&manifest);
    out.resize(new_offset, 0);
    out.extend_from_slice(&bytes[data_offset..body]);
    out.extend_from_slice(&[0; CRC_LEN]);
    let total = out.len() as u32;
    out[12..16].copy_from_slice(&(manifest.len() as u32).to_le_bytes());
    out[16..20].copy_from_slice(&(new_offset as u32).to_le_bytes());
    out[20..24].copy_from_slice(&total.to_le_bytes());
    seal(&mut out);
    out
}

/// `bytes` edited by `edit` in place, then resealed (a deliberate edit, not damage).
pub fn edit_bytes(bytes: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut out = bytes.to_vec();
    edit(&mut out);
    seal(&mut out);
    out
}

/// Where entry `e`'s scale `index` lies in the blob, and its width in bytes.
pub fn scale_at(e: &TensorEntry, index: usize) -> (usize, usize) {
    match e.quant {
        Quant::Grouped { scales_offset, scale_type, .. } => {
            let w = match scale_type {
                itera_edge::format::ScaleType::F16 => 2,
                itera_edge::format::ScaleType::F32 | itera_edge::format::ScaleType::Requant => 4,
            };
            (scales_offset as usize + index * w, w)
        }
        _ => panic!("{:?} has no scale table", e.role),
    }
}

/// Scales in entry `e`'s table.
pub fn scale_count(e: &TensorEntry) -> usize {
    match e.quant {
        Quant::Grouped { group, .. } => e.shape[0] as usize * (e.shape[1] as usize).div_ceil(group as usize),
        _ => 0,
    }
}

/// `bytes` with a tokenizer table of `tokens` (unknown id `unk_id`) appended to its data
/// section and referenced by the manifest in place of any other, whatever the model's
/// vocab: the packer may refuse to write such a table, a crafted blob still can.
pub fn with_tokenizer(bytes: &[u8], unk_id: u32, tokens: &[String]) -> Vec<u8> {
    let body = bytes.len() - CRC_LEN;
    let mut out = bytes[..body].to_vec();
    out.resize(body.next_multiple_of(4), 0);
    let offset = out.len() as u32;
    let mut end = 0u32;
    out.extend_from_slice(&0u32.to_le_bytes());
    for t in tokens {
        end += t.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for t in tokens {
        out.extend_from_slice(t.as_bytes());
    }
    let len = out.len() as u32 - offset;
    out.extend_from_slice(&[0; CRC_LEN]);
    let total = out.len() as u32;
    out[20..24].copy_from_slice(&total.to_le_bytes());
    seal(&mut out);
    edit_manifest(&out, |m| {
        let kind = itera_edge::format::TokenizerKind::Word;
        let count = tokens.len() as u32;
        m.head.tokenizer = Some(itera_edge::format::TokenizerRef { kind, unk_id, count, offset, len });
    })
}
