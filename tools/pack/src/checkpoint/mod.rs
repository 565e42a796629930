//! Safe readers for the checkpoints `itera-pack` consumes.
//!
//! * PyTorch `.pt` / `.pth` files written by `torch.save` (zip format,
//!   PyTorch >= 1.6): read by [`torch`] through a non-executing pickle
//!   interpreter ([`pickle`]) with an allow-list of globals.
//! * safetensors files: read and written by [`safetensors`].
//!
//! Both produce a [`StateDict`]: tensor name -> [`RawTensor`], in file order.
//! No input can make these readers panic, execute code, or allocate memory in
//! proportion to a size the file merely *declares*; every failure is a typed
//! [`CheckpointError`] whose message says what is wrong and what to do.
//!
//! ```no_run
//! let sd = itera_pack::checkpoint::load(std::path::Path::new("model.pt"))?;
//! for (name, t) in &sd.tensors {
//!     println!("{name}: {:?}", t.shape);
//! }
//! # Ok::<(), itera_pack::checkpoint::CheckpointError>(())
//! ```

pub mod onnx;
pub mod pickle;
pub mod safetensors;
pub mod torch;

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::files::{self, ReadWithin};
use crate::untrusted::shown;

pub use safetensors::{safetensors_to_vec, save_safetensors, write_safetensors};

/// One tensor as read from a checkpoint, row-major, contiguous (views already
/// materialised).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first. Empty for a 0-dim (scalar) tensor, which
    /// holds one element.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: TensorData,
    /// Identity of the backing storage, so that shared memory can be detected
    /// (e.g. a tied `lm_head`): two tensors with equal `storage` strings and
    /// equal shapes are the same memory view.
    ///
    /// * PyTorch: `"pt:<key>"` for a contiguous view starting at element 0 of
    ///   storage `<key>` (the usual case); otherwise `"pt:<key>@<offset>"`,
    ///   followed by `"/<stride,...>"` when the view is not contiguous.
    /// * safetensors: `"st:<name>"` (safetensors never shares storage).
    /// * `None` for tensors not read from a file.
    pub storage: Option<String>,
}

impl RawTensor {
    /// Number of elements the shape describes (1 for a 0-dim tensor), or
    /// `None` if the product overflows.
    pub fn numel(&self) -> Option<usize> {
        checked_numel(&self.shape)
    }
}

/// The elements of a [`RawTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// FP32 storage, or FP16/BF16 storage converted to f32 (exact), or F64
    /// storage rounded to the nearest f32.
    F32(Vec<f32>),
    /// A PyTorch per-tensor-affine qint8 tensor, kept as stored: the real value
    /// of element `i` is `(q[i] - zero_point) * scale`.
    QInt8 {
        /// Quantized values.
        q: Vec<i8>,
        /// Quantization scale.
        scale: f64,
        /// Quantization zero point.
        zero_point: i64,
    },
    /// Integer storages (Long, Int, Short, Char, Byte, Bool), widened to i64.
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::QInt8 { q, .. } => q.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A checkpoint: tensor name -> tensor, in file order, plus which source
/// dtype each came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// The tensors, in file order. Names are unique.
    pub tensors: Vec<(String, RawTensor)>,
    /// Tensor name -> dtype in the file, as PyTorch spells it: `"float32"`,
    /// `"float16"`, `"bfloat16"`, `"float64"`, `"int64"`, `"int32"`,
    /// `"int16"`, `"int8"`, `"uint8"`, `"bool"` or `"qint8"`. Same order as
    /// `tensors`.
    pub source_dtypes: Vec<(String, String)>,
    /// The checkpoint's own hyper-parameters, where it carries them (a pickled
    /// config object or dict beside the state dict).
    pub config: Option<SourceConfig>,
    /// What else the checkpoint holds and the packer does not use, one entry
    /// each, as provenance names it: `config (models.config.IteraLiteConfig)`,
    /// `optimizer_state_dict`, `epoch`, ….
    pub ignored: Vec<String>,
    /// The file format it was read from.
    pub format: SourceFormat,
}

/// The file formats a checkpoint is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceFormat {
    /// A `torch.save` zip.
    #[default]
    PyTorch,
    /// A `torch.jit.save` (TorchScript) zip: the module tree's parameters.
    TorchScript,
    /// safetensors.
    Safetensors,
    /// An ONNX model's initializers.
    Onnx,
}

impl SourceFormat {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::PyTorch => "PyTorch zip checkpoint",
            SourceFormat::TorchScript => "TorchScript archive",
            SourceFormat::Safetensors => "safetensors file",
            SourceFormat::Onnx => "ONNX model",
        }
    }

    /// What to do about an export this reader refuses.
    pub fn advice(self) -> &'static str {
        match self {
            SourceFormat::TorchScript => {
                "export the Itera-Lite model again with torch.jit.trace, or save its weights with torch.save(model.state_dict(), path)"
            }
            SourceFormat::Onnx => {
                "export the Itera-Lite model again with torch.onnx.export (weights inside the file), or pack its PyTorch checkpoint"
            }
            SourceFormat::PyTorch | SourceFormat::Safetensors => {
                "save the weights with torch.save(model.state_dict(), path)"
            }
        }
    }
}

/// A checkpoint's config (a pickled object's attributes or a dict), as read:
/// the fields that are numbers, booleans or lists of integers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceConfig {
    /// Where it was found, as messages name it: `config (models.config.IteraLiteConfig)`.
    pub origin: String,
    /// Field name → value.
    pub fields: std::collections::BTreeMap<String, ConfigValue>,
}

/// One field of a [`SourceConfig`].
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigValue {
    /// An integer (or a boolean, as 0 or 1).
    Int(i64),
    /// A float.
    Float(f64),
    /// A list (or tuple) of integers, such as `moe_layers`.
    Ints(Vec<i64>),
}

impl SourceConfig {
    /// A config that says only how many experts the router picks (what an export's traced
    /// code or graph tells), found at `origin`.
    pub fn top_k(origin: String, k: i64) -> Self {
        SourceConfig { origin, fields: [("top_k_experts".to_string(), ConfigValue::Int(k))].into_iter().collect() }
    }

    /// Integer field `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            ConfigValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// Numeric field `key`, as a float.
    pub fn float(&self, key: &str) -> Option<f64> {
        match self.fields.get(key)? {
            ConfigValue::Float(v) => Some(*v),
            ConfigValue::Int(v) => Some(*v as f64),
            ConfigValue::Ints(_) => None,
        }
    }

    /// Integer-list field `key`.
    pub fn ints(&self, key: &str) -> Option<&[i64]> {
        match self.fields.get(key)? {
            ConfigValue::Ints(v) => Some(v),
            _ => None,
        }
    }
}

impl StateDict {
    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Tensor names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// The source dtype of tensor `name` (see [`StateDict::source_dtypes`]).
    pub fn source_dtype(&self, name: &str) -> Option<&str> {
        self.source_dtypes.iter().find(|(n, _)| n == name).map(|(_, d)| d.as_str())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Builds a [`StateDict`] with Python dict semantics: a repeated name
/// replaces the earlier tensor in place (constant time per insert).
#[derive(Default)]
pub(crate) struct StateDictBuilder {
    sd: StateDict,
    index: std::collections::HashMap<String, usize>,
}

impl StateDictBuilder {
    /// Adds (or replaces) tensor `name`, read from a `dtype` source.
    pub(crate) fn insert(&mut self, name: String, tensor: RawTensor, dtype: &str) {
        if let Some(&i) = self.index.get(&name) {
            if let (Some(t), Some(d)) = (self.sd.tensors.get_mut(i), self.sd.source_dtypes.get_mut(i)) {
                t.1 = tensor;
                d.1 = dtype.to_string();
            }
        } else {
            self.index.insert(name.clone(), self.sd.tensors.len());
            self.sd.source_dtypes.push((name.clone(), dtype.to_string()));
            self.sd.tensors.push((name, tensor));
        }
    }

    /// Whether nothing was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.sd.tensors.is_empty()
    }

    /// The finished state dict.
    pub(crate) fn finish(self) -> StateDict {
        self.sd
    }
}

/// Why a checkpoint could not be read or written. Each message names the
/// file, says what is wrong and what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be opened or read.
    //
    // The OS error is part of the one-line message and deliberately not also
    // returned by `source()`: a caller printing the chain (`{:#}` of an
    // anyhow error) would show it twice.
    #[error("cannot read checkpoint '{path}': {error}; check that the path exists and is a readable file")]
    Io {
        /// The path as given.
        path: String,
        /// The operating system error.
        error: std::io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write '{path}': {error}; check that the directory exists, is writable and has free space")]
    Write {
        /// The path (or `<writer>`).
        path: String,
        /// The operating system error.
        error: std::io::Error,
    },
    /// Neither a zip archive nor a safetensors file.
    #[error("{file}: not a PyTorch zip checkpoint (torch.save or torch.jit.save), an ONNX model or a safetensors file; pass one of those")]
    UnknownFormat {
        /// File name for messages.
        file: String,
    },
    /// A raw pickle: PyTorch's legacy (< 1.6) serialization.
    #[error("{file}: legacy (non-zip) PyTorch checkpoint format is not supported; load it in Python and re-save it with torch.save(state_dict, path) from PyTorch >= 1.6, or convert it to safetensors")]
    LegacyTorchFormat {
        /// File name for messages.
        file: String,
    },
    /// The zip container is damaged (often: the file is truncated).
    #[error("{file}: damaged or unsupported zip archive ({detail}); the file may be truncated or corrupted: copy or download it again")]
    Zip {
        /// File name for messages.
        file: String,
        /// What the zip reader reported.
        detail: String,
    },
    /// A zip entry is implausibly large or compressed (zip bomb protection).
    #[error("{file}: zip entry '{}' claims {size} bytes uncompressed from {compressed} compressed bytes, beyond the limits (at most {max_size} bytes and {max_ratio}x compression); refusing to decompress it. torch.save stores tensors uncompressed: re-save the checkpoint with torch.save", shown(entry))]
    ZipEntryTooLarge {
        /// File name for messages.
        file: String,
        /// Entry name inside the archive.
        entry: String,
        /// Declared uncompressed size.
        size: u64,
        /// Declared compressed size.
        compressed: u64,
        /// Size limit.
        max_size: u64,
        /// Compression ratio limit.
        max_ratio: u64,
    },
    /// The zip has no `<archive>/data.pkl`.
    #[error("{file}: zip archive has no '<archive>/data.pkl', so it is not a torch.save checkpoint (TorchScript and other zip files are not supported); save the weights with torch.save(model.state_dict(), path)")]
    MissingDataPkl {
        /// File name for messages.
        file: String,
    },
    /// The checkpoint was written on a big-endian machine.
    #[error("{file}: checkpoint byte order is '{}', only little-endian checkpoints are supported; re-save it on a little-endian machine or convert it to safetensors", shown(order))]
    UnsupportedByteOrder {
        /// File name for messages.
        file: String,
        /// Content of the `byteorder` entry.
        order: String,
    },
    /// `data.pkl` could not be interpreted.
    // As for `Io`: the pickle error is in the message, not also in `source()`.
    #[error("{file}: data.pkl: {error}")]
    Pickle {
        /// File name for messages.
        file: String,
        /// The pickle-level problem.
        error: pickle::PickleError,
    },
    /// The pickle's top level is not a state dict.
    #[error("{file}: {detail}; expected a state dict (name -> tensor) or a dict with a 'model_state_dict' entry: save the weights with torch.save(model.state_dict(), path)")]
    Structure {
        /// File name for messages.
        file: String,
        /// What was found.
        detail: String,
    },
    /// An export (TorchScript archive, ONNX model) that is not an Itera-Lite model's, or that
    /// this reader cannot take apart; the advice fits the format.
    #[error("{file}: {format}: {detail}; {advice}", format = .format.name(), advice = .format.advice())]
    Export {
        /// File name for messages.
        file: String,
        /// The format detected.
        format: SourceFormat,
        /// What is wrong.
        detail: String,
    },
    /// One tensor is inconsistent (bad view, missing storage, ...).
    #[error("{file}: tensor '{}': {detail}", shown(tensor))]
    Tensor {
        /// File name for messages.
        file: String,
        /// Tensor name.
        tensor: String,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// The safetensors header or data is invalid.
    #[error("{file}: invalid safetensors file: {detail}; the file may be truncated or corrupted: re-export it (e.g. with safetensors.torch.save_file)")]
    Safetensors {
        /// File name for messages.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A tensor's dtype cannot be represented by [`TensorData`].
    #[error("{file}: tensor '{}' has dtype {}, which is not supported; convert it to float32, float16, bfloat16, float64, int8 or int64 before packing", shown(tensor), shown(dtype))]
    UnsupportedDtype {
        /// File name for messages.
        file: String,
        /// Tensor name.
        tensor: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// A tensor handed to a writer is inconsistent.
    #[error("cannot write tensor '{}': {detail}", shown(tensor))]
    InvalidTensor {
        /// Tensor name.
        tensor: String,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// A zip entry's bytes or headers disagree with the archive's directory
    /// (CRC-32, sizes or name): the file was damaged after it was written.
    #[error("{file}: zip entry '{}' is damaged ({detail}); the checkpoint is corrupted: download or copy it again, or re-export it with torch.save", shown(entry))]
    ZipEntryDamaged {
        /// File name for messages.
        file: String,
        /// Entry name inside the archive.
        entry: String,
        /// Which check failed, with both values.
        detail: String,
    },
    /// Two zip entries share a name, so which one a reader sees is ambiguous.
    #[error("{file}: zip entry '{}' appears more than once in the archive; torch.save writes each name once, so the file was tampered with or rewritten badly: re-export it with torch.save", shown(entry))]
    DuplicateZipEntry {
        /// File name for messages.
        file: String,
        /// The repeated entry name.
        entry: String,
    },
    /// Reading would hold more memory than the [`MemoryBudget`] allows.
    #[error("{file}: reading {what} would bring the checkpoint's memory to {needed} bytes, over the budget of {} ({budget} bytes); if the file is genuine, pass --max-memory MIB to raise it", mib(*budget))]
    MemoryBudget {
        /// File name for messages.
        file: String,
        /// What was being read (an entry, a tensor, the header), escaped.
        what: String,
        /// Bytes held in all had it been read.
        needed: u64,
        /// The budget, bytes.
        budget: u64,
    },
    /// A bug: a panic inside a reader was caught.
    #[error("{file}: internal error while reading the checkpoint ({detail}); this is a bug in itera-pack: please report it together with the file")]
    Internal {
        /// File name for messages.
        file: String,
        /// The panic message.
        detail: String,
    },
}

/// The zip local-file-header magic that starts every `torch.save` archive.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// The magic of an empty zip archive (end-of-central-directory first).
const ZIP_EMPTY_MAGIC: &[u8; 4] = b"PK\x05\x06";

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Zip,
    Safetensors,
    Onnx,
    LegacyPickle,
    Unknown,
}

fn sniff(head: &[u8]) -> Format {
    if head.starts_with(ZIP_MAGIC) || head.starts_with(ZIP_EMPTY_MAGIC) {
        Format::Zip
    } else if head.len() >= 9 && head[8] == b'{' {
        // u64 header length, then the JSON header; the reader validates the length.
        Format::Safetensors
    } else if onnx::looks_like_onnx(head) {
        Format::Onnx
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Format::LegacyPickle
    } else {
        Format::Unknown
    }
}

/// What reading one checkpoint may hold in memory: decompressed zip entries,
/// the pickle's values, materialised tensors, a safetensors file and its
/// parsed header, all summed (not per entry) and counted before each
/// allocation. The default is tied to what an Itera-Lite model can need (see
/// [`DEFAULT_MEMORY_BUDGET_BYTES`]); `itera-pack convert --max-memory` raises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Most bytes the reader may hold at once.
    pub max_bytes: u64,
}

/// Default [`MemoryBudget`]: 64 MiB.
///
/// Reading the largest published Itera-Lite checkpoint,
/// `itera_lite_mixed_precision.pt` (4.2 MB file, vocab 8000, FP16 storages
/// widened to f32), counts 15.4 MB against this budget;
/// `itera_lite_tiny_int8.pt` (2.3 MB) counts 4.9 MB and the FP32
/// `itera_lite_micro_distilled.pt` (1.2 MB) 3.0 MB (the test
/// `real_checkpoints_fit_the_default_budget` keeps these honest; the int4
/// checkpoint is refused by the pickle reader before memory matters).
/// 64 MiB leaves more than 4x headroom over the largest, yet keeps the whole
/// packer well under the 256 MB a hostile file may make it use.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 64 << 20;

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget { max_bytes: DEFAULT_MEMORY_BUDGET_BYTES }
    }
}

/// `bytes` in MiB for messages, rounded up (a budget given as `--max-memory
/// MIB` prints as given).
fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// Counts what one read holds against its [`MemoryBudget`]. Every reader
/// charges a size *before* allocating it, so a refusal happens before the
/// memory is taken.
pub(crate) struct Meter {
    max: u64,
    used: u64,
    file: String,
}

impl Meter {
    /// A meter for reading `file` within `budget`.
    pub(crate) fn new(budget: &MemoryBudget, file: &str) -> Meter {
        Meter { max: budget.max_bytes, used: 0, file: file.to_string() }
    }

    /// The file name for messages.
    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    /// Counts `bytes` more, held for `what` (already escaped), or refuses
    /// with [`CheckpointError::MemoryBudget`] if that would pass the budget.
    pub(crate) fn charge(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), CheckpointError> {
        let needed = self.used.saturating_add(bytes);
        if needed > self.max {
            return Err(self.over_budget(bytes, what()));
        }
        self.used = needed;
        Ok(())
    }

    /// The [`CheckpointError::MemoryBudget`] refusing `bytes` more, held for
    /// `what` (already escaped), on top of what is counted so far.
    pub(crate) fn over_budget(&self, bytes: u64, what: String) -> CheckpointError {
        CheckpointError::MemoryBudget {
            file: self.file.clone(),
            what,
            needed: self.used.saturating_add(bytes),
            budget: self.max,
        }
    }

    /// Bytes still free.
    pub(crate) fn remaining(&self) -> u64 {
        self.max - self.used
    }

    /// Bytes counted so far.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
}

/// Reads a checkpoint file: a PyTorch zip checkpoint (recognised by the zip
/// magic `PK\x03\x04`) or a safetensors file (recognised by its header),
/// within the default [`MemoryBudget`].
///
/// PyTorch archives are read entry by entry from the file; safetensors files
/// are read into memory whole.
pub fn load(path: &Path) -> Result<StateDict, CheckpointError> {
    load_within(path, &MemoryBudget::default())
}

/// [`load`] within `budget`: refused with [`CheckpointError::MemoryBudget`]
/// as soon as what the reader would hold passes it.
pub fn load_within(path: &Path, budget: &MemoryBudget) -> Result<StateDict, CheckpointError> {
    load_metered(path, budget).map(|(sd, _)| sd)
}

/// [`load_within`], also returning the bytes counted against the budget.
fn load_metered(path: &Path, budget: &MemoryBudget) -> Result<(StateDict, u64), CheckpointError> {
    let name = path.display().to_string();
    let io_err = |error| CheckpointError::Io { path: name.clone(), error };
    let mut meter = Meter::new(budget, &name);
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = Vec::with_capacity(16);
    (&mut file).take(16).read_to_end(&mut head).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let sd = match sniff(&head) {
        Format::Zip => guard(&name, || torch::read_zip(BufReader::new(file), &mut meter))?,
        format @ (Format::Safetensors | Format::Onnx) => {
            // The whole file is held while its tensors are decoded: read
            // within what is left of the budget, then counted.
            let onnx = format == Format::Onnx;
            let what = || if onnx { "the ONNX file" } else { "the safetensors file" }.to_string();
            let bytes = match files::read_open_within(&file, meter.remaining()) {
                Ok(bytes) => bytes,
                Err(ReadWithin::Io(e)) => return Err(io_err(e)),
                Err(ReadWithin::TooLarge) => {
                    // Refused at its length (a stream: at one byte past the budget).
                    let len = file.metadata().map_or(0, |m| m.len()).max(meter.remaining().saturating_add(1));
                    return Err(meter.over_budget(len, what()));
                }
            };
            meter.charge(bytes.len() as u64, what)?;
            match onnx {
                true => guard(&name, || onnx::read_onnx(&bytes, &mut meter))?,
                false => guard(&name, || safetensors::read_safetensors(&bytes, &mut meter))?,
            }
        }
        Format::LegacyPickle => return Err(CheckpointError::LegacyTorchFormat { file: name }),
        Format::Unknown => return Err(CheckpointError::UnknownFormat { file: name }),
    };
    Ok((sd, meter.used()))
}

/// Like [`load`], for a checkpoint already in memory. `name_for_errors` is
/// used in error messages (e.g. the file name).
pub fn load_bytes(bytes: &[u8], name_for_errors: &str) -> Result<StateDict, CheckpointError> {
    load_bytes_within(bytes, name_for_errors, &MemoryBudget::default())
}

/// [`load_bytes`] within `budget` (the caller's `bytes` are not counted:
/// the reader did not allocate them).
pub fn load_bytes_within(
    bytes: &[u8],
    name_for_errors: &str,
    budget: &MemoryBudget,
) -> Result<StateDict, CheckpointError> {
    load_bytes_metered(bytes, name_for_errors, budget).map(|(sd, _)| sd)
}

/// [`load_bytes_within`], also returning the bytes counted against the budget.
fn load_bytes_metered(
    bytes: &[u8],
    name_for_errors: &str,
    budget: &MemoryBudget,
) -> Result<(StateDict, u64), CheckpointError> {
    let file = name_for_errors.to_string();
    let mut meter = Meter::new(budget, &file);
    let sd = match sniff(bytes) {
        Format::Zip => guard(&file, || torch::read_zip(std::io::Cursor::new(bytes), &mut meter))?,
        Format::Safetensors => guard(&file, || safetensors::read_safetensors(bytes, &mut meter))?,
        Format::Onnx => guard(&file, || onnx::read_onnx(bytes, &mut meter))?,
        Format::LegacyPickle => return Err(CheckpointError::LegacyTorchFormat { file }),
        Format::Unknown => return Err(CheckpointError::UnknownFormat { file }),
    };
    Ok((sd, meter.used()))
}

/// Runs a reader, turning a panic (a bug here or in the zip crate) into
/// [`CheckpointError::Internal`] so that callers always get a `Result`.
fn guard<T>(file: &str, f: impl FnOnce() -> Result<T, CheckpointError>) -> Result<T, CheckpointError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Err(CheckpointError::Internal { file: file.to_string(), detail })
    })
}

/// Product of `shape` (1 for an empty shape), `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// Reads one fixture file, or `None` when fixtures are unavailable.
    pub(crate) fn fixture(name: &str) -> Option<(PathBuf, Vec<u8>)> {
        let path = itera_test_support::fixtures::dir()?.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some((path, bytes)),
            Err(e) => panic!("fixture {} unreadable: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::fixture;
    use super::*;
    use itera_test_support::XorShift64;

    #[test]
    fn sniffing_and_garbage() {
        assert!(matches!(load_bytes(b"", "empty"), Err(CheckpointError::UnknownFormat { .. })));
        assert!(matches!(load_bytes(b"hello world, not a model", "text"), Err(CheckpointError::UnknownFormat { .. })));
        let err = load_bytes(b"hello", "x.bin").expect_err("unknown");
        assert_eq!(err.to_string(), "x.bin: not a PyTorch zip checkpoint (torch.save or torch.jit.save), an ONNX model or a safetensors file; pass one of those");
        assert!(matches!(load_bytes(b"\x80\x02\x8a\x0a", "old.pt"), Err(CheckpointError::LegacyTorchFormat { .. })));
        assert!(matches!(load_bytes(b"PK\x03\x04garbage", "z.pt"), Err(CheckpointError::Zip { .. })));
        assert!(matches!(load_bytes(b"PK\x05\x06", "z.pt"), Err(CheckpointError::Zip { .. })));
    }

    #[test]
    fn random_bytes_are_errors() {
        let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15u64);
        for len in [1usize, 7, 8, 9, 100, 4096, 100_000] {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            assert!(load_bytes(&bytes, "random").is_err());
            let mut zipish = ZIP_MAGIC.to_vec();
            zipish.extend_from_slice(&bytes);
            assert!(load_bytes(&zipish, "random.pt").is_err());
            let mut st = 64u64.to_le_bytes().to_vec();
            st.push(b'{');
            st.extend_from_slice(&bytes);
            assert!(load_bytes(&st, "random.safetensors").is_err());
        }
    }

    /// A cause is said once: in the message, not again through `source()`,
    /// which `{:#}` of an error chain would append a second time.
    #[test]
    fn causes_are_in_the_message_not_repeated_as_sources() {
        use std::error::Error as _;
        use std::io::Write;
        let io = load(Path::new("definitely/not/here.pt")).expect_err("missing");
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("a/data.pkl", zip::write::SimpleFileOptions::default()).expect("entry");
        w.write_all(b"\x80\x02cos\nsystem\n.").expect("write");
        let zip = w.finish().expect("zip").into_inner();
        let pickle = load_bytes(&zip, "evil.pt").expect_err("os.system");
        for err in [io, pickle] {
            assert!(err.source().is_none(), "{err}");
            let display = err.to_string();
            assert_eq!(format!("{:#}", anyhow::Error::new(err)), display);
        }
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = load(Path::new("definitely/not/here.pt")).expect_err("missing");
        assert!(matches!(err, CheckpointError::Io { .. }));
        assert!(err.to_string().contains("check that the path exists"), "{err}");
    }

    #[test]
    fn truncated_fixtures_are_errors() {
        for name in ["itera_lite_micro_distilled.pt", "itera_lite_tiny_int8.pt", "itera_lite_mixed_precision.pt"] {
            let Some((_, bytes)) = fixture(name) else {
                return;
            };
            for cut in [0, 3, 4, 100, bytes.len() / 2, bytes.len() - 1] {
                let err = load_bytes(&bytes[..cut], name).expect_err("truncated must fail");
                assert!(!matches!(err, CheckpointError::Internal { .. }), "{err}");
            }
        }
    }

    #[test]
    fn corrupted_fixture_bytes_never_panic() {
        let Some((_, bytes)) = fixture("itera_lite_micro_distilled.pt") else {
            return;
        };
        let mut rng = XorShift64(0x0123_4567_89ab_cdefu64);
        let mut next = || rng.next_u64();
        // Flip bytes inside the pickle and the zip directories (the start and
        // the end of the file), where damage changes the parse.
        let pickle_end = 10_000.min(bytes.len());
        for _ in 0..150 {
            let mut copy = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let r = next() as usize;
                let at = if r & 1 == 0 { r / 2 % pickle_end } else { bytes.len() - 1 - (r / 2 % 6_000) };
                copy[at] = next() as u8;
            }
            if let Err(e) = load_bytes(&copy, "corrupt.pt") {
                assert!(!matches!(e, CheckpointError::Internal { .. }), "{e}");
            }
        }
    }

    /// The default budget is tied to what the real checkpoints need (see
    /// [`DEFAULT_MEMORY_BUDGET_BYTES`]): each must fit four times over, and
    /// the count must not be trivially small (it covers every tensor).
    #[test]
    fn real_checkpoints_fit_the_default_budget() {
        let names = [
            "itera_lite_micro_distilled.pt",
            "itera_lite_tiny_int8.pt",
            "itera_lite_mixed_precision.pt",
            "itera_lite_int4.pt",
        ];
        for name in names {
            let Some((path, bytes)) = fixture(name) else {
                return;
            };
            let (sd, used) = load_metered(&path, &MemoryBudget::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let elements: usize = sd.tensors.iter().map(|(_, t)| t.data.len()).sum();
            eprintln!("{name}: {} file bytes, {used} bytes counted", bytes.len());
            assert!(used >= elements as u64, "{name}: {used} bytes for {elements} elements");
            assert!(used.saturating_mul(4) <= DEFAULT_MEMORY_BUDGET_BYTES, "{name}: {used} bytes");
            let (_, in_memory) = load_bytes_metered(&bytes, name, &MemoryBudget::default()).expect("loads");
            assert_eq!(in_memory, used, "{name}: a file and its bytes count alike");
            // Just under what it needs, the same file is refused, naming the budget.
            let tight = MemoryBudget { max_bytes: used - 1 };
            let err = load_within(&path, &tight).expect_err("over budget");
            assert!(matches!(err, CheckpointError::MemoryBudget { .. }), "{name}: {err}");
            assert!(err.to_string().contains("--max-memory MIB"), "{err}");
        }
    }

    #[test]
    fn load_from_path_matches_load_bytes() {
        let Some((path, bytes)) = fixture("itera_lite_micro_distilled.pt") else {
            return;
        };
        let a = load(&path).expect("load");
        let b = load_bytes(&bytes, "micro").expect("load_bytes");
        assert_eq!(a, b);
    }
}
