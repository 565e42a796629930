//! Files `itera-sim` reads and writes: reads bounded before they start, writes whole or not
//! at all and never over the file being read.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Reads `path` whole, refusing a file over `max` bytes before reading it (and reading no
/// further than `max + 1` bytes when its size is unknown, as for a pipe or `/dev/zero`).
/// `what` names the file in messages; `fix` says what to do when it is too large.
pub fn read_at_most(path: &Path, max: u64, what: &str, fix: &str) -> anyhow::Result<Vec<u8>> {
    let too_big =
        || anyhow::anyhow!("{what} {} is larger than {max} bytes, the most itera-sim reads: {fix}", path.display());
    let cannot = || format!("cannot read {what} {}", path.display());
    let file = File::open(path).with_context(cannot)?;
    if file.metadata().is_ok_and(|m| m.len() > max) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).with_context(cannot)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Writes `path` through a temporary file beside it (same folder, so the rename cannot
/// cross file systems), renamed over `path` only once every byte is written and flushed: a
/// failed or interrupted write leaves the old file, or none, never half a file.
pub fn write_whole(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> anyhow::Result<()> {
    let tmp = temporary_beside(path);
    let result = (|| {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {} (through a temporary file beside it)", path.display()))?;
        let mut w = BufWriter::new(file);
        write(&mut w).and_then(|()| w.flush()).with_context(|| format!("cannot write {}", path.display()))?;
        w.get_ref().sync_all().with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.NAME.partial-PID` in `path`'s folder.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Refuses an output `out` that is the input `input` (the same file, by any path), which
/// writing would destroy; `flag` names the output's option in the message.
pub fn refuse_overwriting_input(out: &Path, input: &Path, flag: &str) -> anyhow::Result<()> {
    if let (Ok(a), Ok(b)) = (out.canonicalize(), input.canonicalize()) {
        if a == b {
            bail!("{flag} {} is the input {} itself: give another output file", out.display(), input.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_over_the_limit_are_refused_before_they_are_read_whole() {
        let dir = std::env::temp_dir().join(format!("itera-sim-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        std::fs::write(&path, "once upon a time").unwrap();
        assert_eq!(read_at_most(&path, 16, "text", "cut it").unwrap(), b"once upon a time");
        let e = read_at_most(&path, 15, "text", "cut it").unwrap_err().to_string();
        assert!(
            e.contains("text ") && e.contains("t.txt") && e.contains("larger than 15 bytes") && e.ends_with(": cut it"),
            "{e}"
        );
        let e = read_at_most(Path::new("/dev/zero"), 1000, "golden logits", "cut it").unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than 1000 bytes"), "{e}");
        assert!(read_at_most(&dir.join("none.txt"), 15, "text", "cut it")
            .unwrap_err()
            .to_string()
            .contains("cannot read text"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_are_whole_or_absent_and_never_the_input() {
        let dir = std::env::temp_dir().join(format!("itera-sim-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("o.bin");
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
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");

        let input = dir.join("in.itb");
        std::fs::write(&input, b"blob").unwrap();
        let e = refuse_overwriting_input(&dir.join(".").join("in.itb"), &input, "--out").unwrap_err().to_string();
        assert!(e.contains("--out") && e.contains("is the input") && e.contains("another output file"), "{e}");
        assert!(refuse_overwriting_input(&out, &input, "--out").is_ok());
        assert!(refuse_overwriting_input(&dir.join("new.f32"), &input, "--out").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
