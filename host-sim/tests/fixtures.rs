//! The engine against the published Itera-Lite micro model: pack the real checkpoint with
//! `itera-pack`, run the golden sequences, and require f32 agreement with the f64 reference.
//!
//! Fixtures come from `$ITERA_FIXTURES`, by default `../../shared/fixtures/itera-lite`
//! beside the repository. Missing fixtures skip the test, except under `CI=true`.

use std::path::PathBuf;

use itera_pack::inspect::AlignedBytes;
use itera_pack::PackOptions;
use itera_sim::engine::provenance_source;
use itera_sim::{open_model, Bounds, Golden};

fn fixtures() -> Option<PathBuf> {
    itera_pack::fixtures::dir()
}

#[test]
fn micro_distilled_matches_the_golden_logits() {
    let Some(dir) = fixtures() else { return };
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
