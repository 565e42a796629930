//! Packer-side quantization: quantizers, SQNR, `--quant` policies, and real checkpoints packed
//! with each preset. Blobs are checked with `Blob::parse` only (the core may not run
//! quantized dtypes yet).

use std::path::PathBuf;
use std::process::{Command, Output};

use itera_edge::format::{DType, Quant, Role};
use itera_edge::Blob;
use itera_pack::checkpoint::{self, TensorData};
use itera_pack::quant::{
    dequantize, quantize_f16, quantize_int4, quantize_int4_absmax, quantize_int8_rows, sqnr_db, Preset, QDType,
    QuantPolicy,
};
use itera_pack::writer::Payload;
use itera_pack::{convert_file, inspect, AlignedBytes, ConvertError, PackOptions};
use itera_test_support::{fixtures, gaussian, Scratch};

fn pack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_itera-pack")).args(args).output().expect("itera-pack runs")
}

#[test]
fn int8_per_row_round_trip_is_within_half_a_step() {
    let (rows, cols) = (48, 100);
    let w = gaussian(rows * cols, 3, 1.0);
    let p = quantize_int8_rows(&w, cols);
    let Payload::I8Grouped { q, group, scales, .. } = &p else { panic!("int8 payload") };
    assert_eq!(*group as usize, cols);
    assert_eq!(scales.len(), rows);
    assert!(q.iter().all(|v| (-127..=127).contains(v)));
    let d = dequantize(&p, cols).expect("values");
    for (r, row) in w.chunks(cols).enumerate() {
        // The MSE search may clip the largest values, never scale up past max/127 (+ f16 rounding).
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scales[r] <= amax / 127.0 * 1.001 && scales[r] >= amax / 127.0 * 0.59, "row {r}");
        assert_eq!(half::f16::from_f32(scales[r]).to_f32(), scales[r], "scales are stored as f16");
        let sq = |s: f32| row.iter().map(|&v| (v - (v / s).round().clamp(-127.0, 127.0) * s).powi(2)).sum::<f32>();
        let absmax = half::f16::from_f32(amax / 127.0).to_f32();
        assert!(sq(scales[r]) <= sq(absmax), "row {r}: the search is never worse than max scaling");
    }
    for (i, (a, b)) in w.iter().zip(&d).enumerate() {
        let s = scales[i / cols];
        let clipped = (a / s).abs() > 127.0;
        assert!(clipped || (a - b).abs() <= s * 0.5 * 1.0001, "element {i}: {a} vs {b}");
    }
    let db = sqnr_db(&w, &d);
    println!("int8 per-row SQNR on gaussian data: {db:.2} dB");
    assert!(db > 35.0, "{db}");
}

#[test]
fn int4_mse_search_beats_absmax_scaling() {
    let (rows, cols) = (64, 96);
    for seed in 0..5 {
        let w = gaussian(rows * cols, seed, 0.2);
        let best = quantize_int4(&w, cols);
        let Payload::I4Grouped { q, group, scales } = &best else { panic!("int4 payload") };
        assert_eq!(*group, 32);
        assert_eq!(scales.len(), rows * 3);
        assert!(q.iter().all(|v| (-8..=7).contains(v)));
        let d_best = dequantize(&best, cols).expect("values");
        let d_base = dequantize(&quantize_int4_absmax(&w, cols), cols).expect("values");
        // Per group, the search is never worse than max/7.
        for (g, (gw, (gb, ga))) in w.chunks(32).zip(d_best.chunks(32).zip(d_base.chunks(32))).enumerate() {
            let err = |d: &[f32]| gw.iter().zip(d).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
            assert!(err(gb) <= err(ga) * (1.0 + 1e-9), "group {g}");
        }
        let (s_best, s_base) = (sqnr_db(&w, &d_best), sqnr_db(&w, &d_base));
        println!("int4 SQNR seed {seed}: MSE-searched {s_best:.2} dB, max/7 {s_base:.2} dB");
        assert!(s_best > 15.0, "{s_best}");
        assert!(s_best > s_base + 0.5, "search should measurably help: {s_best} vs {s_base}");
    }
}

#[test]
fn int4_rows_that_are_not_a_multiple_of_the_group() {
    let (rows, cols) = (5, 40);
    let w = gaussian(rows * cols, 11, 1.0);
    let p = quantize_int4(&w, cols);
    let Payload::I4Grouped { scales, .. } = &p else { panic!("int4 payload") };
    assert_eq!(scales.len(), rows * 2);
    let zeros = vec![0.0; 64];
    let Payload::I4Grouped { q, .. } = quantize_int4(&zeros, 64) else { panic!("int4 payload") };
    assert!(q.iter().all(|&v| v == 0));
    assert!(sqnr_db(&w, &dequantize(&p, cols).expect("values")) > 15.0);
}

#[test]
fn f16_and_sqnr() {
    let w = gaussian(1000, 5, 1.0);
    let d = dequantize(&quantize_f16(&w), 10).expect("values");
    let db = sqnr_db(&w, &d);
    assert!(db > 60.0, "{db}");
    assert_eq!(sqnr_db(&w, &w), f64::INFINITY);
    assert!((sqnr_db(&[3.0, 4.0], &[3.0, 3.5]) - 10.0 * (25.0f64 / 0.25).log10()).abs() < 1e-9);
}

#[test]
fn presets_pick_the_documented_dtypes() {
    let p = |s: &str| QuantPolicy::parse_spec(s).expect("spec");
    let r = |pol: &QuantPolicy, name: &str, role: Role| pol.resolve(name, role, false).0;
    assert_eq!(QuantPolicy::default(), p("f32"));
    let mixed = p("mixed");
    assert_eq!(r(&mixed, "embedding.weight", Role::Embedding), QDType::Int4G8);
    assert_eq!(r(&mixed, "layers.0.ssm.in_proj.weight", Role::InProj), QDType::Int4);
    assert_eq!(r(&mixed, "layers.0.ssm.ssm.B", Role::B), QDType::Int8);
    assert_eq!(r(&mixed, "layers.0.ssm.ssm.C", Role::C), QDType::Int8);
    assert_eq!(r(&mixed, "layers.0.ssm.ssm.delta_proj.weight", Role::DeltaProj), QDType::Int4);
    assert_eq!(r(&mixed, "lm_head.weight", Role::LmHead), QDType::Int4G8);
    assert_eq!(r(&mixed, "position_embedding.weight", Role::Position), QDType::Int4);
    assert_eq!(r(&mixed, "layers.1.moe.layer.router.gate.weight", Role::Gate), QDType::F32);
    let int4 = p("int4");
    assert_eq!(r(&int4, "embedding.weight", Role::Embedding), QDType::Int8);
    assert_eq!(r(&int4, "layers.0.ssm.ssm.C", Role::C), QDType::Int4);
    assert_eq!(r(&p("int8"), "layers.0.ssm.ssm.C", Role::C), QDType::Int8);
    assert_eq!(r(&p("f16"), "embedding.weight", Role::Embedding), QDType::F16);
    assert_eq!(r(&p("f16"), "norm.weight", Role::FinalNormWeight), QDType::F32);
    let keep = p("keep");
    assert_eq!(keep.resolve("layers.0.ssm.in_proj.weight", Role::InProj, true).0, QDType::Int8);
    assert_eq!(keep.resolve("embedding.weight", Role::Embedding, false).0, QDType::F32);
    assert!(QuantPolicy::parse_spec("int3").unwrap_err().contains("int3"));
    let pol = QuantPolicy::from_rules(Preset::F32, "embedding.weight = int4g8\n", "p").expect("parses");
    assert_eq!(r(&pol, "embedding.weight", Role::Embedding), QDType::Int4G8);
    assert!(QuantPolicy::from_rules(Preset::F32, "x = int4g7\n", "p").unwrap_err().contains("int4g8"));
}

#[test]
fn policy_file_rules_apply_in_order_and_errors_name_the_line() {
    let text = "# comment\n\nembedding.weight = f16\n*.in_proj.weight = int8   # trailing\nlayers.1.ssm.in_proj.weight = int4\n";
    let pol = QuantPolicy::from_rules(Preset::Mixed, text, "p.txt").expect("parses");
    assert_eq!(pol.rules.len(), 3);
    assert_eq!(pol.rules[1].line, 4);
    assert_eq!(pol.resolve("embedding.weight", Role::Embedding, false).0, QDType::F16);
    assert_eq!(pol.resolve("layers.0.ssm.in_proj.weight", Role::InProj, false).0, QDType::Int8);
    assert_eq!(pol.resolve("layers.1.ssm.in_proj.weight", Role::InProj, false).0, QDType::Int4);
    assert_eq!(pol.resolve("layers.0.ssm.out_proj.weight", Role::OutProj, false).0, QDType::Int4);
    let e = QuantPolicy::from_rules(Preset::Mixed, "a = int8\n*.B = int2\n", "p.txt").unwrap_err();
    assert!(e.contains("p.txt:2") && e.contains("int2"), "{e}");
    let e = QuantPolicy::from_rules(Preset::Mixed, "a = int8\nno equals sign\n", "p.txt").unwrap_err();
    assert!(e.contains("p.txt:2"), "{e}");
}

fn micro() -> Option<PathBuf> {
    Some(fixtures::dir()?.join("itera_lite_micro_distilled.pt"))
}

fn opts(spec: &str) -> PackOptions {
    PackOptions { quant: QuantPolicy::parse_spec(spec).expect("spec"), ..PackOptions::default() }
}

#[test]
fn a_rule_naming_an_always_f32_tensor_is_refused_with_its_line() {
    let Some(path) = micro() else { return };
    let sd = checkpoint::load(&path).expect("loads");
    let pol = QuantPolicy::from_rules(Preset::Mixed, "*.in_proj.weight = int8\n*.norm.weight = int8\n", "pol")
        .expect("parses");
    let o = PackOptions { quant: pol, ..PackOptions::default() };
    match itera_pack::convert::build(&sd, &o) {
        Err(ConvertError::Policy(m)) => assert!(m.contains("pol:2") && m.contains("always stay f32"), "{m}"),
        other => panic!("expected a policy error, got {:?}", other.map(|_| ())),
    }
    // A broad glob that also covers matrices is fine: the vectors simply stay f32.
    let pol = QuantPolicy::from_rules(Preset::Mixed, "* = int8\n", "pol").expect("parses");
    let o = PackOptions { quant: pol, ..PackOptions::default() };
    let b = itera_pack::convert::build(&sd, &o).expect("builds");
    assert!(b.tensors.iter().all(|t| !matches!(t.role, Role::SsmNormWeight) || matches!(t.payload, Payload::F32(_))));
}

#[test]
fn micro_checkpoint_sizes_per_preset() {
    let Some(path) = micro() else { return };
    let f32_blob = convert_file(&path, &PackOptions::default()).expect("f32");
    assert_eq!(f32_blob, convert_file(&path, &opts("f32")).expect("f32 spec"), "--quant f32 is the default");
    let base = f32_blob.len() as f64;
    // Issue 3's bounds (f16 <= 0.51x, int8 <= 0.27x, mixed <= 0.20x). Vectors stay f32
    // (about 1.3% of the f32 blob) and int8/int4 carry f16 scales, so these are close to
    // the floor.
    let mut sizes = Vec::new();
    for (spec, bound) in [("f16", 0.51), ("int8", 0.27), ("int4", 0.215), ("mixed", 0.20)] {
        let bytes = convert_file(&path, &opts(spec)).expect(spec);
        let ratio = bytes.len() as f64 / base;
        println!("{spec}: {} bytes, {ratio:.3}x the f32 blob ({} bytes)", bytes.len(), f32_blob.len());
        assert!(ratio <= bound, "{spec}: {ratio}");
        let aligned = AlignedBytes::from(bytes.as_slice());
        let blob = Blob::parse(&aligned).expect("parses");
        assert!(blob.tensors().all(|e| match e.role {
            Role::SsmNormWeight | Role::ALog | Role::D | Role::Gate | Role::ConvWeight => e.dtype == DType::F32,
            _ => true,
        }));
        let report = inspect::report(&aligned).expect("report");
        for t in &report.tensors {
            match (t.dtype.as_str(), t.sqnr_db) {
                ("F32", db) => assert_eq!(db, None, "{}", t.name),
                ("F16", Some(db)) => assert!(db > 50.0, "{}: {db}", t.name),
                ("I8", Some(db)) => assert!(db > 35.0, "{}: {db}", t.name),
                ("I4", Some(db)) => assert!(db > 15.0, "{}: {db}", t.name),
                (_, None) => assert!(t.shared, "{} has no SQNR", t.name),
                _ => {}
            }
        }
        sizes.push(bytes.len());
    }
    // f16 > int8 > int4 (int8 embedding) > mixed (int4g8 embedding, int4 elsewhere).
    assert!(sizes[3] < sizes[2] && sizes[2] < sizes[1] && sizes[1] < sizes[0]);
}

#[test]
fn tiny_int8_keeps_the_checkpoint_int8_values_exactly() {
    let Some(dir) = fixtures::dir() else { return };
    let path = dir.join("itera_lite_tiny_int8.pt");
    let sd = checkpoint::load(&path).expect("loads");
    let name = "layers.0.ssm.in_proj.weight";
    let Some(TensorData::QInt8 { q, scale, zero_point }) = sd.get(name).map(|t| t.data.clone()) else {
        panic!("{name} is qint8 in the fixture")
    };
    for spec in ["int8", "keep", "mixed:"] {
        let o = if spec == "mixed:" {
            // A policy file asking for int8 on that tensor keeps it too.
            let pol =
                QuantPolicy::from_rules(Preset::Mixed, "layers.0.ssm.in_proj.weight = int8\n", "pol").expect("parses");
            PackOptions { quant: pol, ..PackOptions::default() }
        } else {
            opts(spec)
        };
        let bytes = AlignedBytes::from(convert_file(&path, &o).expect("packs").as_slice());
        let blob = Blob::parse(&bytes).expect("parses");
        let e = blob.tensors().find(|e| e.role == Role::InProj && e.layer == 0).expect("in_proj");
        assert_eq!(e.dtype, DType::I8);
        let stored: Vec<i8> = blob.data(&e).iter().map(|&b| b as i8).collect();
        assert_eq!(stored, q, "{spec}: int8 values kept bit for bit");
        if zero_point == 0 && spec != "keep" {
            // int8 and mixed: the fast int8 x int8 kernels, one (equal) scale per row.
            assert!(matches!(e.quant, Quant::Grouped { .. }));
            let scales: Vec<f32> =
                blob.scales(&e).chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            assert_eq!(scales.len(), e.shape[0] as usize);
            assert!(scales.iter().all(|&s| s == scale as f32));
        } else {
            // keep (or a zero point): the affine pair, computed weight-only.
            assert_eq!(e.quant, Quant::PerTensor { scale: scale as f32, zero_point: zero_point as i32 });
        }
        let report = inspect::report(&bytes).expect("report");
        let row = report.tensors.iter().find(|t| t.name == name).expect("row");
        println!("{spec}: {name} SQNR {:?} dB", row.sqnr_db);
        assert!(row.sqnr_db.expect("recorded") > 100.0);
    }
}

#[test]
fn cli_quant_inspect_json_and_chart() {
    let Some(path) = micro() else { return };
    let scratch = Scratch::new("pack-quant");
    let out = scratch.path("mixed.itb");
    let policy = scratch.path("policy.txt");
    std::fs::write(&policy, "layers.0.ssm.in_proj.weight = int8\nnothing.matches.this = f16\n").expect("write");
    let spec = format!("mixed:{}", policy.display());
    let res = pack(&["convert", path.to_str().expect("utf8"), "-o", out.to_str().expect("utf8"), "--quant", &spec]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("warning") && stderr.contains(":2"), "{stderr}");
    let chart = scratch.path("sizes.svg");
    let res = pack(&["inspect", out.to_str().expect("utf8"), "--json", "--chart", chart.to_str().expect("utf8")]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    let rows = v["tensors"].as_array().expect("rows");
    let in0 = rows.iter().find(|r| r["name"] == "layers.0.ssm.in_proj.weight").expect("row");
    assert_eq!(in0["dtype"], "I8");
    assert!(in0["sqnr_db"].as_f64().expect("db") > 35.0);
    let in1 = rows.iter().find(|r| r["name"] == "layers.1.ssm.in_proj.weight").expect("row");
    assert_eq!(in1["dtype"], "I4");
    let gate = rows.iter().find(|r| r["role"] == "Gate").expect("row");
    assert!(gate["sqnr_db"].is_null(), "the router stays f32");
    let svg = std::fs::read_to_string(&chart).expect("chart");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for needle in ["embedding/positions", "layer 0", "layer 2", "head", "int4", "int8", "size (KiB)"] {
        assert!(svg.contains(needle), "chart lacks {needle}");
    }
    // A rule naming an always-f32 tensor is refused, naming the line.
    std::fs::write(&policy, "# x\nlayers.0.ssm.ssm.A_log = int8\n").expect("write");
    let spec = format!("mixed:{}", policy.display());
    let res = pack(&["convert", path.to_str().expect("utf8"), "-o", out.to_str().expect("utf8"), "--quant", &spec]);
    assert_eq!(res.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("policy.txt:2") && stderr.contains("A_log"), "{stderr}");
    // --help documents the presets.
    let help = pack(&["convert", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("mixed") && text.contains("pattern = dtype"), "{text}");
}
