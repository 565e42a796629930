//! The hostile-input harness: runs `itera-pack` or `itera-sim` as a child on an input made
//! by code, and asserts what every case must hold: a clean exit (1 for a refusal, never a
//! panic's 101 or a signal's 134/139), a one-line message of the expected class, no output
//! file left behind, and a peak resident set within 256 MB + 2x the input's size (measured
//! by `wait4`'s rusage of that child alone).
//!
//! With `ITERA_HOSTILE_REPORT=FILE` set, each case appends one JSON line (class, case,
//! exit code, peak RSS) to FILE; `scripts/test` summarises it per class.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The classes of hostile input, numbered as there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 1. Damaged zip entries (CRC-32, sizes).
    ZipIntegrity = 1,
    /// 2. Zero points and scales out of range.
    QuantParams = 2,
    /// 3. Inputs that would need unbounded memory.
    MemoryBudget = 3,
    /// 4. Tokenizers that do not fit the model.
    TokenizerFit = 4,
    /// 5. Control characters in untrusted strings.
    TerminalEscapes = 5,
    /// 6. Absurd command-line sizes.
    CommandLineSizes = 6,
    /// 7. Key files: permissions and kind.
    Keys = 7,
    /// 8. Output files: never over the input, never partial.
    Outputs = 8,
    /// 9. Format laxity: duplicates, overlaps, reserved bytes.
    FormatLaxity = 9,
    /// 10. Messages a user can act on.
    Messages = 10,
}

/// Which binary a case runs.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// `itera-pack`.
    Pack,
    /// `itera-sim`.
    Sim,
}

/// The `itera-sim` binary under test.
const SIM_BIN: &str = env!("CARGO_BIN_EXE_itera-sim");

/// `itera-pack`, built beside `itera-sim` by `cargo test --workspace` (the packer's own
/// tests need it); `ITERA_PACK` overrides.
fn pack_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ITERA_PACK") {
        return PathBuf::from(p);
    }
    let sim = Path::new(SIM_BIN);
    let pack = sim.with_file_name(format!("itera-pack{}", std::env::consts::EXE_SUFFIX));
    assert!(
        pack.is_file(),
        "{} is missing: build it first (cargo build -p itera-pack --release, or cargo test --workspace)",
        pack.display()
    );
    pack
}

/// Peak memory allowed to a case: 256 MB plus twice the hostile input's size.
pub fn rss_bound(input_bytes: u64) -> u64 {
    256_000_000 + 2 * input_bytes
}

/// Longest a case may run before it counts as a hang.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Address-space cap on the child, so that a regression fails one case (a refused
/// allocation aborts: exit 134) instead of taking the machine's memory.
const ADDRESS_SPACE_CAP: u64 = 4 << 30;

/// One hostile case: a command line, the input it attacks with, what it must not leave.
pub struct Case {
    class: Class,
    name: String,
    tool: Tool,
    args: Vec<OsString>,
    input_bytes: u64,
    must_not_exist: Vec<PathBuf>,
}

/// What a child did.
pub struct Outcome {
    /// Exit code; 128 + signal number when a signal ended it.
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Peak resident set, bytes.
    pub peak_rss: u64,
}

impl Case {
    /// A case of `class`, named `name` in reports, running `tool`.
    pub fn new(class: Class, name: &str, tool: Tool) -> Case {
        Case { class, name: name.to_string(), tool, args: Vec::new(), input_bytes: 0, must_not_exist: Vec::new() }
    }

    /// Appends command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Case
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The hostile input file: its size sets the memory bound.
    pub fn input(mut self, path: &Path) -> Case {
        self.input_bytes += std::fs::metadata(path).map_or(0, |m| m.len());
        self
    }

    /// A path that must not exist after the run (an output the command must not write).
    pub fn no_output(mut self, path: &Path) -> Case {
        self.must_not_exist.push(path.to_path_buf());
        self
    }

    /// Runs the case and checks what every case must hold (no crash, the memory bound,
    /// no forbidden output); returns what the child did.
    pub fn run(&self) -> Outcome {
        let bin = match self.tool {
            Tool::Pack => pack_bin(),
            Tool::Sim => PathBuf::from(SIM_BIN),
        };
        let out = spawn_measured(&bin, &self.args);
        self.report(&out);
        let what = format!("{:?} case '{}'", self.class, self.name);
        assert!(
            out.code == 0 || out.code == 1 || out.code == 2,
            "{what}: exit {} (a crash), stderr: {}",
            out.code,
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{what}: panicked: {}", out.stderr);
        assert!(
            out.peak_rss <= rss_bound(self.input_bytes),
            "{what}: peak RSS {} bytes over the bound {} (input {} bytes)",
            out.peak_rss,
            rss_bound(self.input_bytes),
            self.input_bytes
        );
        for p in &self.must_not_exist {
            assert!(!p.exists(), "{what}: left {} behind", p.display());
        }
        out
    }

    /// Runs the case and requires a refusal: exit 1 and exactly one `error:` line, the last
    /// line of stderr, of at most 400 characters, holding every one of `needles` (the
    /// message's class: what went wrong, where, what to do).
    pub fn refused(&self, needles: &[&str]) -> Outcome {
        let out = self.run();
        let what = format!("{:?} case '{}'", self.class, self.name);
        assert_eq!(out.code, 1, "{what}: expected a refusal (exit 1), stdout: {} stderr: {}", out.stdout, out.stderr);
        let line = error_line(&out.stderr).unwrap_or_else(|| panic!("{what}: no single error line in: {}", out.stderr));
        assert!(line.chars().count() <= 400, "{what}: the message is {} characters: {line}", line.chars().count());
        assert!(!line.chars().any(|c| c.is_control()), "{what}: control characters in: {line:?}");
        for n in needles {
            assert!(line.contains(n), "{what}: expected '{n}' in: {line}");
        }
        out
    }

    /// Appends this case's line to `$ITERA_HOSTILE_REPORT`, if set.
    fn report(&self, out: &Outcome) {
        let Some(path) = std::env::var_os("ITERA_HOSTILE_REPORT") else { return };
        let line = serde_json::json!({
            "class": self.class as u8,
            "case": self.name,
            "exit": out.code,
            "peak_rss": out.peak_rss,
            "input_bytes": self.input_bytes,
        });
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            // One write per line: O_APPEND keeps parallel tests' lines whole.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// The one `error:` line of a refusal, if it is the last line and the only such line.
pub fn error_line(stderr: &str) -> Option<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors = lines.iter().filter(|l| l.starts_with("error:")).count();
    match lines.last() {
        Some(last) if errors == 1 && last.starts_with("error: ") => Some(last),
        _ => None,
    }
}

/// Where the trampoline finds its command and leaves what the command did.
const TRAMPOLINE_ENV: &str = "ITERA_HOSTILE_TRAMPOLINE";

/// Runs `bin args` with no stdin and returns its exit code, output and own peak RSS.
///
/// Linux keeps a process's resident high-water mark across `exec`, and a child starts
/// with its parent's pages, so a child forked straight from this test process would
/// report at least the test process's size (every case's inputs, built in parallel
/// threads). The command is therefore started by a small trampoline: this test binary run
/// afresh on its one `measuring_trampoline` test, which forks the command from its own
/// few megabytes and reaps it with `wait4` (see [`trampoline`]).
fn spawn_measured(bin: &Path, args: &[OsString]) -> Outcome {
    let dir = Scratch::new("spawn");
    let mut argv = bin.as_os_str().as_encoded_bytes().to_vec();
    for a in args {
        argv.push(0);
        argv.extend_from_slice(a.as_encoded_bytes());
    }
    std::fs::write(dir.path("argv"), argv).expect("write the command for the trampoline");
    let me = std::env::current_exe().expect("the test binary");
    let status = Command::new(me)
        .args(["--exact", "measuring_trampoline", "--ignored", "--test-threads=1", "-q"])
        .env(TRAMPOLINE_ENV, dir.path(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the trampoline");
    let result = std::fs::read_to_string(dir.path("result")).unwrap_or_default();
    let mut fields = result.split_whitespace().map(|f| f.parse::<i64>().ok());
    let (Some(Some(code)), Some(Some(peak))) = (fields.next(), fields.next()) else {
        panic!("the trampoline for {} {:?} reported nothing ({status}): {result}", bin.display(), args);
    };
    assert!(code != TIMED_OUT, "{} {:?} ran past {} s (a hang)", bin.display(), args, TIMEOUT.as_secs());
    let read = |name: &str| String::from_utf8_lossy(&std::fs::read(dir.path(name)).unwrap_or_default()).into_owned();
    Outcome { code: code as i32, stdout: read("stdout"), stderr: read("stderr"), peak_rss: peak as u64 }
}

/// Exit code the trampoline reports for a command it killed after [`TIMEOUT`].
const TIMED_OUT: i64 = -1;

/// The trampoline's body, run in a fresh process of this test binary: reads `argv` from
/// `$ITERA_HOSTILE_TRAMPOLINE`, caps its address space, runs the command with stdout and
/// stderr to files there, and writes `result`: the exit code (128 + signal when a signal
/// ended it, [`TIMED_OUT`] when it was killed) and the peak RSS in bytes from `wait4`.
///
/// Run directly (no variable set), it measures `itera-sim --version` and requires a
/// plausible figure: a check of the measurement itself.
pub fn trampoline() {
    let Some(dir) = std::env::var_os(TRAMPOLINE_ENV).map(PathBuf::from) else {
        let out = spawn_measured(Path::new(SIM_BIN), &["--version".into()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.peak_rss > 0 && out.peak_rss < 64 << 20, "itera-sim --version peaked at {} bytes", out.peak_rss);
        return;
    };
    let argv = std::fs::read(dir.join("argv")).expect("the command");
    let mut parts = argv.split(|&b| b == 0).map(|p| {
        // SAFETY: the bytes came from `OsStr::as_encoded_bytes` in this same binary.
        unsafe { OsString::from_encoded_bytes_unchecked(p.to_vec()) }
    });
    let bin = parts.next().expect("a program");
    let lim = libc::rlimit { rlim_cur: ADDRESS_SPACE_CAP, rlim_max: ADDRESS_SPACE_CAP };
    // SAFETY: setrlimit reads a valid rlimit struct; the cap is inherited by the command.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
    let file = |name: &str| std::fs::File::create(dir.join(name)).expect("an output file");
    let started =
        Command::new(&bin).args(parts).stdin(Stdio::null()).stdout(file("stdout")).stderr(file("stderr")).spawn();
    let (code, peak) = match started {
        Ok(child) => reap(child),
        Err(e) => panic!("cannot start {}: {e}", bin.to_string_lossy()),
    };
    std::fs::write(dir.join("result"), format!("{code} {peak}\n")).expect("write the result");
}

/// Waits for `child` with `wait4` (killing it after [`TIMEOUT`]); its exit code and peak RSS.
fn reap(mut child: std::process::Child) -> (i64, u64) {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status = 0;
    let mut timed_out = false;
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child; status and usage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if !timed_out && start.elapsed() > TIMEOUT {
            let _ = child.kill();
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let code = if timed_out {
        TIMED_OUT
    } else if libc::WIFEXITED(status) {
        i64::from(libc::WEXITSTATUS(status))
    } else {
        128 + i64::from(libc::WTERMSIG(status))
    };
    // Linux reports ru_maxrss in KiB.
    (code, (usage.ru_maxrss as u64) * 1024)
}

/// The scratch folder every suite makes its temporary files in.
pub use itera_test_support::Scratch;

/// Packs the tiny synthetic model into a blob file in `s` (default options); its path.
pub fn tiny_blob(s: &Scratch) -> PathBuf {
    tiny_blob_with(s, "tiny.itb", &itera_pack::PackOptions::default())
}

/// Packs the tiny synthetic model (seed 1) with `opts` into `name` in `s`; its path.
pub fn tiny_blob_with(s: &Scratch, name: &str, opts: &itera_pack::PackOptions) -> PathBuf {
    s.write(name, &itera_test_support::tiny_blob_with(1, opts))
}

/// `itera-pack convert IN -o OUT EXTRA...` as a case whose input is IN and which must
/// leave no OUT.
pub fn convert(class: Class, name: &str, input: &Path, out: &Path, extra: &[&OsStr]) -> Case {
    Case::new(class, name, Tool::Pack)
        .args([OsStr::new("convert"), input.as_os_str(), OsStr::new("-o"), out.as_os_str()])
        .args(extra.iter().copied())
        .input(input)
        .no_output(out)
}
