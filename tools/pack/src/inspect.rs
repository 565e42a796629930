//! What a blob holds, for people (`itera-pack inspect`) and machines (`--json`).

use std::collections::BTreeMap;

use itera_edge::format::{DType, Expected, Quant};
use itera_edge::{Blob, Model};
use serde::{Serialize, Serializer};

use crate::convert::checkpoint_name;
use crate::quant::parse_sqnr_meta;
use crate::untrusted::shown;
use crate::AlignedBytes;

/// A number where JSON has one: an infinite SQNR (exact values) is `null`, and
/// [`TensorRow::exact`] says which it was.
fn ser_db<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(db) if db.is_finite() => s.serialize_f64(*db),
        _ => s.serialize_none(),
    }
}

/// The dtype as the table shows it: int4 names its group when it is not the default 32
/// (`I4g8`: an f16 scale per 8 values, `--quant` dtype `int4g8`), so two int4 tensors of
/// different precision do not read the same.
fn dtype_name(dtype: DType, quant: Quant) -> String {
    match (dtype, quant) {
        (DType::I4, Quant::Grouped { group, .. }) if group != crate::quant::INT4_GROUP as u32 => format!("I4g{group}"),
        _ => format!("{dtype:?}"),
    }
}

/// One tensor row of the report.
#[derive(Serialize, Debug)]
pub struct TensorRow {
    /// Checkpoint tensor name.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Layer.
    pub layer: u16,
    /// Expert.
    pub expert: u16,
    /// Dtype name: `F32`, `F16`, `I8`, `I4` (a scale per 32), `I4g8` (a scale per 8), `Q16`.
    pub dtype: String,
    /// Elements per scale of a grouped int8/int4 tensor (`null` when not grouped).
    pub group: Option<u32>,
    /// `[rows, cols]`.
    pub shape: [u32; 2],
    /// Offset in the blob.
    pub offset: u32,
    /// Bytes.
    pub bytes: u32,
    /// Bytes of its scale table (grouped int8/int4), 0 otherwise.
    pub scale_bytes: u32,
    /// Shares its bytes with an earlier tensor (tied).
    pub shared: bool,
    /// Quantization SQNR in dB against the checkpoint, always a number or `null`: `null`
    /// when stored losslessly as f32 or when the stored values are exact (then `exact`).
    #[serde(serialize_with = "ser_db")]
    pub sqnr_db: Option<f64>,
    /// The quantized values equal the checkpoint's exactly (e.g. kept qint8): an infinite SQNR.
    pub exact: bool,
}

/// Everything `inspect` prints.
#[derive(Serialize, Debug)]
pub struct Report {
    /// Blob size in bytes.
    pub blob_bytes: usize,
    /// Bytes of unique tensor data.
    pub weight_bytes: u64,
    /// What those tensors would take stored as f32 (each 16-byte aligned, as the packer
    /// writes them): the size to compare a quantized blob with.
    pub f32_weight_bytes: u64,
    /// Bytes of the checkpoint file it was packed from, where the packer recorded it.
    pub source_bytes: Option<u64>,
    /// Exact arena bytes a session needs.
    pub arena_bytes: usize,
    /// Arena bytes with which a session prefills in blocks (`Model::prefill_arena_bytes`).
    pub prefill_arena_bytes: usize,
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
    // Quantized dtypes the core cannot run yet are still described: no arena/MAC figures.
    let model = Model::new(&blob);
    let sqnr: BTreeMap<String, f64> =
        blob.provenance().filter(|(k, _)| *k == "sqnr_db").flat_map(|(_, v)| parse_sqnr_meta(v)).collect();
    let c = *blob.config();
    let mut seen = std::collections::BTreeSet::new();
    let (mut weight_bytes, mut f32_weight_bytes) = (0u64, 0u64);
    let tensors = blob
        .tensors()
        .map(|e| {
            let shared = !seen.insert(e.offset);
            if !shared {
                weight_bytes += e.len as u64;
                let numel = u64::from(e.shape[0]) * u64::from(e.shape[1]);
                f32_weight_bytes += (numel * 4).next_multiple_of(itera_edge::format::ALIGN as u64);
            }
            let name =
                checkpoint_name(&c, &Expected { role: e.role, layer: e.layer, expert: e.expert, shape: e.shape });
            let scale_bytes = if shared { 0 } else { blob.scales(&e).len() as u32 };
            weight_bytes += scale_bytes as u64;
            let sqnr_db = sqnr.get(&name).copied();
            TensorRow {
                exact: sqnr_db == Some(f64::INFINITY),
                sqnr_db,
                name,
                role: format!("{:?}", e.role),
                layer: e.layer,
                expert: e.expert,
                dtype: dtype_name(e.dtype, e.quant),
                group: match e.quant {
                    Quant::Grouped { group, .. } => Some(group),
                    _ => None,
                },
                shape: e.shape,
                offset: e.offset,
                bytes: e.len,
                scale_bytes,
                shared,
            }
        })
        .collect();
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
        f32_weight_bytes,
        source_bytes: blob.provenance().find(|(k, _)| *k == "source_bytes").and_then(|(_, v)| v.parse().ok()),
        arena_bytes: model.as_ref().map_or(0, Model::arena_bytes),
        prefill_arena_bytes: model.as_ref().map_or(0, Model::prefill_arena_bytes),
        macs_per_token: model.as_ref().map_or(0, Model::macs_per_token),
        config,
        tokenizer: blob.tokenizer().map(|t| format!("{:?}, {} ids, unk id {}", t.kind(), t.len(), t.unk_id())),
        provenance: blob.provenance().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        tensors,
    })
}

/// `value` as pretty JSON whose every character is printable: serde escapes C0 controls
/// inside strings but writes DEL, C1 controls and bidirectional overrides raw, which a
/// terminal acts on. Those are written as `\uXXXX` escapes (all lie in the BMP, and raw
/// controls can only occur inside strings), so the JSON means exactly the same.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // `shown` holds the one list of what a terminal acts on: a char it changes is one.
        if c != '\n' && shown(c.encode_utf8(&mut [0; 4])).len() != c.len_utf8() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Human-readable rendering of a report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let source = r.source_bytes.map(|b| format!("; the source file {b} bytes")).unwrap_or_default();
    let _ = writeln!(
        s,
        "blob:   {} bytes ({} bytes of weights, {} as f32{source})",
        r.blob_bytes, r.weight_bytes, r.f32_weight_bytes
    );
    let _ = writeln!(
        s,
        "arena:  {} bytes per session ({} to prefill in blocks of {} tokens)",
        r.arena_bytes,
        r.prefill_arena_bytes,
        itera_edge::model::PREFILL_BLOCK
    );
    let _ = writeln!(s, "macs:   {} per token", r.macs_per_token);
    let _ = writeln!(s, "config: {}", r.config);
    let _ = writeln!(s, "tokenizer: {}", r.tokenizer.as_deref().unwrap_or("none"));
    // Provenance comes from the blob: escaped, so it cannot move the cursor or forge lines.
    for (k, v) in &r.provenance {
        let _ = writeln!(s, "  {}: {}", shown(k), shown(v));
    }
    let _ = writeln!(
        s,
        "{:<16} {:>5} {:>6} {:>5} {:>14} {:>10} {:>10} {:>8}  name",
        "role", "layer", "expert", "dtype", "shape", "offset", "bytes", "sqnr dB"
    );
    for t in &r.tensors {
        let shape = format!("{}x{}", t.shape[0], t.shape[1]);
        let bytes = if t.shared { "(tied)".to_string() } else { (t.bytes + t.scale_bytes).to_string() };
        let db = match t.sqnr_db {
            None => "-".to_string(),
            Some(db) => crate::quant::format_db(db),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>6} {:>5} {:>14} {:>10} {:>10} {:>8}  {}",
            t.role,
            t.layer,
            t.expert,
            t.dtype,
            shape,
            t.offset,
            bytes,
            db,
            shown(&t.name)
        );
    }
    s
}

/// Bytes per group (`embedding/positions`, `layer N`, `head`) and dtype, in display order.
pub fn size_breakdown(r: &Report) -> Vec<(String, BTreeMap<String, u64>)> {
    let n_layers = r.config["n_layers"].as_u64().unwrap_or(0) as usize;
    let mut groups: Vec<(String, BTreeMap<String, u64>)> = std::iter::once("embedding/positions".to_string())
        .chain((0..n_layers).map(|l| format!("layer {l}")))
        .chain(std::iter::once("head".to_string()))
        .map(|g| (g, BTreeMap::new()))
        .collect();
    let head = groups.len() - 1;
    for t in r.tensors.iter().filter(|t| !t.shared) {
        let idx = match t.role.as_str() {
            "Embedding" | "Position" => 0,
            "FinalNormWeight" | "FinalNormBias" | "LmHead" => head,
            _ => (t.layer as usize + 1).min(head),
        };
        *groups[idx].1.entry(t.dtype.clone()).or_default() += (t.bytes + t.scale_bytes) as u64;
    }
    groups
}

fn dtype_color(d: &str) -> &'static str {
    match d {
        "F32" => "#4e79a7",
        "F16" => "#59a14f",
        "I8" => "#f28e2b",
        "I4" => "#e15759",
        _ => "#9c9c9c",
    }
}

/// An SVG bar chart of where the blob's bytes go: one horizontal bar per group, stacked by dtype.
pub fn size_chart_svg(r: &Report) -> String {
    use std::fmt::Write;
    let groups = size_breakdown(r);
    let dtypes = ["F32", "F16", "I8", "I4"];
    let labels = ["f32", "f16", "int8", "int4"];
    let max = groups.iter().map(|(_, m)| m.values().sum::<u64>()).max().unwrap_or(0).max(1);
    // Round the axis up to a 1/2/5 step in KiB.
    let max_kib = max as f64 / 1024.0;
    let mag = 10f64.powf(max_kib.log10().floor().max(0.0));
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag / 2.0).find(|s| max_kib / s <= 8.0).unwrap_or(mag * 2.0);
    let axis_kib = (max_kib / step).ceil().max(1.0) * step;
    let (left, top, bar_h, gap, plot_w) = (150.0, 60.0, 22.0, 8.0, 560.0);
    let plot_h = groups.len() as f64 * (bar_h + gap);
    let (width, height) = (left + plot_w + 90.0, top + plot_h + 60.0);
    let x = |bytes: f64| left + bytes / 1024.0 / axis_kib * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="15" font-weight="bold">Blob bytes by layer and dtype ({} bytes total)</text>"#,
        left, r.blob_bytes
    );
    // Legend.
    for (i, (d, l)) in dtypes.iter().zip(labels).enumerate() {
        let lx = left + i as f64 * 90.0;
        let _ = writeln!(s, r#"<rect x="{lx}" y="32" width="14" height="14" fill="{}"/>"#, dtype_color(d));
        let _ = writeln!(s, r#"<text x="{}" y="44">{l}</text>"#, lx + 20.0);
    }
    // Grid and x axis.
    let ticks = (axis_kib / step).round() as usize;
    for i in 0..=ticks {
        let kib = i as f64 * step;
        let tx = x(kib * 1024.0);
        let _ = writeln!(
            s,
            r##"<line x1="{tx}" y1="{top}" x2="{tx}" y2="{}" stroke="#ddd"/><text x="{tx}" y="{}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 16.0,
            if step < 1.0 { format!("{kib:.1}") } else { format!("{kib:.0}") }
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">size (KiB)</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">tensor group</text>"#,
        top + plot_h / 2.0
    );
    // Bars.
    for (i, (name, by_dtype)) in groups.iter().enumerate() {
        let y = top + gap / 2.0 + i as f64 * (bar_h + gap);
        let _ =
            writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{name}</text>"#, left - 8.0, y + bar_h / 2.0 + 4.0);
        let mut acc = 0u64;
        for d in dtypes.iter().copied().chain(by_dtype.keys().map(String::as_str).filter(|k| !dtypes.contains(k))) {
            let Some(&b) = by_dtype.get(d) else { continue };
            if b == 0 {
                continue;
            }
            let (x0, x1) = (x(acc as f64), x((acc + b) as f64));
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.2}" y="{y}" width="{:.2}" height="{bar_h}" fill="{}"><title>{name}: {d} {b} bytes</title></rect>"#,
                (x1 - x0).max(0.5),
                dtype_color(d)
            );
            acc += b;
        }
        let _ = writeln!(s, r#"<text x="{:.2}" y="{}">{acc}</text>"#, x(acc as f64) + 4.0, y + bar_h / 2.0 + 4.0);
    }
    s.push_str("</svg>\n");
    s
}

/// Why [`read_aligned`] gave no blob.
#[derive(Debug)]
pub enum ReadBlobError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file holds more than its header's `total_len`.
    LongerThanDeclared {
        /// The header's `total_len`.
        declared: u64,
    },
}

impl std::fmt::Display for ReadBlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadBlobError::Io(e) => e.fmt(f),
            ReadBlobError::LongerThanDeclared { declared } => write!(
                f,
                "holds more than the {declared} bytes its header declares (total_len): it is damaged or not a blob from itera-pack; repack it"
            ),
        }
    }
}

impl std::error::Error for ReadBlobError {}

/// Reads a blob file into a 4-aligned buffer, so f32 weights can be viewed in place.
///
/// Reads no more than the blob's header declares (`total_len`, a `u32`, so at most 4 GiB),
/// plus one byte: a file that is not a blob (`/dev/zero`, a checkpoint given by mistake)
/// stops after its header, and a file longer than its header says is refused
/// ([`ReadBlobError::LongerThanDeclared`]), a regular file before it is read.
/// [`Blob::parse`] then says what is wrong with what was read (bad magic, truncated).
pub fn read_aligned(path: &std::path::Path) -> Result<AlignedBytes, ReadBlobError> {
    let file = std::fs::File::open(path).map_err(ReadBlobError::Io)?;
    let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    read_aligned_from(file, size)
}

/// [`read_aligned`] with its refusal in a tool's words: "cannot read WHATPATH: why FIX" or
/// "WHATPATH holds more than the N bytes its header declares…". `what` goes before the path
/// (`"blob "` in itera-sim, nothing in itera-pack), `fix` after an I/O error's cause.
pub fn read_blob(path: &std::path::Path, what: &str, fix: &str) -> anyhow::Result<AlignedBytes> {
    let at = crate::files::at(path);
    read_aligned(path).map_err(|e| match e {
        ReadBlobError::Io(e) => anyhow::anyhow!("cannot read {what}{at}: {e}{fix}"),
        long @ ReadBlobError::LongerThanDeclared { .. } => anyhow::anyhow!("{what}{at} {long}"),
    })
}

/// [`read_aligned`] from any reader; `size` is its length when known (a regular file's),
/// which refuses a longer one before reading it and sizes the buffer at once. The bytes
/// are read straight into the `u32`-backed buffer: no copy.
pub fn read_aligned_from(mut r: impl std::io::Read, size: Option<u64>) -> Result<AlignedBytes, ReadBlobError> {
    use itera_edge::format::{declared_len, CRC_LEN, HEADER_LEN};
    // The header and a CRC: the least Blob::parse reads before it looks at the magic.
    let first = HEADER_LEN + CRC_LEN;
    let mut out = AlignedBytes { words: vec![0u32; first.div_ceil(4)], len: 0 };
    out.len = fill(&mut r, &mut out.words, 0, first)?;
    let Some(total) = declared_len(&out) else {
        return Ok(out);
    };
    let total = u64::from(total);
    let too_long = || ReadBlobError::LongerThanDeclared { declared: total };
    if size.is_some_and(|s| s > total) {
        return Err(too_long());
    }
    if out.len < first || total < first as u64 {
        // Ended within the header, or declares less than it: Blob::parse says which.
        return Ok(out);
    }
    // `total` fits in a u32, hence in usize on every host this tool runs on.
    let total = usize::try_from(total).map_err(|_| too_long())?;
    // A known size is the buffer's at once; a stream's grows as it is read.
    const STEP: usize = 1 << 20;
    let mut end = size.map_or(STEP, |s| s as usize).clamp(first, total);
    while out.len < total {
        if out.len == end {
            // Past a known size only a file that grew since it was measured: a little more.
            let reached = size.is_some_and(|s| out.len as u64 >= s);
            end = if reached { end + (64 << 10) } else { end.saturating_mul(2).max(STEP) }.min(total);
        }
        out.words.resize(end.div_ceil(4), 0);
        let got = fill(&mut r, &mut out.words, out.len, end)?;
        if got == out.len {
            return Ok(out);
        }
        out.len = got;
    }
    // One byte past the declared end tells a longer stream (a pipe) from a whole blob.
    let mut probe = [0u8; 1];
    loop {
        match r.read(&mut probe) {
            Ok(0) => return Ok(out),
            Ok(_) => return Err(too_long()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadBlobError::Io(e)),
        }
    }
}

/// Reads into bytes `from..to` of `words` until they are full or the reader ends; the
/// index one past the last byte read.
fn fill(r: &mut impl std::io::Read, words: &mut [u32], from: usize, to: usize) -> Result<usize, ReadBlobError> {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
    let mut at = from;
    while at < to {
        match r.read(&mut bytes[at..to]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadBlobError::Io(e)),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny model's bytes (plain bytes: the support crate's blob types are another
    /// copy of this crate's).
    fn tiny_blob() -> Vec<u8> {
        itera_test_support::tiny_blob(1).to_vec()
    }

    /// A pipe-like reader: no size, a few bytes a read.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_blob_is_read_whole_and_no_further_than_its_header_declares() {
        let blob = tiny_blob();
        let d = std::env::temp_dir().join(format!("itera-pack-read-aligned-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        let path = d.join("x.itb");
        std::fs::write(&path, &blob).expect("write");
        let read = read_aligned(&path).expect("a whole blob");
        assert_eq!(&read[..], &blob[..]);
        assert!(report(&read).is_ok());
        assert_eq!(&read_aligned_from(Trickle(&blob), None).expect("a whole stream")[..], &blob[..]);

        // Longer than its header says: a file refused by its size, a stream by one byte more.
        let mut long = blob.clone();
        long.extend_from_slice(&[0; 5]);
        std::fs::write(&path, &long).expect("write");
        let declared = blob.len() as u64;
        assert!(matches!(read_aligned(&path), Err(ReadBlobError::LongerThanDeclared { declared: n }) if n == declared));
        let Err(e) = read_aligned_from(Trickle(&long), None) else { panic!("a longer stream was read") };
        assert!(matches!(e, ReadBlobError::LongerThanDeclared { declared: n } if n == declared), "{e}");
        assert!(e.to_string().contains(&format!("more than the {declared} bytes its header declares")), "{e}");

        // Shorter than declared: what there is, for Blob::parse to call truncated.
        let short = read_aligned_from(Trickle(&blob[..blob.len() - 9]), None).expect("a short stream");
        assert_eq!(&short[..], &blob[..blob.len() - 9]);
        assert!(Blob::parse(&short).is_err());

        // Not a blob, endless: its header's worth, then Blob::parse refuses the magic.
        let zero = read_aligned(std::path::Path::new("/dev/zero")).expect("reads a header's worth");
        assert_eq!(zero.len(), itera_edge::format::HEADER_LEN + itera_edge::format::CRC_LEN);
        assert!(report(&zero).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
