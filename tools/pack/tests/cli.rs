//! `itera-pack` as a user runs it: real checkpoints, broken ones, hostile ones.

use std::path::Path;
use std::process::{Command, Output};

use itera_pack::checkpoint::{self, safetensors::save_safetensors, RawTensor, TensorData};
use itera_pack::{convert_file, AlignedBytes, PackOptions};
use itera_test_support::session::arena;
use itera_test_support::{fixtures, tiny_blob, Scratch};

fn pack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_itera-pack")).args(args).output().expect("itera-pack runs")
}

/// Asserts a clean refusal: exit 1 (not a panic's 101) with `needle` in the message.
fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, got {:?}: {stderr}", out.status.code());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(needle), "message lacks '{needle}': {stderr}");
}

/// `itera-pack convert INPUT -o OUT EXTRA...`.
fn convert(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["convert", input.to_str().expect("utf8 path"), "-o", out.to_str().expect("utf8 path")];
    args.extend_from_slice(extra);
    pack(&args)
}

fn convert_to_temp(scratch: &Scratch, input: &Path) -> Output {
    convert(input, &scratch.path("out.itb"), &[])
}

#[test]
fn the_zero_expert_mixed_precision_checkpoint_is_refused_naming_the_layer() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let out = convert_to_temp(&scratch, &dir.join("itera_lite_mixed_precision.pt"));
    assert_refused(&out, "layer 1 is a Mixture-of-Experts layer with zero experts");
    assert_refused(&out, "layers.1.moe.layer.router.gate.weight");
    // Its own config says so too.
    assert_refused(&out, "its config says num_experts 0");
}

#[test]
fn the_int4_checkpoint_packs_with_its_config_objects_top_k() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let out = scratch.path("int4.itb");
    let packed = convert(&dir.join("itera_lite_int4.pt"), &out, &[]);
    assert_eq!(packed.status.code(), Some(0), "{}", String::from_utf8_lossy(&packed.stderr));
    let inspect = pack(&["inspect", out.to_str().expect("utf8 path")]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("\"top_k\":2"), "{text}");
    assert!(text.contains("config: config (models.config.IteraLiteConfig)"), "{text}");
    assert!(text.contains("ignored: quantization_info"), "{text}");
}

#[test]
fn truncated_random_and_hostile_inputs_get_clear_errors() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let pt = std::fs::read(dir.join("itera_lite_micro_distilled.pt")).expect("fixture");
    let truncated = scratch.path("truncated.pt");
    std::fs::write(&truncated, &pt[..pt.len() / 2]).expect("write");
    assert_refused(&convert_to_temp(&scratch, &truncated), "error:");

    let random = scratch.path("random.pt");
    let mut rng = itera_edge::Rng::new(9);
    std::fs::write(&random, (0..4096).map(|_| rng.next_u32() as u8).collect::<Vec<u8>>()).expect("write");
    assert_refused(&convert_to_temp(&scratch, &random), "error:");

    // A PyTorch-shaped zip whose pickle calls os.system: refused by name, nothing runs.
    let evil = scratch.path("evil.pt");
    let mut pickle = vec![0x80, 2];
    pickle.extend_from_slice(b"cos\nsystem\n");
    pickle.extend_from_slice(b"X\x0b\x00\x00\x00touch pwned\x85R.");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&evil).expect("create"));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).expect("entry");
    std::io::Write::write_all(&mut zip, &pickle).expect("write");
    zip.finish().expect("finish");
    assert_refused(&convert_to_temp(&scratch, &evil), "os.system");
    assert!(!Path::new("touch pwned").exists() && !Path::new("pwned").exists());

    assert_refused(&convert_to_temp(&scratch, &scratch.path("does-not-exist.pt")), "error:");
}

#[test]
fn a_safetensors_twin_of_the_distilled_checkpoint_packs_to_identical_logits() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let pt = dir.join("itera_lite_micro_distilled.pt");
    let sd = checkpoint::load(&pt).expect("load .pt");
    // Write the same tensors as safetensors, with the `model.` prefix some exporters add.
    let twin: Vec<(String, RawTensor)> = sd.tensors.iter().map(|(n, t)| (format!("model.{n}"), t.clone())).collect();
    let st = scratch.path("micro.safetensors");
    save_safetensors(&twin, &st).expect("write safetensors");

    let opts = PackOptions::default();
    let from_pt = AlignedBytes::from(convert_file(&pt, &opts).expect("pt").as_slice());
    let from_st = AlignedBytes::from(convert_file(&st, &opts).expect("st").as_slice());
    let logits = |bytes: &[u8]| -> Vec<f32> {
        let blob = itera_edge::Blob::parse(bytes).expect("parse");
        let model = itera_edge::Model::new(&blob).expect("model");
        let mut arena = arena(&model);
        let mut s = itera_edge::Session::new(&model, &mut arena).expect("session");
        [41u32, 13, 6, 42, 182, 43, 4, 16].iter().flat_map(|&t| s.step(t).expect("step").to_vec()).collect()
    };
    let (a, b) = (logits(&from_pt), logits(&from_st));
    assert_eq!(a.len(), 8 * 2000);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "logits differ");
}

#[test]
fn missing_mismatched_and_non_finite_tensors_are_named() {
    use itera_pack::convert::{build, ConvertError};
    use itera_pack::synthetic::{state_dict, tiny_config};
    let opts = PackOptions::default();
    let mut sd = state_dict(&tiny_config(), 1);
    sd.tensors.retain(|(n, _)| n != "layers.1.ssm.ssm.B");
    assert_eq!(build(&sd, &opts).err(), Some(ConvertError::Missing("layers.1.ssm.ssm.B".into())));

    let mut sd = state_dict(&tiny_config(), 1);
    if let Some((_, t)) = sd.tensors.iter_mut().find(|(n, _)| n == "layers.0.ssm.out_proj.weight") {
        t.shape = vec![16, 8];
    }
    assert!(
        matches!(build(&sd, &opts), Err(ConvertError::Shape { name, .. }) if name == "layers.0.ssm.out_proj.weight")
    );

    let mut sd = state_dict(&tiny_config(), 1);
    if let Some((_, RawTensor { data: TensorData::F32(v), .. })) = sd.tensors.iter_mut().find(|(n, _)| n == "norm.bias")
    {
        v[3] = f32::NAN;
    }
    let err = build(&sd, &opts).expect_err("NaN refused");
    assert!(err.to_string().contains("'norm.bias'") && err.to_string().contains("element 3"), "{err}");

    let mut sd = state_dict(&tiny_config(), 1);
    sd.tensors.push((
        "layers.0.ssm.extra.weight".into(),
        RawTensor { shape: vec![1], data: TensorData::F32(vec![0.0]), storage: None },
    ));
    assert_eq!(build(&sd, &opts).err(), Some(ConvertError::Unexpected("layers.0.ssm.extra.weight".into())));
}

#[test]
fn convert_and_inspect_a_real_checkpoint_with_its_tokenizer() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let out = scratch.path("micro.itb");
    let res = pack(&[
        "convert",
        dir.join("itera_lite_micro_distilled.pt").to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
        "--tokenizer",
        dir.join("tokenizer_2000.json").to_str().expect("utf8"),
        "--emit-rust",
        scratch.path("model_consts.rs").to_str().expect("utf8"),
    ]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let inspect = pack(&["inspect", out.to_str().expect("utf8"), "--json"]);
    assert!(inspect.status.success());
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(v["config"]["vocab"], 2000);
    assert_eq!(v["config"]["moe_layers"], serde_json::json!([1]));
    assert_eq!(v["config"]["tied_lm_head"], true);
    assert!(
        v["tokenizer"].as_str().expect("tokenizer").starts_with("Word, 2000 ids")
            || v["tokenizer"].as_str().expect("tokenizer").starts_with("Word")
    );
    assert!(v["provenance"].to_string().contains("itera_lite_micro_distilled.pt"));
    let consts = std::fs::read_to_string(scratch.path("model_consts.rs")).expect("--emit-rust wrote the constants");
    let arena = v["arena_bytes"].as_u64().expect("arena");
    assert!(consts.contains(&format!("pub const ARENA_BYTES: usize = {arena};")), "{consts}");
    // Blocks of 8 tokens: the per-token vectors (d 64, d_inner 128, hidden 32) eight times.
    let per_token = 4 * (64 + 64 + 256 + 128 + 128 + 32 + 64);
    assert_eq!(v["prefill_arena_bytes"].as_u64().expect("prefill arena"), arena + 7 * per_token);
    let blob_bytes = v["blob_bytes"].as_u64().expect("size");
    assert!(blob_bytes < 1_200_000, "tied lm_head stored once: {blob_bytes} bytes");
}

#[test]
fn keygen_sign_and_verify_a_blob_and_refuse_a_changed_one() {
    let scratch = Scratch::new("pack-cli");
    let bytes = tiny_blob(2).to_vec();
    let blob = scratch.write("signed.itb", &bytes);
    let key = scratch.path("release");
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    assert!(pack(&["keygen", "-o", &s(&key)]).status.success());
    assert_refused(&pack(&["keygen", "-o", &s(&key)]), "refusing to overwrite");
    let (secret, public) = (key.with_extension("secret"), key.with_extension("public"));
    assert!(pack(&["sign", &s(&blob), "--key", &s(&secret)]).status.success());
    let ok = pack(&["verify", &s(&blob), "--public", &s(&public)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let mut changed = bytes.clone();
    changed[100] ^= 1;
    std::fs::write(&blob, &changed).expect("write");
    assert_refused(&pack(&["verify", &s(&blob), "--public", &s(&public)]), "signature does not verify");
}

#[test]
fn synth_makes_the_requested_shape_and_the_same_seed_gives_the_same_bytes() {
    let scratch = Scratch::new("pack-cli");
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    let (a, b, c) = (scratch.path("synth_a.itb"), scratch.path("synth_b.itb"), scratch.path("synth_c.itb"));
    for (out, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let res = pack(&["synth", "--shape", "micro", "--seed", seed, "-o", &s(out)]);
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
        assert!(String::from_utf8_lossy(&res.stdout).contains("293656 parameters"));
    }
    let bytes = |p: &Path| std::fs::read(p).expect("synth wrote the blob");
    assert_eq!(bytes(&a), bytes(&b), "same seed, same bytes");
    assert_ne!(bytes(&a), bytes(&c), "another seed, other weights");
    let blob = AlignedBytes::from(bytes(&a).as_slice());
    let model = itera_edge::Model::new(&itera_edge::Blob::parse(&blob).expect("parses")).expect("runs");
    assert_eq!(*model.config(), itera_pack::synthetic::micro_config());

    // The tiny shape, int8 as `convert --quant int8` stores it, summarised as JSON.
    let tiny = scratch.path("synth_tiny.itb");
    let res = pack(&["synth", "--shape", "tiny", "--seed", "3", "-o", &s(&tiny), "--quant", "int8", "--json"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    let c = &v["config"];
    let got = [&c["vocab"], &c["d_model"], &c["n_layers"], &c["d_inner"], &c["d_state"], &c["n_experts"]];
    assert_eq!(got.map(|x| x.as_u64().expect("number")), [8000, 128, 4, 256, 8, 4]);
    assert_eq!((c["expert_hidden"].as_u64(), c["top_k"].as_u64()), (Some(64), Some(2)));
    assert_eq!(c["moe_layers"], serde_json::json!([1, 3]));
    assert_eq!(v["parameters"].as_u64(), Some(1_886_496));
    assert_eq!(v["blob_bytes"].as_u64(), Some(std::fs::metadata(&tiny).expect("written").len()));
    let provenance = v["provenance"].to_string();
    assert!(provenance.contains("shape=tiny seed=3") && provenance.contains("synthetic tiny model"), "{provenance}");
    let in_proj = v["tensors"].as_array().expect("tensors").iter().find(|t| t["name"] == "layers.0.ssm.in_proj.weight");
    assert_eq!(in_proj.expect("in_proj")["dtype"], "I8");

    assert_refused(&pack(&["synth", "--shape", "micro", "-o", &s(&a), "--quant", "int3"]), "error:");
    let res = pack(&["synth", "--shape", "huge", "-o", &s(&a)]);
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("micro"));
}

#[test]
fn the_torchscript_export_holds_the_int4_checkpoints_weights_and_its_top_k() {
    let Some(dir) = fixtures::dir() else { return };
    let scratch = Scratch::new("pack-cli");
    let script = checkpoint::load(&dir.join("itera_lite_micro_torchscript.pt")).expect("the TorchScript archive reads");
    let int4 = checkpoint::load(&dir.join("itera_lite_int4.pt")).expect("the int4 checkpoint reads");
    assert_eq!(script.format, checkpoint::SourceFormat::TorchScript);
    // Same weights, same names (the wrapper's path taken off), bit for bit.
    let names = |sd: &checkpoint::StateDict| sd.names().map(str::to_string).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(names(&script), names(&int4));
    for (name, t) in &int4.tensors {
        assert_eq!(script.get(name).map(|s| (&s.shape, &s.data)), Some((&t.shape, &t.data)), "{name}");
    }
    // The router's k comes from the traced code.
    let config = script.config.expect("the traced code's top-k");
    assert_eq!(config.int("top_k_experts"), Some(2));
    assert!(config.origin.starts_with("traced code (code/__torch__/"), "{}", config.origin);
    let packed = convert(&dir.join("itera_lite_micro_torchscript.pt"), &scratch.path("ts.itb"), &[]);
    let said = String::from_utf8_lossy(&packed.stdout);
    assert!(said.contains("(TorchScript archive; top-k 2 from its traced code"), "{said}");
}

#[test]
fn the_int4_checkpoint_keeps_its_int4_weights_exactly() {
    let Some(dir) = fixtures::dir() else { return };
    let published = dir.join("itera_lite_int4.pt");
    let opts =
        PackOptions { quant: itera_pack::quant::QuantPolicy::parse_spec("keep").expect("keep"), ..Default::default() };
    let kept = convert_file(&published, &opts).expect("packs with --quant keep");
    let f32_blob = convert_file(&published, &PackOptions::default()).expect("packs as f32");
    let report = itera_pack::inspect::report(&AlignedBytes::from(kept.as_slice())).expect("inspects");
    // Every weight matrix (and the tables) is int4 with one scale, every value exact.
    let quantized: Vec<_> = report.tensors.iter().filter(|t| t.sqnr_db.is_some()).collect();
    assert_eq!(quantized.len(), 29, "every matrix and both tables");
    for t in &quantized {
        assert_eq!(t.dtype, "I4", "{}", t.name);
        assert_eq!(t.sqnr_db, Some(f64::INFINITY), "{}", t.name);
    }
    // Smaller than the published file and the f32 blob (about a seventh).
    let file = std::fs::metadata(&published).expect("the file").len() as usize;
    assert!(kept.len() * 7 < f32_blob.len() && f32_blob.len() < file, "{} / {} / {file}", kept.len(), f32_blob.len());
}

#[test]
fn every_subcommand_help_has_an_example() {
    let top = String::from_utf8_lossy(&pack(&["--help"]).stdout).into_owned();
    let subs: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&c| c != "help")
        .collect();
    assert!(subs.len() >= 6, "{top}");
    for sub in subs {
        let help = pack(&[sub, "--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success() && text.contains("Example"), "{sub} --help has no example: {text}");
    }
}

#[test]
fn experts_per_token_is_top_k_experts_and_the_old_top_k_still_works() {
    let help = String::from_utf8_lossy(&pack(&["convert", "--help"]).stdout).into_owned();
    // In itera-sim --top-k is sampling; here the experts flag has its own name.
    assert!(help.contains("--top-k-experts <N>") && !help.contains("--top-k <"), "{help}");
    let Some(dir) = fixtures::dir() else { return };
    let s = Scratch::new("pack-cli-top-k");
    for flag in ["--top-k-experts", "--top-k"] {
        let out = s.path(&format!("topk{flag}.itb"));
        let packed = convert(&dir.join("itera_lite_micro_distilled.pt"), &out, &[flag, "3"]);
        assert_eq!(packed.status.code(), Some(0), "{flag}: {}", String::from_utf8_lossy(&packed.stderr));
        let inspect = pack(&["inspect", out.to_str().expect("utf8 path"), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("JSON");
        assert_eq!(v["config"]["top_k"], 3, "{flag}");
    }
    let refused = convert(&dir.join("itera_lite_micro_distilled.pt"), &s.path("topk0.itb"), &["--top-k-experts", "0"]);
    assert_refused(&refused, "pass --top-k-experts from 1 to 4");
}

#[test]
fn inspect_names_each_tensor_shows_int4g8_and_writes_sqnr_as_a_number_or_null() {
    let Some(dir) = fixtures::dir() else { return };
    let s = Scratch::new("pack-cli-inspect");
    let mixed = s.path("inspect-mixed.itb");
    let packed = convert(&dir.join("itera_lite_micro_distilled.pt"), &mixed, &["--quant", "mixed"]);
    assert_eq!(packed.status.code(), Some(0), "{}", String::from_utf8_lossy(&packed.stderr));
    let text = String::from_utf8_lossy(&pack(&["inspect", mixed.to_str().expect("utf8 path")]).stdout).into_owned();
    let row = |name: &str| {
        let found = text.lines().find(|l| l.ends_with(&format!("  {name}")));
        found.unwrap_or_else(|| panic!("no row named {name}: {text}")).to_string()
    };
    // mixed: the embedding int4 with a scale per 8, the SSM projections int4 per 32, B int8.
    assert!(row("embedding.weight").contains(" I4g8 "), "{}", row("embedding.weight"));
    assert!(row("layers.0.ssm.in_proj.weight").contains("   I4 "), "{}", row("layers.0.ssm.in_proj.weight"));
    assert!(row("layers.0.ssm.ssm.B").contains("   I8 "), "{}", row("layers.0.ssm.ssm.B"));
    assert!(text.lines().any(|l| l.starts_with("role ") && l.ends_with("  name")), "{text}");

    let json = |blob: &Path| -> serde_json::Value {
        let o = pack(&["inspect", blob.to_str().expect("utf8 path"), "--json"]);
        serde_json::from_slice(&o.stdout).expect("JSON")
    };
    let v = json(&mixed);
    let tensors = v["tensors"].as_array().expect("tensors");
    let embedding = tensors.iter().find(|t| t["name"] == "embedding.weight").expect("embedding");
    assert_eq!((embedding["dtype"].as_str(), embedding["group"].as_u64()), (Some("I4g8"), Some(8)));
    for t in tensors {
        assert!(t["sqnr_db"].is_number() || t["sqnr_db"].is_null(), "{t}");
    }
    assert!(tensors.iter().filter(|t| t["sqnr_db"].is_number()).count() > 10);

    // Values kept exactly (infinite SQNR) are null in JSON and say so with `exact`.
    let kept = s.path("inspect-keep.itb");
    let packed = convert(&dir.join("itera_lite_int4.pt"), &kept, &["--quant", "keep"]);
    assert_eq!(packed.status.code(), Some(0), "{}", String::from_utf8_lossy(&packed.stderr));
    let v = json(&kept);
    let exact: Vec<_> = v["tensors"].as_array().expect("tensors").iter().filter(|t| t["exact"] == true).collect();
    assert_eq!(exact.len(), 29, "{v}");
    assert!(exact.iter().all(|t| t["sqnr_db"].is_null()), "{v}");
    assert!(!v.to_string().contains("\"inf\""), "{v}");
}

/// Output into a closed pipe (`itera-pack inspect blob.itb | head -1` once `head` is gone)
/// is a one-line error and exit 1, not a panic.
#[test]
fn a_closed_stdout_is_an_error_not_a_panic() {
    let scratch = Scratch::new("pack-cli-pipe");
    let blob = scratch.write("tiny.itb", &tiny_blob(1));
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_itera-pack"))
        .args(["inspect", blob.to_str().expect("utf8 path")])
        .stdout(writer)
        .output()
        .expect("itera-pack runs");
    assert_refused(&out, "cannot write to stdout");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "one line");
}
