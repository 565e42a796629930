//! Hostile inputs against `itera-pack`'s own steps: quantization parameters, tokenizers,
//! printed names, key files and output paths.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{convert, tiny_blob, Case, Class, Outcome, Scratch, Tool};
use itera_test_support::torch::{pt_bytes, pt_tensors, tiny_tensors, PtTensor};

/// The tensor the qint8 cases quantize: a matrix every policy may store as int8.
const QINT8_TENSOR: &str = "layers.0.ssm.in_proj.weight";

/// `p` as an argument.
fn a(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// The tiny model with [`QINT8_TENSOR`] stored as a per-tensor affine qint8 tensor with
/// these parameters (its values a fixed pattern over -15..=15).
fn tiny_with_qint8(scale: f64, zero_point: i64) -> Vec<(String, PtTensor)> {
    let mut tensors = tiny_tensors();
    let slot = tensors.iter_mut().find(|(n, _)| n == QINT8_TENSOR).expect("the tiny model has the tensor");
    let PtTensor::F32 { shape, data } = &slot.1 else { panic!("{QINT8_TENSOR} is f32 in the tiny model") };
    let q = (0..data.len()).map(|i| (i * 7 % 31) as i8 - 15).collect();
    slot.1 = PtTensor::QInt8 { shape: shape.clone(), q, scale, zero_point };
    tensors
}

/// The micro shape (vocab 2000, d 64, 4 experts), seeded synthetic weights.
fn micro_tensors() -> Vec<(String, PtTensor)> {
    pt_tensors(&itera_pack::synthetic::state_dict(&itera_pack::synthetic::micro_config(), 1))
}

/// [`micro_tensors`] as a `.pt` in `s`.
fn micro_pt(s: &Scratch) -> PathBuf {
    s.write("micro.pt", &pt_bytes(&micro_tensors()))
}

/// Packs `tensors` with `--quant quant` and requires a refusal holding `needles`.
fn qint8_refused(case: &str, tensors: &[(String, PtTensor)], quant: &str, needles: &[&str]) -> Outcome {
    let s = Scratch::new("packer-q");
    let pt = s.write("q.pt", &pt_bytes(tensors));
    convert(Class::QuantParams, case, &pt, &s.path("q.itb"), &["--quant".as_ref(), quant.as_ref()]).refused(needles)
}

#[test]
fn class2_zero_point_2_pow_31_is_refused_under_keep_not_packed_as_i32_min() {
    qint8_refused(
        "zero point 2^31, keep",
        &tiny_with_qint8(0.01, 1 << 31),
        "keep",
        &[QINT8_TENSOR, "zero point 2147483648", "-128..=127", "re-export"],
    );
}

#[test]
fn class2_zero_point_2_pow_32_is_refused_not_wrapped_to_zero() {
    for quant in ["keep", "int8", "f32"] {
        qint8_refused(
            "zero point 2^32",
            &tiny_with_qint8(0.01, 1 << 32),
            quant,
            &[QINT8_TENSOR, "zero point 4294967296", "re-export"],
        );
    }
}

#[test]
fn class2_zero_point_below_i32_min_is_refused() {
    qint8_refused(
        "zero point -2^31-1",
        &tiny_with_qint8(0.01, -(1 << 31) - 1),
        "mixed",
        &[QINT8_TENSOR, "zero point -2147483649", "-128..=127"],
    );
}

#[test]
fn class2_zero_point_200_outside_int8_is_refused() {
    qint8_refused("zero point 200", &tiny_with_qint8(0.01, 200), "int8", &[QINT8_TENSOR, "zero point 200"]);
}

#[test]
fn class2_nan_zero_negative_subnormal_and_huge_scales_are_refused() {
    for (scale, shown) in [
        (f64::NAN, "scale NaN"),
        (0.0, "scale 0e0"),
        (-0.01, "scale -1e-2"),
        (1e-40, "scale 1e-40"),
        (1e30, "scale 1e30"),
    ] {
        for quant in ["keep", "f32"] {
            qint8_refused(
                &format!("{shown}, {quant}"),
                &tiny_with_qint8(scale, 0),
                quant,
                &[QINT8_TENSOR, shown, "not a normal f32", "re-export"],
            );
        }
    }
}

#[test]
fn class2_a_valid_qint8_tensor_still_packs_under_every_policy_and_keeps_its_pair() {
    let s = Scratch::new("packer-q-ok");
    let pt = s.write("ok.pt", &pt_bytes(&tiny_with_qint8(0.01, -3)));
    for quant in ["f32", "f16", "int8", "int4", "mixed", "keep"] {
        let out = s.path(&format!("ok-{quant}.itb"));
        let o = Case::new(Class::QuantParams, "valid qint8 packs", Tool::Pack)
            .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(&out), "--quant".as_ref(), quant.as_ref()])
            .input(&pt)
            .run();
        assert_eq!(o.code, 0, "--quant {quant}: {}", o.stderr);
        let bytes = itera_pack::inspect::read_aligned(&out).expect("the blob");
        let blob = itera_edge::Blob::parse(&bytes).expect("the blob parses");
        let e = blob
            .tensors()
            .find(|e| e.role == itera_edge::format::Role::InProj && e.layer == 0)
            .expect("in_proj of layer 0");
        if quant == "keep" || quant == "int8" {
            assert_eq!(e.quant, itera_edge::format::Quant::PerTensor { scale: 0.01, zero_point: -3 }, "{quant}");
        }
    }
}

#[test]
fn class2_weights_beyond_what_f16_scales_hold_are_refused_not_clipped() {
    // Micro's rows (64 wide) are wide enough for int4 groups; limits: 127, 7 and 1 x 65504.
    for (quant, value, dtype) in [("int8", 1e10f32, "int8"), ("int4", 1e6, "int4"), ("f16", 1e5, "f16")] {
        let s = Scratch::new("packer-big");
        let mut tensors = micro_tensors();
        let slot = tensors.iter_mut().find(|(n, _)| n == QINT8_TENSOR).expect("tensor");
        let PtTensor::F32 { data, .. } = &mut slot.1 else { panic!("f32") };
        data[3] = value;
        let pt = s.write("big.pt", &pt_bytes(&tensors));
        convert(Class::QuantParams, "huge weight", &pt, &s.path("big.itb"), &["--quant".as_ref(), quant.as_ref()])
            .refused(&[QINT8_TENSOR, "at element 3", dtype, "store it as f32"]);
    }
}

/// Packs the micro shape with the tokenizer JSON `json`; a refusal holding `needles`.
fn tokenizer_refused(case: &str, json: &str, needles: &[&str]) -> Outcome {
    let s = Scratch::new("packer-tok");
    let pt = micro_pt(&s);
    let tok = s.write("tok.json", json.as_bytes());
    convert(Class::TokenizerFit, case, &pt, &s.path("m.itb"), &["--tokenizer".as_ref(), a(&tok)])
        .input(&tok)
        .refused(needles)
}

#[test]
fn class4_token_id_5000_on_a_vocab_of_2000_is_refused() {
    tokenizer_refused(
        "id 5000, vocab 2000",
        r#"{"token_to_id": {"<PAD>": 0, "<UNK>": 1, "far": 5000}}"#,
        &["tok.json", "ids up to 5000", "vocab is 2000", "pass the tokenizer made for this checkpoint"],
    );
}

#[test]
fn class4_a_million_entries_on_a_vocab_of_2000_are_refused() {
    let entries: Vec<String> = (0..1_000_000).map(|i| format!("\"t{i}\": {i}")).collect();
    let json = format!("{{\"token_to_id\": {{\"<UNK>\": 1000000, {}}}}}", entries.join(", "));
    tokenizer_refused("a million entries", &json, &["ids up to 1000000", "vocab is 2000"]);
}

#[test]
fn class4_an_unknown_token_id_beyond_the_token_count_is_refused() {
    // No `<UNK>`: the default unknown id 1 names no token of a one-token table.
    tokenizer_refused(
        "unk id beyond the tokens",
        r#"{"token_to_id": {"<PAD>": 0}}"#,
        &["unknown-token id 1", "beyond its 1 ids", "<UNK>"],
    );
}

#[test]
fn class4_a_declared_vocab_size_that_disagrees_is_refused_naming_both() {
    tokenizer_refused(
        "vocab_size 8000 on vocab 2000",
        r#"{"vocab_size": 8000, "token2id": {"<PAD>": 0, "<UNK>": 1, "e": 5}, "level": "char"}"#,
        &["vocab_size is 8000", "vocab is 2000", "vocab_size 2000"],
    );
}

#[test]
fn class4_the_tiny_fixture_tokenizer_does_not_pack_into_a_vocab_2000_model() {
    let Some(dir) = itera_test_support::fixtures::dir() else { return };
    let s = Scratch::new("packer-tok-fixture");
    let pt = micro_pt(&s);
    let tok = dir.join("tokenizer_tiny.json");
    convert(
        Class::TokenizerFit,
        "tokenizer_tiny.json on micro",
        &pt,
        &s.path("m.itb"),
        &["--tokenizer".as_ref(), a(&tok)],
    )
    .input(&tok)
    .refused(&["tokenizer_tiny.json", "vocab_size is 8000", "vocab is 2000"]);
}

#[test]
fn class3_a_huge_tokenizer_file_is_refused_unread() {
    let s = Scratch::new("packer-tok-huge");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let tok = s.path("huge.json");
    // Sparse: 65 MiB of holes, past the 64 MiB a tokenizer file may have.
    std::fs::File::create(&tok).and_then(|f| f.set_len(65 << 20)).expect("a sparse file");
    convert(Class::MemoryBudget, "65 MiB tokenizer", &pt, &s.path("x.itb"), &["--tokenizer".as_ref(), a(&tok)])
        .refused(&["huge.json", "over 67108864 bytes", "pass the right file"]);
}

#[test]
fn class4_a_tokenizer_that_fits_still_packs() {
    let s = Scratch::new("packer-tok-ok");
    let pt = micro_pt(&s);
    let tok = s.write("ok.json", br#"{"vocab_size": 2000, "token_to_id": {"<PAD>": 0, "<UNK>": 1, "the": 1999}}"#);
    let out = s.path("ok.itb");
    let o = Case::new(Class::TokenizerFit, "fitting tokenizer", Tool::Pack)
        .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(&out), "--tokenizer".as_ref(), a(&tok)])
        .input(&pt)
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(out.is_file());
}

/// The tiny model plus one tensor named `name`, which the packer refuses as unexpected.
fn named_refused(case: &str, name: &str, needles: &[&str]) -> Outcome {
    let s = Scratch::new("packer-name");
    let mut tensors = tiny_tensors();
    tensors.push((name.to_string(), PtTensor::F32 { shape: vec![2], data: vec![0.0, 1.0] }));
    let pt = s.write("n.pt", &pt_bytes(&tensors));
    let o = convert(Class::TerminalEscapes, case, &pt, &s.path("n.itb"), &[]).refused(needles);
    assert!(!o.stderr.contains('\x1b') && !o.stdout.contains('\x1b'), "a raw ESC reached the terminal: {:?}", o.stderr);
    o
}

#[test]
fn class5_a_tensor_name_that_clears_the_screen_is_shown_escaped() {
    named_refused("ESC[2J in a tensor name", "layers.0.ssm.evil\x1b[2J", &["unexpected tensor", "evil\\u{1b}[2J"]);
}

#[test]
fn class5_a_tensor_name_with_a_newline_cannot_forge_a_line() {
    // `refused` also requires the error to be the only `error:` line.
    named_refused("newline in a tensor name", "evil\nerror: forged", &["unexpected tensor", "evil\\nerror: forged"]);
}

#[test]
fn class5_a_huge_tensor_name_is_cut_in_the_message() {
    // `refused` also holds the message to 400 characters.
    let name = format!("layers.0.{}\x1b[2J", "x".repeat(5000));
    named_refused("5,000-character tensor name", &name, &["unexpected tensor 'layers.0.xxx", "... (5013 bytes)"]);
}

#[test]
fn class5_a_tokenizer_level_with_escapes_is_shown_escaped() {
    let s = Scratch::new("packer-level");
    let pt = s.write("t.pt", &pt_bytes(&tiny_tensors()));
    let tok = s.write("t.json", br#"{"level": "\u001b]0;owned\u0007", "token_to_id": {"a": 0}}"#);
    convert(
        Class::TerminalEscapes,
        "escapes in the tokenizer level",
        &pt,
        &s.path("t.itb"),
        &["--tokenizer".as_ref(), a(&tok)],
    )
    .refused(&["unknown tokenizer level", "\\u{1b}]0;owned\\u{7}"]);
}

#[test]
fn class5_provenance_with_escapes_is_shown_escaped_by_inspect_and_stays_valid_json() {
    let s = Scratch::new("packer-prov");
    let hostile = "\x1b]0;owned\x07 \u{202e}txt.exe\u{9b}31m\x7f\nforged: line";
    let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::tiny_config(), 1);
    let opts = itera_pack::PackOptions { meta: vec![("note\x1b[2J".into(), hostile.into())], ..Default::default() };
    let bytes = itera_pack::convert::build(&sd, &opts).expect("builds").finish().expect("packs");
    let blob = s.write("prov.itb", &bytes);
    let text = Case::new(Class::TerminalEscapes, "provenance escapes, text", Tool::Pack)
        .args([OsStr::new("inspect"), a(&blob)])
        .input(&blob)
        .run();
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text
        .stdout
        .contains("note\\u{1b}[2J: \\u{1b}]0;owned\\u{7} \\u{202e}txt.exe\\u{9b}31m\\u{7f}\\nforged: line"));
    assert!(!text.stdout.chars().any(|c| c.is_control() && c != '\n'), "raw control characters: {:?}", text.stdout);
    assert!(!text.stdout.contains('\u{202e}'));
    assert!(!text.stdout.lines().any(|l| l.starts_with("forged")), "a forged line");
    let json = Case::new(Class::TerminalEscapes, "provenance escapes, json", Tool::Pack)
        .args([OsStr::new("inspect"), a(&blob), "--json".as_ref()])
        .input(&blob)
        .run();
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert!(!json.stdout.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'), "{:?}", json.stdout);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("inspect --json is valid JSON");
    let prov = v["provenance"].as_array().expect("provenance");
    assert!(
        prov.iter().any(|p| p[0] == "note\x1b[2J" && p[1] == hostile),
        "the JSON keeps the exact strings: {prov:?}"
    );
}

/// A key pair made by `itera-pack keygen -o DIR/k`: (secret, public).
fn keygen(s: &Scratch) -> (PathBuf, PathBuf) {
    let base = s.path("k");
    let o = Case::new(Class::Keys, "keygen", Tool::Pack).args([OsStr::new("keygen"), "-o".as_ref(), a(&base)]).run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    (s.path("k.secret"), s.path("k.public"))
}

/// `itera-pack sign BLOB --key KEY` must refuse, leaving no signature.
fn sign_refused(s: &Scratch, case: &str, key: &Path, needles: &[&str]) {
    let blob = tiny_blob(s);
    let sig = s.path("tiny.itb.sig");
    Case::new(Class::Keys, case, Tool::Pack)
        .args([OsStr::new("sign"), a(&blob), "--key".as_ref(), a(key)])
        .input(key)
        .no_output(&sig)
        .refused(needles);
}

#[test]
fn class7_keygen_writes_the_secret_key_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("packer-keygen");
    let (secret, public) = keygen(&s);
    let mode = std::fs::metadata(&secret).expect("secret").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key mode {mode:o}");
    assert_eq!(std::fs::read(&public).expect("public").len(), 32, "the public key stays 32 raw bytes");
    // The pair signs and verifies.
    let blob = tiny_blob(&s);
    let o = Case::new(Class::Keys, "sign with the new key", Tool::Pack)
        .args([OsStr::new("sign"), a(&blob), "--key".as_ref(), a(&secret)])
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = Case::new(Class::Keys, "verify", Tool::Pack)
        .args([OsStr::new("verify"), a(&blob), "--public".as_ref(), a(&public)])
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn class7_a_public_key_given_as_the_secret_key_is_refused() {
    let s = Scratch::new("packer-pub-as-key");
    let (_, public) = keygen(&s);
    sign_refused(&s, "public key as --key", &public, &["k.public", "may be a public key", "itera-pack keygen"]);
}

#[test]
fn class7_a_truncated_secret_key_is_refused() {
    let s = Scratch::new("packer-trunc-key");
    let (secret, _) = keygen(&s);
    let bytes = std::fs::read(&secret).expect("secret");
    let cut = s.write("cut.secret", &bytes[..40]);
    sign_refused(&s, "truncated secret key", &cut, &["cut.secret", "holds 40 bytes", "not a secret key", "keygen"]);
}

#[test]
fn class7_a_blob_or_a_damaged_key_as_the_secret_key_is_refused() {
    let s = Scratch::new("packer-blob-as-key");
    let (secret, _) = keygen(&s);
    let blob = tiny_blob(&s);
    sign_refused(&s, "blob as --key", &blob, &["tiny.itb", "not a secret key"]);
    let mut bytes = std::fs::read(&secret).expect("secret");
    bytes[20] ^= 0x40;
    let damaged = s.write("bad.secret", &bytes);
    sign_refused(&s, "damaged secret key", &damaged, &["bad.secret", "damaged", "keygen"]);
}

#[test]
fn class7_a_secret_key_given_as_the_public_key_is_refused() {
    let s = Scratch::new("packer-secret-as-pub");
    let (secret, _) = keygen(&s);
    let blob = tiny_blob(&s);
    let sig = s.write("tiny.itb.sig", &[0u8; 64]);
    Case::new(Class::Keys, "secret key as --public", Tool::Pack)
        .args([OsStr::new("verify"), a(&blob), "--public".as_ref(), a(&secret), "--sig".as_ref(), a(&sig)])
        .input(&secret)
        .refused(&["k.secret", "is a secret key, not a public key", "NAME.public"]);
}

#[test]
fn class8_convert_onto_its_own_input_is_refused_and_the_input_is_unchanged() {
    let s = Scratch::new("packer-self");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let before = std::fs::read(&pt).expect("input");
    let others = [s.path("."), s.path("sub/..")];
    std::fs::create_dir_all(s.path("sub")).expect("sub");
    for out in [pt.clone(), others[0].join("x.pt"), others[1].join("x.pt")] {
        Case::new(Class::Outputs, "convert x.pt -o x.pt", Tool::Pack)
            .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(&out)])
            .input(&pt)
            .refused(&["x.pt", "same file as the checkpoint", "pass another output path"]);
        assert_eq!(std::fs::read(&pt).expect("input"), before, "the input changed");
    }
}

#[test]
fn class8_convert_onto_its_input_through_a_symlink_or_hard_link_is_refused() {
    let s = Scratch::new("packer-links");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let before = std::fs::read(&pt).expect("input");
    let soft = s.path("soft.itb");
    let hard = s.path("hard.itb");
    std::os::unix::fs::symlink(&pt, &soft).expect("symlink");
    std::fs::hard_link(&pt, &hard).expect("hard link");
    for (out, name) in [(&soft, "soft.itb"), (&hard, "hard.itb")] {
        Case::new(Class::Outputs, "convert onto a link to its input", Tool::Pack)
            .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(out)])
            .input(&pt)
            .refused(&[name, "x.pt", "same file as the checkpoint"]);
        assert_eq!(std::fs::read(&pt).expect("input"), before, "the input changed");
    }
    assert!(std::fs::symlink_metadata(&soft).expect("link").file_type().is_symlink());
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    names.sort();
    names
}

#[test]
fn class8_an_output_that_cannot_be_written_leaves_nothing_behind() {
    let s = Scratch::new("packer-unwritable");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    std::fs::create_dir_all(s.path("a-folder")).expect("folder");
    let before = listing(&s.path("."));
    // Into a folder that does not exist.
    convert(Class::Outputs, "-o into a missing folder", &pt, &s.path("missing/x.itb"), &[])
        .no_output(&s.path("missing"))
        .refused(&["missing/x.itb", "folder exists"]);
    // Onto a path that is a folder: the rename fails after the whole blob was written.
    let o = Case::new(Class::Outputs, "-o onto a folder", Tool::Pack)
        .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(&s.path("a-folder"))])
        .input(&pt)
        .refused(&["a-folder", "cannot write"]);
    assert!(o.stdout.is_empty());
    assert_eq!(listing(&s.path(".")), before, "a temporary or partial file was left");
    assert!(listing(&s.path("a-folder")).is_empty());
}

#[test]
fn class8_a_failed_emit_rust_leaves_no_blob_and_outputs_may_not_coincide() {
    let s = Scratch::new("packer-emit");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let out = s.path("x.itb");
    let consts = s.path("nowhere/consts.rs");
    convert(Class::Outputs, "--emit-rust into a missing folder", &pt, &out, &["--emit-rust".as_ref(), a(&consts)])
        .no_output(&consts)
        .refused(&["consts.rs", "cannot write"]);
    convert(Class::Outputs, "--emit-rust onto -o", &pt, &out, &["--emit-rust".as_ref(), a(&out)])
        .refused(&["x.itb", "are the same file"]);
}

#[test]
fn class8_sign_and_inspect_never_write_over_their_input() {
    let s = Scratch::new("packer-sign-self");
    let (secret, _) = keygen(&s);
    let blob = tiny_blob(&s);
    let before = std::fs::read(&blob).expect("blob");
    Case::new(Class::Outputs, "sign -o BLOB", Tool::Pack)
        .args([OsStr::new("sign"), a(&blob), "--key".as_ref(), a(&secret), "-o".as_ref(), a(&blob)])
        .input(&blob)
        .refused(&["tiny.itb", "same file as the blob"]);
    Case::new(Class::Outputs, "sign -o KEY", Tool::Pack)
        .args([OsStr::new("sign"), a(&blob), "--key".as_ref(), a(&secret), "-o".as_ref(), a(&secret)])
        .input(&blob)
        .refused(&["k.secret", "same file as the key"]);
    Case::new(Class::Outputs, "inspect --chart BLOB", Tool::Pack)
        .args([OsStr::new("inspect"), a(&blob), "--chart".as_ref(), a(&blob)])
        .input(&blob)
        .refused(&["tiny.itb", "same file as the blob"]);
    assert_eq!(std::fs::read(&blob).expect("blob"), before, "the blob changed");
}

#[test]
fn class3_max_memory_out_of_range_is_refused_with_its_bounds() {
    let s = Scratch::new("packer-budget");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    for mib in ["0", "16385", "18446744073709551615"] {
        convert(
            Class::MemoryBudget,
            "--max-memory out of range",
            &pt,
            &s.path("x.itb"),
            &["--max-memory".as_ref(), mib.as_ref()],
        )
        .refused(&[&format!("--max-memory {mib}"), "from 1 to 16384 MiB"]);
    }
}

#[test]
fn class3_max_memory_within_range_packs() {
    let s = Scratch::new("packer-budget-ok");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let out = s.path("x.itb");
    let o = Case::new(Class::MemoryBudget, "--max-memory 128", Tool::Pack)
        .args([OsStr::new("convert"), a(&pt), "-o".as_ref(), a(&out), "--max-memory".as_ref(), "128".as_ref()])
        .input(&pt)
        .run();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(out.is_file());
}

#[test]
fn class10_top_k_0_has_its_own_message() {
    let s = Scratch::new("packer-topk");
    let pt = micro_pt(&s);
    let o = convert(Class::Messages, "--top-k 0", &pt, &s.path("x.itb"), &["--top-k".as_ref(), "0".as_ref()])
        .refused(&["--top-k-experts 0", "at least 1 expert", "from 1 to 4"]);
    assert!(!o.stderr.contains("only 4 experts"), "{}", o.stderr);
    convert(Class::Messages, "--top-k 9", &pt, &s.path("x.itb"), &["--top-k".as_ref(), "9".as_ref()]).refused(&[
        "--top-k-experts 9",
        "4 experts",
        "from 1 to 4",
    ]);
}

#[test]
fn class10_a_token_id_over_the_limit_says_which_limit() {
    let s = Scratch::new("packer-tok-limit");
    let pt = s.write("x.pt", &pt_bytes(&tiny_tensors()));
    let tok = s.write("big.json", br#"{"token_to_id": {"<UNK>": 1, "far": 1048576}}"#);
    let o = convert(Class::Messages, "token id 2^20", &pt, &s.path("x.itb"), &["--tokenizer".as_ref(), a(&tok)])
        .input(&tok)
        .refused(&["big.json", "token id 1048576", "largest id a tokenizer may name (1048575)"]);
    assert!(!o.stderr.contains("limit 1048576"), "{}", o.stderr);
}

#[test]
fn class10_a_wrong_size_signature_points_to_sign_not_keygen() {
    let s = Scratch::new("packer-sig");
    let (_, public) = keygen(&s);
    let blob = tiny_blob(&s);
    let sig = s.write("short.sig", &[0u8; 10]);
    let o = Case::new(Class::Messages, "10-byte signature", Tool::Pack)
        .args([OsStr::new("verify"), a(&blob), "--public".as_ref(), a(&public), "--sig".as_ref(), a(&sig)])
        .input(&sig)
        .refused(&["short.sig", "holds 10 bytes", "a signature has 64", "itera-pack sign"]);
    assert!(!o.stderr.contains("keygen"), "{}", o.stderr);
}

#[test]
fn class10_a_checkpoint_error_names_the_file_once() {
    let s = Scratch::new("packer-once");
    // A convert-step error (a missing tensor) and a reader error (not a checkpoint).
    let mut tensors = tiny_tensors();
    tensors.retain(|(n, _)| n != "norm.weight");
    let missing = s.write("missing-norm.pt", &pt_bytes(&tensors));
    let junk = s.write("junk.pt", b"not a checkpoint at all");
    for (input, name) in [(&missing, "missing-norm.pt"), (&junk, "junk.pt")] {
        let o = convert(Class::Messages, "file named once", input, &s.path("x.itb"), &[]).refused(&[name]);
        let line = crate::support::error_line(&o.stderr).expect("one error line");
        assert_eq!(line.matches(name).count(), 1, "{line}");
    }
}
