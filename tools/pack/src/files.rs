//! Files both tools read and write: reads bounded before they start; writes whole or not
//! at all, and never over an input.
//!
//! Every file `itera-pack` and `itera-sim` write (blobs, signatures, keys, Rust constants,
//! charts, logits, golden files) goes to a temporary file in the destination's folder
//! (`.NAME.tmp-PID-N`, so the final rename stays on one file system and is atomic), flushed
//! to disk and only then renamed over the destination. A failed write removes the temporary
//! file: the destination is either its old self or the new file, never a partial one. (A
//! process killed mid-write can leave the hidden temporary file, never a damaged
//! destination.) [`write_atomically`] and [`write_new`] take bytes, [`write_whole`] a
//! closure that streams them (large logits tables); the two keep the messages of the tool
//! that first had them.
//!
//! Reads of files other than blobs go through one bounded read (a regular file over the
//! limit is refused unread; a stream is read no further than one byte past it), phrased by
//! [`read_text_within`] and [`read_at_most`]. Blobs are read by
//! [`inspect::read_aligned`](crate::inspect::read_aligned), bounded by their header.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::bail;

use crate::untrusted::shown;

/// A path as messages show it (escaped: a file name can hold control characters too).
pub fn at(path: &Path) -> String {
    shown(&path.display().to_string())
}

/// Why a bounded read gave no bytes.
#[derive(Debug)]
pub enum ReadWithin {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file (or stream) holds more than the limit.
    TooLarge,
}

/// The bytes of `path`, at most `limit`: a regular file over `limit` is refused before it
/// is read, any other (a pipe, `/dev/zero`) is read no further than `limit + 1` bytes.
pub fn read_within(path: &Path, limit: u64) -> Result<Vec<u8>, ReadWithin> {
    read_open_within(&File::open(path).map_err(ReadWithin::Io)?, limit)
}

/// [`read_within`] for a file already open, read from where it stands.
pub fn read_open_within(file: &File, limit: u64) -> Result<Vec<u8>, ReadWithin> {
    if file.metadata().is_ok_and(|m| m.is_file() && m.len() > limit) {
        return Err(ReadWithin::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(ReadWithin::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadWithin::TooLarge);
    }
    Ok(bytes)
}

/// The text of a small input file (a tokenizer, a policy file), refused unread when it is
/// over `limit` bytes: a huge file given by mistake must not exhaust memory. `what` names
/// the file's kind in messages.
pub fn read_text_within(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    let bytes = read_within(path, limit).map_err(|e| match e {
        ReadWithin::Io(e) => {
            anyhow::anyhow!("cannot read {what} {}: {e}; check the path and that it is a readable UTF-8 file", at(path))
        }
        ReadWithin::TooLarge => anyhow::anyhow!(
            "{what} {} is over {limit} bytes, more than any Itera-Lite {what} holds; pass the right file",
            at(path)
        ),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text (byte {}); pass a JSON/text file",
            at(path),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads `path` whole, refusing a file over `max` bytes before reading it (and reading no
/// further than `max + 1` bytes when its size is unknown, as for a pipe or `/dev/zero`):
/// [`read_within`] in `itera-sim`'s words. `what` names the file in messages; `fix` says
/// what to do when it is too large.
pub fn read_at_most(path: &Path, max: u64, what: &str, fix: &str) -> anyhow::Result<Vec<u8>> {
    read_within(path, max).map_err(|e| match e {
        ReadWithin::Io(e) => anyhow::Error::new(e).context(format!("cannot read {what} {}", path.display())),
        ReadWithin::TooLarge => {
            anyhow::anyhow!("{what} {} is larger than {max} bytes, the most itera-sim reads: {fix}", path.display())
        }
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

/// Where a write through a temporary file failed.
#[derive(Debug)]
enum Failed {
    /// `dest` names no file (`..`, `/`).
    NoName,
    /// The temporary file could not be created.
    Create(std::io::Error),
    /// Writing, flushing or syncing the temporary file failed (it is removed).
    Write(std::io::Error),
}

/// A fresh temporary file beside `dest`, created exclusively with `access`, holding what
/// `write` wrote, flushed and synced to disk; its path. On failure nothing is left.
fn complete(
    dest: &Path,
    access: Access,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<PathBuf, Failed> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = dest.file_name().ok_or(Failed::NoName)?;
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
    let file = options.open(&tmp).map_err(Failed::Create)?;
    let mut w = BufWriter::new(file);
    let written = write(&mut w).and_then(|()| w.flush()).and_then(|()| w.get_ref().sync_all());
    drop(w);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failed::Write(e));
    }
    Ok(tmp)
}

/// [`complete`] with `bytes`, in `itera-pack`'s words.
fn complete_bytes(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<PathBuf> {
    complete(dest, access, |w| w.write_all(bytes)).map_err(|e| match e {
        Failed::NoName => anyhow::anyhow!("{} names no file; pass a file path", at(dest)),
        Failed::Create(e) => {
            anyhow::anyhow!("cannot write {}: {e}; check that its folder exists and is writable", at(dest))
        }
        Failed::Write(e) => {
            anyhow::anyhow!("cannot write {}: {e}; check the free space and that the folder is writable", at(dest))
        }
    })
}

/// Writes `bytes` to `dest` whole or not at all (a temporary file renamed over it).
pub fn write_atomically(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<()> {
    let tmp = complete_bytes(dest, bytes, access)?;
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}; check that the path is a writable file", at(dest))
    })
}

/// Writes `dest` whole or not at all, as [`write_atomically`] does, with what `write`
/// streams into it (a table too large to hold twice); the messages are `itera-sim`'s, the
/// cause of a failure (`{:#}`) after them.
pub fn write_whole(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> anyhow::Result<()> {
    let tmp = complete(path, Access::Public, write).map_err(|e| match e {
        Failed::NoName => anyhow::anyhow!("cannot create {}: it names no file; give a file path", path.display()),
        Failed::Create(e) => anyhow::Error::new(e)
            .context(format!("cannot create {} (through a temporary file beside it)", path.display())),
        Failed::Write(e) => anyhow::Error::new(e).context(format!("cannot write {}", path.display())),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// Writes `bytes` to `dest`, which must not exist (a secret key is never replaced): the
/// complete temporary file is hard-linked to `dest`, which fails if it exists, even if
/// another process made it since any earlier check.
pub fn write_new(dest: &Path, bytes: &[u8], access: Access) -> anyhow::Result<()> {
    let tmp = complete_bytes(dest, bytes, access)?;
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

/// Refuses an output `out` that is the input `input` (the same file, by any path: see
/// [`same_file`]), which writing would destroy; `flag` names the output's option in the
/// message. [`refuse_overlap`] in `itera-sim`'s words, for its one input.
pub fn refuse_overwriting_input(out: &Path, input: &Path, flag: &str) -> anyhow::Result<()> {
    if same_file(out, input) {
        bail!("{flag} {} is the input {} itself: give another output file", out.display(), input.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("itera-pack-files-{name}-{}", std::process::id()));
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

    #[test]
    fn reads_over_the_limit_are_refused_before_they_are_read_whole() {
        let d = dir("read");
        let path = d.join("t.txt");
        std::fs::write(&path, "once upon a time").unwrap();
        assert_eq!(read_at_most(&path, 16, "text", "cut it").unwrap(), b"once upon a time");
        let e = read_at_most(&path, 15, "text", "cut it").unwrap_err().to_string();
        assert!(
            e.contains("text ") && e.contains("t.txt") && e.contains("larger than 15 bytes") && e.ends_with(": cut it"),
            "{e}"
        );
        let e = read_at_most(Path::new("/dev/zero"), 1000, "golden logits", "cut it").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than 1000 bytes"), "{e}");
        assert!(read_at_most(&d.join("none.txt"), 15, "text", "cut it")
            .unwrap_err()
            .to_string()
            .contains("cannot read text"));
        // itera-pack's words for the same read.
        assert_eq!(read_text_within(&path, 16, "tokenizer").unwrap(), "once upon a time");
        let e = read_text_within(&path, 15, "tokenizer").unwrap_err().to_string();
        assert!(e.contains("t.txt") && e.contains("is over 15 bytes"), "{e}");
        let e = read_text_within(Path::new("/dev/zero"), 1000, "tokenizer").unwrap_err().to_string();
        assert!(e.contains("is over 1000 bytes"), "{e}");
        std::fs::write(&path, b"\xff").unwrap();
        assert!(read_text_within(&path, 16, "tokenizer").unwrap_err().to_string().contains("not UTF-8"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn streamed_outputs_are_whole_or_absent_and_never_the_input() {
        let d = dir("stream");
        let out = d.join("o.bin");
        write_whole(&out, |w| w.write_all(b"abc")).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"abc");
        // A write failing half-way keeps the old file and leaves no temporary behind.
        let e = write_whole(&out, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("disk full") && format!("{e:#}").contains("o.bin"), "{e:#}");
        assert_eq!(std::fs::read(&out).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temporary left");
        let e = write_whole(&d.join("no-such-folder").join("l.f32"), |w| w.write_all(b"x")).unwrap_err();
        assert!(e.to_string().contains("cannot create") && e.to_string().contains("no-such-folder"), "{e}");

        let input = d.join("in.itb");
        std::fs::write(&input, b"blob").unwrap();
        let e = refuse_overwriting_input(&d.join(".").join("in.itb"), &input, "--out").unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("is the input") && e.contains("another output file"), "{e}");
        #[cfg(unix)]
        {
            std::fs::hard_link(&input, d.join("hard.itb")).unwrap();
            assert!(refuse_overwriting_input(&d.join("hard.itb"), &input, "--out").is_err(), "a hard link");
        }
        assert!(refuse_overwriting_input(&out, &input, "--out").is_ok());
        assert!(refuse_overwriting_input(&d.join("new.f32"), &input, "--out").is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
