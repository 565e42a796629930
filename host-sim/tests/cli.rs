//! End-to-end tests of the `itera-sim` binary on small synthetic blobs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use itera_edge::{Blob, Model};
use itera_pack::{AlignedBytes, PackOptions};
use itera_test_support::session::logits_after_each;
use itera_test_support::Scratch;

const BIN: &str = env!("CARGO_BIN_EXE_itera-sim");
/// `tiny_config().vocab`.
const VOCAB: usize = 48;

/// Packs the tiny synthetic model (seed 1), with `opts`, into a temp file.
fn tiny_blob_with(s: &Scratch, opts: &PackOptions) -> (PathBuf, Vec<u8>) {
    let bytes = itera_test_support::tiny_blob_with(1, opts).to_vec();
    (s.write("tiny.itb", &bytes), bytes)
}

fn tiny_blob(s: &Scratch) -> (PathBuf, Vec<u8>) {
    tiny_blob_with(s, &PackOptions::default())
}

fn sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run itera-sim")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A clean failure: status 1, an `error:` line, no panic.
fn assert_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn write_golden(s: &Scratch, dir_name: &str, tokens: &[u32], logits: &[f32]) -> PathBuf {
    let dir = s.path(dir_name);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("ref.f32"), bytes).unwrap();
    let json = serde_json::json!({
        "tokens": tokens, "positions": tokens.len(), "vocab": VOCAB, "logits_file": "ref.f32",
        "layout": "row-major [positions][vocab], little-endian f32",
    });
    let path = dir.join("ref.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn demo_json_runs_and_says_synthetic() {
    let o = sim(&["demo", "--json", "-n", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "synthetic",
        "note",
        "prompt_tokens",
        "generated",
        "text",
        "tok_per_s",
        "prefill_tok_per_s",
        "arena_bytes",
        "blob_bytes",
        "macs_per_token",
        "kernel",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["synthetic"], true);
    assert!(v["note"].as_str().unwrap().contains("synthetic"));
    assert_eq!(v["generated"].as_array().unwrap().len(), 8);
    assert!(v["arena_bytes"].as_u64().unwrap() > 0 && v["blob_bytes"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn demo_text_says_synthetic_and_points_to_real_tools() {
    let o = sim(&["demo", "-n", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("synthetic") && out.contains("itera-pack convert") && out.contains("itera-sim run"), "{out}");
    assert!(out.contains("tok/s") && out.contains("arena") && out.contains("kernel"), "{out}");
}

#[test]
fn logits_file_matches_an_in_process_session_bit_for_bit() {
    let s = Scratch::new("cli");
    let (blob, bytes) = tiny_blob(&s);
    let out = s.path("logits.f32");
    let o = sim(&["logits", p(&blob), "--tokens", "1,2,3", "--out", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written.len(), 3 * VOCAB * 4);
    let want = logits_after_each(&bytes, &[1, 2, 3]);
    let got: Vec<u32> = written.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(got, want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());

    let o = sim(&["logits", p(&blob), "--tokens", "1 2", "--out", p(&out), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["positions"].as_u64(), v["vocab"].as_u64()), (Some(2), Some(VOCAB as u64)));
}

#[test]
fn check_passes_on_own_logits_and_fails_after_a_perturbation() {
    let s = Scratch::new("cli");
    let (blob, bytes) = tiny_blob(&s);
    let tokens = [5u32, 17, 2, 40, 0, 47];
    let mut logits = logits_after_each(&bytes, &tokens);
    let golden = write_golden(&s, "golden-ok", &tokens, &logits);

    let o = sim(&["check", p(&blob), "--golden", p(&golden)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("max_abs_diff") && out.contains("cosine") && out.lines().last() == Some("PASS"), "{out}");

    let o = sim(&["check", p(&blob), "--golden", p(&golden), "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["max_abs_diff", "rmse", "cosine", "top1_agreement", "positions", "vocab", "pass"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(
        (v["max_abs_diff"].as_f64(), v["top1_agreement"].as_f64(), v["pass"].as_bool()),
        (Some(0.0), Some(1.0), Some(true))
    );
    assert_eq!(v["positions"], tokens.len());

    // One logit off by 0.01 (not the row's maximum, so top-1 still agrees).
    let row = 2 * VOCAB;
    let max = itera_edge::sample::argmax(&logits[row..row + VOCAB]) as usize;
    logits[row + (max + 1) % VOCAB] += 0.01;
    let golden = write_golden(&s, "golden-bad", &tokens, &logits);
    let o = sim(&["check", p(&blob), "--golden", p(&golden)]);
    assert_error(&o, "--tol");
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));
    let o = sim(&["check", p(&blob), "--golden", p(&golden), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pass"], false);
    assert!((v["max_abs_diff"].as_f64().unwrap() - 0.01).abs() < 1e-5);
    // A looser tolerance accepts it.
    assert!(sim(&["check", p(&blob), "--golden", p(&golden), "--tol", "0.02"]).status.success());
}

#[test]
fn check_refuses_a_golden_for_another_model() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let golden = write_golden(&s, "golden-vocab", &[1, 2], &[0.0; 2 * VOCAB]);
    let text = std::fs::read_to_string(&golden).unwrap().replace("\"vocab\":48", "\"vocab\":24");
    std::fs::write(&golden, text).unwrap();
    assert_error(&sim(&["check", p(&blob), "--golden", p(&golden)]), "vocab");

    let golden = write_golden(&s, "golden-short", &[1, 2], &[0.0; VOCAB]);
    assert_error(&sim(&["check", p(&blob), "--golden", p(&golden)]), "bytes");
}

#[test]
fn run_takes_token_ids_on_a_blob_without_tokenizer() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let o = sim(&["run", p(&blob), "--tokens", "1,2,3", "-n", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<u32> = stdout(&o).split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|&i| (i as usize) < VOCAB));
    assert!(stderr(&o).contains("tok/s"), "{}", stderr(&o));

    let o = sim(&["run", p(&blob), "--tokens", "1,2,3", "-n", "5", "--json", "--temperature", "0.9", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["generated"].as_array().unwrap().len(), 5);
    assert_eq!(v["prompt_tokens"], 3);
    assert!(v["tok_per_s"].as_f64().is_some() && v["text"].is_null());

    // Text needs a tokenizer.
    assert_error(&sim(&["run", p(&blob), "--prompt", "hello"]), "--tokenizer");
}

#[test]
fn run_stops_cleanly_at_max_seq() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    // tiny_config: max_seq 16.
    let o = sim(&["run", p(&blob), "--tokens", "1,2,3,4,5,6,7,8,9,10", "-n", "50", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["generated"].as_array().unwrap().len(), 7);
    assert_eq!(v["stopped_at_max_seq"], true);
    assert!(stderr(&o).contains("max_seq"));
}

#[test]
fn run_streams_text_with_the_blob_tokenizer() {
    let s = Scratch::new("cli");
    use itera_edge::format::TokenizerKind;
    use itera_pack::writer::TokenizerTable;
    let mut tokens: Vec<String> = ["<PAD>", "<UNK>", "once", "upon", "a", "time"].map(String::from).to_vec();
    tokens.extend((6..VOCAB).map(|i| format!("w{i}")));
    let opts = PackOptions {
        tokenizer: Some(TokenizerTable { kind: TokenizerKind::Word, unk_id: 1, tokens }),
        ..Default::default()
    };
    let (blob, _) = tiny_blob_with(&s, &opts);
    let o = sim(&["run", p(&blob), "--prompt", "Once upon a TIME zebra", "-n", "6", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompt_ids"], serde_json::json!([2, 3, 4, 5, 1]));
    assert_eq!(v["text"].as_str().unwrap().split(' ').count(), 6);
    let o = sim(&["run", p(&blob), "--prompt", "once upon a time", "-n", "6", "--echo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("once upon a time "), "{out}");
    assert_eq!(out.split_whitespace().count(), 10, "{out}");
}

#[test]
fn token_ids_out_of_range_are_errors_not_panics() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let out = s.path("never.f32");
    let o = sim(&["logits", p(&blob), "--tokens", "1,48", "--out", p(&out)]);
    assert_error(&o, "out of range");
    assert!(!out.exists(), "no output on error");
    assert_error(&sim(&["run", p(&blob), "--tokens", "4000000000"]), "out of range");
    assert_error(&sim(&["logits", p(&blob), "--tokens", "1,-2", "--out", p(&out)]), "not a token id");
    let long = vec!["1"; 17].join(",");
    assert_error(&sim(&["logits", p(&blob), "--tokens", &long, "--out", p(&out)]), "max_seq");
}

#[test]
fn bad_sampling_flags_are_errors() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    assert_error(&sim(&["run", p(&blob), "--tokens", "1", "--top-p", "0"]), "--top-p");
    assert_error(&sim(&["run", p(&blob), "--tokens", "1", "--temperature", "-1"]), "--temperature");
}

#[test]
fn missing_and_corrupt_blobs_are_errors() {
    let s = Scratch::new("cli");
    let missing = s.path("does-not-exist.itb");
    assert_error(&sim(&["logits", p(&missing), "--tokens", "1", "--out", p(&s.path("x.f32"))]), "cannot read blob");
    assert_error(&sim(&["run", p(&missing), "--tokens", "1"]), "cannot read blob");

    let (blob, mut bytes) = tiny_blob(&s);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();
    assert_error(&sim(&["run", p(&blob), "--tokens", "1"]), "corrupt");
    assert_error(&sim(&["logits", p(&blob), "--tokens", "1", "--out", p(&s.path("y.f32"))]), "corrupt");

    std::fs::write(&blob, &bytes[..100]).unwrap();
    assert_error(&sim(&["run", p(&blob), "--tokens", "1"]), "truncated");
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let o = sim(&["logits"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error:"));
    // One line, like every other error: what is missing, and where the usage is.
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("<BLOB>") && stderr(&o).contains("see `itera-sim logits --help`"), "{}", stderr(&o));
    let o = sim(&["--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Examples:"));
    for sub in ["logits", "check", "run", "demo"] {
        let o = sim(&[sub, "--help"]);
        assert!(o.status.success() && stdout(&o).contains("Examples:"), "{sub}");
    }
}

#[test]
fn fit_estimates_speed_from_the_isa_and_preset_measured_and_calls_it_an_instruction_count() {
    let s = Scratch::new("cli");
    let opts = PackOptions { quant: itera_pack::quant::QuantPolicy::parse_spec("int8").unwrap(), ..Default::default() };
    let (blob, bytes) = tiny_blob_with(&s, &opts);
    let macs = {
        let bytes = AlignedBytes::from(bytes.as_slice());
        let blob = Blob::parse(&bytes).unwrap();
        let macs = Model::new(&blob).unwrap().macs_per_token() as u64;
        macs
    };
    // The ARMv6-M int8 count of the micro model (275,200 MACs a token), scaled by this blob's MACs.
    let measured = |isa| {
        let m = itera_sim::board::MEASURED.iter().find(|m| m.isa == isa && m.quant == "int8");
        m.unwrap().instructions_per_token * macs / itera_sim::board::MEASURED_MACS_PER_TOKEN
    };
    let v6m = measured(itera_sim::board::Isa::Armv6m);
    let o = sim(&["fit", p(&blob)]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("--quant int8") && out.contains("insn/token") && out.contains("tok/s"), "{out}");
    assert!(
        out.contains("an instruction count, not a cycle count") && out.contains("1 instruction = 1 cycle"),
        "{out}"
    );
    let row = |name: &str| out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap().to_string();
    let rp = row("rp2040");
    assert!(rp.contains(" armv6-m ") && rp.contains(" 125 ") && rp.contains(&format!(" {v6m} ")), "{rp}");
    assert!(rp.ends_with(&format!(" {:.1}", 125e6 / v6m as f64)), "{rp}");
    assert!(row("qemu-v6m").ends_with(&format!(" {v6m}        -")), "QEMU boards have no clock: {out}");

    let o = sim(&["fit", p(&blob), "--board", "esp32c3", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["quant"].as_str(), v["macs_per_token"].as_u64()), (Some("int8"), Some(macs)));
    assert!(v["speed_basis"].as_str().unwrap().contains("not a cycle count"));
    let b = &v["boards"][0];
    assert_eq!((b["board"]["isa"].as_str(), b["board"]["clock_mhz"].as_u64()), (Some("rv32imc"), Some(160)));
    let rv32 = measured(itera_sim::board::Isa::Rv32imc);
    assert_eq!(b["speed"]["instructions_per_token"].as_u64(), Some(rv32));
    assert_eq!(b["speed"]["measured_on"].as_str(), Some("qemu-rv32"));
    assert!((b["speed"]["tokens_per_second"].as_f64().unwrap() - 160e6 / rv32 as f64).abs() < 1e-6);

    // f16 was not measured: no estimate, and the text says so.
    let opts = PackOptions { quant: itera_pack::quant::QuantPolicy::parse_spec("f16").unwrap(), ..Default::default() };
    let (blob, _) = tiny_blob_with(&s, &opts);
    let o = sim(&["fit", p(&blob), "--board", "stm32f411"]);
    let out = stdout(&o);
    assert!(o.status.success() && out.contains("speed: no estimate") && out.contains("--quant f16"), "{out}");
    assert!(out.contains("for the presets f32, int8, mixed, integer only"), "{out}");
    let o = sim(&["fit", p(&blob), "--board", "stm32f411", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["boards"][0]["speed"].is_null());
}

/// Subcommands of `itera-sim` as `--help` lists them.
fn subcommands() -> Vec<String> {
    let out = stdout(&sim(&["--help"]));
    let listed = out.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1).take_while(|l| !l.is_empty());
    listed.filter_map(|l| l.split_whitespace().next()).filter(|&c| c != "help").map(String::from).collect()
}

#[test]
fn every_subcommand_help_has_an_example() {
    let subs = subcommands();
    assert!(subs.len() >= 8, "{subs:?}");
    for sub in &subs {
        let o = sim(&[sub, "--help"]);
        assert!(o.status.success() && stdout(&o).contains("Example"), "{sub} --help has no example");
    }
}

#[test]
fn old_flag_spellings_work_as_hidden_aliases() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let out = s.path("logits.f32");
    // The output file is -o/--output, as in itera-pack; --out is the old spelling.
    for flag in ["-o", "--output", "--out"] {
        std::fs::remove_file(&out).ok();
        let o = sim(&["logits", p(&blob), "--tokens", "1,2", flag, p(&out)]);
        assert!(o.status.success(), "{flag}: {}", stderr(&o));
        assert_eq!(std::fs::metadata(&out).unwrap().len(), (2 * VOCAB * 4) as u64, "{flag}");
    }
    // greedy's -n now has the long form the other generating commands have.
    let short = sim(&["greedy", p(&blob), "--tokens", "1,2", "-n", "3"]);
    let long = sim(&["greedy", p(&blob), "--tokens", "1,2", "--max-tokens", "3"]);
    assert!(short.status.success() && stdout(&short).contains("tokens:"), "{}", stderr(&short));
    assert_eq!(stdout(&short), stdout(&long));
    // bench's token count is --length; --tokens (a list of ids everywhere else) still takes it.
    for flag in ["--length", "--tokens"] {
        let o = sim(&["bench", p(&blob), flag, "3", "--repeat", "1", "--json"]);
        assert!(o.status.success(), "{flag}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["generate_tokens"], 3, "{flag}: {v}");
    }
    // The help shows the one spelling, not the aliases.
    let help = stdout(&sim(&["logits", "--help"]));
    assert!(help.contains("--output <FILE>") && !help.contains("--out "), "{help}");
    let help = stdout(&sim(&["bench", "--help"]));
    assert!(help.contains("--length <N>") && !help.contains("--tokens <"), "{help}");
    let help = stdout(&sim(&["eval", "--help"]));
    assert!(help.contains("--truncate <N>") && help.contains("--compare <BLOB>"), "{help}");
    assert!(!help.contains("--max-tokens") && !help.contains("--reference <"), "{help}");
}

#[test]
fn fit_with_a_named_board_exits_1_when_the_blob_does_not_fit() {
    let s = Scratch::new("cli");
    let (small, _) = tiny_blob(&s);
    // The tiny shape in f32 is 7.5 MB: more flash than any board has.
    let big = s.path("big.itb");
    let f32 = itera_pack::quant::QuantPolicy::parse_spec("f32").unwrap();
    std::fs::write(&big, itera_pack::synthetic::synth_blob(itera_pack::synthetic::Shape::Tiny, 1, &f32).unwrap())
        .unwrap();

    let o = sim(&["fit", p(&big), "--board", "stm32f411"]);
    assert_error(&o, "does not fit stm32f411");
    assert!(stderr(&o).contains("--quant") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    // The table is still printed, so the user sees by how much.
    assert!(stdout(&o).contains("stm32f411") && stdout(&o).contains(" NO "), "{}", stdout(&o));
    let o = sim(&["fit", p(&big), "--board", "stm32f411", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["boards"][0]["fits"], false);

    // Without --board it is a survey: the table, exit 0.
    let o = sim(&["fit", p(&big)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(" NO "), "{}", stdout(&o));
    // What fits passes the gate.
    let o = sim(&["fit", p(&small), "--board", "stm32f411"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Its help says where the preset comes from instead of naming a flag fit does not have.
    let help = stdout(&sim(&["fit", "--help"]));
    assert!(help.contains("itera-pack convert --quant") && help.contains("Exit status"), "{help}");
    assert!(!help.contains("the blob's --quant"), "{help}");
}

/// The tiny model with a word tokenizer: `<PAD> <UNK> once upon a time w6 w7 ...`.
fn tiny_blob_with_words(s: &Scratch, meta: Vec<(String, String)>) -> PathBuf {
    use itera_edge::format::TokenizerKind;
    use itera_pack::writer::TokenizerTable;
    let mut tokens: Vec<String> = ["<PAD>", "<UNK>", "once", "upon", "a", "time"].map(String::from).to_vec();
    tokens.extend((6..VOCAB).map(|i| format!("w{i}")));
    let tokenizer = Some(TokenizerTable { kind: TokenizerKind::Word, unk_id: 1, tokens });
    tiny_blob_with(s, &PackOptions { tokenizer, meta, ..Default::default() }).0
}

#[test]
fn run_names_the_prompt_words_the_tokenizer_does_not_know() {
    let s = Scratch::new("cli");
    let blob = tiny_blob_with_words(&s, Vec::new());
    let o = sim(&["run", p(&blob), "--prompt", "Once upon a zebra time gnu zebra", "-n", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("3 of 7 tokens (42.9%)") && err.contains(": zebra gnu\n"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompt_unknown"], 3);
    let o = sim(&["run", p(&blob), "--prompt", "once upon a time", "-n", "2"]);
    assert!(o.status.success() && !stderr(&o).contains("unknown"), "{}", stderr(&o));
    // Ids given as ids are the user's own choice: nothing to count.
    let o = sim(&["run", p(&blob), "--tokens", "1,1", "-n", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["prompt_unknown"].is_null() && !stderr(&o).contains("unknown"), "{v}");
}

#[test]
fn top_k_or_top_p_at_temperature_0_says_it_is_greedy() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let greedy = sim(&["run", p(&blob), "--tokens", "1,2", "-n", "4"]);
    for flags in [&["--top-k", "5"][..], &["--top-p", "0.5"], &["--top-k", "5", "--top-p", "0.5"]] {
        let o = sim(&[&["run", p(&blob), "--tokens", "1,2", "-n", "4"][..], flags].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with("note: --temperature 0 is greedy") && err.contains(flags[0]), "{flags:?}: {err}");
        // And it is: the same tokens as without the flags.
        assert_eq!(stdout(&o), stdout(&greedy), "{flags:?}");
    }
    let o = sim(&["run", p(&blob), "--tokens", "1,2", "-n", "4", "--top-k", "5", "--temperature", "0.8"]);
    assert!(o.status.success() && !stderr(&o).contains("greedy"), "{}", stderr(&o));
    let o = sim(&["demo", "-n", "2", "--top-k", "5"]);
    assert!(o.status.success() && stderr(&o).contains("is greedy"), "{}", stderr(&o));
}

#[test]
fn an_unknown_itera_kernels_value_is_refused() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let args = ["run", p(&blob), "--tokens", "1,2", "-n", "2"];
    let with = |value: &str| Command::new(BIN).args(args).env("ITERA_KERNELS", value).output().unwrap();
    let o = with("avx3");
    assert_error(&o, "ITERA_KERNELS=avx3 is not a kernel path");
    assert!(stderr(&o).contains("scalar, avx2") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let unset = sim(&args);
    for value in ["scalar", "avx2", ""] {
        let o = with(value);
        assert!(o.status.success(), "{value}: {}", stderr(&o));
        assert_eq!(stdout(&o), stdout(&unset), "every kernel path gives the same tokens");
    }
}

#[test]
fn check_says_when_the_golden_names_another_checkpoint() {
    let s = Scratch::new("cli");
    let (blob, bytes) =
        tiny_blob_with(&s, &PackOptions { meta: vec![("source".into(), "mine.pt".into())], ..Default::default() });
    let tokens = [5u32, 17, 2];
    let golden = write_golden(&s, "golden-other", &tokens, &logits_after_each(&bytes, &tokens));
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    json["checkpoint"] = "other.pt".into();
    std::fs::write(&golden, json.to_string()).unwrap();

    let o = sim(&["check", p(&blob), "--golden", p(&golden), "--json"]);
    assert!(o.status.success(), "the logits still agree: {}", stderr(&o));
    assert!(stderr(&o).contains("computed from other.pt but the blob was packed from mine.pt"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["warnings"][0].as_str().unwrap().contains("other.pt"), "{v}");

    // When the check fails, the one error line says the golden predicted it.
    let golden_bad = write_golden(&s, "golden-bad", &tokens, &vec![0.0; tokens.len() * VOCAB]);
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&golden_bad).unwrap()).unwrap();
    json["checkpoint"] = "other.pt".into();
    std::fs::write(&golden_bad, json.to_string()).unwrap();
    let o = sim(&["check", p(&blob), "--golden", p(&golden_bad)]);
    assert_eq!(o.status.code(), Some(1));
    let errors: Vec<String> = stderr(&o).lines().filter(|l| l.starts_with("error:")).map(String::from).collect();
    assert_eq!(errors.len(), 1, "{}", stderr(&o));
    assert!(errors[0].contains("; expected, since the golden was computed from other.pt"), "{}", errors[0]);

    // The golden's own checkpoint, or one it lists under same_weights, is no warning.
    json["same_weights"] = serde_json::json!(["mine.pt"]);
    std::fs::write(&golden, json.to_string()).unwrap();
    let o = sim(&["check", p(&blob), "--golden", p(&golden), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]), "{}", stderr(&o));
}

#[test]
fn eval_uses_the_blob_tokenizer_and_reports_the_unknown_share() {
    let s = Scratch::new("cli");
    let blob = tiny_blob_with_words(&s, Vec::new());
    let text = s.path("text.txt");
    std::fs::write(&text, "once upon a time zebra once upon a time a gnu w7 w8 w9 once").unwrap();
    let o = sim(&["eval", p(&blob), "--text", p(&text), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["tokens"].as_u64(), v["unknown_tokens"].as_u64()), (Some(15), Some(2)), "{v}");
    assert!((v["unknown_share"].as_f64().unwrap() - 2.0 / 15.0).abs() < 1e-12);
    assert_eq!(v["tokenizer"], "blob");
    assert!(stderr(&o).contains("warning: 2 of 15 tokens (13.3%)"), "{}", stderr(&o));
    let o = sim(&["eval", p(&blob), "--text", p(&text)]);
    assert!(
        stdout(&o).contains("unknown:     2 of 15 tokens (13.3%) are unknown to the tokenizer (the blob's)"),
        "{}",
        stdout(&o)
    );

    // A tokenizer JSON of the same kind is used as asked; one of another kind is refused.
    let words = s.path("words.json");
    std::fs::write(&words, r#"{"token_to_id": {"<UNK>": 0, "once": 1}, "id_to_token": {"0": "<UNK>", "1": "once"}}"#)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &sim(&["eval", p(&blob), "--text", p(&text), "--tokenizer", p(&words), "--json"]).stdout,
    )
    .unwrap();
    assert_eq!((v["unknown_tokens"].as_u64(), v["tokenizer"].as_str()), (Some(12), Some(p(&words))), "{v}");
    let chars = s.path("chars.json");
    std::fs::write(
        &chars,
        r#"{"level": "char", "token2id": {"<UNK>": 0, "a": 1}, "id2token": {"0": "<UNK>", "1": "a"}}"#,
    )
    .unwrap();
    assert_error(&sim(&["eval", p(&blob), "--text", p(&text), "--tokenizer", p(&chars)]), "is a char tokenizer but");

    // A blob without a tokenizer needs the JSON.
    let (bare, _) = tiny_blob(&s);
    assert_error(&sim(&["eval", p(&bare), "--text", p(&text)]), "has no tokenizer: give the one it was trained with");
    let o = sim(&["eval", p(&bare), "--text", p(&text), "--tokenizer", p(&words), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn run_and_demo_share_one_group_of_sampling_flags() {
    let help = |sub: &str| stdout(&sim(&[sub, "--help"]));
    let (run, demo) = (help("run"), help("demo"));
    let flag_help = |text: &str, flag: &str| -> String {
        let at = text.find(&format!("      {flag} <")).unwrap_or_else(|| panic!("no {flag} in {text}"));
        text[at..].lines().nth(1).unwrap().trim().to_string()
    };
    for flag in ["--temperature", "--top-k", "--top-p"] {
        assert_eq!(flag_help(&run, flag), flag_help(&demo, flag), "{flag}");
    }
    // demo's one seed makes the weights and drives the sampler, 42 unless given.
    assert!(flag_help(&demo, "--seed").contains("random weights") && demo.contains("[default: 42]"), "{demo}");
    let seeded = |args: &[&str]| {
        let o = sim(&[&["demo", "--json", "-n", "6", "--temperature", "0.9"][..], args].concat());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["seed"].clone(), v["generated"].clone())
    };
    assert_eq!(seeded(&[]), seeded(&["--seed", "42"]));
    assert_eq!(seeded(&["--seed", "7"]).0, 7);
}

#[test]
fn text_and_json_reports_are_made_from_the_same_numbers() {
    let s = Scratch::new("cli");
    let (blob, _) = tiny_blob(&s);
    let text = stdout(&sim(&["fit", p(&blob)]));
    let v: serde_json::Value = serde_json::from_slice(&sim(&["fit", p(&blob), "--json"]).stdout).unwrap();
    assert!(text.starts_with(&format!("blob {} B, arena {} B,", v["blob_bytes"], v["arena_bytes"])), "{text}");
    for b in v["boards"].as_array().unwrap() {
        let name = b["board"]["name"].as_str().unwrap();
        let row = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..5],
            [&b["flash_needed"], &b["board"]["flash_bytes"], &b["ram_needed"], &b["board"]["ram_bytes"]]
                .map(|n| n.to_string()),
            "{row}"
        );
    }
    let out = s.path("l.f32");
    let text = stdout(&sim(&["logits", p(&blob), "--tokens", "1,2,3", "-o", p(&out)]));
    let v: serde_json::Value =
        serde_json::from_slice(&sim(&["logits", p(&blob), "--tokens", "1,2,3", "-o", p(&out), "--json"]).stdout)
            .unwrap();
    assert!(
        text.contains(&format!("{} positions × {} logits, {} bytes", v["positions"], v["vocab"], v["bytes"])),
        "{text}"
    );
}
