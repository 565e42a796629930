//! Reader and writer for the safetensors format.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! `{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..,
//! "__metadata__": {string: string}}`, then the tensor data; offsets are
//! relative to the start of the data.
//!
//! Reading validates everything before use: the header length (at most
//! [`MAX_HEADER_BYTES`] and within the file); the header itself, parsed
//! straight into typed entries (at most [`MAX_TENSORS`] tensors of rank 8 and
//! [`MAX_METADATA`] metadata entries, names unique, no generic JSON tree);
//! each tensor's offsets (inside the data, `end - begin == numel * element
//! size`, no two tensors sharing a byte). The file, the parsed header and the
//! decoded tensors count against the caller's [`super::MemoryBudget`].
//! Tensors are returned in data order. If every tensor name starts with
//! `model.`, the prefix is removed.
//!
//! qint8 tensors are written as `I8` with `<name>.scale` and `<name>.zero_point`
//! in `__metadata__`; reading an `I8` tensor with both entries yields
//! [`TensorData::QInt8`] again (without them, `I8` data is widened to `I64`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use std::fmt;

use serde::de::{self, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::torch::{decode, StorageKind};
use super::{checked_numel, CheckpointError, MemoryBudget, Meter, RawTensor, StateDict, StateDictBuilder, TensorData};
use crate::untrusted::shown;

/// Largest accepted JSON header (8 MiB). Itera-Lite's ~100 tensors with
/// their qint8 metadata take about 20 KB; even 16,384 tensors with long names
/// fit in 4 MB.
pub const MAX_HEADER_BYTES: u64 = 8 << 20;
/// Most tensors a header may list (Itera-Lite has about 100).
pub const MAX_TENSORS: usize = 16_384;
/// Most `__metadata__` entries: two per qint8 tensor, and some to spare.
pub const MAX_METADATA: usize = 2 * MAX_TENSORS + 1024;
/// Most dimensions of a tensor (Itera-Lite's have at most 3).
const MAX_RANK: usize = 8;

/// The `__metadata__` key of the header.
const METADATA_KEY: &str = "__metadata__";

/// One tensor entry of the header. Unknown fields are skipped without being
/// stored.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Shape,
    data_offsets: [usize; 2],
}

/// A tensor shape of at most [`MAX_RANK`] dimensions, refused as soon as a
/// longer one is seen (a header of a million numbers never becomes a vector).
struct Shape(Vec<usize>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a shape: a list of at most {MAX_RANK} non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(d) = seq.next_element::<usize>()? {
                    if dims.len() == MAX_RANK {
                        return Err(A::Error::custom(format!("shape has more than {MAX_RANK} dimensions")));
                    }
                    dims.push(d);
                }
                Ok(Shape(dims))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A `__metadata__` value: kept if it is a string, skipped (not stored) if
/// it is anything else, as safetensors readers ignore such values.
struct MetaValue(Option<String>);

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a metadata value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MetaValue, E> {
                Ok(MetaValue(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MetaValue, E> {
                Ok(MetaValue(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MetaValue, E> {
                Ok(MetaValue(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MetaValue, E> {
                Ok(MetaValue(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MetaValue, E> {
                Ok(MetaValue(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MetaValue, E> {
                Ok(MetaValue(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MetaValue, E> {
                Ok(MetaValue(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetaValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MetaValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MetaValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `__metadata__`: string entries only, at most [`MAX_METADATA`] of them.
struct Metadata(HashMap<String, String>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "'{METADATA_KEY}' as an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut out = HashMap::new();
                let mut seen = 0usize;
                while let Some((k, v)) = map.next_entry::<String, MetaValue>()? {
                    seen += 1;
                    if seen > MAX_METADATA {
                        return Err(A::Error::custom(format!("'{METADATA_KEY}' has more than {MAX_METADATA} entries")));
                    }
                    if let Some(v) = v.0 {
                        out.insert(k, v);
                    }
                }
                Ok(Metadata(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The parsed header: tensor entries in header order, names unique.
struct Header {
    entries: Vec<(String, Entry)>,
    metadata: HashMap<String, String>,
}

impl Header {
    /// Bytes the parsed header holds (counted on the budget).
    fn bytes(&self) -> u64 {
        let entries: usize = self
            .entries
            .iter()
            .map(|(n, e)| {
                std::mem::size_of::<(String, Entry)>() + n.capacity() + e.dtype.capacity() + 8 * e.shape.0.capacity()
            })
            .sum();
        let metadata: usize = self.metadata.iter().map(|(k, v)| 64 + k.capacity() + v.capacity()).sum();
        (entries + metadata) as u64
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut entries: Vec<(String, Entry)> = Vec::new();
                let mut names = HashSet::new();
                let mut metadata = None;
                while let Some(name) = map.next_key::<String>()? {
                    if name == METADATA_KEY {
                        if metadata.is_some() {
                            return Err(A::Error::custom(format!("'{METADATA_KEY}' appears twice")));
                        }
                        metadata = Some(map.next_value::<Metadata>()?.0);
                        continue;
                    }
                    if entries.len() == MAX_TENSORS {
                        return Err(A::Error::custom(format!(
                            "the header lists more than {MAX_TENSORS} tensors (an Itera-Lite model has about 100)"
                        )));
                    }
                    // JSON readers differ on which of two equal keys wins.
                    if !names.insert(name.clone()) {
                        return Err(A::Error::custom(format!("tensor '{}' appears twice", shown(&name))));
                    }
                    let entry = map
                        .next_value::<Entry>()
                        .map_err(|e| A::Error::custom(format!("tensor '{}': {e}", shown(&name))))?;
                    entries.push((name, entry));
                }
                Ok(Header { entries, metadata: metadata.unwrap_or_default() })
            }
        }
        d.deserialize_map(V)
    }
}

/// Maps a safetensors dtype to the matching storage element type.
fn kind_of(dtype: &str) -> Option<StorageKind> {
    Some(match dtype {
        "F32" => StorageKind::F32,
        "F16" => StorageKind::F16,
        "BF16" => StorageKind::BF16,
        "F64" => StorageKind::F64,
        "I64" => StorageKind::I64,
        "I32" => StorageKind::I32,
        "I16" => StorageKind::I16,
        "I8" => StorageKind::I8,
        "U8" => StorageKind::U8,
        "BOOL" => StorageKind::Bool,
        _ => return None,
    })
}

/// Reads a safetensors file already in memory, within the default
/// [`MemoryBudget`]. `file` names it in errors.
pub fn load_safetensors_bytes(bytes: &[u8], file: &str) -> Result<StateDict, CheckpointError> {
    read_safetensors(bytes, &mut Meter::new(&MemoryBudget::default(), file))
}

/// Reads a safetensors file already in memory, counting what it holds on
/// `meter`.
pub(crate) fn read_safetensors(bytes: &[u8], meter: &mut Meter) -> Result<StateDict, CheckpointError> {
    let file = meter.file().to_string();
    let err = |detail: String| CheckpointError::Safetensors { file: file.clone(), detail };

    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(err(format!("the file is {} bytes long, too short for the 8-byte header length", bytes.len())));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(err(format!("header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes")));
    }
    let Some((header, data)) = usize::try_from(header_len).ok().and_then(|n| rest.split_at_checked(n)) else {
        return Err(err(format!("header length {header_len} is larger than the {} bytes that follow it", rest.len())));
    };
    let mut de = serde_json::Deserializer::from_slice(header);
    let parsed = Header::deserialize(&mut de).and_then(|h| de.end().map(|()| h));
    let Header { mut entries, metadata } = match parsed {
        Ok(h) => {
            meter.charge(h.bytes(), || "the safetensors header".to_string())?;
            h
        }
        Err(e) => return Err(err(format!("header is not valid: {e}"))),
    };

    // File order is data order.
    entries.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    refuse_overlaps(&entries).map_err(err)?;

    let strip = !entries.is_empty() && entries.iter().all(|(name, _)| name.starts_with("model."));
    let mut out = StateDictBuilder::default();
    for (name, entry) in entries {
        let kind = kind_of(&entry.dtype).ok_or_else(|| CheckpointError::UnsupportedDtype {
            file: file.clone(),
            tensor: name.clone(),
            dtype: entry.dtype.clone(),
        })?;
        let shape = entry.shape.0;
        let [begin, end] = entry.data_offsets;
        let numel = checked_numel(&shape)
            .ok_or_else(|| err(format!("tensor '{}': shape {shape:?} overflows", shown(&name))))?;
        let expected = numel.checked_mul(kind.elem_size());
        let Some(raw) = data.get(begin..end).filter(|_| begin <= end) else {
            return Err(err(format!(
                "tensor '{}': data_offsets [{begin}, {end}] are outside the {} data bytes",
                shown(&name),
                data.len()
            )));
        };
        if expected != Some(raw.len()) {
            return Err(err(format!(
                "tensor '{}': shape {shape:?} of {} needs {} bytes but data_offsets span {}",
                shown(&name),
                shown(&entry.dtype),
                expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                raw.len()
            )));
        }

        let qparams =
            (metadata.get(format!("{name}.scale").as_str()), metadata.get(format!("{name}.zero_point").as_str()));
        let quantized = matches!((kind, qparams), (StorageKind::I8, (Some(_), Some(_))));
        let out_elem = if quantized { 1 } else { kind.output_size() };
        meter.charge((numel as u64).saturating_mul(out_elem as u64), || format!("tensor '{}'", shown(&name)))?;
        let (data, dtype) = match (quantized, qparams) {
            (true, (Some(scale), Some(zero_point))) => {
                let scale = scale.trim().parse::<f64>().map_err(|_| {
                    err(format!("tensor '{}': metadata scale '{}' is not a number", shown(&name), shown(scale)))
                })?;
                let zero_point = zero_point.trim().parse::<i64>().map_err(|_| {
                    err(format!(
                        "tensor '{}': metadata zero_point '{}' is not an integer",
                        shown(&name),
                        shown(zero_point)
                    ))
                })?;
                let q = raw.iter().map(|&b| b as i8).collect();
                (TensorData::QInt8 { q, scale, zero_point }, "qint8")
            }
            _ => (decode(kind, raw), kind.dtype_name()),
        };
        let final_name = if strip { name.strip_prefix("model.").unwrap_or(&name) } else { &name };
        let tensor = RawTensor { shape, data, storage: Some(format!("st:{final_name}")) };
        out.insert(final_name.to_string(), tensor, dtype);
    }
    Ok(StateDict { format: super::SourceFormat::Safetensors, ..out.finish() })
}

/// Refuses two tensors whose data ranges share bytes: each tensor owns its
/// bytes in safetensors, and ranges that alias one another would multiply
/// the data a small file makes a reader produce. `entries` are sorted by
/// offsets; empty ranges own nothing and overlap nothing.
fn refuse_overlaps(entries: &[(String, Entry)]) -> Result<(), String> {
    let mut furthest: Option<(&str, [usize; 2])> = None;
    for (name, e) in entries {
        let [begin, end] = e.data_offsets;
        if begin >= end {
            continue;
        }
        if let Some((other, range)) = furthest {
            if begin < range[1] {
                return Err(format!(
                    "tensors '{}' (bytes {}..{}) and '{}' (bytes {begin}..{end}) overlap; each tensor must have bytes of its own",
                    shown(other),
                    range[0],
                    range[1],
                    shown(name)
                ));
            }
        }
        if furthest.is_none_or(|(_, r)| end > r[1]) {
            furthest = Some((name, [begin, end]));
        }
    }
    Ok(())
}

/// The safetensors dtype and little-endian bytes of `data`.
fn encode(data: &TensorData) -> (&'static str, Vec<u8>) {
    match data {
        TensorData::F32(v) => ("F32", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::QInt8 { q, .. } => ("I8", q.iter().map(|&x| x as u8).collect()),
        TensorData::I64(v) => ("I64", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

/// Builds the JSON header (padded with spaces to a multiple of 8 bytes) and
/// checks the tensors.
fn header(tensors: &[(String, RawTensor)]) -> Result<Vec<u8>, CheckpointError> {
    let mut map = Map::new();
    let mut metadata = Map::new();
    metadata.insert("format".into(), Value::from("pt"));
    let mut seen = HashSet::new();
    let mut offset = 0usize;
    for (name, t) in tensors {
        let invalid = |detail: String| CheckpointError::InvalidTensor { tensor: name.clone(), detail };
        if name == METADATA_KEY || name.is_empty() {
            return Err(invalid("this name is reserved or empty in safetensors; rename the tensor".into()));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid("the name appears twice; tensor names must be unique".into()));
        }
        let numel = t.numel().ok_or_else(|| invalid(format!("shape {:?} overflows", t.shape)))?;
        if numel != t.data.len() {
            return Err(invalid(format!(
                "shape {:?} has {numel} elements but the data has {}; fix the shape or the data",
                t.shape,
                t.data.len()
            )));
        }
        let (dtype, elem) = match &t.data {
            TensorData::F32(_) => ("F32", 4),
            TensorData::QInt8 { scale, zero_point, .. } => {
                metadata.insert(format!("{name}.scale"), Value::from(scale.to_string()));
                metadata.insert(format!("{name}.zero_point"), Value::from(zero_point.to_string()));
                ("I8", 1)
            }
            TensorData::I64(_) => ("I64", 8),
        };
        let end = numel
            .checked_mul(elem)
            .and_then(|n| offset.checked_add(n))
            .ok_or_else(|| invalid("tensor data too large".into()))?;
        let mut entry = Map::new();
        entry.insert("dtype".into(), Value::from(dtype));
        entry.insert("shape".into(), Value::from(t.shape.clone()));
        entry.insert("data_offsets".into(), Value::from(vec![offset, end]));
        map.insert(name.clone(), Value::Object(entry));
        offset = end;
    }
    map.insert(METADATA_KEY.into(), Value::Object(metadata));
    let mut json = serde_json::to_vec(&Value::Object(map))
        .map_err(|e| CheckpointError::InvalidTensor { tensor: String::new(), detail: e.to_string() })?;
    // Pad with spaces so that the data starts 8-byte aligned.
    let padded = json.len().div_ceil(8) * 8;
    json.resize(padded, b' ');
    Ok(json)
}

fn write_to<W: Write>(tensors: &[(String, RawTensor)], mut writer: W, label: &str) -> Result<(), CheckpointError> {
    let header = header(tensors)?;
    let io = |error| CheckpointError::Write { path: label.to_string(), error };
    writer.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    writer.write_all(&header).map_err(io)?;
    // Data in the given order, contiguous (no gaps), as safetensors requires.
    for (_, t) in tensors {
        writer.write_all(&encode(&t.data).1).map_err(io)?;
    }
    writer.flush().map_err(io)
}

/// Writes `tensors` in safetensors format to `writer`, in the given order:
/// F32 as `F32`, I64 as `I64`, QInt8 as `I8` plus `<name>.scale` /
/// `<name>.zero_point` metadata (so that [`super::load_bytes`] reads them back
/// as QInt8). Names must be unique and each shape must match its data.
pub fn write_safetensors<W: Write>(tensors: &[(String, RawTensor)], writer: W) -> Result<(), CheckpointError> {
    write_to(tensors, writer, "<writer>")
}

/// [`write_safetensors`] into a new byte vector.
pub fn safetensors_to_vec(tensors: &[(String, RawTensor)]) -> Result<Vec<u8>, CheckpointError> {
    let mut out = Vec::new();
    write_to(tensors, &mut out, "<memory>")?;
    Ok(out)
}

/// [`write_safetensors`] into the file at `path` (created or truncated).
pub fn save_safetensors(tensors: &[(String, RawTensor)], path: &Path) -> Result<(), CheckpointError> {
    let label = path.display().to_string();
    // Validate before touching the file system.
    header(tensors)?;
    let file = std::fs::File::create(path).map_err(|error| CheckpointError::Write { path: label.clone(), error })?;
    write_to(tensors, std::io::BufWriter::new(file), &label)
}

#[cfg(test)]
mod tests {
    use super::super::MemoryBudget;
    use super::super::{load, load_bytes};
    use super::*;

    fn t(shape: &[usize], data: TensorData) -> RawTensor {
        RawTensor { shape: shape.to_vec(), data, storage: None }
    }

    fn sample() -> Vec<(String, RawTensor)> {
        vec![
            ("w".into(), t(&[2, 3], TensorData::F32(vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 1e30]))),
            (
                "q".into(),
                t(&[3], TensorData::QInt8 { q: vec![-128, 0, 127], scale: 0.0007620919495820999, zero_point: -3 }),
            ),
            ("idx".into(), t(&[], TensorData::I64(vec![-42]))),
            ("empty".into(), t(&[0, 128], TensorData::F32(vec![]))),
            ("a_bias".into(), t(&[1], TensorData::F32(vec![7.0]))),
        ]
    }

    #[test]
    fn round_trip() {
        let tensors = sample();
        let bytes = safetensors_to_vec(&tensors).expect("writes");
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        assert_eq!(header_len & 7, 0);
        let sd = load_bytes(&bytes, "rt.safetensors").expect("reads");
        assert_eq!(sd.names().collect::<Vec<_>>(), vec!["w", "q", "idx", "empty", "a_bias"]);
        for (name, orig) in &tensors {
            let back = sd.get(name).expect(name);
            assert_eq!((&back.shape, &back.data), (&orig.shape, &orig.data), "{name}");
            assert_eq!(back.storage.as_deref(), Some(format!("st:{name}").as_str()));
        }
        assert_eq!(sd.source_dtype("q"), Some("qint8"));
        assert_eq!(sd.source_dtype("w"), Some("float32"));
        assert_eq!(sd.source_dtype("idx"), Some("int64"));
    }

    #[test]
    fn model_prefix_is_stripped_only_when_universal() {
        let prefixed: Vec<_> = sample().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
        let sd = load_bytes(&safetensors_to_vec(&prefixed).expect("writes"), "p").expect("reads");
        assert_eq!(sd.names().collect::<Vec<_>>(), vec!["w", "q", "idx", "empty", "a_bias"]);
        assert!(matches!(sd.get("q").map(|t| &t.data), Some(TensorData::QInt8 { zero_point: -3, .. })));
        assert_eq!(sd.get("w").and_then(|t| t.storage.clone()).as_deref(), Some("st:w"));

        let mut mixed = prefixed;
        mixed.push(("other".into(), t(&[1], TensorData::F32(vec![0.0]))));
        let sd = load_bytes(&safetensors_to_vec(&mixed).expect("writes"), "m").expect("reads");
        assert!(sd.get("model.w").is_some() && sd.get("other").is_some());
    }

    #[test]
    fn file_round_trip() {
        let path = std::env::temp_dir().join(format!("itera-pack-checkpoint-test-{}.safetensors", std::process::id()));
        save_safetensors(&sample(), &path).expect("saves");
        let sd = load(&path).expect("loads");
        let _ = std::fs::remove_file(&path);
        assert_eq!(sd.len(), 5);
        let mut sink = Vec::new();
        write_safetensors(&sample(), &mut sink).expect("writes");
        assert_eq!(sink, safetensors_to_vec(&sample()).expect("writes"));
    }

    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn other_dtypes_are_converted() {
        let mut data = Vec::new();
        data.extend(half::f16::from_f32(0.5).to_le_bytes());
        data.extend(half::bf16::from_f32(-3.0).to_le_bytes());
        data.extend(2.25f64.to_le_bytes());
        data.extend([1u8, 0]);
        data.extend([0xffu8]);
        let header = r#"{"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},"d":{"dtype":"F64","shape":[],"data_offsets":[4,12]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[12,14]},"i":{"dtype":"I8","shape":[1],"data_offsets":[14,15]},"__metadata__":{"format":"pt"}}"#;
        let sd = load_bytes(&raw_file(header, &data), "dt").expect("reads");
        assert_eq!(sd.names().collect::<Vec<_>>(), vec!["h", "b", "d", "m", "i"]);
        assert_eq!(sd.get("h").map(|t| t.data.clone()), Some(TensorData::F32(vec![0.5])));
        assert_eq!(sd.get("b").map(|t| t.data.clone()), Some(TensorData::F32(vec![-3.0])));
        assert_eq!(sd.get("d").map(|t| t.data.clone()), Some(TensorData::F32(vec![2.25])));
        assert_eq!(sd.get("m").map(|t| t.data.clone()), Some(TensorData::I64(vec![1, 0])));
        assert_eq!(sd.get("i").map(|t| t.data.clone()), Some(TensorData::I64(vec![-1])));
        assert_eq!(sd.source_dtype("h"), Some("float16"));
        assert_eq!(sd.source_dtype("i"), Some("int8"));
    }

    #[test]
    fn invalid_files_are_errors() {
        let ok = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(load_bytes(&raw_file(ok, &[0; 8]), "ok").is_ok());
        let cases: &[(&str, &str, usize)] = &[
            ("past end", r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, 8),
            ("reversed", r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, 8),
            ("size mismatch", r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8),
            ("overflow", r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#, 8),
            ("negative", r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8),
            ("missing field", r#"{"w":{"dtype":"F32","shape":[2]}}"#, 8),
            ("not object", r#"[1,2,3]"#, 0),
            ("bad json", r#"{"w":"#, 0),
            ("bad metadata", r#"{"__metadata__":3}"#, 0),
            (
                "bad scale",
                r#"{"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"__metadata__":{"w.scale":"x","w.zero_point":"0"}}"#,
                1,
            ),
        ];
        for &(what, header, n) in cases {
            let err = load_safetensors_bytes(&raw_file(header, &vec![0; n]), what).expect_err(what);
            assert!(matches!(err, CheckpointError::Safetensors { .. }), "{what}: {err}");
        }
        let err = load_bytes(&raw_file(r#"{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, &[0]), "f8")
            .expect_err("f8");
        assert!(
            matches!(err, CheckpointError::UnsupportedDtype { .. }) && err.to_string().contains("F8_E4M3"),
            "{err}"
        );

        // Header length beyond the file / beyond the cap.
        let mut v = 1000u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        assert!(load_bytes(&v, "short").is_err());
        let mut v = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        assert!(load_bytes(&v, "huge").expect_err("huge").to_string().contains("exceeds the limit"));
        assert!(load_safetensors_bytes(b"1234", "tiny").is_err());

        // Every truncation of a valid file fails cleanly (or, for the empty
        // data tail, still parses).
        let bytes = safetensors_to_vec(&sample()).expect("writes");
        for cut in 0..bytes.len() {
            let _ = load_bytes(&bytes[..cut], "cut");
        }
        assert!(load_bytes(&bytes[..bytes.len() / 2], "half").is_err());
    }

    fn st_error(header: &str, data: usize) -> String {
        let err = load_bytes(&raw_file(header, &vec![0; data]), "x.safetensors").expect_err(header);
        assert!(matches!(err, CheckpointError::Safetensors { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn shared_or_overlapping_ranges_are_refused_naming_both() {
        let e = |n: &str, b: usize, end: usize| {
            format!(r#""{n}":{{"dtype":"U8","shape":[{}],"data_offsets":[{b},{end}]}}"#, end - b)
        };
        let cases = [
            (format!("{{{},{}}}", e("a", 0, 8), e("b", 4, 12)), "'a' (bytes 0..8) and 'b' (bytes 4..12) overlap"),
            (format!("{{{},{}}}", e("b", 0, 8), e("a", 0, 8)), "'a' (bytes 0..8) and 'b' (bytes 0..8) overlap"),
            (
                format!("{{{},{},{}}}", e("o", 0, 12), e("i", 2, 4), e("j", 6, 8)),
                "'o' (bytes 0..12) and 'i' (bytes 2..4)",
            ),
        ];
        for (header, needle) in cases {
            let msg = st_error(&header, 12);
            assert!(msg.contains(needle), "{msg}");
        }
        // Adjacent ranges, gaps and empty tensors anywhere are fine.
        let fine = format!("{{{},{},{},{}}}", e("a", 0, 4), e("z", 4, 4), e("b", 4, 8), e("c", 10, 12));
        assert_eq!(load_bytes(&raw_file(&fine, &[0; 12]), "ok").expect("reads").len(), 4);
    }

    #[test]
    fn header_limits() {
        let entry = |i: usize| format!(r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#);
        let at_limit: Vec<String> = (0..MAX_TENSORS).map(entry).collect();
        let sd = load_bytes(&raw_file(&format!("{{{}}}", at_limit.join(",")), &[]), "max").expect("at the limit");
        assert_eq!(sd.len(), MAX_TENSORS);
        let over: Vec<String> = (0..=MAX_TENSORS).map(entry).collect();
        assert!(st_error(&format!("{{{}}}", over.join(",")), 0).contains("more than 16384 tensors"));

        let dims = ["1"; MAX_RANK + 1].join(",");
        let msg = st_error(&format!(r#"{{"t":{{"dtype":"F32","shape":[{dims}],"data_offsets":[0,4]}}}}"#), 4);
        assert!(msg.contains("tensor 't': shape has more than 8 dimensions"), "{msg}");
        assert!(st_error(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8).contains("tensor 'w' appears twice"));
        assert!(st_error(r#"{"__metadata__":{},"__metadata__":{}}"#, 0).contains("appears twice"));
        // Non-string metadata (numbers, nesting) is skipped, as other readers do.
        let odd = r#"{"__metadata__":{"n":[1,2,{"x":3}],"s":"ok"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[1,2]}}"#;
        assert_eq!(load_bytes(&raw_file(odd, &[0; 4]), "odd").expect("reads").len(), 1);
        let many: Vec<String> = (0..=MAX_METADATA).map(|i| format!(r#""k{i}":"v""#)).collect();
        assert!(st_error(&format!(r#"{{"__metadata__":{{{}}}}}"#, many.join(",")), 0).contains("entries"));
    }

    #[test]
    fn the_budget_counts_the_file_and_the_tensors() {
        let bytes = safetensors_to_vec(&sample()).expect("writes");
        let path = std::env::temp_dir().join(format!("itera-pack-budget-{}.safetensors", std::process::id()));
        std::fs::write(&path, &bytes).expect("writes");
        let (_, used) = super::super::load_metered(&path, &MemoryBudget::default()).expect("loads");
        let in_memory = super::super::load_bytes_metered(&bytes, "b", &MemoryBudget::default()).expect("loads").1;
        // The file read counts; bytes handed in by the caller do not.
        assert_eq!(used, in_memory + bytes.len() as u64);
        let err = super::super::load_within(&path, &MemoryBudget { max_bytes: used - 1 }).expect_err("over");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, CheckpointError::MemoryBudget { .. }), "{err}");
        let err = super::super::load_bytes_within(&bytes, "b", &MemoryBudget { max_bytes: 8 }).expect_err("over");
        assert!(err.to_string().contains("over the budget of 1 MiB (8 bytes)"), "{err}");
    }

    #[test]
    fn writer_rejects_inconsistent_tensors() {
        let bad_shape = vec![("x".to_string(), t(&[3], TensorData::F32(vec![1.0])))];
        assert!(matches!(safetensors_to_vec(&bad_shape), Err(CheckpointError::InvalidTensor { .. })));
        let dup = vec![
            ("x".to_string(), t(&[1], TensorData::F32(vec![1.0]))),
            ("x".to_string(), t(&[1], TensorData::F32(vec![1.0]))),
        ];
        assert!(safetensors_to_vec(&dup).expect_err("dup").to_string().contains("appears twice"));
        let reserved = vec![(METADATA_KEY.to_string(), t(&[1], TensorData::F32(vec![1.0])))];
        assert!(safetensors_to_vec(&reserved).is_err());
    }
}
