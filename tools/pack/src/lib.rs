//! `itera-pack`: turns Itera-Lite checkpoints (PyTorch `.pt` zips, safetensors) into
//! itera-edge model blobs (`.itb`), and inspects blobs.
//!
//! Pipeline: [`checkpoint::load`] (safe readers, nothing executed) →
//! [`convert::build`] (names → roles, config from shapes, every tensor checked) →
//! [`writer::BlobBuilder::finish`] (format v1, see `docs/FORMAT.md`).

pub mod checkpoint;
pub mod convert;
pub mod emit;
pub mod fixtures;
pub mod inspect;
pub mod quant;
pub mod sign;
pub mod synthetic;
pub mod tokenizer_json;
pub mod untrusted;
pub mod writer;

use std::path::Path;

pub use convert::{ConvertError, PackOptions};

/// Reads a checkpoint file and returns the blob bytes.
pub fn convert_file(path: &Path, opts: &PackOptions) -> anyhow::Result<Vec<u8>> {
    convert_file_within(path, opts, &checkpoint::MemoryBudget::default())
}

/// [`convert_file`], reading the checkpoint within `budget`.
pub fn convert_file_within(
    path: &Path,
    opts: &PackOptions,
    budget: &checkpoint::MemoryBudget,
) -> anyhow::Result<Vec<u8>> {
    let sd = checkpoint::load_within(path, budget)?;
    let mut opts = opts.clone();
    let source = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    opts.meta.insert(0, ("source".into(), source));
    convert::build(&sd, &opts)?.finish()
}
