//! Reader for PyTorch zip checkpoints (`torch.save`, PyTorch >= 1.6).
//!
//! Layout: a zip archive with one top folder `<archive>/` holding
//! `data.pkl` (a pickle describing the object), `data/<key>` (raw
//! little-endian storages), `byteorder` and `version`. The pickle is read by
//! the safe interpreter in [`super::pickle`] with the allow-list
//! [`ALLOWED_GLOBALS`]; tensors are then rebuilt from the recorded
//! `_rebuild_tensor_v2` / `_rebuild_parameter` / `_rebuild_qtensor` calls.
//!
//! Integrity (as Python's `zipfile.testzip()` checks, and more): entry names
//! are unique in the central directory; each entry's local header agrees
//! with the directory (name, CRC-32, sizes; or its data descriptor, which
//! `torch.save` writes); the CRC-32 of every byte read is verified. A damaged
//! download is refused naming the entry, never packed.
//!
//! Bounds (all violations are errors, never panics or huge allocations):
//! * everything the reader holds (decompressed entries, the pickle's values,
//!   materialised tensors) is summed against the caller's [`MemoryBudget`]
//!   before it is allocated;
//! * zip entries larger than [`MAX_ENTRY_BYTES`] or compressed more than
//!   [`MAX_COMPRESSION_RATIO`]x are refused before decompression;
//! * `data.pkl` is at most 256 MiB and parsed under [`pickle::Limits::default`],
//!   its values limited to what is left of the budget;
//! * a storage's declared size (`numel * element size`) is checked against
//!   its zip entry;
//! * every view index is bounds-checked with checked arithmetic;
//! * the total size of materialised tensors is at most
//!   [`OUTPUT_BUDGET_FACTOR`]x the bytes of storages actually read, plus
//!   1 MiB, so overlapping or repeated views cannot amplify memory use.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek};
use std::rc::Rc;

use zip::ZipArchive;

use super::pickle::{self, Node, NodeId, Tree};
use super::{
    checked_numel, CheckpointError, ConfigValue, MemoryBudget, Meter, RawTensor, SourceConfig, SourceFormat, StateDict,
    StateDictBuilder, TensorData,
};
use crate::untrusted::shown;

/// Globals a checkpoint pickle may reference. Everything else is refused by
/// name without being resolved.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_qtensor",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.QInt8Storage",
    "torch.qint8",
    "torch.per_tensor_affine",
    // Only so that a per-channel checkpoint gets a clear "unsupported" message.
    "torch.per_channel_affine",
];

/// Largest zip entry that will be decompressed (4 GiB).
pub const MAX_ENTRY_BYTES: u64 = 4 << 30;
/// Largest accepted ratio of uncompressed to compressed entry size.
pub const MAX_COMPRESSION_RATIO: u64 = 1000;
/// Largest accepted `data.pkl` (256 MiB).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Materialised tensors may total this many times the storage bytes read.
pub const OUTPUT_BUDGET_FACTOR: u64 = 16;
/// Extra output allowance on top of the factor (covers tiny storages).
const OUTPUT_BUDGET_SLACK: u64 = 1 << 20;
/// Deepest nesting of `_rebuild_parameter(_rebuild_...(...))` followed.
const MAX_REBUILD_DEPTH: usize = 8;

/// Element type of a PyTorch storage class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageKind {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    QInt8,
}

impl StorageKind {
    fn from_global(name: &str) -> Option<Self> {
        Some(match name {
            "torch.FloatStorage" => Self::F32,
            "torch.HalfStorage" => Self::F16,
            "torch.BFloat16Storage" => Self::BF16,
            "torch.DoubleStorage" => Self::F64,
            "torch.LongStorage" => Self::I64,
            "torch.IntStorage" => Self::I32,
            "torch.ShortStorage" => Self::I16,
            "torch.CharStorage" => Self::I8,
            "torch.ByteStorage" => Self::U8,
            "torch.BoolStorage" => Self::Bool,
            "torch.QInt8Storage" => Self::QInt8,
            _ => return None,
        })
    }

    /// Bytes per element in the file.
    pub(crate) fn elem_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool | Self::QInt8 => 1,
        }
    }

    /// Bytes per element once materialised as [`TensorData`].
    pub(crate) fn output_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 | Self::F64 => 4,
            Self::I64 | Self::I32 | Self::I16 | Self::I8 | Self::U8 | Self::Bool => 8,
            Self::QInt8 => 1,
        }
    }

    /// PyTorch's dtype name.
    pub(crate) fn dtype_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F64 => "float64",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
            Self::QInt8 => "qint8",
        }
    }
}

/// A `('storage', StorageType, key, location, numel)` persistent id.
#[derive(Clone, Debug)]
struct StorageRef {
    kind: StorageKind,
    key: String,
    numel: u64,
}

/// A strided view over a storage.
#[derive(Clone, Debug)]
struct View {
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl View {
    /// The `storage` identity string documented on [`RawTensor::storage`].
    fn identity(&self, key: &str) -> String {
        let contiguous = is_contiguous(&self.shape, &self.stride);
        let mut id = format!("pt:{key}");
        if self.offset != 0 || !contiguous {
            id.push_str(&format!("@{}", self.offset));
        }
        if !contiguous {
            let strides: Vec<String> = self.stride.iter().map(|s| s.to_string()).collect();
            id.push('/');
            id.push_str(&strides.join(","));
        }
        id
    }
}

/// Whether `stride` is the row-major contiguous stride of `shape`
/// (dimensions of size 1 may have any stride).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// Source of raw storage bytes, keyed by the persistent-id key.
trait StorageSource {
    /// Makes storage `key` available and returns its length in bytes, or
    /// `None` if there is no such storage. What it holds is counted on `meter`.
    /// A storage shorter than `min_bytes` is left unread: its length is
    /// returned for the caller to refuse.
    fn load(&mut self, key: &str, min_bytes: u64, meter: &mut Meter) -> Result<Option<u64>, CheckpointError>;
    /// The bytes of a storage made available by [`StorageSource::load`].
    fn get(&self, key: &str) -> Option<&[u8]>;
    /// Total bytes of storages read so far (for the output budget).
    fn bytes_read(&self) -> u64;
}

/// Storages read lazily from the zip archive, each at most once.
struct ZipStorages<'z, R: Read + Seek> {
    archive: &'z mut Archive<R>,
    prefix: String,
    cache: HashMap<String, Vec<u8>>,
    bytes_read: u64,
}

impl<R: Read + Seek> StorageSource for ZipStorages<'_, R> {
    fn load(&mut self, key: &str, min_bytes: u64, meter: &mut Meter) -> Result<Option<u64>, CheckpointError> {
        if let Some(bytes) = self.cache.get(key) {
            return Ok(Some(bytes.len() as u64));
        }
        let entry = format!("{}/data/{key}", self.prefix);
        let Some(d) = self.archive.dir_entry(&entry)? else {
            return Ok(None);
        };
        // Too short by its directory size: refused before it is decompressed
        // or counted.
        if d.size < min_bytes {
            return Ok(Some(d.size));
        }
        let bytes = self.archive.read_dir_entry(&entry, &d, MAX_ENTRY_BYTES, meter)?;
        let len = bytes.len() as u64;
        self.bytes_read = self.bytes_read.saturating_add(len);
        self.cache.insert(key.to_string(), bytes);
        Ok(Some(len))
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        self.cache.get(key).map(Vec::as_slice)
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

fn zip_error(file: &str, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Zip { file: file.to_string(), detail: e.to_string() }
}

/// The archive's reader, shared by the zip crate (which parses the central
/// directory and decompresses) and by [`Archive`]'s own checks of the local
/// headers, which the zip crate reads only to find where data starts. Each
/// call borrows the reader for its own duration only; a reentrant call is an
/// I/O error, never a panic.
struct Shared<R>(Rc<RefCell<R>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<R> Shared<R> {
    fn with<T>(&self, f: impl FnOnce(&mut R) -> io::Result<T>) -> io::Result<T> {
        let mut r = self.0.try_borrow_mut().map_err(|_| io::Error::other("zip reader used reentrantly"))?;
        f(&mut r)
    }
}

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|r| r.read(buf))
    }
}

impl<R: Seek> Seek for Shared<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.with(|r| r.seek(pos))
    }
}

/// Zip record signatures.
const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// General-purpose flag: CRC and sizes follow the data in a data descriptor
/// (PyTorch's writer sets it), the local header's copies are zero.
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
/// A 32-bit size field saying "see the zip64 extra field".
const ZIP64_MARK: u32 = 0xffff_ffff;

/// Little-endian field readers over a header already in memory (offsets are
/// constants inside the fixed-size header, so `get` never fails in practice;
/// a failure reads as zero and is then caught as a mismatch).
fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map_or(0, u16::from_le_bytes)
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// What the central directory records for one entry.
struct DirEntry {
    index: usize,
    name_raw: Vec<u8>,
    header_start: u64,
    data_start: u64,
    compressed: u64,
    size: u64,
    crc: u32,
}

/// A `torch.save` archive whose entries are read whole, each verified as
/// `zipfile.testzip()` would and more: names unique in the directory, the
/// local header agreeing with the directory (name, CRC-32, sizes; or the data
/// descriptor, when the writer used one), and the CRC-32 of the bytes read.
struct Archive<R> {
    zip: ZipArchive<Shared<R>>,
    raw: Shared<R>,
    file: String,
}

impl<R: Read + Seek> Archive<R> {
    /// Parses the central directory and refuses duplicate names.
    fn open(reader: R, meter: &mut Meter) -> Result<Self, CheckpointError> {
        let file = meter.file().to_string();
        let raw = Shared(Rc::new(RefCell::new(reader)));
        let zip = ZipArchive::new(raw.clone()).map_err(|e| zip_error(&file, e))?;
        let archive = Archive { zip, raw, file };
        archive.check_unique_names(meter)?;
        Ok(archive)
    }

    fn damaged(&self, entry: &str, detail: String) -> CheckpointError {
        CheckpointError::ZipEntryDamaged { file: self.file.clone(), entry: entry.to_string(), detail }
    }

    /// Walks the central directory records: the zip crate keeps the last of
    /// several entries with one name, so a repeated name would let a file
    /// show one content to this reader and another to other tools.
    fn check_unique_names(&self, meter: &mut Meter) -> Result<(), CheckpointError> {
        let io = |e: io::Error| zip_error(&self.file, format!("reading the central directory: {e}"));
        let mut raw = self.raw.clone();
        raw.seek(io::SeekFrom::Start(self.zip.central_directory_start())).map_err(io)?;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut records = 0usize;
        let mut fixed = [0u8; 46];
        // The zip crate read these records; they are contiguous, and the
        // walk ends at the first record that is not one of them.
        loop {
            if raw.read_exact(&mut fixed).is_err() || le32(&fixed, 0) != CENTRAL_HEADER_SIG {
                break;
            }
            let name_len = usize::from(le16(&fixed, 28));
            let skip = i64::from(le16(&fixed, 30)) + i64::from(le16(&fixed, 32));
            meter.charge(name_len as u64 + 64, || "the zip directory".to_string())?;
            let mut name = vec![0u8; name_len];
            raw.read_exact(&mut name).map_err(io)?;
            raw.seek(io::SeekFrom::Current(skip)).map_err(io)?;
            records += 1;
            if !seen.insert(name.clone()) {
                return Err(CheckpointError::DuplicateZipEntry {
                    file: self.file.clone(),
                    entry: String::from_utf8_lossy(&name).into_owned(),
                });
            }
        }
        if records != self.zip.len() {
            // Distinct raw names that decode to one name (or a directory
            // the walk could not follow): ambiguous either way.
            return Err(zip_error(
                &self.file,
                format!("the central directory holds {records} records for {} distinct names", self.zip.len()),
            ));
        }
        Ok(())
    }

    fn dir_entry(&mut self, name: &str) -> Result<Option<DirEntry>, CheckpointError> {
        let Some(index) = self.zip.index_for_name(name) else {
            return Ok(None);
        };
        let e =
            self.zip.by_index_raw(index).map_err(|e| zip_error(&self.file, format!("entry '{}': {e}", shown(name))))?;
        Ok(Some(DirEntry {
            index,
            name_raw: e.name_raw().to_vec(),
            header_start: e.header_start(),
            data_start: e.data_start(),
            compressed: e.compressed_size(),
            size: e.size(),
            crc: e.crc32(),
        }))
    }

    /// Compares the local header (and the data descriptor, if the writer
    /// used one) with what the central directory records.
    fn check_local_header(&self, name: &str, d: &DirEntry) -> Result<(), CheckpointError> {
        let mut raw = self.raw.clone();
        let io = |e: io::Error| self.damaged(name, format!("its local header cannot be read: {e}"));
        raw.seek(io::SeekFrom::Start(d.header_start)).map_err(io)?;
        let mut h = [0u8; 30];
        raw.read_exact(&mut h).map_err(io)?;
        if le32(&h, 0) != LOCAL_HEADER_SIG {
            return Err(self.damaged(name, "its local header signature is missing".to_string()));
        }
        let mut local_name = vec![0u8; usize::from(le16(&h, 26))];
        raw.read_exact(&mut local_name).map_err(io)?;
        if local_name != d.name_raw {
            let local = String::from_utf8_lossy(&local_name);
            return Err(self.damaged(name, format!("its local header names it '{}'", shown(&local))));
        }
        let mut extra = vec![0u8; usize::from(le16(&h, 28))];
        raw.read_exact(&mut extra).map_err(io)?;

        let flags = le16(&h, 6);
        let (crc, csize32, usize32) = (le32(&h, 14), le32(&h, 18), le32(&h, 22));
        let descriptor = flags & FLAG_DATA_DESCRIPTOR != 0;
        // With a data descriptor the local copies are zero (or, from some
        // writers, the true values): only nonzero ones are compared here.
        if !(descriptor && crc == 0) && crc != d.crc {
            return Err(self.damaged(name, format!("local header CRC-32 {crc:08x}, directory {:08x}", d.crc)));
        }
        let zip64 = zip64_sizes(&extra, usize32, csize32);
        let local_size = if usize32 == ZIP64_MARK { zip64.0 } else { Some(u64::from(usize32)) };
        let local_compressed = if csize32 == ZIP64_MARK { zip64.1 } else { Some(u64::from(csize32)) };
        for (what, local, dir) in [("size", local_size, d.size), ("compressed size", local_compressed, d.compressed)] {
            let skip = descriptor && local == Some(0);
            if !skip && local != Some(dir) {
                let local = local.map_or_else(|| "missing".to_string(), |v| v.to_string());
                return Err(self.damaged(name, format!("local header {what} {local}, directory {dir}")));
            }
        }
        if descriptor {
            self.check_data_descriptor(name, d)?;
        }
        Ok(())
    }

    /// The data descriptor after the data: optional signature, CRC-32, then
    /// 32-bit or (zip64) 64-bit sizes.
    fn check_data_descriptor(&self, name: &str, d: &DirEntry) -> Result<(), CheckpointError> {
        let mut raw = self.raw.clone();
        let at = d
            .data_start
            .checked_add(d.compressed)
            .ok_or_else(|| self.damaged(name, "its data ends past 2^64".into()))?;
        let mut b = [0u8; 24];
        let got = raw.seek(io::SeekFrom::Start(at)).and_then(|_| read_up_to(&mut raw, &mut b)).unwrap_or(0);
        let b = &b[..got];
        let body = if le32(b, 0) == DATA_DESCRIPTOR_SIG { b.get(4..).unwrap_or(&[]) } else { b };
        let crc = le32(body, 0);
        let sizes32 =
            body.len() >= 12 && u64::from(le32(body, 4)) == d.compressed && u64::from(le32(body, 8)) == d.size;
        let sizes64 = body.len() >= 20 && le64(body, 4) == d.compressed && le64(body, 12) == d.size;
        if body.len() < 12 || crc != d.crc || !(sizes32 || sizes64) {
            return Err(self.damaged(
                name,
                format!(
                    "its data descriptor (CRC-32 {crc:08x}) disagrees with the directory (CRC-32 {:08x}, {} bytes)",
                    d.crc, d.size
                ),
            ));
        }
        Ok(())
    }

    /// Reads entry `name` whole, after the zip-bomb limits, the header checks
    /// and the memory budget; verifies its CRC-32. `Ok(None)` if there is no
    /// such entry.
    fn read_entry(&mut self, name: &str, max_size: u64, meter: &mut Meter) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some(d) = self.dir_entry(name)? else {
            return Ok(None);
        };
        self.read_dir_entry(name, &d, max_size, meter).map(Some)
    }

    /// [`Archive::read_entry`] for the entry `d` already found in the
    /// directory.
    fn read_dir_entry(
        &mut self,
        name: &str,
        d: &DirEntry,
        max_size: u64,
        meter: &mut Meter,
    ) -> Result<Vec<u8>, CheckpointError> {
        let (size, compressed) = (d.size, d.compressed);
        if size > max_size || size > compressed.saturating_mul(MAX_COMPRESSION_RATIO) {
            return Err(CheckpointError::ZipEntryTooLarge {
                file: self.file.clone(),
                entry: name.to_string(),
                size,
                compressed,
                max_size,
                max_ratio: MAX_COMPRESSION_RATIO,
            });
        }
        self.check_local_header(name, d)?;
        meter.charge(size, || format!("zip entry '{}'", shown(name)))?;
        let mut entry =
            self.zip.by_index(d.index).map_err(|e| zip_error(&self.file, format!("entry '{}': {e}", shown(name))))?;
        // The budget admitted `size` bytes; the entry may still deliver
        // fewer (checked below), never more (`take`).
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read = (&mut entry).take(size).read_to_end(&mut bytes);
        drop(entry);
        if let Err(e) = read {
            return Err(self.damaged(name, format!("decompressing it failed: {e}")));
        }
        if (bytes.len() as u64) != size {
            return Err(self.damaged(name, format!("it ends after {} of its {size} bytes", bytes.len())));
        }
        // The zip crate checks the CRC only once a reader reaches the end of
        // the entry; reading exactly `size` bytes never does, so check here.
        let crc = itera_edge::format::crc32(&bytes);
        if crc != d.crc {
            return Err(
                self.damaged(name, format!("its bytes have CRC-32 {crc:08x}, the directory records {:08x}", d.crc))
            );
        }
        Ok(bytes)
    }

    /// Finds `<archive>/data.pkl` and returns `<archive>`.
    fn find_prefix(&self) -> Option<String> {
        let mut best: Option<&str> = None;
        for name in self.zip.file_names() {
            if let Some(prefix) = name.strip_suffix("/data.pkl") {
                let depth = |p: &str| p.matches('/').count();
                // Prefer the shallowest folder (normally exactly one level).
                let better = match best {
                    Some(b) => depth(prefix) < depth(b),
                    None => true,
                };
                if better {
                    best = Some(prefix);
                }
            }
        }
        best.map(str::to_string)
    }
}

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The (uncompressed, compressed) sizes of a local header's zip64 extra
/// field (tag 1): each present only where the 32-bit field is the marker.
fn zip64_sizes(extra: &[u8], usize32: u32, csize32: u32) -> (Option<u64>, Option<u64>) {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (tag, len) = (le16(extra, at), usize::from(le16(extra, at + 2)));
        let body = extra.get(at + 4..at + 4 + len).unwrap_or(&[]);
        if tag == 1 {
            let mut fields = body.chunks_exact(8).map(|c| le64(c, 0));
            let size = if usize32 == ZIP64_MARK { fields.next() } else { None };
            let compressed = if csize32 == ZIP64_MARK { fields.next() } else { None };
            return (size, compressed);
        }
        at += 4 + len;
    }
    (None, None)
}

/// Reads a PyTorch zip checkpoint from `reader` within the default
/// [`MemoryBudget`]. `file` names it in errors.
pub fn load_zip<R: Read + Seek>(reader: R, file: &str) -> Result<StateDict, CheckpointError> {
    read_zip(reader, &mut Meter::new(&MemoryBudget::default(), file))
}

/// Reads a PyTorch zip checkpoint, counting what it holds on `meter`.
pub(crate) fn read_zip<R: Read + Seek>(reader: R, meter: &mut Meter) -> Result<StateDict, CheckpointError> {
    let mut archive = Archive::open(reader, meter)?;
    let file = archive.file.clone();
    let prefix = archive.find_prefix().ok_or_else(|| CheckpointError::MissingDataPkl { file: file.clone() })?;

    if let Some(order) = archive.read_entry(&format!("{prefix}/byteorder"), 64, meter)? {
        let order = String::from_utf8_lossy(&order).trim().to_string();
        if order != "little" {
            return Err(CheckpointError::UnsupportedByteOrder { file, order });
        }
    }

    let pkl = archive
        .read_entry(&format!("{prefix}/data.pkl"), MAX_PICKLE_BYTES, meter)?
        .ok_or_else(|| CheckpointError::MissingDataPkl { file: file.clone() })?;
    // The pickle's values may take what is left of the budget.
    let limits = pickle::Limits {
        max_bytes: usize::try_from(meter.remaining()).unwrap_or(usize::MAX),
        ..pickle::Limits::default()
    };
    let tree = match pickle::parse(&pkl, ALLOWED_GLOBALS, &limits) {
        Ok(tree) => tree,
        Err(pickle::PickleError::MemoryExceeded { needed, .. }) => {
            return Err(meter.over_budget(needed as u64, "data.pkl's values".to_string()))
        }
        Err(error) => return Err(CheckpointError::Pickle { file, error }),
    };
    meter.charge(tree.bytes() as u64, || "data.pkl's values".to_string())?;
    drop(pkl);

    // A TorchScript archive (torch.jit.save) holds the module tree, and the traced code says
    // what the tree does not: how many experts the router picks.
    let traced = match is_torchscript(&tree) {
        true => traced_top_k(&mut archive, &prefix, meter)?,
        false => None,
    };
    let mut storages = ZipStorages { archive: &mut archive, prefix, cache: HashMap::new(), bytes_read: 0 };
    let mut sd = build_state_dict(&tree, &mut storages, meter)?;
    // A module tree carries no config of its own: the traced code's is the one.
    sd.config = sd.config.take().or(traced);
    Ok(sd)
}

/// Whether the pickled object is a TorchScript module (its class under `__torch__`).
fn is_torchscript(tree: &Tree) -> bool {
    tree.class_name(tree.root()).is_some_and(|c| c.starts_with("__torch__."))
}

/// Largest traced-code file read for its `torch.topk` calls.
const MAX_CODE_BYTES: u64 = 16 << 20;

/// The `k` of the traced code's `torch.topk(x, k)` calls (the router's), as a config
/// (`top_k_experts`); `None` when the code has none. Calls with different `k` are refused.
fn traced_top_k<R: Read + Seek>(
    archive: &mut Archive<R>,
    prefix: &str,
    meter: &mut Meter,
) -> Result<Option<SourceConfig>, CheckpointError> {
    let code = format!("{prefix}/code/");
    let files: Vec<String> =
        archive.zip.file_names().filter(|n| n.starts_with(&code) && n.ends_with(".py")).map(str::to_string).collect();
    let mut found: Option<(i64, String)> = None;
    for name in files {
        let Some(text) = archive.read_entry(&name, MAX_CODE_BYTES, meter)? else { continue };
        let text = String::from_utf8_lossy(&text);
        for k in topk_arguments(&text) {
            let short = name.strip_prefix(&code).unwrap_or(&name).to_string();
            match &found {
                Some((other, at)) if *other != k => {
                    return Err(CheckpointError::Export {
                        file: archive.file.clone(),
                        format: SourceFormat::TorchScript,
                        detail: format!(
                            "the traced code calls torch.topk with k = {other} ({}) and k = {k} ({}); pass --top-k",
                            shown(at),
                            shown(&short)
                        ),
                    })
                }
                Some(_) => {}
                None => found = Some((k, short)),
            }
        }
    }
    Ok(found.map(|(k, at)| SourceConfig::top_k(format!("traced code (code/{})", shown(&at)), k)))
}

/// The integer second arguments of every `torch.topk(expr, k` in traced code.
fn topk_arguments(code: &str) -> Vec<i64> {
    code.match_indices("torch.topk(")
        .filter_map(|(at, call)| {
            let args = &code[at + call.len()..];
            // The first argument is a plain name in traced code: no nested commas.
            let (_, rest) = args.split_once(',')?;
            let k = rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?;
            k.parse().ok()
        })
        .collect()
}

/// What the pickled object holds: the state dict's pairs, the checkpoint's own
/// config where it has one, and the names of the other entries (unused).
struct Contents {
    state_dict: Vec<(String, NodeId)>,
    config: Option<SourceConfig>,
    ignored: Vec<String>,
    format: SourceFormat,
}

/// Keys under which training code saves the state dict beside other entries.
const STATE_DICT_KEYS: [&str; 2] = ["model_state_dict", "state_dict"];
/// Keys under which it saves the model's hyper-parameters (an object or a dict).
const CONFIG_KEYS: [&str; 4] = ["config", "model_config", "hparams", "args"];

/// Finds the state dict inside the pickled object: the object itself, or its
/// `model_state_dict` (or `state_dict`) entry, with the config and the other
/// entries beside it.
fn contents(tree: &Tree, file: &str) -> Result<Contents, CheckpointError> {
    let root = tree.root();
    if is_torchscript(tree) {
        return module_contents(tree, file);
    }
    let named = |pairs: &[(NodeId, NodeId)]| -> Vec<(String, NodeId)> {
        pairs.iter().filter_map(|&(k, v)| tree.as_str(k).map(|k| (k.to_string(), v))).collect()
    };
    let Some(pairs) = tree.as_dict(root) else {
        let detail = match tree.class_name(root) {
            Some(class) => format!("the checkpoint's top-level object is a '{}' object, not a dict", shown(&class)),
            None => format!("the checkpoint's top-level object is a {}, not a dict", tree.node(root).kind()),
        };
        return Err(CheckpointError::Structure { file: file.to_string(), detail });
    };
    let Some((key, state_dict)) =
        STATE_DICT_KEYS.iter().find_map(|&k| tree.dict_get(root, k).and_then(|id| tree.as_dict(id)).map(|d| (k, d)))
    else {
        return Ok(Contents {
            state_dict: named(pairs),
            config: None,
            ignored: Vec::new(),
            format: SourceFormat::PyTorch,
        });
    };
    let config = CONFIG_KEYS.iter().find_map(|&k| {
        let id = tree.dict_get(root, k)?;
        let fields = tree.fields(id)?;
        let origin = match tree.class_name(id) {
            Some(class) => format!("{k} ({})", shown(&class)),
            None => k.to_string(),
        };
        Some((k, SourceConfig { origin, fields: config_fields(tree, fields) }))
    });
    let used = |k: &str| k == key || config.as_ref().is_some_and(|(c, _)| *c == k);
    let ignored = pairs
        .iter()
        .filter_map(|&(k, v)| {
            let name = tree.as_str(k)?;
            (!used(name)).then(|| match tree.class_name(v) {
                Some(class) => format!("{} ({})", shown(name), shown(&class)),
                None => shown(name).to_string(),
            })
        })
        .collect();
    Ok(Contents {
        state_dict: named(state_dict),
        config: config.map(|(_, c)| c),
        ignored,
        format: SourceFormat::PyTorch,
    })
}

/// Deepest module nesting followed in a TorchScript tree.
const MAX_MODULE_DEPTH: usize = 64;

/// The tensors of a TorchScript module tree, named by their attribute paths as
/// `state_dict()` names them: `<wrapper attributes>.layers.0.ssm.in_proj.weight`, with the
/// wrapper's own path (whatever it is called) taken off, so that `embedding.weight` is at
/// the top. Tensors outside the model are listed as ignored.
fn module_contents(tree: &Tree, file: &str) -> Result<Contents, CheckpointError> {
    let mut tensors: Vec<(String, NodeId)> = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![(String::new(), tree.root(), 0usize)];
    while let Some((path, id, depth)) = pending.pop() {
        if depth > MAX_MODULE_DEPTH || !seen.insert(id) {
            continue;
        }
        let Some(fields) = tree.fields(id) else { continue };
        // Children go on the stack last-first, so that they come off in attribute order.
        let mut children = Vec::new();
        for &(k, v) in fields {
            let Some(name) = tree.as_str(k) else { continue };
            let full = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
            match tree.node(v) {
                Node::Call { .. } => tensors.push((full, v)),
                Node::Object { .. } => children.push((full, v, depth + 1)),
                _ => {}
            }
        }
        pending.extend(children.into_iter().rev());
    }
    let wrapper = tensors
        .iter()
        .filter_map(|(n, _)| n.strip_suffix("embedding.weight").filter(|p| p.is_empty() || p.ends_with('.')))
        .min_by_key(|p| p.len())
        .map(str::to_string)
        .ok_or_else(|| CheckpointError::Export {
            file: file.to_string(),
            format: SourceFormat::TorchScript,
            detail: "no module has an 'embedding.weight' parameter: not an Itera-Lite model".into(),
        })?;
    let (mut state_dict, mut ignored) = (Vec::new(), Vec::new());
    for (name, id) in tensors {
        match name.strip_prefix(&wrapper) {
            Some(inner) => state_dict.push((inner.to_string(), id)),
            None => ignored.push(shown(&name).to_string()),
        }
    }
    Ok(Contents { state_dict, config: None, ignored, format: SourceFormat::TorchScript })
}

/// The numeric, boolean and integer-list fields of a config.
fn config_fields(tree: &Tree, fields: &[(NodeId, NodeId)]) -> std::collections::BTreeMap<String, ConfigValue> {
    fields
        .iter()
        .filter_map(|&(k, v)| {
            let value = match tree.node(v) {
                Node::Int(i) => ConfigValue::Int(*i),
                Node::Bool(b) => ConfigValue::Int(i64::from(*b)),
                Node::Float(f) => ConfigValue::Float(*f),
                Node::List(items) | Node::Tuple(items) => {
                    ConfigValue::Ints(items.iter().map(|&i| tree.as_int(i)).collect::<Option<Vec<_>>>()?)
                }
                _ => return None,
            };
            Some((tree.as_str(k)?.to_string(), value))
        })
        .collect()
}

const PACKED_SUFFIX: &str = "._packed_params._packed_params";

/// Turns the state dict of `tree` into a [`StateDict`], materialising tensors
/// from `storages`.
fn build_state_dict(
    tree: &Tree,
    storages: &mut dyn StorageSource,
    meter: &mut Meter,
) -> Result<StateDict, CheckpointError> {
    let file = meter.file().to_string();
    let Contents { state_dict, config, ignored, format } = contents(tree, &file)?;
    let named: Vec<(&str, NodeId)> = state_dict.iter().map(|(k, v)| (k.as_str(), *v)).collect();

    // Dynamic-quantized Linear modules: `<base>._packed_params._packed_params`.
    let packed_bases: HashSet<&str> = named.iter().filter_map(|(k, _)| k.strip_suffix(PACKED_SUFFIX)).collect();
    let is_unused_qparam = |key: &str| {
        [".scale", ".zero_point"]
            .iter()
            .any(|suffix| key.strip_suffix(suffix).is_some_and(|base| packed_bases.contains(base)))
    };

    let mut ctx = Materialiser { tree, storages, meter, produced: 0 };
    let mut out = StateDictBuilder::default();
    for &(key, value) in &named {
        if let Some(base) = key.strip_suffix(PACKED_SUFFIX) {
            const RESAVE: &str = "re-save the quantized model's state_dict with torch.save";
            let kind = |id: NodeId| tree.node(id).kind();
            let items = tree.as_sequence(value).ok_or_else(|| {
                ctx.tensor_error(key, format!("expected a (weight, bias) tuple, found a {}; {RESAVE}", kind(value)))
            })?;
            let Some(&weight) = items.first() else {
                return Err(ctx.tensor_error(key, format!("packed parameters are empty; {RESAVE}")));
            };
            let weight_name = format!("{base}.weight");
            let (t, dtype) = ctx.tensor(weight, &weight_name, 0)?.ok_or_else(|| {
                ctx.tensor_error(&weight_name, format!("packed weight is a {}, not a tensor; {RESAVE}", kind(weight)))
            })?;
            out.insert(weight_name, t, dtype);
            if let Some(&bias) = items.get(1).filter(|&&b| tree.node(b) != &Node::None) {
                let bias_name = format!("{base}.bias");
                let (t, dtype) = ctx.tensor(bias, &bias_name, 0)?.ok_or_else(|| {
                    ctx.tensor_error(
                        &bias_name,
                        format!("packed bias is a {}, not a tensor or None; {RESAVE}", kind(bias)),
                    )
                })?;
                out.insert(bias_name, t, dtype);
            }
        } else if is_unused_qparam(key) {
            // Output scale/zero_point of a dynamically quantized Linear: unused.
        } else if let Some((t, dtype)) = ctx.tensor(value, key, 0)? {
            out.insert(key.to_string(), t, dtype);
        }
        // Anything else (e.g. `._packed_params.dtype` = torch.qint8) is not a tensor: skipped.
    }
    if out.is_empty() {
        let keys: Vec<String> = named.iter().take(8).map(|(k, _)| k.chars().take(80).collect()).collect();
        return Err(CheckpointError::Structure { file, detail: format!("no tensors found (first keys: {keys:?})") });
    }
    Ok(StateDict { config, ignored, format, ..out.finish() })
}

/// Rebuilds tensors from recorded calls.
struct Materialiser<'a> {
    tree: &'a Tree,
    storages: &'a mut dyn StorageSource,
    /// Counts storages read and tensors produced; names the file.
    meter: &'a mut Meter,
    /// Bytes of tensor data produced so far.
    produced: u64,
}

impl Materialiser<'_> {
    fn tensor_error(&self, tensor: &str, detail: String) -> CheckpointError {
        CheckpointError::Tensor { file: self.meter.file().to_string(), tensor: tensor.to_string(), detail }
    }

    fn corrupt(&self, tensor: &str, what: String) -> CheckpointError {
        self.tensor_error(
            tensor,
            format!("{what}; the checkpoint is corrupted or was not written by torch.save: re-export it"),
        )
    }

    /// The tensor that node `id` rebuilds, with its source dtype, or `None`
    /// if the node is not a tensor.
    fn tensor(
        &mut self,
        id: NodeId,
        name: &str,
        depth: usize,
    ) -> Result<Option<(RawTensor, &'static str)>, CheckpointError> {
        let tree = self.tree;
        let Node::Call { func, args } = tree.node(id) else {
            return Ok(None);
        };
        let Some(func) = tree.global_name(*func) else {
            return Ok(None);
        };
        let args = tree.as_tuple(*args).unwrap_or(&[]);
        match func.as_str() {
            "torch._utils._rebuild_tensor_v2" => self.rebuild_tensor(args, name).map(Some),
            "torch._utils._rebuild_qtensor" => self.rebuild_qtensor(args, name).map(Some),
            "torch._utils._rebuild_parameter" => {
                if depth >= MAX_REBUILD_DEPTH {
                    return Err(self.corrupt(name, format!("parameter rebuilds nest deeper than {MAX_REBUILD_DEPTH}")));
                }
                let Some(&data) = args.first() else {
                    return Err(self.corrupt(name, "_rebuild_parameter has no data argument".to_string()));
                };
                self.tensor(data, name, depth + 1)
            }
            _ => Ok(None),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&mut self, args: &[NodeId], name: &str) -> Result<(RawTensor, &'static str), CheckpointError> {
        let (storage, view) = self.storage_and_view(args, name, "_rebuild_tensor_v2")?;
        if storage.kind == StorageKind::QInt8 {
            return Err(self.corrupt(name, "QInt8Storage used outside _rebuild_qtensor".to_string()));
        }
        let bytes = self.view_bytes(&storage, &view, name)?;
        let data = decode(storage.kind, &bytes);
        let tensor = RawTensor { storage: Some(view.identity(&storage.key)), shape: view.shape, data };
        Ok((tensor, storage.kind.dtype_name()))
    }

    /// `_rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad, backward_hooks)`
    /// with `quantizer_params = (torch.per_tensor_affine, scale, zero_point)`.
    fn rebuild_qtensor(&mut self, args: &[NodeId], name: &str) -> Result<(RawTensor, &'static str), CheckpointError> {
        let tree = self.tree;
        let qparams = args
            .get(4)
            .and_then(|&id| tree.as_tuple(id))
            .ok_or_else(|| self.corrupt(name, "_rebuild_qtensor has no quantizer parameters tuple".to_string()))?;
        let scheme = qparams.first().and_then(|&id| tree.global_name(id)).unwrap_or_default();
        if scheme != "torch.per_tensor_affine" {
            let scheme = if scheme.is_empty() { "an unknown scheme".to_string() } else { scheme };
            return Err(self.tensor_error(name, format!("quantization scheme {scheme} is not supported, only per-tensor affine qint8 is; quantize with torch.quantization.quantize_dynamic(model, dtype=torch.qint8) (per-tensor) or pack the FP32 checkpoint")));
        }
        let scale = qparams.get(1).and_then(|&id| tree.as_f64(id));
        let zero_point = qparams.get(2).and_then(|&id| tree.as_int(id));
        let (Some(scale), Some(zero_point)) = (scale, zero_point) else {
            return Err(
                self.corrupt(name, "quantizer parameters are not (scheme, scale: float, zero_point: int)".to_string())
            );
        };
        let (storage, view) = self.storage_and_view(args, name, "_rebuild_qtensor")?;
        if storage.kind != StorageKind::QInt8 {
            return Err(self.tensor_error(name, format!("quantized tensor over {} storage; only qint8 quantized tensors are supported: quantize with dtype=torch.qint8", storage.kind.dtype_name())));
        }
        let bytes = self.view_bytes(&storage, &view, name)?;
        let q = bytes.iter().map(|&b| b as i8).collect();
        let tensor = RawTensor {
            storage: Some(view.identity(&storage.key)),
            shape: view.shape,
            data: TensorData::QInt8 { q, scale, zero_point },
        };
        Ok((tensor, "qint8"))
    }

    /// Parses the common `(storage, storage_offset, size, stride, ...)` arguments.
    fn storage_and_view(&self, args: &[NodeId], name: &str, func: &str) -> Result<(StorageRef, View), CheckpointError> {
        let tree = self.tree;
        if args.len() < 4 {
            return Err(self.corrupt(name, format!("{func} has {} arguments, expected at least 4", args.len())));
        }
        let storage = self.storage_ref(args[0], name)?;
        let offset = tree
            .as_int(args[1])
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.corrupt(name, "storage offset is not a non-negative int".to_string()))?;
        let shape = self
            .usize_tuple(args[2])
            .ok_or_else(|| self.corrupt(name, "size is not a tuple of non-negative ints".to_string()))?;
        let stride = self
            .usize_tuple(args[3])
            .ok_or_else(|| self.corrupt(name, "stride is not a tuple of non-negative ints".to_string()))?;
        if shape.len() != stride.len() {
            return Err(
                self.corrupt(name, format!("size has {} dimensions but stride has {}", shape.len(), stride.len()))
            );
        }
        Ok((storage, View { offset, shape, stride }))
    }

    fn usize_tuple(&self, id: NodeId) -> Option<Vec<usize>> {
        let tree = self.tree;
        tree.as_sequence(id)?.iter().map(|&i| tree.as_int(i).and_then(|v| usize::try_from(v).ok())).collect()
    }

    /// Parses a `BINPERSID` record `('storage', StorageType, key, location, numel)`.
    fn storage_ref(&self, id: NodeId, name: &str) -> Result<StorageRef, CheckpointError> {
        let tree = self.tree;
        let bad = || {
            self.corrupt(name, "storage reference is not ('storage', StorageType, key, location, numel)".to_string())
        };
        let Node::PersistentId(pid) = tree.node(id) else {
            return Err(bad());
        };
        let items = tree.as_tuple(*pid).ok_or_else(bad)?;
        if items.len() < 5 || tree.as_str(items[0]) != Some("storage") {
            return Err(bad());
        }
        let type_name = tree.global_name(items[1]).ok_or_else(bad)?;
        let kind = StorageKind::from_global(&type_name).ok_or_else(|| {
            self.tensor_error(name, format!("storage type {type_name} is not supported; convert the tensor to float32, float16, bfloat16, float64 or an integer type before saving"))
        })?;
        let key = match tree.node(items[2]) {
            Node::Str(s) => s.clone(),
            Node::Int(v) => v.to_string(),
            _ => return Err(bad()),
        };
        let numel = tree.as_int(items[4]).and_then(|v| u64::try_from(v).ok()).ok_or_else(bad)?;
        Ok(StorageRef { kind, key, numel })
    }

    /// The view's elements as contiguous bytes in the storage's element type,
    /// after all bounds and budget checks.
    fn view_bytes(&mut self, storage: &StorageRef, view: &View, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let elem = storage.kind.elem_size();
        let numel =
            checked_numel(&view.shape).ok_or_else(|| self.corrupt(name, format!("size {:?} overflows", view.shape)))?;
        let declared = storage.numel.checked_mul(elem as u64).ok_or_else(|| {
            self.corrupt(name, format!("storage '{}' declares an impossible size", shown(&storage.key)))
        })?;

        // Read the storage entry (once per archive), unless it is shorter
        // than declared.
        match self.storages.load(&storage.key, declared, self.meter)? {
            None if declared != 0 => {
                return Err(self.tensor_error(name, format!("storage '{}' is missing from the archive; the file is truncated or corrupted: copy or download it again", shown(&storage.key))));
            }
            Some(len) if len < declared => {
                return Err(self.tensor_error(name, format!("storage '{}' holds {len} bytes but the checkpoint declares {declared} bytes for it; the file is corrupted: re-export it", shown(&storage.key))));
            }
            _ => {}
        }
        if numel == 0 {
            return Ok(Vec::new());
        }

        // Highest element index the view touches, with checked arithmetic.
        let max_index = view.shape.iter().zip(&view.stride).try_fold(view.offset, |acc, (&d, &s)| {
            d.checked_sub(1).and_then(|d| d.checked_mul(s)).and_then(|x| acc.checked_add(x))
        });
        let in_bounds = matches!(max_index, Some(m) if (m as u64) < storage.numel);
        if !in_bounds {
            return Err(self.corrupt(
                name,
                format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches past the end of storage '{}' ({} elements)",
                    view.offset,
                    view.shape,
                    view.stride,
                    shown(&storage.key),
                    storage.numel
                ),
            ));
        }

        // Output budget: materialised data may not outgrow what was read.
        let read = self.storages.bytes_read();
        let out_bytes = (numel as u64).saturating_mul(storage.kind.output_size() as u64);
        let budget = read.saturating_mul(OUTPUT_BUDGET_FACTOR).saturating_add(OUTPUT_BUDGET_SLACK);
        let produced = self.produced.saturating_add(out_bytes);
        if produced > budget {
            return Err(self.tensor_error(name, format!("materialising this view would bring the tensors to {produced} bytes, more than {OUTPUT_BUDGET_FACTOR}x the {read} bytes of storage read; its strides overlap implausibly: save contiguous tensors (tensor.clone()) instead")));
        }
        // A strided view is gathered into a buffer of its own first.
        let contiguous = is_contiguous(&view.shape, &view.stride);
        let gathered = if contiguous { 0 } else { (numel as u64).saturating_mul(elem as u64) };
        self.meter.charge(out_bytes.saturating_add(gathered), || format!("tensor '{}'", shown(name)))?;
        self.produced = produced;

        let bytes = self.storages.get(&storage.key).unwrap_or(&[]);
        // Only the declared part of the entry is addressable.
        let bytes = usize::try_from(declared).ok().and_then(|d| bytes.get(..d)).unwrap_or(bytes);
        match gather(bytes, elem, view, numel) {
            Some(out) => Ok(out.into_owned()),
            None => Err(self.corrupt(name, "view reaches outside its storage".to_string())),
        }
    }
}

/// Copies the view's elements out of `storage` in row-major order. The caller
/// has verified that every index is in bounds; any index that is not (which
/// would be a bug) yields `None` rather than a panic.
fn gather<'s>(storage: &'s [u8], elem: usize, view: &View, numel: usize) -> Option<Cow<'s, [u8]>> {
    // Dimensions of size 1 do not move through memory.
    let (shape, stride): (Vec<usize>, Vec<usize>) =
        view.shape.iter().zip(&view.stride).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).unzip();
    if is_contiguous(&shape, &stride) {
        let start = view.offset.checked_mul(elem)?;
        let end = view.offset.checked_add(numel)?.checked_mul(elem)?;
        return storage.get(start..end).map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(numel.checked_mul(elem)?);
    let mut index = vec![0usize; shape.len()];
    let mut pos = view.offset;
    for _ in 0..numel {
        let start = pos.checked_mul(elem)?;
        out.extend_from_slice(storage.get(start..start.checked_add(elem)?)?);
        // Odometer increment; wrapping arithmetic is exact modulo 2^64 and
        // every position actually used was bounds-checked above.
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            pos = pos.wrapping_add(stride[d]);
            if index[d] < shape[d] {
                break;
            }
            pos = pos.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            index[d] = 0;
        }
    }
    Some(Cow::Owned(out))
}

/// Converts contiguous little-endian elements of `kind` into [`TensorData`]
/// (qint8 is handled by the caller).
pub(crate) fn decode(kind: StorageKind, bytes: &[u8]) -> TensorData {
    fn arr<const N: usize>(c: &[u8]) -> [u8; N] {
        // `chunks_exact(N)` always yields N bytes.
        c.try_into().unwrap_or([0; N])
    }
    match kind {
        StorageKind::F32 => TensorData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(arr(c))).collect()),
        StorageKind::F16 => {
            TensorData::F32(bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes(arr(c)).to_f32()).collect())
        }
        StorageKind::BF16 => {
            TensorData::F32(bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes(arr(c)).to_f32()).collect())
        }
        StorageKind::F64 => TensorData::F32(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(arr(c)) as f32).collect()),
        StorageKind::I64 => TensorData::I64(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(arr(c))).collect()),
        StorageKind::I32 => {
            TensorData::I64(bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(arr(c)))).collect())
        }
        StorageKind::I16 => {
            TensorData::I64(bytes.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes(arr(c)))).collect())
        }
        StorageKind::I8 | StorageKind::QInt8 => TensorData::I64(bytes.iter().map(|&b| i64::from(b as i8)).collect()),
        StorageKind::U8 | StorageKind::Bool => TensorData::I64(bytes.iter().map(|&b| i64::from(b)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::super::{load_bytes, safetensors_to_vec};
    use super::*;
    use itera_test_support::torch::{rebuild_tensor, unicode, zip_entries, zip_entry, View, ZipEntry};
    use itera_test_support::XorShift64;

    /// The state dict of fixture `name`, or `None` when the fixtures are unavailable.
    fn fixture_state_dict(name: &str) -> Option<StateDict> {
        let (_, bytes) = fixture(name)?;
        Some(load_bytes(&bytes, name).expect("the fixture loads"))
    }

    fn data_f32(t: &RawTensor) -> &[f32] {
        match &t.data {
            TensorData::F32(v) => v,
            other => panic!("expected F32, got {other:?}"),
        }
    }

    #[test]
    fn micro_distilled() {
        let Some(sd) = fixture_state_dict("itera_lite_micro_distilled.pt") else {
            return;
        };
        assert_eq!(sd.len(), 61);
        assert_eq!(sd.names().next(), Some("embedding.weight"));
        assert_eq!(sd.names().last(), Some("lm_head.weight"));
        let shape = |n: &str| sd.get(n).map(|t| t.shape.clone());
        assert_eq!(shape("embedding.weight"), Some(vec![2000, 64]));
        assert_eq!(shape("layers.1.moe.layer.experts.3.w2.weight"), Some(vec![64, 32]));
        assert_eq!(shape("layers.0.ssm.conv1d.weight"), Some(vec![128, 1, 4]));
        assert_eq!(shape("layers.1.moe.layer.router.expert_counts"), Some(vec![4]));
        for (name, t) in &sd.tensors {
            assert_eq!(t.data.len(), t.numel().expect("numel"), "{name}");
            assert_eq!(sd.source_dtype(name), Some("float32"), "{name}");
        }
        let emb = sd.get("embedding.weight").expect("embedding");
        let head = sd.get("lm_head.weight").expect("lm_head");
        assert_eq!(emb.storage.as_deref(), Some("pt:0"));
        assert_eq!(emb.storage, head.storage, "tied weights share storage");
        assert_eq!(emb.data, head.data);
        assert_ne!(sd.get("position_embedding.weight").expect("pos").storage, emb.storage);
        assert!(data_f32(emb).iter().all(|v| v.is_finite()));
        assert!(data_f32(emb).iter().any(|&v| v != 0.0));
        // Values checked independently against the raw storage bytes.
        let conv = data_f32(sd.get("layers.0.ssm.conv1d.weight").expect("conv"));
        let head: Vec<f64> = conv[..4].iter().map(|&v| f64::from(v)).collect();
        assert_eq!(head, [0.3285997807979584, 0.039287347346544266, -0.2973250448703766, -0.004147959407418966]);
    }

    #[test]
    fn tiny_int8() {
        let Some(sd) = fixture_state_dict("itera_lite_tiny_int8.pt") else {
            return;
        };
        let w = sd.get("layers.0.ssm.in_proj.weight").expect("in_proj");
        assert_eq!(w.shape, vec![512, 128]);
        match &w.data {
            TensorData::QInt8 { q, scale, zero_point } => {
                assert_eq!(q.len(), 512 * 128);
                assert!((scale - 0.0007620919495820999).abs() < 1e-15, "{scale}");
                assert_eq!(*zero_point, 0);
                assert_eq!(&q[..8], &[-17, -28, 7, 31, -3, -8, 44, 8]);
                assert_eq!(q.iter().map(|&v| i64::from(v)).sum::<i64>(), -5744);
            }
            other => panic!("expected QInt8, got {other:?}"),
        }
        assert_eq!(sd.source_dtype("layers.0.ssm.in_proj.weight"), Some("qint8"));
        // in_proj has no bias; its output qparams and dtype marker are dropped.
        for gone in [
            "layers.0.ssm.in_proj.bias",
            "layers.0.ssm.in_proj.scale",
            "layers.0.ssm.in_proj.zero_point",
            "layers.0.ssm.in_proj._packed_params.dtype",
            "layers.0.ssm.in_proj._packed_params._packed_params",
        ] {
            assert!(sd.get(gone).is_none(), "{gone}");
        }
        let b = sd.get("layers.0.ssm.ssm.delta_proj.bias").expect("delta bias");
        assert_eq!(b.shape, vec![256]);
        assert_eq!(data_f32(b).len(), 256);
        assert!(matches!(
            sd.get("layers.0.ssm.ssm.delta_proj.weight").map(|t| &t.data),
            Some(TensorData::QInt8 { .. })
        ));
        let head = sd.get("lm_head.weight").expect("lm_head");
        assert_eq!(head.shape, vec![2000, 128]);
        assert!(matches!(head.data, TensorData::QInt8 { .. }));
        assert_ne!(head.storage, sd.get("embedding.weight").expect("emb").storage);
        assert_eq!(sd.get("embedding.weight").map(|t| t.shape.clone()), Some(vec![2000, 128]));
        assert!(!sd
            .names()
            .any(|n| n.contains("_packed_params") || n.ends_with(".scale") || n.ends_with(".zero_point")));
    }

    #[test]
    fn mixed_precision() {
        let Some(sd) = fixture_state_dict("itera_lite_mixed_precision.pt") else {
            return;
        };
        let gate = sd.get("layers.1.moe.layer.router.gate.weight").expect("gate");
        assert_eq!(gate.shape, vec![0, 128]);
        assert!(gate.data.is_empty());
        let emb = sd.get("embedding.weight").expect("embedding");
        assert_eq!(emb.shape, vec![8000, 128]);
        assert_eq!(sd.source_dtype("embedding.weight"), Some("float16"));
        assert_eq!(sd.source_dtype("layers.0.ssm.ssm.B"), Some("float32"));
        assert!(data_f32(emb).iter().all(|v| v.is_finite()));
        // FP16 -> f32 is exact: values and their f64 sum match the raw storage.
        let head: Vec<f64> = data_f32(emb)[..4].iter().map(|&v| f64::from(v)).collect();
        assert_eq!(head, [-0.03564453125, 0.024810791015625, -0.06597900390625, -0.032440185546875]);
        let sum: f64 = data_f32(emb).iter().map(|&v| f64::from(v)).sum();
        assert!((sum - -1541.209254026413).abs() < 1e-9, "{sum}");
        for (name, t) in &sd.tensors {
            assert_eq!(t.data.len(), t.numel().expect("numel"), "{name}");
        }
    }

    /// A hand-made storage source for view tests.
    struct MemStorages(HashMap<String, Vec<u8>>, u64);
    impl StorageSource for MemStorages {
        fn load(&mut self, key: &str, _min_bytes: u64, _meter: &mut Meter) -> Result<Option<u64>, CheckpointError> {
            let len = self.0.get(key).map(|b| b.len() as u64);
            self.1 += len.unwrap_or(0);
            Ok(len)
        }
        fn get(&self, key: &str) -> Option<&[u8]> {
            self.0.get(key).map(Vec::as_slice)
        }
        fn bytes_read(&self) -> u64 {
            self.1
        }
    }

    /// Pickle of `{name: _rebuild_tensor_v2(storage(key, numel), offset, size, stride, False, OrderedDict())}`.
    /// `(name, storage type, storage key, storage numel, offset, size, stride)`.
    type TensorSpec<'a> = (&'a str, &'a str, &'a str, usize, usize, &'a [usize], &'a [usize]);

    fn tensor_pickle(entries: &[TensorSpec]) -> Vec<u8> {
        let mut p = b"\x80\x02}(".to_vec();
        for &(name, storage, key, numel, offset, size, stride) in entries {
            p.extend(unicode(name));
            p.extend(rebuild_tensor(&View { storage, key, numel, offset, size, stride }, None));
        }
        p.extend_from_slice(b"u.");
        p
    }

    fn build(p: &[u8], storages: &[(&str, Vec<u8>)]) -> Result<StateDict, CheckpointError> {
        let tree = pickle::parse(p, ALLOWED_GLOBALS, &pickle::Limits::default())
            .map_err(|error| CheckpointError::Pickle { file: "t".into(), error })?;
        let mut src = MemStorages(storages.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), 0);
        build_state_dict(&tree, &mut src, &mut Meter::new(&MemoryBudget::default(), "t"))
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A TorchScript-style module tree: `__torch__.<wrapper>` with attribute `attr` holding
    /// a model whose `embedding` and `layers.0.norm` modules have a `weight` each, and one
    /// tensor of the wrapper's own.
    fn module_tree_pickle(wrapper: &str, attr: &str) -> Vec<u8> {
        let tensor = |key: &str| {
            rebuild_tensor(&View { storage: "FloatStorage", key, numel: 2, offset: 0, size: &[2], stride: &[1] }, None)
        };
        let module = |class: &str, fields: Vec<(&str, Vec<u8>)>| {
            let (module, name) = class.rsplit_once('.').unwrap_or(("m", class));
            let mut p = format!("c__torch__.{module}\n{name}\n)").into_bytes();
            p.extend_from_slice(b"\x81}(");
            p.extend(unicode("training"));
            p.push(0x88);
            for (k, v) in fields {
                p.extend(unicode(k));
                p.extend(v);
            }
            p.extend_from_slice(b"ub");
            p
        };
        let norm = module("torch.nn.LayerNorm", vec![("weight", tensor("1"))]);
        let layer = module("models.Block", vec![("norm", norm)]);
        let layers = module("torch.nn.ModuleList", vec![("0", layer)]);
        let embedding = module("torch.nn.Embedding", vec![("weight", tensor("0"))]);
        let model = module("models.IteraLiteModel", vec![("embedding", embedding), ("layers", layers)]);
        let mut p = vec![0x80, 2];
        p.extend(module(wrapper, vec![(attr, model), ("scale", tensor("2"))]));
        p.push(b'.');
        p
    }

    #[test]
    fn torchscript_module_trees_are_named_as_state_dicts_whatever_the_wrapper() {
        for (wrapper, attr) in [("utils.export.ExportWrapper", "model"), ("deploy.Net", "net"), ("x.Y", "inner")] {
            let p = module_tree_pickle(wrapper, attr);
            let sd = build(
                &p,
                &[("0", f32_bytes(&[1.0, 2.0])), ("1", f32_bytes(&[3.0, 4.0])), ("2", f32_bytes(&[5.0, 6.0]))],
            )
            .expect("builds");
            assert_eq!(sd.format, SourceFormat::TorchScript);
            assert_eq!(sd.names().collect::<Vec<_>>(), ["embedding.weight", "layers.0.norm.weight"], "{wrapper}");
            assert_eq!(sd.get("layers.0.norm.weight").map(|t| t.data.clone()), Some(TensorData::F32(vec![3.0, 4.0])));
            assert_eq!(sd.ignored, ["scale"]);
        }
    }

    #[test]
    fn traced_topk_calls_give_k() {
        assert_eq!(topk_arguments("    input, top_k_indices = torch.topk(_39, 2)\n"), [2]);
        assert_eq!(topk_arguments("a = torch.topk(x, 3, -1)\nb = torch.topk(y,3)"), [3, 3]);
        assert_eq!(topk_arguments("torch.topk(x, k)"), Vec::<i64>::new());
        assert_eq!(topk_arguments("no calls"), Vec::<i64>::new());
    }

    #[test]
    fn strided_views_and_scalars() {
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let halfs: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let p = tensor_pickle(&[
            ("full", "FloatStorage", "0", 12, 0, &[3, 4], &[4, 1]),
            ("transposed", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]),
            ("column", "FloatStorage", "0", 12, 1, &[3], &[4]),
            ("scalar", "FloatStorage", "0", 12, 5, &[], &[]),
            ("expanded", "FloatStorage", "0", 12, 2, &[2, 3], &[0, 1]),
            ("empty", "FloatStorage", "0", 12, 100, &[0, 5], &[5, 1]),
            ("half", "HalfStorage", "1", 2, 0, &[2], &[1]),
            ("long", "LongStorage", "2", 1, 0, &[], &[]),
        ]);
        let sd =
            build(&p, &[("0", f32_bytes(&data)), ("1", halfs), ("2", (-7i64).to_le_bytes().to_vec())]).expect("builds");
        let get = |n: &str| sd.get(n).expect(n).clone();
        assert_eq!(get("full").data, TensorData::F32(data.clone()));
        assert_eq!(get("full").storage.as_deref(), Some("pt:0"));
        assert_eq!(get("transposed").data, TensorData::F32(vec![0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]));
        assert_eq!(get("transposed").storage.as_deref(), Some("pt:0@0/1,4"));
        assert_eq!(get("column").data, TensorData::F32(vec![1., 5., 9.]));
        assert_eq!(get("scalar").data, TensorData::F32(vec![5.]));
        assert_eq!(get("scalar").storage.as_deref(), Some("pt:0@5"));
        assert_eq!(get("expanded").data, TensorData::F32(vec![2., 3., 4., 2., 3., 4.]));
        assert_eq!(get("empty").data, TensorData::F32(vec![]));
        assert_eq!(get("half").data, TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(sd.source_dtype("half"), Some("float16"));
        assert_eq!(get("long").data, TensorData::I64(vec![-7]));
        assert_eq!(get("long").shape, Vec::<usize>::new());
    }

    #[test]
    fn bad_views_are_errors() {
        let data = f32_bytes(&[0.0; 12]);
        type Case<'a> = (&'a str, usize, usize, &'a [usize], &'a [usize]);
        let cases: &[Case] = &[
            ("past_end", 12, 1, &[12], &[1]),
            ("stride_past_end", 12, 0, &[3, 4], &[5, 1]),
            ("huge", 12, 0, &[1 << 30, 1 << 30], &[0, 0]),
            ("rank_mismatch", 12, 0, &[3, 4], &[1]),
            ("declares_more", 13, 0, &[12], &[1]),
            ("overflow", 12, usize::MAX >> 34, &[2], &[i32::MAX as usize]),
        ];
        for &(name, numel, offset, size, stride) in cases {
            let p = tensor_pickle(&[(name, "FloatStorage", "0", numel, offset, size, stride)]);
            let err = build(&p, &[("0", data.clone())]).expect_err(name);
            assert!(matches!(err, CheckpointError::Tensor { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let p = tensor_pickle(&[("missing", "FloatStorage", "9", 4, 0, &[4], &[1])]);
        let err = build(&p, &[]).expect_err("missing storage");
        assert!(err.to_string().contains("storage '9' is missing"), "{err}");
        let p = tensor_pickle(&[("q", "QInt8Storage", "0", 4, 0, &[4], &[1])]);
        assert!(build(&p, &[("0", data.clone())]).is_err());
    }

    #[test]
    fn top_level_shapes() {
        // A dict without tensors, and a non-dict root.
        let err = build(b"\x80\x02}(X\x01\x00\x00\x00aK\x01u.", &[]).expect_err("no tensors");
        assert!(matches!(err, CheckpointError::Structure { .. }) && err.to_string().contains("no tensors"), "{err}");
        let err = build(b"\x80\x02K\x01.", &[]).expect_err("int root");
        assert!(err.to_string().contains("top-level object is a int"), "{err}");
        // Wrapped in {'model_state_dict': ..., 'other': ...}.
        let inner = tensor_pickle(&[("w", "FloatStorage", "0", 1, 0, &[1], &[1])]);
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(unicode("epoch"));
        p.extend_from_slice(b"K\x03");
        p.extend(unicode("model_state_dict"));
        p.extend_from_slice(&inner[2..inner.len() - 1]);
        p.extend_from_slice(b"u.");
        let sd = build(&p, &[("0", f32_bytes(&[4.0]))]).expect("wrapped");
        assert_eq!(sd.get("w").map(|t| t.data.clone()), Some(TensorData::F32(vec![4.0])));
    }

    #[test]
    fn corrupted_pickles_never_panic() {
        // Mutate the real data.pkl (with the real storages) many times.
        let Some((_, bytes)) = fixture("itera_lite_tiny_int8.pt") else {
            return;
        };
        let mut meter = Meter::new(&MemoryBudget::default(), "t");
        let mut archive = Archive::open(std::io::Cursor::new(&bytes), &mut meter).expect("zip");
        let prefix = archive.find_prefix().expect("prefix");
        let pkl = archive
            .read_entry(&format!("{prefix}/data.pkl"), MAX_PICKLE_BYTES, &mut meter)
            .expect("read")
            .expect("present");
        let mut storages = ZipStorages { archive: &mut archive, prefix, cache: HashMap::new(), bytes_read: 0 };
        let mut rng = XorShift64(0x1234_5678_9abc_def1u64);
        let mut next = || rng.next_u64();
        let mut ok = 0;
        for _ in 0..3000 {
            let mut p = pkl.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % p.len() as u64) as usize;
                p[at] = match next() % 3 {
                    0 => next() as u8,
                    1 => p[at].wrapping_add(1),
                    _ => {
                        let ops = b"(tRsuhjqK\x85\x86\x87NJ";
                        ops[(next() % ops.len() as u64) as usize]
                    }
                };
            }
            if let Ok(tree) = pickle::parse(&p, ALLOWED_GLOBALS, &pickle::Limits::default()) {
                // A fresh budget each time: the storages are cached across tries.
                let mut meter = Meter::new(&MemoryBudget::default(), "t");
                if build_state_dict(&tree, &mut storages, &mut meter).is_ok() {
                    ok += 1;
                }
            }
        }
        assert!(ok < 3000, "mutations should break something");
    }

    #[test]
    fn synthetic_archives() {
        let p = tensor_pickle(&[("w", "FloatStorage", "0", 3, 0, &[3], &[1])]);
        let data = f32_bytes(&[1.0, 2.0, 3.0]);
        // A well-formed archive with an arbitrary top folder name.
        let ok = zip_entries(&[
            ("any_name/data.pkl", &p, false),
            ("any_name/byteorder", b"little", false),
            ("any_name/data/0", &data, false),
        ]);
        let sd = load_bytes(&ok, "ok.pt").expect("loads");
        assert_eq!(sd.get("w").map(|t| t.data.clone()), Some(TensorData::F32(vec![1.0, 2.0, 3.0])));
        // Deflated entries are fine too.
        let deflated = zip_entries(&[("a/data.pkl", &p, true), ("a/data/0", &data, true)]);
        assert_eq!(load_bytes(&deflated, "d.pt").expect("loads").len(), 1);

        // A pickle that names os.system inside a real archive.
        let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.";
        let err = load_bytes(&zip_entries(&[("a/data.pkl", evil, false)]), "evil.pt").expect_err("refused");
        assert!(
            matches!(&err, CheckpointError::Pickle { error: pickle::PickleError::GlobalNotAllowed { .. }, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("pickle global 'os.system' is refused"), "{err}");

        // Big-endian, missing data.pkl, missing and short storages.
        let be = zip_entries(&[("a/data.pkl", &p, false), ("a/byteorder", b"big", false), ("a/data/0", &data, false)]);
        assert!(matches!(load_bytes(&be, "be.pt"), Err(CheckpointError::UnsupportedByteOrder { .. })));
        let no_pkl = zip_entries(&[("a/weights.bin", &data, false)]);
        assert!(matches!(load_bytes(&no_pkl, "x.pt"), Err(CheckpointError::MissingDataPkl { .. })));
        let missing = zip_entries(&[("a/data.pkl", &p, false)]);
        let err = load_bytes(&missing, "m.pt").expect_err("missing storage");
        assert!(err.to_string().contains("storage '0' is missing"), "{err}");
        let short = zip_entries(&[("a/data.pkl", &p, false), ("a/data/0", &data[..8], false)]);
        let err = load_bytes(&short, "s.pt").expect_err("short storage");
        assert!(
            matches!(err, CheckpointError::Tensor { .. })
                && err.to_string().contains("holds 8 bytes but the checkpoint declares 12 bytes"),
            "{err}"
        );
    }

    #[test]
    fn zip_bombs_are_refused_before_decompression() {
        // 64 MiB of zeros deflates by more than 1000x.
        let zeros = vec![0u8; 64 << 20];
        let bomb = zip_entries(&[("a/data.pkl", &zeros, true)]);
        assert!(bomb.len() < (64 << 20) / 1000, "deflate ratio {}", (64 << 20) / bomb.len());
        let err = load_bytes(&bomb, "bomb.pt").expect_err("bomb");
        assert!(matches!(err, CheckpointError::ZipEntryTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("refusing to decompress"), "{err}");
    }

    fn damaged_entry(err: &CheckpointError) -> &str {
        match err {
            CheckpointError::ZipEntryDamaged { entry, .. } => entry,
            other => panic!("expected a damaged entry, got: {other}"),
        }
    }

    #[test]
    fn damaged_entries_of_a_real_checkpoint_are_refused_by_name() {
        // torch.save writes data descriptors (local CRC and sizes zero): the bytes'
        // CRC-32 and the descriptor are what catch damage there.
        let Some((_, bytes)) = fixture("itera_lite_micro_distilled.pt") else {
            return;
        };
        let entry = "itera_lite_micro_distilled/data/9";
        let ZipEntry { header, data: start, len } = zip_entry(&bytes, entry);
        assert_ne!(le16(&bytes, header + 6) & FLAG_DATA_DESCRIPTOR, 0, "the fixture uses data descriptors");

        let mut flipped = bytes.clone();
        flipped[start + len / 3] ^= 0x80;
        let err = load_bytes(&flipped, "flipped.pt").expect_err("a flipped storage byte");
        assert_eq!(damaged_entry(&err), entry);
        let msg = err.to_string();
        assert!(
            msg.starts_with("flipped.pt: zip entry") && msg.contains("CRC-32") && msg.contains("download"),
            "{msg}"
        );

        // The descriptor's CRC, then its sizes, disagreeing with the directory.
        let descriptor = start + len + if le32(&bytes, start + len) == DATA_DESCRIPTOR_SIG { 4 } else { 0 };
        for at in [descriptor, descriptor + 4] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            let err = load_bytes(&bad, "descriptor.pt").expect_err("a bad data descriptor");
            assert_eq!(damaged_entry(&err), entry);
            assert!(err.to_string().contains("data descriptor"), "{err}");
        }

        // A local header that claims sizes, wrongly, though a descriptor follows.
        let mut claims = bytes.clone();
        claims[header + 22..header + 26].copy_from_slice(&((len as u32) + 1).to_le_bytes());
        let err = load_bytes(&claims, "claims.pt").expect_err("a wrong local size");
        assert!(err.to_string().contains("local header size"), "{err}");
    }

    #[test]
    fn local_headers_and_crcs_of_written_zips_are_checked() {
        let p = tensor_pickle(&[("w", "FloatStorage", "0", 3, 0, &[3], &[1])]);
        let data = f32_bytes(&[1.0, 2.0, 3.0]);
        let ok = zip_entries(&[("a/data.pkl", &p, false), ("a/data/0", &data, false)]);
        assert!(load_bytes(&ok, "ok.pt").is_ok());
        let ZipEntry { header, data: start, .. } = zip_entry(&ok, "a/data/0");
        // Each field of the local header that the directory also records.
        for (at, what) in [(14, "local header CRC-32"), (18, "compressed size"), (22, "local header size")] {
            let mut bad = ok.clone();
            bad[header + at] ^= 0x04;
            let err = load_bytes(&bad, "bad.pt").expect_err(what);
            assert_eq!(damaged_entry(&err), "a/data/0", "{what}");
            assert!(err.to_string().contains(what), "{err}");
        }
        let mut renamed = ok.clone();
        renamed[header + 30] = b'b';
        assert!(load_bytes(&renamed, "n.pt").expect_err("name").to_string().contains("names it 'b/data/0'"));
        let mut flipped = ok.clone();
        flipped[start] ^= 0x01;
        assert!(load_bytes(&flipped, "f.pt").expect_err("crc").to_string().contains("its bytes have CRC-32"));
    }

    #[test]
    fn duplicate_entry_names_are_refused() {
        let p = tensor_pickle(&[("w", "FloatStorage", "0", 1, 0, &[1], &[1])]);
        let one = f32_bytes(&[1.0]);
        let two = f32_bytes(&[2.0]);
        let mut zip = zip_entries(&[("a/data.pkl", &p, false), ("a/data/0", &one, false), ("a/data/X", &two, false)]);
        // A zip writer refuses a repeated name: rename the third entry everywhere.
        for i in 0..zip.len() - 8 {
            if &zip[i..i + 8] == b"a/data/X" {
                zip[i + 7] = b'0';
            }
        }
        let err = load_bytes(&zip, "dup.pt").expect_err("duplicate");
        assert!(matches!(&err, CheckpointError::DuplicateZipEntry { entry, .. } if entry == "a/data/0"), "{err}");
        assert!(err.to_string().contains("appears more than once"), "{err}");
    }

    #[test]
    fn the_budget_sums_entries_and_tensors() {
        let p = tensor_pickle(&[
            ("a", "FloatStorage", "0", 1024, 0, &[1024], &[1]),
            ("b", "FloatStorage", "1", 1024, 0, &[1024], &[1]),
        ]);
        let data = f32_bytes(&[0.5; 1024]);
        let zip = zip_entries(&[("a/data.pkl", &p, false), ("a/data/0", &data, true), ("a/data/1", &data, true)]);
        let (_, used) = super::super::load_bytes_metered(&zip, "b.pt", &MemoryBudget::default()).expect("loads");
        // Two 4 KiB entries and two 4 KiB tensors, plus the pickle and directory.
        assert!((4 * 4096..4 * 4096 + 8192).contains(&used), "{used}");
        for max_bytes in [used - 1, 3 * 4096, 4096] {
            let err = super::super::load_bytes_within(&zip, "b.pt", &MemoryBudget { max_bytes }).expect_err("over");
            assert!(matches!(err, CheckpointError::MemoryBudget { budget, .. } if budget == max_bytes), "{err}");
        }
    }

    #[test]
    fn safetensors_twin_of_a_torch_checkpoint() {
        let Some(sd) = fixture_state_dict("itera_lite_micro_distilled.pt") else {
            return;
        };
        let st = safetensors_to_vec(&sd.tensors).expect("writes");
        let twin = load_bytes(&st, "micro.safetensors").expect("reads back");
        assert_eq!(twin.names().collect::<Vec<_>>(), sd.names().collect::<Vec<_>>());
        for (name, t) in &sd.tensors {
            let u = twin.get(name).expect(name);
            assert_eq!((&u.shape, &u.data), (&t.shape, &t.data), "{name}");
        }
        let Some(sd) = fixture_state_dict("itera_lite_tiny_int8.pt") else {
            return;
        };
        let twin =
            load_bytes(&safetensors_to_vec(&sd.tensors).expect("writes"), "tiny.safetensors").expect("reads back");
        for (name, t) in &sd.tensors {
            let u = twin.get(name).expect(name);
            assert_eq!((&u.shape, &u.data), (&t.shape, &t.data), "{name}");
            assert_eq!(twin.source_dtype(name), sd.source_dtype(name), "{name}");
        }
    }
}
