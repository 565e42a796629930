//! PyTorch checkpoints written by code, as `torch.save` writes them: pickle opcodes, tensor
//! rebuild calls over persistent storages, whole state dicts and training checkpoints,
//! and the zip around them. The packer's unit tests, the checkpoint readers' and the
//! hostile-input suite build their inputs with these, so a writer bug shows once.

use std::io::Write;

/// `BINUNICODE`: a string.
pub fn unicode(s: &str) -> Vec<u8> {
    let mut p = vec![b'X'];
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
    p
}

/// An integer: `BININT` when it fits in an `i32`, else `LONG1` (8 bytes, two's complement).
pub fn int(v: i64) -> Vec<u8> {
    match i32::try_from(v) {
        Ok(v) => {
            let mut p = vec![b'J'];
            p.extend_from_slice(&v.to_le_bytes());
            p
        }
        Err(_) => {
            let mut p = vec![0x8a, 8];
            p.extend_from_slice(&v.to_le_bytes());
            p
        }
    }
}

/// `(` the integers `t`: a tuple, as shapes and strides are pickled.
pub fn tuple(items: &[usize]) -> Vec<u8> {
    let mut p = vec![b'('];
    for &d in items {
        p.extend(int(d as i64));
    }
    p.push(b't');
    p
}

/// A view of a persistent storage: what one `_rebuild_tensor_v2` call reads.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The storage class: `FloatStorage`, `HalfStorage`, `QInt8Storage`, ...
    pub storage: &'a str,
    /// The storage's key: its entry `data/KEY` in the zip.
    pub key: &'a str,
    /// Elements the storage holds.
    pub numel: usize,
    /// First element of the view.
    pub offset: usize,
    /// The view's dimensions.
    pub size: &'a [usize],
    /// Its strides, in elements.
    pub stride: &'a [usize],
}

/// The opcodes of `torch._utils.FUNC(storage, offset, size, stride, [quantizer,] False,
/// OrderedDict())`: `_rebuild_tensor_v2` of `view`, or `_rebuild_qtensor` with a per-tensor
/// affine `(scale, zero_point)` quantizer when `quantizer` is given.
pub fn rebuild_tensor(view: &View, quantizer: Option<(f64, i64)>) -> Vec<u8> {
    let func = if quantizer.is_some() { "_rebuild_qtensor" } else { "_rebuild_tensor_v2" };
    let mut p = format!("ctorch._utils\n{func}\n(").into_bytes();
    // Persistent id ('storage', torch.<storage>, key, 'cpu', numel).
    p.push(b'(');
    p.extend(unicode("storage"));
    p.extend_from_slice(format!("ctorch\n{}\n", view.storage).as_bytes());
    p.extend(unicode(view.key));
    p.extend(unicode("cpu"));
    p.extend(int(view.numel as i64));
    p.extend_from_slice(b"tQ");
    p.extend(int(view.offset as i64));
    p.extend(tuple(view.size));
    p.extend(tuple(view.stride));
    if let Some((scale, zero_point)) = quantizer {
        p.extend_from_slice(b"(ctorch\nper_tensor_affine\nG");
        p.extend_from_slice(&scale.to_be_bytes());
        p.extend(int(zero_point));
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    p
}

/// The opcodes of a NumPy scalar of dtype `code` (`i8`, `f8`, …) and byte order `order`
/// holding `bytes`, as NumPy pickles one: `numpy{module}.multiarray.scalar(numpy.dtype(code,
/// False, True) + BUILD state, _codecs.encode(latin-1 text, 'latin1'))`. `module` is
/// `.core` (NumPy 1) or `._core` (NumPy 2).
pub fn numpy_scalar(module: &str, code: &str, order: &str, bytes: &[u8]) -> Vec<u8> {
    let mut p = format!("cnumpy{module}.multiarray\nscalar\ncnumpy\ndtype\n").into_bytes();
    p.extend(unicode(code));
    p.extend_from_slice(b"\x89\x88\x87R(K\x03");
    p.extend(unicode(order));
    p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbc_codecs\nencode\n");
    p.extend(unicode(&bytes.iter().map(|&b| char::from(b)).collect::<String>()));
    p.extend(unicode("latin1"));
    p.extend_from_slice(b"\x86R\x86R");
    p
}

/// One tensor of a hand-made `.pt`.
pub enum PtTensor {
    /// A float32 tensor.
    F32 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// A per-tensor-affine qint8 tensor, with the quantizer parameters exactly as given
    /// (out-of-range ones included).
    QInt8 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major quantized values.
        q: Vec<i8>,
        /// Scale (any f64, NaN included).
        scale: f64,
        /// Zero point (any i64).
        zero_point: i64,
    },
}

impl PtTensor {
    fn storage_bytes(&self) -> Vec<u8> {
        match self {
            PtTensor::F32 { data, .. } => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            PtTensor::QInt8 { q, .. } => q.iter().map(|&v| v as u8).collect(),
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            PtTensor::F32 { shape, .. } | PtTensor::QInt8 { shape, .. } => shape,
        }
    }
}

/// The f32 tensors of a state dict, as [`PtTensor`]s (qint8 ones are kept as qint8).
pub fn pt_tensors(sd: &itera_pack::checkpoint::StateDict) -> Vec<(String, PtTensor)> {
    use itera_pack::checkpoint::TensorData;
    sd.tensors
        .iter()
        .map(|(name, t)| {
            let shape = t.shape.clone();
            let tensor = match &t.data {
                TensorData::F32(data) => PtTensor::F32 { shape, data: data.clone() },
                TensorData::QInt8 { q, scale, zero_point } => {
                    PtTensor::QInt8 { shape, q: q.clone(), scale: *scale, zero_point: *zero_point }
                }
                TensorData::I64(v) => PtTensor::F32 { shape, data: v.iter().map(|&x| x as f32).collect() },
            };
            (name.clone(), tensor)
        })
        .collect()
}

/// The tiny synthetic model's state dict (seed 1), as [`PtTensor`]s.
pub fn tiny_tensors() -> Vec<(String, PtTensor)> {
    pt_tensors(&itera_pack::synthetic::state_dict(&itera_pack::synthetic::tiny_config(), 1))
}

/// `data.pkl` for `tensors`, as `torch.save(state_dict)` writes it (protocol 2, an
/// `OrderedDict` of `_rebuild_tensor_v2`/`_rebuild_qtensor` calls over persistent storage
/// ids "0", "1", ..., each tensor contiguous over its whole storage).
pub fn state_dict_pickle(tensors: &[(String, PtTensor)]) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for (i, (name, t)) in tensors.iter().enumerate() {
        p.extend(unicode(name));
        let shape = t.shape();
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        let (storage, quantizer) = match t {
            PtTensor::F32 { .. } => ("FloatStorage", None),
            PtTensor::QInt8 { scale, zero_point, .. } => ("QInt8Storage", Some((*scale, *zero_point))),
        };
        let key = i.to_string();
        let view = View { storage, key: &key, numel: shape.iter().product(), offset: 0, size: shape, stride: &stride };
        p.extend(rebuild_tensor(&view, quantizer));
    }
    p.extend_from_slice(b"u.");
    p
}

/// `data.pkl` of a training checkpoint, as `torch.save({"model_state_dict": sd, ...})`
/// writes it: the state dict of `tensors` beside `extra`, the pickle opcodes of further
/// key/value pairs (see [`pickle_config_object`], [`pickle_numpy_scalar`]).
pub fn training_pickle(tensors: &[(String, PtTensor)], extra: &[u8]) -> Vec<u8> {
    let sd = state_dict_pickle(tensors);
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("model_state_dict"));
    // The state dict's opcodes without its PROTO header and STOP.
    p.extend_from_slice(&sd[2..sd.len() - 1]);
    p.extend_from_slice(extra);
    p.extend_from_slice(b"u.");
    p
}

/// A key and an object of class `module.class` built by NEWOBJ + BUILD from `fields`
/// (integers), as a training script's config object pickles.
pub fn pickle_config_object(key: &str, module: &str, class: &str, fields: &[(&str, i64)]) -> Vec<u8> {
    let mut p = unicode(key);
    p.extend_from_slice(format!("c{module}\n{class}\n)").as_bytes());
    p.extend_from_slice(b"\x81}(");
    for &(name, v) in fields {
        p.extend(unicode(name));
        p.extend(int(v));
    }
    p.extend_from_slice(b"ub");
    p
}

/// A key and a little-endian NumPy scalar (see [`numpy_scalar`]).
pub fn pickle_numpy_scalar(key: &str, module: &str, code: &str, bytes: &[u8]) -> Vec<u8> {
    pickle_item(key, &numpy_scalar(module, code, "<", bytes))
}

/// A key and a value written as raw pickle opcodes.
pub fn pickle_item(key: &str, value: &[u8]) -> Vec<u8> {
    let mut p = unicode(key);
    p.extend_from_slice(value);
    p
}

/// The entries of a `.pt` zip for `tensors`: `archive/data.pkl`, `archive/byteorder` and
/// one `archive/data/N` per storage, in that order.
pub fn pt_entries(tensors: &[(String, PtTensor)]) -> Vec<(String, Vec<u8>)> {
    pt_entries_with(state_dict_pickle(tensors), tensors)
}

/// [`pt_entries`] with `pickle` as `data.pkl` (its storages those of `tensors`).
pub fn pt_entries_with(pickle: Vec<u8>, tensors: &[(String, PtTensor)]) -> Vec<(String, Vec<u8>)> {
    let mut entries =
        vec![("archive/data.pkl".to_string(), pickle), ("archive/byteorder".to_string(), b"little".to_vec())];
    for (i, (_, t)) in tensors.iter().enumerate() {
        entries.push((format!("archive/data/{i}"), t.storage_bytes()));
    }
    entries
}

/// A zip of `(name, bytes, deflate)` entries, each stored or deflated (at level 9).
pub fn zip_entries(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for &(name, bytes, deflate) in entries {
        let options = if deflate {
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).compression_level(Some(9))
        } else {
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored)
        };
        w.start_file(name, options).expect("zip entry");
        w.write_all(bytes).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

/// A zip of `entries` (name, bytes), all stored (`deflate: false`) or all deflated.
pub fn zip_of(entries: &[(String, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let entries: Vec<(&str, &[u8], bool)> =
        entries.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice(), deflate)).collect();
    zip_entries(&entries)
}

/// A `.pt` of `tensors`, stored (uncompressed) as `torch.save` writes it.
pub fn pt_bytes(tensors: &[(String, PtTensor)]) -> Vec<u8> {
    zip_of(&pt_entries(tensors), false)
}

/// Where one entry of a zip lies, by the zip crate's reckoning.
#[derive(Clone, Copy, Debug)]
pub struct ZipEntry {
    /// Offset of its local file header.
    pub header: usize,
    /// Offset of its data.
    pub data: usize,
    /// Bytes of data there (compressed).
    pub len: usize,
}

/// Where entry `name` lies in `zip`.
pub fn zip_entry(zip: &[u8], name: &str) -> ZipEntry {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a zip");
    let entry = archive.by_name(name).expect("the entry");
    ZipEntry {
        header: entry.header_start() as usize,
        data: entry.data_start() as usize,
        len: entry.compressed_size() as usize,
    }
}
