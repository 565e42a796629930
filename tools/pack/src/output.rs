//! Output files: written whole or not at all, and never over an input.
//!
//! Every file `itera-pack` writes (blobs, signatures, keys, Rust constants, charts) goes to
//! a temporary file in the destination's folder (`.NAME.tmp-PID-N`, so the final rename
//! stays on one file system and is atomic), which is renamed over the destination only once
//! it is complete. A failed write removes the temporary file: the destination is either its
//! old self or the new file, never a partial one. (A process killed mid-write can leave the
//! hidden temporary file, never a damaged destination.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};

use crate::untrusted::shown;

/// A path as messages show it (escaped: a file name can hold control characters too).
pub fn at(path: &Path) -> String {
    shown(&path.display().to_string())
}

/// The text of a small input file (a tokenizer, a policy file), refused unread when it is
/// over `limit` bytes: a huge file given by mistake must not exhaust memory. `what` names
/// the file's kind in messages.
pub fn read_text_within(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        anyhow::anyhow!("cannot read {what} {}: {e}; check the path and that it is a readable UTF-8 file", at(path))
    };
    let file = File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > limit {
        bail!("{what} {} is over {limit} bytes, more than any Itera-Lite {what} holds; pass the right file", at(path));
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text (byte {}); pass a JSON/text file",
            at(path),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Who may read a file written here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The usual mode (0644 under the common umask).
    Public,
    /// Owner only (0600), from creation on: never readable by others, not even briefly.
    Private,
}

/// A fresh temporary file beside `dest`, created exclusively with `access`.
fn temporary(dest: &Path, access: Access) -> anyhow::Result<(PathBuf, File)> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = dest.file_name().with_context(|| format!("{} names no file; pass a file path", at(dest)))?;
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if access == Access::Private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = access;
    let file = options
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}; check that its folder exists and is writable", at(dest)))?;
    Ok((tmp, file))
}

/// Writes `bytes` to a temporary file beside `dest`; returns its path once complete and
/// flushed to disk. On failure nothing is left.
fn complete(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<PathBuf> {
    let (tmp, mut file) = temporary(dest, access)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}; check the free space and that the folder is writable", at(dest));
    }
    Ok(tmp)
}

/// Writes `bytes` to `dest` whole or not at all (a temporary file renamed over it).
pub fn write_atomically(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<()> {
    let tmp = complete(dest, bytes, access)?;
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}; check that the path is a writable file", at(dest))
    })
}

/// Writes `bytes` to `dest`, which must not exist (a secret key is never replaced): the
/// complete temporary file is hard-linked to `dest`, which fails if it exists, even if
/// another process made it since any earlier check.
pub fn write_new(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<()> {
    let tmp = complete(dest, bytes, access)?;
    let linked = std::fs::hard_link(&tmp, dest);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} exists: refusing to overwrite it; pass another name", at(dest))
        }
        _ => anyhow::anyhow!("cannot write {}: {e}; check that its folder is writable", at(dest)),
    })
}

/// Whether `a` and `b` name the same existing file (also through a symbolic or hard link,
/// or another spelling of the path): the same device and inode on Unix, the same
/// canonical path elsewhere.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuses, before anything is read, a command whose output would replace one of its
/// inputs or another of its outputs. `inputs` and `outputs` are (role, path) pairs, the
/// role as the message names it ("the checkpoint", "-o").
pub fn refuse_overlap(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (i, &(out_role, out)) in outputs.iter().enumerate() {
        for &(in_role, input) in inputs {
            if same_file(input, out) {
                bail!(
                    "{out_role} {} is the same file as {in_role} {}: refusing to overwrite an input; pass another output path",
                    at(out),
                    at(input)
                );
            }
        }
        for &(other_role, other) in &outputs[..i] {
            // Outputs may not exist yet: compare the paths as given, then the files.
            if other == out || same_file(other, out) {
                bail!(
                    "{out_role} {} and {other_role} {} are the same file: one would replace the other; pass two different paths",
                    at(out),
                    at(other)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("itera-pack-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn a_write_replaces_whole_and_a_failed_one_leaves_nothing() {
        let d = dir("atomic");
        let out = d.join("x.itb");
        write_atomically(&out, b"first", Access::Public).expect("write");
        write_atomically(&out, b"second", Access::Public).expect("rewrite");
        assert_eq!(std::fs::read(&out).expect("read"), b"second");
        let missing = d.join("no-such-folder").join("y.itb");
        let err = write_atomically(&missing, b"z", Access::Public).expect_err("no folder");
        assert!(err.to_string().contains("y.itb"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&d).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("x.itb")], "only the output, no temporary file");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_new_files_never_replace() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("private");
        let key = d.join("k.secret");
        write_new(&key, b"secret", Access::Private).expect("write");
        let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_new(&key, b"other", Access::Private).expect_err("exists");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(&key).expect("read"), b"secret");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn the_same_file_is_found_through_links() {
        let d = dir("same");
        let input = d.join("x.pt");
        std::fs::write(&input, b"pt").expect("write");
        std::os::unix::fs::symlink(&input, d.join("link.pt")).expect("symlink");
        std::fs::hard_link(&input, d.join("hard.pt")).expect("hard link");
        for out in [input.clone(), d.join("link.pt"), d.join("hard.pt"), d.join(".").join("x.pt")] {
            let err = refuse_overlap(&[("the checkpoint", &input)], &[("-o", &out)]).expect_err("same file");
            assert!(err.to_string().contains("same file as the checkpoint"), "{err}");
        }
        assert!(refuse_overlap(&[("the checkpoint", &input)], &[("-o", &d.join("y.itb"))]).is_ok());
        let y = d.join("y.itb");
        assert!(refuse_overlap(&[], &[("-o", &y), ("--emit-rust", &y)]).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
