//! `itera-pack`: turns Itera-Lite checkpoints (PyTorch `.pt` zips, safetensors) into
//! itera-edge model blobs (`.itb`), and inspects blobs.
//!
//! Pipeline: [`checkpoint::load`] (safe readers, nothing executed) →
//! [`convert::build`] (names → roles, config from shapes, every tensor checked) →
//! [`writer::BlobBuilder::finish`] (format v1, see `docs/FORMAT.md`).

pub mod aligned;
pub mod checkpoint;
pub mod convert;
pub mod emit;
pub mod files;
pub mod fixed;
pub mod inspect;
pub mod quant;
pub mod sign;
pub mod synthetic;
pub mod tokenizer_json;
pub mod untrusted;
pub mod writer;

use std::path::Path;

pub use aligned::AlignedBytes;
pub use convert::{ConvertError, PackOptions};

/// Largest `--max-memory` in MiB (16 GiB): far above what any Itera-Lite checkpoint needs
/// (the largest published shape is about 40 MB of f32 weights), low enough that a typo
/// cannot ask a machine for memory it does not have.
pub const MAX_MEMORY_MIB: u64 = 16 << 10;

/// The [`checkpoint::MemoryBudget`] for `--max-memory MIB`: 1 to [`MAX_MEMORY_MIB`].
pub fn memory_budget_mib(mib: u64) -> Result<checkpoint::MemoryBudget, String> {
    if !(1..=MAX_MEMORY_MIB).contains(&mib) {
        return Err(format!(
            "--max-memory {mib} is out of range: pass a budget from 1 to {MAX_MEMORY_MIB} MiB (default {})",
            checkpoint::DEFAULT_MEMORY_BUDGET_BYTES >> 20
        ));
    }
    Ok(checkpoint::MemoryBudget { max_bytes: mib << 20 })
}

/// Reads a checkpoint file and returns the blob bytes.
pub fn convert_file(path: &Path, opts: &PackOptions) -> anyhow::Result<Vec<u8>> {
    convert_file_within(path, opts, &checkpoint::MemoryBudget::default())
}

/// [`convert_file`], reading the checkpoint within `budget`. Every error names the file
/// once: the readers' errors already do; the converter's are prefixed with it.
pub fn convert_file_within(
    path: &Path,
    opts: &PackOptions,
    budget: &checkpoint::MemoryBudget,
) -> anyhow::Result<Vec<u8>> {
    let sd = checkpoint::load_within(path, budget)?;
    let mut opts = opts.clone();
    let source = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    opts.meta.insert(0, ("source".into(), source));
    opts.meta.push(("format".into(), sd.format.name().into()));
    if let Ok(m) = std::fs::metadata(path) {
        opts.meta.push(("source_bytes".into(), m.len().to_string()));
    }
    // What the checkpoint holds besides its weights: the config that was read, and the rest.
    if let Some(config) = &sd.config {
        opts.meta.push(("config".into(), config.origin.clone()));
    }
    if !sd.ignored.is_empty() {
        opts.meta.push(("ignored".into(), sd.ignored.join(", ")));
    }
    let builder = convert::build(&sd, &opts).map_err(|e| anyhow::anyhow!("{}: {e}", files::at(path)))?;
    builder.finish()
}
