//! What a blob holds, for people (`itera-pack inspect`) and machines (`--json`).

use itera_edge::{Blob, Model};
use serde::Serialize;

/// One tensor row of the report.
#[derive(Serialize, Debug)]
pub struct TensorRow {
    /// Role name.
    pub role: String,
    /// Layer.
    pub layer: u16,
    /// Expert.
    pub expert: u16,
    /// Dtype name.
    pub dtype: String,
    /// `[rows, cols]`.
    pub shape: [u32; 2],
    /// Offset in the blob.
    pub offset: u32,
    /// Bytes.
    pub bytes: u32,
    /// Shares its bytes with an earlier tensor (tied).
    pub shared: bool,
}

/// Everything `inspect` prints.
#[derive(Serialize, Debug)]
pub struct Report {
    /// Blob size in bytes.
    pub blob_bytes: usize,
    /// Bytes of unique tensor data.
    pub weight_bytes: u64,
    /// Exact arena bytes a session needs.
    pub arena_bytes: usize,
    /// Multiply-accumulates per token.
    pub macs_per_token: usize,
    /// Hyper-parameters.
    pub config: serde_json::Value,
    /// Tokenizer summary, if any.
    pub tokenizer: Option<String>,
    /// Provenance pairs.
    pub provenance: Vec<(String, String)>,
    /// Tensor table.
    pub tensors: Vec<TensorRow>,
}

/// Parses `bytes` (4-aligned) and describes them.
pub fn report(bytes: &[u8]) -> Result<Report, itera_edge::Error> {
    let blob = Blob::parse(bytes)?;
    let model = Model::new(&blob);
    let mut seen = std::collections::BTreeSet::new();
    let mut weight_bytes = 0u64;
    let tensors = blob
        .tensors()
        .map(|e| {
            let shared = !seen.insert(e.offset);
            if !shared {
                weight_bytes += e.len as u64;
            }
            TensorRow {
                role: format!("{:?}", e.role),
                layer: e.layer,
                expert: e.expert,
                dtype: format!("{:?}", e.dtype),
                shape: e.shape,
                offset: e.offset,
                bytes: e.len,
                shared,
            }
        })
        .collect();
    let c = blob.config();
    let config = serde_json::json!({
        "vocab": c.vocab, "d_model": c.d_model, "n_layers": c.n_layers, "d_inner": c.d_inner,
        "d_state": c.d_state, "conv_kernel": c.conv_kernel, "max_seq": c.max_seq,
        "ffn_hidden": c.ffn_hidden, "n_experts": c.n_experts, "expert_hidden": c.expert_hidden,
        "top_k": c.top_k, "moe_layers": (0..c.n_layers).filter(|&l| c.is_moe(l)).collect::<Vec<_>>(),
        "norm_eps": c.norm_eps, "tied_lm_head": c.tied_lm_head,
    });
    Ok(Report {
        blob_bytes: bytes.len(),
        weight_bytes,
        arena_bytes: model.as_ref().map_or(0, Model::arena_bytes),
        macs_per_token: model.as_ref().map_or(0, Model::macs_per_token),
        config,
        tokenizer: blob.tokenizer().map(|t| format!("{:?}, {} ids, unk id {}", t.kind(), t.len(), t.unk_id())),
        provenance: blob.provenance().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        tensors,
    })
}

/// Human-readable rendering of a report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "blob:   {} bytes ({} bytes of weights)", r.blob_bytes, r.weight_bytes);
    let _ = writeln!(s, "arena:  {} bytes per session", r.arena_bytes);
    let _ = writeln!(s, "macs:   {} per token", r.macs_per_token);
    let _ = writeln!(s, "config: {}", r.config);
    let _ = writeln!(s, "tokenizer: {}", r.tokenizer.as_deref().unwrap_or("none"));
    for (k, v) in &r.provenance {
        let _ = writeln!(s, "  {k}: {v}");
    }
    let _ = writeln!(
        s,
        "{:<16} {:>5} {:>6} {:>5} {:>14} {:>10} {:>10}",
        "role", "layer", "expert", "dtype", "shape", "offset", "bytes"
    );
    for t in &r.tensors {
        let shape = format!("{}x{}", t.shape[0], t.shape[1]);
        let bytes = if t.shared { "(tied)".to_string() } else { t.bytes.to_string() };
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>6} {:>5} {:>14} {:>10} {:>10}",
            t.role, t.layer, t.expert, t.dtype, shape, t.offset, bytes
        );
    }
    s
}

/// Reads a file into a 4-aligned buffer, so f32 weights can be viewed in place.
pub fn read_aligned(path: &std::path::Path) -> std::io::Result<AlignedBytes> {
    Ok(AlignedBytes::from(std::fs::read(path)?.as_slice()))
}

/// Bytes in a `u32`-backed (hence 4-aligned) buffer.
pub struct AlignedBytes {
    words: Vec<u32>,
    len: usize,
}

impl From<&[u8]> for AlignedBytes {
    fn from(b: &[u8]) -> Self {
        let mut words = vec![0u32; b.len().div_ceil(4)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        bytes[..b.len()].copy_from_slice(b);
        AlignedBytes { words, len: b.len() }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}

impl std::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<u32, u8>(&mut self.words)[..len]
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}
