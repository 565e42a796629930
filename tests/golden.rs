//! The core against the golden logits of an independent float64 reference, through the real
//! packer path: every golden file must agree to max |Δlogit| <= 1e-3 with 100% top-1, packed
//! as f32 and with `--quant keep` (a PyTorch int8 checkpoint runs on its own int8 weights).

use itera_edge::format::DType;
use itera_edge::{sample::argmax, Blob};
use itera_pack::quant::QuantPolicy;
use itera_pack::{convert_file, AlignedBytes, PackOptions};
use itera_test_support::session::logits_after_each;
use itera_test_support::{fixtures, golden};

#[test]
fn every_golden_file_matches_within_1e_3_with_full_top1() {
    let Some(dir) = fixtures::dir() else { return };
    let mut checked = 0;
    for g in golden::all(&dir) {
        let (name, top_k, vocab, tokens, expected) = (&g.name, g.top_k, g.vocab, &g.tokens, &g.logits);
        let checkpoint = g.checkpoint.to_string_lossy();
        for quant in ["f32", "keep"] {
            let opts = PackOptions {
                top_k: Some(top_k),
                quant: QuantPolicy::parse_spec(quant).expect("preset"),
                ..Default::default()
            };
            let blob = AlignedBytes::from(convert_file(&g.checkpoint, &opts).expect("convert").as_slice());
            let int8 = Blob::parse(&blob).expect("parses").tensors().filter(|e| e.dtype == DType::I8).count();
            if checkpoint.contains("int8") {
                // `keep` runs the checkpoint's own int8 weights; f32 dequantizes them.
                assert_eq!(int8 > 0, quant == "keep", "{name} --quant {quant}: {int8} int8 tensors");
            }
            let got = logits_after_each(&blob, tokens);
            assert_eq!(got.len(), expected.len());

            let max_abs = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
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
