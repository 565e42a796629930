//! Hostile command lines against `itera-sim`: absurd sizes and flags (class 6), messages a
//! user must be able to act on (class 10), and untrusted text that must reach the terminal
//! escaped (class 5: the blob's token text and provenance, and the user's own arguments
//! quoted back in errors).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use itera_edge::format::TokenizerKind;
use itera_pack::writer::TokenizerTable;
use itera_pack::PackOptions;

use crate::support::Tool::Sim;
use crate::support::{tiny_blob, tiny_blob_with, Case, Class, Outcome, Scratch};

/// `tiny_config()`: max_seq 16, vocab 48.
const MAX_SEQ: usize = 16;
const VOCAB: usize = 48;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `itera-sim CMD BLOB REST...` as a case of `class` whose input is the blob.
fn on_blob(class: Class, name: &str, cmd: &str, blob: &Path, rest: &[&str]) -> Case {
    Case::new(class, name, Sim).args([OsString::from(cmd), blob.as_os_str().to_owned()]).args(os(rest)).input(blob)
}

/// Neither stream holds a raw ESC (or any control character but newline and tab).
fn assert_no_raw_controls(what: &str, o: &Outcome) {
    for (stream, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let bad = text.chars().find(|&c| c.is_control() && c != '\n' && c != '\t');
        assert_eq!(bad, None, "{what}: a raw control character on {stream}: {text:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Class 6: sizes. Each is refused at parse time, naming the flag and its range.
// ---------------------------------------------------------------------------------------

#[test]
fn class6_run_n_u64_max_is_refused_naming_the_flag_and_range() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    // Used to panic: Vec::with_capacity(u64::MAX), capacity overflow (exit 101).
    on_blob(Class::CommandLineSizes, "run -n u64::MAX", "run", &blob, &["--tokens", "1", "-n", "18446744073709551615"])
        .refused(&["'18446744073709551615'", "--max-tokens", "from 1 to 16777215", "max_seq"]);
}

#[test]
fn class6_run_n_two_to_the_40_is_refused_before_allocating() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    // Used to abort allocating 4 TB (exit 134).
    for flag in ["-n", "--max-tokens"] {
        on_blob(Class::CommandLineSizes, "run -n 2^40", "run", &blob, &["--tokens", "1", flag, "1099511627776"])
            .refused(&["'1099511627776'", "--max-tokens", "from 1 to 16777215"]);
    }
}

#[test]
fn class6_run_n_negative_garbage_and_overflowing_numbers_are_refused() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    for bad in ["-5", "0", "abc", "1e9", "", "340282366920938463463374607431768211456"] {
        on_blob(Class::CommandLineSizes, "run -n garbage", "run", &blob, &["--tokens", "1", "-n", bad]).refused(&[
            &format!("'{bad}'"),
            "--max-tokens",
            "expected a whole number from 1 to 16777215",
        ]);
    }
}

#[test]
fn class6_run_n_at_the_largest_accepted_value_stops_at_max_seq_in_bounded_memory() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    let o = on_blob(
        Class::CommandLineSizes,
        "run -n 16777215",
        "run",
        &blob,
        &["--tokens", "1,2,3", "-n", "16777215", "--json"],
    )
    .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    // Generation stops cleanly when the session is full, as it always has.
    assert_eq!(v["generated"].as_array().map(Vec::len), Some(MAX_SEQ - 3 + 1));
    assert_eq!(v["stopped_at_max_seq"], true);
    assert!(o.stderr.contains("max_seq"), "{}", o.stderr);
}

#[test]
fn class6_bench_length_huge_is_refused_under_both_spellings() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    // `--tokens` is bench's old spelling of --length, kept for scripts.
    for flag in ["--length", "--tokens"] {
        for n in ["1099511627776", "18446744073709551615", "8193", "0"] {
            on_blob(Class::CommandLineSizes, "bench --length huge", "bench", &blob, &[flag, n]).refused(&[
                &format!("'{n}'"),
                "--length",
                "from 1 to 8192",
                "max_seq",
            ]);
        }
    }
}

#[test]
fn class6_bench_repeat_huge_is_refused() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    for n in ["18446744073709551615", "1001", "-1"] {
        on_blob(Class::CommandLineSizes, "bench --repeat huge", "bench", &blob, &["--repeat", n]).refused(&[
            &format!("'{n}'"),
            "--repeat",
            "from 1 to 1000",
        ]);
    }
}

#[test]
fn class6_greedy_n_huge_is_refused() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    on_blob(
        Class::CommandLineSizes,
        "greedy -n huge",
        "greedy",
        &blob,
        &["--tokens", "1,2", "-n", "18446744073709551615"],
    )
    .refused(&["'18446744073709551615'", "--max-tokens", "from 0 to 16777215", "max_seq"]);
}

#[test]
fn class6_eval_truncate_huge_is_refused_under_both_spellings() {
    let s = Scratch::new("cl6");
    let blob = tiny_blob(&s);
    let text = s.write("text.txt", b"once upon a time");
    let tok =
        s.write("tok.json", br#"{"token_to_id": {"<UNK>": 0, "once": 1}, "id_to_token": {"0": "<UNK>", "1": "once"}}"#);
    // `--max-tokens` is eval's old spelling of --truncate, kept for scripts.
    for flag in ["--truncate", "--max-tokens"] {
        for n in ["18446744073709551615", "16777217", "1"] {
            on_blob(Class::CommandLineSizes, "eval --truncate huge", "eval", &blob, &[])
                .args([OsString::from("--text"), text.clone().into(), "--tokenizer".into(), tok.clone().into()])
                .args([flag, n])
                .refused(&[&format!("'{n}'"), "--truncate", "from 2 to 16777216"]);
        }
    }
}

#[test]
fn class6_demo_n_and_top_k_huge_are_refused() {
    Case::new(Class::CommandLineSizes, "demo -n huge", Sim)
        .args(["demo", "-n", "18446744073709551615"])
        .refused(&["--max-tokens", "from 1 to 16777215"]);
    Case::new(Class::CommandLineSizes, "demo --top-k huge", Sim)
        .args(["demo", "--top-k", "18446744073709551615"])
        .refused(&["--top-k", "from 0 to 64", "64 candidates"]);
}

// ---------------------------------------------------------------------------------------
// Class 10: messages in the command line's terms, and nothing printed before a refusal.
// ---------------------------------------------------------------------------------------

#[test]
fn class10_greedy_past_max_seq_says_which_n_fits() {
    let s = Scratch::new("cl10");
    let blob = tiny_blob(&s);
    let o = on_blob(Class::Messages, "greedy -n 200", "greedy", &blob, &["--tokens", "1,2,3,4", "-n", "200"])
        .refused(&["4 tokens plus -n 200", "204 positions", "16 (max_seq)", "give -n 12 or less"]);
    assert!(!o.stderr.contains("reset()"), "a library hint: {}", o.stderr);
    assert!(o.stdout.is_empty(), "nothing before the refusal: {}", o.stdout);
    // The N it names does fit.
    let o = on_blob(Class::Messages, "greedy -n 12", "greedy", &blob, &["--tokens", "1,2,3,4", "-n", "12"]).run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("tokens: ") && o.stdout.contains("logits_fnv1a: "), "{}", o.stdout);
}

#[test]
fn class10_bench_repeat_zero_prints_nothing_before_the_error() {
    let s = Scratch::new("cl10");
    let blob = tiny_blob(&s);
    let o = on_blob(Class::Messages, "bench --repeat 0", "bench", &blob, &["--repeat", "0"]).refused(&[
        "--repeat",
        "from 1 to 1000",
        "itera-sim bench --help",
    ]);
    assert_eq!(o.stderr.lines().count(), 1, "only the error: {}", o.stderr);
    assert!(!o.stderr.contains("repeats..."), "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
}

#[test]
fn class10_demo_bad_sampling_is_refused_before_anything_is_printed() {
    for (flag, value, needle) in [("--top-p", "0", "--top-p"), ("--temperature", "-1", "--temperature")] {
        let o = Case::new(Class::Messages, "demo bad sampling", Sim).args(["demo", flag, value]).refused(&[needle]);
        assert_eq!(o.stderr.lines().count(), 1, "only the error: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{}", o.stdout);
    }
}

#[test]
fn class10_top_k_zero_means_no_limit_and_65_names_the_sampler_limit() {
    let s = Scratch::new("cl10");
    let blob = tiny_blob(&s);
    let o = on_blob(
        Class::Messages,
        "run --top-k 0",
        "run",
        &blob,
        &["--tokens", "1", "-n", "3", "--top-k", "0", "--temperature", "1"],
    )
    .run();
    assert_eq!(o.code, 0, "--top-k 0 is 'no limit': {}", o.stderr);
    assert!(!o.stderr.contains("experts"), "the packer's --top-k is another flag: {}", o.stderr);
    on_blob(Class::Messages, "run --top-k 65", "run", &blob, &["--tokens", "1", "--top-k", "65"]).refused(&[
        "'65'",
        "--top-k",
        "from 0 to 64",
        "0 keeps every token",
    ]);
}

#[test]
fn class10_usage_errors_are_one_line_naming_what_is_missing() {
    let s = Scratch::new("cl10");
    let blob = tiny_blob(&s);
    let o = on_blob(Class::Messages, "logits without --tokens/--out", "logits", &blob, &[]).refused(&[
        "required",
        "--tokens",
        "--out",
        "itera-sim logits --help",
    ]);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    on_blob(Class::Messages, "run with an unknown flag", "run", &blob, &["--tokens", "1", "--bogus"])
        .refused(&["'--bogus'", "itera-sim run --help"]);
    Case::new(Class::Messages, "unknown command", Sim)
        .args(["frobnicate"])
        .refused(&["'frobnicate'", "itera-sim --help"]);
    // No command: one line listing them, not the whole help as an "error".
    let none: [&str; 0] = [];
    Case::new(Class::Messages, "no command", Sim).args(none).refused(&[
        "no command given",
        "run, eval",
        "itera-sim --help",
    ]);
}

#[test]
fn class10_a_prompt_longer_than_the_model_names_both_lengths() {
    let s = Scratch::new("cl10");
    let blob = tiny_blob(&s);
    let long = vec!["1"; MAX_SEQ + 1].join(",");
    let out = s.path("never.f32");
    on_blob(Class::Messages, "logits past max_seq", "logits", &blob, &["--tokens", &long, "--out"])
        .args([out.as_os_str()])
        .no_output(&out)
        .refused(&["17 tokens", "16 positions", "max_seq"]);
    let too_big = VOCAB.to_string();
    on_blob(Class::Messages, "run with an id past the vocab", "run", &blob, &["--tokens", &format!("1,{too_big}")])
        .refused(&["token id 48", "position 1", "48 ids"]);
}

// ---------------------------------------------------------------------------------------
// Class 5: untrusted text on the terminal.
// ---------------------------------------------------------------------------------------

/// A blob whose every token's text carries a screen-clearing escape and a carriage return.
fn blob_with_hostile_tokens(s: &Scratch) -> PathBuf {
    let tokens = (0..VOCAB).map(|i| format!("w{i}\x1b[2J\r")).collect();
    let opts = PackOptions {
        tokenizer: Some(TokenizerTable { kind: TokenizerKind::Word, unk_id: 1, tokens }),
        ..Default::default()
    };
    tiny_blob_with(s, "hostile-tokens.itb", &opts)
}

#[test]
fn class5_token_text_with_escapes_is_streamed_escaped() {
    let s = Scratch::new("cl5");
    let blob = blob_with_hostile_tokens(&s);
    let o = on_blob(
        Class::TerminalEscapes,
        "run streams hostile tokens",
        "run",
        &blob,
        &["--tokens", "1,2", "-n", "4", "--echo"],
    )
    .run();
    assert_no_raw_controls("run --echo", &o);
    if o.code == 0 {
        assert!(o.stdout.contains("\\u{1b}[2J\\r"), "the escape is shown, not run: {}", o.stdout);
        assert_eq!(o.stdout.matches("\\u{1b}[2J").count(), 6, "2 echoed + 4 generated: {}", o.stdout);
    } else {
        // A later check may refuse such a tokenizer outright; then it must say so.
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("token"), "{}", o.stderr);
    }
}

#[test]
fn class5_json_output_keeps_the_exact_text_json_escaped() {
    let s = Scratch::new("cl5");
    let blob = blob_with_hostile_tokens(&s);
    let o = on_blob(
        Class::TerminalEscapes,
        "run --json hostile tokens",
        "run",
        &blob,
        &["--tokens", "1,2", "-n", "2", "--json"],
    )
    .run();
    assert_no_raw_controls("run --json", &o);
    if o.code == 0 {
        let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
        let text = v["text"].as_str().expect("text");
        assert_eq!(text.matches("\x1b[2J\r").count(), 2, "exact after JSON decoding: {text:?}");
    }
}

#[test]
fn class5_provenance_with_escapes_is_shown_escaped_in_checks_warning() {
    let s = Scratch::new("cl5");
    let opts =
        PackOptions { meta: vec![("source".into(), "evil\x1b]0;owned\x07\x1b[2J.pt".into())], ..Default::default() };
    let blob = tiny_blob_with(&s, "hostile-source.itb", &opts);
    // A golden naming another checkpoint: check warns, quoting the blob's source.
    let logits: Vec<u8> = vec![0; 2 * VOCAB * 4];
    s.write("ref.f32", &logits);
    let golden = serde_json::json!({
        "checkpoint": "itera_lite_micro_distilled.pt", "tokens": [1, 2], "positions": 2, "vocab": VOCAB,
        "logits_file": "ref.f32",
    });
    let golden = s.write("ref.json", golden.to_string().as_bytes());
    let o = on_blob(Class::TerminalEscapes, "check quotes a hostile provenance", "check", &blob, &["--golden"])
        .args([golden.as_os_str()])
        .input(&golden)
        .run();
    assert_no_raw_controls("check", &o);
    assert!(o.code == 0 || o.code == 1, "{}", o.stderr);
    if !o.stderr.contains("not a usable blob") {
        assert!(
            o.stderr.contains("packed from evil\\u{1b}]0;owned\\u{7}\\u{1b}[2J.pt"),
            "the provenance is quoted escaped: {}",
            o.stderr
        );
    }
}

#[test]
fn class5_arguments_quoted_back_in_errors_are_escaped() {
    let s = Scratch::new("cl5");
    let blob = tiny_blob(&s);
    on_blob(Class::TerminalEscapes, "token list with ESC", "run", &blob, &["--tokens", "5,\x1b[31mred"])
        .refused(&["'\\u{1b}[31mred' is not a token id"]);
    // Clap drops the escape sequence from the value it quotes; what is left (\r) is escaped.
    on_blob(Class::TerminalEscapes, "-n with ESC", "run", &blob, &["--tokens", "1", "-n", "1\r\x1b[2Jz"])
        .refused(&["invalid value '1\\r", "--max-tokens"]);
    on_blob(Class::TerminalEscapes, "board name with OSC", "fit", &blob, &["--board", "\x1b]0;pwned\x07"])
        .refused(&["unknown board '\\u{1b}]0;pwned\\u{7}'", "qemu-an386"]);
}

// ---------------------------------------------------------------------------------------
// Class 3, command-line side: a table of logits sized by the blob and the user together.
// ---------------------------------------------------------------------------------------

/// The tiny model widened to a 65,536-token vocabulary and 65,536 positions: a 4 MB blob
/// whose logits for 60,000 positions would take 15.7 GB.
fn wide_long_blob(s: &Scratch) -> PathBuf {
    let config = itera_edge::Config { vocab: 1 << 16, max_seq: 1 << 16, ..itera_pack::synthetic::tiny_config() };
    let sd = itera_pack::synthetic::state_dict(&config, 1);
    let bytes = itera_pack::convert::build(&sd, &PackOptions::default()).expect("converts").finish().expect("packs");
    s.write("wide-long.itb", &bytes)
}

#[test]
fn class3_logits_tables_past_the_limit_are_refused_before_allocating() {
    let s = Scratch::new("cl3");
    let blob = wide_long_blob(&s);
    // 120 kB of ids: under the 128 KiB a single argument may have.
    let tokens = vec!["1"; 60_000].join(",");
    let out = s.path("never.f32");
    on_blob(Class::MemoryBudget, "logits: 60000 x 65536", "logits", &blob, &["--tokens", &tokens, "--out"])
        .args([out.as_os_str()])
        .no_output(&out)
        .refused(&["60000 positions × 65536 logits", "give at most 256 tokens"]);
    on_blob(
        Class::MemoryBudget,
        "check --reference: 60000 x 65536",
        "check",
        &blob,
        &["--reference", "cpu", "--tokens", &tokens],
    )
    .refused(&["60000 positions × 65536 logits", "give at most 256 tokens"]);
    // What fits runs.
    let o = on_blob(
        Class::MemoryBudget,
        "logits: 256 x 65536",
        "logits",
        &blob,
        &["--tokens", &vec!["1"; 256].join(","), "--out"],
    )
    .args([out.as_os_str()])
    .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::metadata(&out).map(|m| m.len()).ok(), Some(256 * 65_536 * 4));
}

// ---------------------------------------------------------------------------------------
// Class 8, itera-sim side: `logits --out` never over its input, never half-written.
// ---------------------------------------------------------------------------------------

#[test]
fn class8_logits_out_over_the_blob_is_refused_and_the_blob_kept() {
    let s = Scratch::new("cl8");
    let blob = tiny_blob(&s);
    let before = std::fs::read(&blob).expect("the blob");
    // The same file by another path, too.
    let other_path = s.path(".").join("tiny.itb");
    for out in [&blob, &other_path] {
        on_blob(Class::Outputs, "logits --out the blob", "logits", &blob, &["--tokens", "1,2", "--out"])
            .args([out.as_os_str()])
            .refused(&["--out", "is the input", "give another output file"]);
        assert_eq!(std::fs::read(&blob).expect("the blob"), before, "the blob is untouched");
    }
}

#[test]
fn class8_a_failed_logits_write_leaves_nothing_behind() {
    let s = Scratch::new("cl8");
    let blob = tiny_blob(&s);
    // A folder in the way of the output: the rename fails after the data is written.
    let out = s.path("taken");
    std::fs::create_dir_all(out.join("inside")).expect("a folder");
    on_blob(Class::Outputs, "logits --out a folder", "logits", &blob, &["--tokens", "1,2", "--out"])
        .args([out.as_os_str()])
        .refused(&["cannot write", "taken"]);
    let left: Vec<_> = std::fs::read_dir(s.path(".")).expect("scratch").flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains("partial")), "a temporary left behind: {left:?}");
    // No folder to write into: refused, nothing created.
    let missing = s.path("no-such-folder").join("l.f32");
    on_blob(Class::Outputs, "logits --out in a missing folder", "logits", &blob, &["--tokens", "1,2", "--out"])
        .args([missing.as_os_str()])
        .no_output(&missing)
        .refused(&["cannot create", "no-such-folder"]);
}

/// A blob read is bounded by what its header declares, whatever the file holds.
#[test]
fn class3_a_blob_read_stops_at_its_declared_length() {
    let s = Scratch::new("cl3");
    let blob = tiny_blob(&s);
    // Not a blob, endless: refused after its first 36 bytes.
    Case::new(Class::MemoryBudget, "run /dev/zero", Sim).args(["run", "/dev/zero", "--tokens", "1"]).refused(&[
        "/dev/zero",
        "magic",
        "itera-pack convert",
    ]);
    // A whole blob followed by 8 GiB (sparse: no disk used) of something else.
    let long = s.path("long.itb");
    std::fs::copy(&blob, &long).expect("copy");
    std::fs::File::options().write(true).open(&long).and_then(|f| f.set_len(8 << 30)).expect("sparse tail");
    let declared = std::fs::metadata(&blob).expect("blob").len();
    on_blob(Class::MemoryBudget, "blob with an 8 GiB tail", "run", &long, &["--tokens", "1"]).refused(&[
        "long.itb",
        &format!("more than the {declared} bytes its header declares"),
        "repack",
    ]);
    // A header declaring 4 GiB over a small file: truncated, said as such.
    let mut bytes = std::fs::read(&blob).expect("blob");
    bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let lying = s.write("lying.itb", &bytes);
    on_blob(Class::MemoryBudget, "header declaring 4 GiB", "run", &lying, &["--tokens", "1"]).refused(&[
        "lying.itb",
        "truncated",
        &format!("needs {}", u32::MAX),
    ]);
}

/// Every other file itera-sim reads (golden JSON and logits, eval's text, a firmware ELF)
/// is bounded before it is read: an endless one is refused, not read until memory runs out.
#[test]
fn class3_endless_side_files_are_refused_within_their_limits() {
    let s = Scratch::new("cl3");
    let blob = tiny_blob(&s);
    // Golden logits named as /dev/zero: read one byte past the 2 x 48 x 4 it must hold.
    let golden = serde_json::json!({ "tokens": [1, 2], "positions": 2, "vocab": VOCAB, "logits_file": "/dev/zero" });
    let golden = s.write("zero.json", golden.to_string().as_bytes());
    on_blob(Class::MemoryBudget, "golden logits /dev/zero", "check", &blob, &["--golden"])
        .args([golden.as_os_str()])
        .refused(&["golden logits /dev/zero", "larger than 384 bytes"]);
    // A golden declaring a table of 2^40 logits: refused before any logits file is opened.
    let huge = serde_json::json!({ "tokens": [1], "positions": 1, "vocab": 1u64 << 40, "logits_file": "/dev/zero" });
    let huge = s.write("huge.json", huge.to_string().as_bytes());
    on_blob(Class::MemoryBudget, "golden of 2^40 logits", "check", &blob, &["--golden"])
        .args([huge.as_os_str()])
        .refused(&["huge.json", "1099511627776 logits", "give at most"]);
    for (name, args) in [
        ("golden file /dev/zero", vec!["check", "--golden", "/dev/zero"]),
        ("firmware ELF /dev/zero", vec!["fit", "--board", "stm32f411", "--elf", "/dev/zero"]),
    ] {
        on_blob(Class::MemoryBudget, name, args[0], &blob, &args[1..]).refused(&["/dev/zero", "larger than"]);
    }
    let tok =
        s.write("tok.json", br#"{"token_to_id": {"<UNK>": 0, "once": 1}, "id_to_token": {"0": "<UNK>", "1": "once"}}"#);
    on_blob(Class::MemoryBudget, "eval text /dev/zero", "eval", &blob, &["--text", "/dev/zero", "--tokenizer"])
        .args([tok.as_os_str()])
        .refused(&["text /dev/zero", "larger than 134217728 bytes"]);
}
