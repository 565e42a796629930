//! The engine against the published Itera-Lite micro model: pack the real checkpoint with
//! `itera-pack`, run the golden sequences, and require f32 agreement with the f64 reference.
//!
//! Fixtures come from `$ITERA_FIXTURES`, by default `../../shared/fixtures/itera-lite`
//! beside the repository. Missing fixtures skip the test, except under `CI=true`.

use itera_pack::AlignedBytes;
use itera_pack::PackOptions;
use itera_sim::engine::provenance_source;
use itera_sim::{open_model, Bounds, Golden};

#[test]
fn micro_distilled_matches_the_golden_logits() {
    let Some(dir) = itera_test_support::fixtures::dir() else { return };
    let opts = PackOptions { top_k: Some(2), ..PackOptions::default() };
    let bytes =
        itera_pack::convert_file(&dir.join("itera_lite_micro_distilled.pt"), &opts).expect("pack the checkpoint");
    let bytes = AlignedBytes::from(bytes.as_slice());
    let model = open_model(&bytes).expect("the packed blob parses");
    let bounds = Bounds { tol: 1e-3, min_top1: 1.0 };
    for name in ["micro_distilled_random40.json", "micro_distilled_story128.json"] {
        let golden = Golden::load(&dir.join("golden").join(name)).expect("golden loads");
        assert_eq!(golden.top_k_warning(model.config()), None);
        assert_eq!(golden.checkpoint_warning(provenance_source(&bytes).as_deref()), None);
        let m = golden.check(&model, |_, _| ()).expect("check runs");
        println!(
            "{name}: max_abs_diff {:.3e}, rmse {:.3e}, cosine {:.12}, top1_agreement {} ({} positions x {} vocab)",
            m.max_abs_diff, m.rmse, m.cosine, m.top1_agreement, m.positions, m.vocab
        );
        assert!(m.max_abs_diff <= 1e-3, "{name}: {m:?}");
        assert_eq!(m.top1_agreement, 1.0, "{name}: {m:?}");
        assert!(m.verdict(&bounds).is_ok());
    }
}

/// The seed's INT4 checkpoint, its TorchScript export and its ONNX export hold the same
/// weights: packed as f32, all three give the same logits, bit for bit, over the story
/// sequence (the ONNX file's `lm_head` is an untied copy of the embedding: stored once).
#[test]
fn every_published_export_packs_to_the_same_logits() {
    let Some(dir) = itera_test_support::fixtures::dir() else { return };
    let golden = Golden::load(&dir.join("golden").join("micro_distilled_story128.json")).expect("golden loads");
    let logits = |file: &str| {
        let bytes = itera_pack::convert_file(&dir.join(file), &PackOptions::default()).expect(file);
        let bytes = AlignedBytes::from(bytes.as_slice());
        let model = open_model(&bytes).expect("the packed blob parses");
        assert_eq!(model.config().top_k, 2, "{file}: top-k from its config, traced code or TopK node");
        itera_sim::engine::logits_for_tokens(&model, &golden.tokens, |_, _| ()).expect("runs")
    };
    let int4 = logits("itera_lite_int4.pt");
    for file in ["itera_lite_micro_torchscript.pt", "itera_lite_micro.onnx"] {
        let other = logits(file);
        let same = int4.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && int4.len() == other.len(), "{file}: logits differ from itera_lite_int4.pt's");
    }
}
