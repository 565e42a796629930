//! The core against the golden logits of an independent float64 reference, through the real
//! packer path: every golden file must agree to max |Δlogit| <= 1e-3 with 100% top-1, packed
//! as f32 and with `--quant keep` (a PyTorch int8 checkpoint runs on its own int8 weights).

use itera_edge::format::DType;
use itera_edge::{sample::argmax, Blob, Model, Session};
use itera_pack::inspect::AlignedBytes;
use itera_pack::quant::QuantPolicy;
use itera_pack::{convert_file, fixtures, PackOptions};
use serde_json::Value;

/// Runs `tokens` one at a time and returns the logits after each, flattened.
fn run(blob: &[u8], tokens: &[u32]) -> Vec<f32> {
    let blob = Blob::parse(blob).expect("blob parses");
    let model = Model::new(&blob).expect("model builds");
    let mut arena = vec![0u32; model.arena_bytes().div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena)).expect("arena fits");
    tokens.iter().flat_map(|&t| session.step(t).expect("step").to_vec()).collect()
}

#[test]
fn every_golden_file_matches_within_1e_3_with_full_top1() {
    let Some(dir) = fixtures::dir() else { return };
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("golden")).expect("golden dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let golden: Value = serde_json::from_slice(&std::fs::read(&path).expect("read json")).expect("json");
        let checkpoint = golden["checkpoint"].as_str().expect("checkpoint");
        let top_k = golden["top_k_experts"].as_u64().expect("top_k") as u32;
        let vocab = golden["vocab"].as_u64().expect("vocab") as usize;
        let tokens: Vec<u32> =
            golden["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id") as u32).collect();
        let expected: Vec<f32> =
            std::fs::read(dir.join("golden").join(golden["logits_file"].as_str().expect("logits_file")))
                .expect("read f32")
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
        assert_eq!(expected.len(), tokens.len() * vocab);

        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for quant in ["f32", "keep"] {
            let opts =
                PackOptions { top_k, quant: QuantPolicy::parse_spec(quant).expect("preset"), ..Default::default() };
            let blob = AlignedBytes::from(convert_file(&dir.join(checkpoint), &opts).expect("convert").as_slice());
            let int8 = Blob::parse(&blob).expect("parses").tensors().filter(|e| e.dtype == DType::I8).count();
            if checkpoint.contains("int8") {
                // `keep` runs the checkpoint's own int8 weights; f32 dequantizes them.
                assert_eq!(int8 > 0, quant == "keep", "{name} --quant {quant}: {int8} int8 tensors");
            }
            let got = run(&blob, &tokens);
            assert_eq!(got.len(), expected.len());

            let max_abs = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let top1 = got
                .chunks_exact(vocab)
                .zip(expected.chunks_exact(vocab))
                .filter(|(a, b)| argmax(a) == argmax(b))
                .count();
            eprintln!("{name} --quant {quant}: max |dlogit| = {max_abs:.3e}, top-1 {top1}/{}", tokens.len());
            assert!(max_abs <= 1e-3, "{name} --quant {quant}: max |dlogit| {max_abs} > 1e-3");
            assert_eq!(top1, tokens.len(), "{name} --quant {quant}: top-1 agreement");
        }
        checked += 1;
    }
    assert!(checked >= 3, "expected at least 3 golden files, found {checked}");
}
