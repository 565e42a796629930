//! Sessions on a host: arenas sized by the model, the arena's bounds, and a blob read part
//! by part as a firmware would.

use itera_edge::{Blob, Error, Model, Session};
use itera_pack::AlignedBytes;

/// A zeroed arena of exactly `model.arena_bytes()`: one token at a time.
pub fn arena(model: &Model) -> AlignedBytes {
    AlignedBytes::zeroed(model.arena_bytes())
}

/// A zeroed arena of `model.prefill_arena_bytes()`: prompts run in blocks.
pub fn prefill_arena(model: &Model) -> AlignedBytes {
    AlignedBytes::zeroed(model.prefill_arena_bytes())
}

/// Asserts the arena's bounds on `model`: one byte short is refused with the exact sizes,
/// a misaligned start is refused, and the exact size runs a step to finite logits.
pub fn assert_arena_bounds(model: &Model) {
    let needed = model.arena_bytes();
    // One byte more than needed, so that the misaligned slice still has the whole size.
    let mut arena = AlignedBytes::zeroed(needed + 1);
    let err = Session::new(model, &mut arena[..needed - 1]).err();
    assert_eq!(err, Some(Error::ArenaTooSmall { needed, available: needed - 1 }));
    assert_eq!(Session::new(model, &mut arena[1..needed + 1]).err(), Some(Error::ArenaNotAligned));
    let mut s = Session::new(model, &mut arena[..needed]).expect("the exact arena");
    assert!(s.step(1).expect("step").iter().all(|v| v.is_finite()));
}

/// The model of `blob`, after reading every part a firmware reads: each tensor's data and
/// scales, the provenance, and the tokenizer's first `ids` ids and two past them (the last
/// ones possibly out of range). Any refusal is a typed `Error`.
pub fn open_every_part<'a>(blob: &Blob<'a>, ids: u32) -> Result<Model<'a>, Error> {
    for e in blob.tensors() {
        let _ = (blob.data(&e).len(), blob.scales(&e).len());
    }
    for (k, v) in blob.provenance() {
        let _ = (k.len(), v.len());
    }
    let model = Model::new(blob)?;
    if let Some(t) = model.tokenizer() {
        for id in 0..t.len().min(ids) + 2 {
            let _ = t.id_of(t.decode(id));
        }
    }
    Ok(model)
}

/// The logits after each of `tokens`, one at a time from an empty state on the minimal
/// arena, flattened (`tokens.len()` rows of `vocab`). `bytes` need not be aligned: they
/// are copied into an aligned buffer first.
pub fn logits_after_each(bytes: &[u8], tokens: &[u32]) -> Vec<f32> {
    let bytes = AlignedBytes::from(bytes);
    let blob = Blob::parse(&bytes).expect("the blob parses");
    let model = Model::new(&blob).expect("the model builds");
    let mut arena = arena(&model);
    let mut session = Session::new(&model, &mut arena).expect("the arena fits");
    tokens.iter().flat_map(|&t| session.step(t).expect("step").to_vec()).collect()
}
