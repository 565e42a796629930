//! End-to-end tests of `itera-sim eval` and `itera-sim bench` on small synthetic blobs, and
//! of `eval` on the published micro model when the fixtures are present. Speeds are only
//! checked to be positive and finite, never compared with a number.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use itera_pack::PackOptions;
use itera_test_support::{fixtures, Scratch};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_itera-sim");

/// Packs the tiny synthetic model (vocab 48, max_seq 16) drawn from `seed` into `name`.
fn tiny_blob(s: &Scratch, name: &str, seed: u64) -> PathBuf {
    s.write(name, &itera_test_support::tiny_blob(seed))
}

/// A word tokenizer naming a few words, plus a text of them (and some unknown words)
/// long enough for several windows of 16.
fn text_and_tokenizer(s: &Scratch) -> (PathBuf, PathBuf) {
    let words = ["<PAD>", "<UNK>", "<BOS>", "<EOS>", "once", "upon", "a", "time", "there", "was", "fox", "day,"];
    let token_to_id: serde_json::Map<String, Value> =
        words.iter().enumerate().map(|(i, w)| (w.to_string(), Value::from(i))).collect();
    let id_to_token: serde_json::Map<String, Value> =
        words.iter().enumerate().map(|(i, w)| (i.to_string(), Value::from(*w))).collect();
    let tok = s.path("tokenizer.json");
    std::fs::write(&tok, serde_json::json!({ "token_to_id": token_to_id, "id_to_token": id_to_token }).to_string())
        .unwrap();
    let text = s.path("text.txt");
    let body = "Once upon a time there was a fox. One DAY, the fox was there.\n".repeat(6);
    std::fs::write(&text, body).unwrap();
    (text, tok)
}

fn sim(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run itera-sim")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// `itera-sim eval BLOB --text TEXT --tokenizer TOK --reference BLOB --json EXTRA...`: the
/// blob against itself. Asserts exact agreement (no KL divergence, every top-1 the same)
/// and returns the report.
fn eval_against_itself(blob: &Path, text: &Path, tok: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["eval", p(blob), "--text", p(text), "--tokenizer", p(tok), "--reference", p(blob), "--json"];
    args.extend_from_slice(extra);
    let v = json_of(&sim(&args));
    assert_eq!(num(&v, "kld_mean"), 0.0, "{v}");
    assert_eq!(num(&v, "kld_max"), 0.0, "{v}");
    assert_eq!(num(&v, "top1_agreement"), 1.0, "{v}");
    v
}

const EVAL_KEYS: [&str; 10] = [
    "perplexity",
    "kld_mean",
    "kld_p99",
    "kld_max",
    "top1_agreement",
    "positions",
    "reference_perplexity",
    "mean_abs_dp_top",
    "rmse",
    "cosine",
];

#[test]
fn eval_against_itself_agrees_exactly() {
    let s = Scratch::new("eval");
    let blob = tiny_blob(&s, "a.itb", 1);
    let (text, tok) = text_and_tokenizer(&s);
    let v = eval_against_itself(&blob, &text, &tok, &[]);
    for key in EVAL_KEYS {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "missing {key} in {v}");
    }
    // 6 lines of 14 words = 84 tokens: windows of 16 → 6 windows (16×5 + 4), 84 − 6 predicted.
    assert_eq!((v["tokens"].as_u64(), v["windows"].as_u64(), v["positions"].as_u64()), (Some(84), Some(6), Some(78)));
    assert_eq!(num(&v, "rmse"), 0.0);
    assert_eq!(num(&v, "mean_abs_dp_top"), 0.0);
    let ppl = num(&v, "perplexity");
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    assert_eq!(num(&v, "reference_perplexity"), ppl);
}

#[test]
fn eval_against_another_model_differs_and_max_tokens_truncates() {
    let s = Scratch::new("eval");
    let a = tiny_blob(&s, "a.itb", 1);
    let b = tiny_blob(&s, "b.itb", 2);
    let (text, tok) = text_and_tokenizer(&s);
    let args = ["eval", p(&a), "--text", p(&text), "--tokenizer", p(&tok), "--reference", p(&b), "--json"];
    let v = json_of(&sim(&args));
    assert!(num(&v, "kld_mean") > 0.0, "{v}");
    assert!(num(&v, "kld_max") >= num(&v, "kld_p99") && num(&v, "kld_p99") > 0.0, "{v}");
    assert!(num(&v, "rmse") > 0.0 && num(&v, "cosine") < 1.0, "{v}");
    assert_ne!(num(&v, "perplexity"), num(&v, "reference_perplexity"));

    let mut short = args.to_vec();
    short.extend(["--max-tokens", "20"]);
    let v = json_of(&sim(&short));
    assert_eq!((v["tokens"].as_u64(), v["windows"].as_u64(), v["positions"].as_u64()), (Some(20), Some(2), Some(18)));

    // Without a reference: the reference keys are there, and null.
    let v = json_of(&sim(&["eval", p(&a), "--text", p(&text), "--tokenizer", p(&tok), "--json"]));
    for key in EVAL_KEYS {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert!(v["kld_mean"].is_null() && v["reference_perplexity"].is_null() && v["cosine"].is_null());
    assert!(num(&v, "perplexity").is_finite());

    // Text output names the numbers.
    let o = sim(&["eval", p(&a), "--text", p(&text), "--tokenizer", p(&tok), "--reference", p(&b)]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("perplexity") && out.contains("KL") && out.contains("top-1"), "{out}");
}

#[test]
fn eval_refuses_bad_input_cleanly() {
    let s = Scratch::new("eval");
    let a = tiny_blob(&s, "a.itb", 1);
    let (text, tok) = text_and_tokenizer(&s);
    let err = |o: Output| {
        assert_eq!(o.status.code(), Some(1));
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(e.starts_with("error: ") && !e.contains("panicked"), "{e}");
        e
    };
    assert!(err(sim(&["eval", p(&a), "--text", p(&s.path("none.txt")), "--tokenizer", p(&tok)])).contains("none.txt"));
    assert!(err(sim(&["eval", p(&a), "--text", p(&text), "--tokenizer", p(&text)])).contains("tokenizer"));
    let e = err(sim(&["eval", p(&a), "--text", p(&text), "--tokenizer", p(&tok), "--truncate", "1"]));
    assert!(e.contains("--truncate") && e.contains("from 2 to") && e.contains("needs 2 tokens"), "{e}");
    // A tokenizer naming ids beyond the model's vocabulary (48).
    let big = s.path("big.json");
    std::fs::write(&big, r#"{"token_to_id": {"<UNK>": 1, "once": 100}, "id_to_token": {"1": "<UNK>", "100": "once"}}"#)
        .unwrap();
    assert!(err(sim(&["eval", p(&a), "--text", p(&text), "--tokenizer", p(&big)])).contains("out of range"));
}

#[test]
fn bench_json_has_the_keys_and_positive_rates() {
    let s = Scratch::new("eval");
    let a = tiny_blob(&s, "a.itb", 1);
    let v = json_of(&sim(&["bench", p(&a), "--json", "--repeat", "3", "--tokens", "32"]));
    for key in [
        "prefill_tok_per_s",
        "generate_tok_per_s",
        "kernel",
        "macs_per_token",
        "gmacs_per_s",
        "blob_bytes",
        "arena_bytes",
    ] {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "missing {key} in {v}");
    }
    for key in [
        "prefill_tok_per_s",
        "generate_tok_per_s",
        "gmacs_per_s",
        "macs_per_token",
        "blob_bytes",
        "arena_bytes",
        "bytes_per_token",
        "read_bandwidth_bytes_per_s",
        "roofline_tok_per_s",
        "roofline_fraction",
        "prefill_roofline_fraction",
    ] {
        let x = num(&v, key);
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
    let roofline = num(&v, "read_bandwidth_bytes_per_s") / num(&v, "bytes_per_token");
    assert!((num(&v, "roofline_tok_per_s") / roofline - 1.0).abs() < 1e-9);
    let fraction = num(&v, "generate_tok_per_s") / num(&v, "roofline_tok_per_s");
    assert!((num(&v, "roofline_fraction") / fraction - 1.0).abs() < 1e-9);
    assert!(!v["kernel"].as_str().unwrap().is_empty());
    assert_eq!(v["blob_bytes"].as_u64(), Some(std::fs::metadata(&a).unwrap().len()));
    assert_eq!(
        (v["prefill_tokens"].as_u64(), v["generate_tokens"].as_u64(), v["repeats"].as_u64()),
        (Some(16), Some(32), Some(3))
    );
    assert!(v.get("ratio").is_none());
}

#[test]
fn bench_compare_reports_both_and_a_ratio() {
    let s = Scratch::new("eval");
    let a = tiny_blob(&s, "a.itb", 1);
    let b = tiny_blob(&s, "b.itb", 2);
    let v = json_of(&sim(&["bench", p(&a), "--compare", p(&b), "--json", "--repeat", "3", "--tokens", "16"]));
    assert!(num(&v["compare"], "prefill_tok_per_s") > 0.0);
    for key in ["prefill", "generate"] {
        let r = num(&v["ratio"], key);
        assert!(r.is_finite() && r > 0.0, "{key} ratio {r}");
    }
    let o = sim(&["bench", p(&a), "--compare", p(&b), "--repeat", "3", "--tokens", "16"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("ratio"));
    // Refused before anything is printed: one error line, no "then 0 repeats".
    for bad in [["--repeat", "0"], ["--repeat", "1001"], ["--length", "0"], ["--length", "18446744073709551616"]] {
        let o = sim(&["bench", p(&a), bad[0], bad[1]]);
        assert_eq!(o.status.code(), Some(1));
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.starts_with(&format!("error: invalid value '{}' for '{} <N>'", bad[1], bad[0])), "{e}");
        assert!(e.contains("expected a whole number from 1 to"), "{e}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn help_has_examples() {
    for cmd in ["eval", "bench"] {
        let o = sim(&[cmd, "--help"]);
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Examples:") && out.contains(&format!("itera-sim {cmd} ")), "{out}");
    }
}

/// The published micro model on the first 2,048 tokens of the TinyStories sample: a finite
/// perplexity, and exact agreement with itself.
#[test]
fn micro_fixture_perplexity_and_self_agreement() {
    let Some(dir) = fixtures::dir() else { return };
    let s = Scratch::new("eval");
    let opts = PackOptions { top_k: Some(2), ..PackOptions::default() };
    let bytes = itera_pack::convert_file(&dir.join("itera_lite_micro_distilled.pt"), &opts).expect("pack micro");
    let blob = s.write("micro.itb", &bytes);
    let text = dir.join("tinystories_train.txt");
    let tok = dir.join("tokenizer_2000.json");
    let v = eval_against_itself(&blob, &text, &tok, &["--max-tokens", "2048"]);
    let ppl = num(&v, "perplexity");
    println!(
        "micro on {} tinystories tokens ({} predicted positions): perplexity {ppl:.4}",
        v["tokens"], v["positions"]
    );
    assert_eq!(v["tokens"].as_u64(), Some(2048));
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
}
