//! Property tests over extreme quantization parameters (issue 12, class 2), meant to run in
//! the test profile, where overflow checks are on: `cargo test -p itera-edge --test
//! quant_extremes` (not `--release`).
//!
//! Blobs are crafted past the packer (a packed blob's manifest or scale bytes edited and
//! resealed, `support::craft`): every value outside the documented ranges must be refused
//! by `Blob::parse` with a typed error naming the tensor; every value inside, the edges
//! included, must reach the kernels through a session without a panic (an overflow would
//! be one here) and give the product the format defines.

use std::sync::LazyLock;

use half::f16;
use itera_edge::error::TensorName;
use itera_edge::format::{Quant, Role, MAX_SCALE};
use itera_edge::kernels::{Matrix, Weights};
use itera_edge::{Blob, Error, Model, Session};
use itera_pack::AlignedBytes;
use itera_test_support::craft::{edit_bytes, edit_manifest, scale_at, scale_count, tiny, Manifest, Storage};
use itera_test_support::session::prefill_arena;
use proptest::prelude::*;

static AFFINE: LazyLock<Vec<u8>> = LazyLock::new(|| tiny(Storage::Affine, None));
static INT8_F16: LazyLock<Vec<u8>> = LazyLock::new(|| tiny(Storage::Int8F16, None));
static INT4_F16: LazyLock<Vec<u8>> = LazyLock::new(|| tiny(Storage::Int4F16, None));
static INT8_F32: LazyLock<Vec<u8>> = LazyLock::new(|| tiny(Storage::Int8F32, None));

/// Parses `bytes` and, if it parses, runs a session over a prompt and a few steps.
fn run(bytes: &[u8]) -> Result<Vec<f32>, Error> {
    let aligned = AlignedBytes::from(bytes);
    let blob = Blob::parse(&aligned)?;
    let model = Model::new(&blob)?;
    let c = *model.config();
    let mut arena = prefill_arena(&model);
    let mut s = Session::new(&model, &mut arena)?;
    s.prefill(&[1, 7, 3, 40, 2])?;
    for t in [5, 0, c.vocab - 1] {
        s.step(t)?;
    }
    Ok(s.logits().to_vec())
}

/// The `which`-th per-tensor entry of the affine blob (a matrix of some layer).
fn affine_target(which: prop::sample::Index) -> TensorName {
    let m = Manifest::of(&AFFINE);
    let all: Vec<_> = m.per_tensor().collect();
    all[which.index(all.len())].name()
}

/// The affine blob with `target`'s quantizer set to `scale` and `zero_point`.
fn with_affine(target: TensorName, scale: f32, zero_point: i32) -> Vec<u8> {
    edit_manifest(&AFFINE, |m| {
        let e = m.tensors.iter_mut().find(|e| e.name() == target).expect("target");
        e.quant = Quant::PerTensor { scale, zero_point };
    })
}

/// Zero points outside qint8's range, biased to the i32 extremes and the edges.
fn bad_zero_point() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MIN),
        Just(i32::MAX),
        Just(-129),
        Just(128),
        Just(i32::MIN + 1),
        Just(i32::MAX - 1),
        i32::MIN..-128,
        128..=i32::MAX,
    ]
}

/// f32 values no per-tensor scale may take: NaN (any payload), infinities, zeros,
/// subnormals, negatives, and above `MAX_SCALE`.
fn bad_scale() -> impl Strategy<Value = f32> {
    prop_oneof![
        (0x7F80_0001u32..=0x7FFF_FFFF).prop_map(f32::from_bits),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        (1u32..0x0080_0000).prop_map(f32::from_bits),
        Just(f32::from_bits(1)),
        (f32::MIN_POSITIVE..1e30f32).prop_map(|v| -v),
        Just(MAX_SCALE.next_up()),
        (MAX_SCALE.next_up()..f32::MAX),
        Just(f32::MAX),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_zero_point_outside_qint8_is_refused_naming_the_tensor(
        which in any::<prop::sample::Index>(),
        zero_point in bad_zero_point(),
    ) {
        let target = affine_target(which);
        let err = run(&with_affine(target, 0.01, zero_point)).expect_err("refused");
        prop_assert_eq!(err, Error::ZeroPointOutOfRange { tensor: target, zero_point });
        let line = err.to_string();
        prop_assert!(line.contains(&target.to_string()) && line.contains("-128..=127"), "{}", line);
    }

    /// Every qint8 zero point, with the tensor's values forced to the extremes -128 and 127
    /// (so `q - zero_point` spans -255..=255), runs with overflow checks on.
    #[test]
    fn every_qint8_zero_point_reaches_the_kernels_without_overflow(
        which in any::<prop::sample::Index>(),
        zero_point in prop_oneof![Just(-128), Just(127), -128..=127i32],
        pattern in prop::collection::vec(prop_oneof![Just(0x80u8), Just(0x7F), any::<u8>()], 1..16),
    ) {
        let target = affine_target(which);
        let crafted = with_affine(target, 0.01, zero_point);
        let m = Manifest::of(&crafted);
        let e = *m.tensors.iter().find(|e| e.name() == target).expect("target");
        let crafted = edit_bytes(&crafted, |b| {
            let data = &mut b[e.offset as usize..(e.offset + e.len) as usize];
            for (v, p) in data.iter_mut().zip(pattern.iter().cycle()) {
                *v = *p;
            }
        });
        let logits = run(&crafted).expect("an in-range zero point runs");
        prop_assert_eq!(logits.len(), m.head.config.vocab as usize);
    }

    #[test]
    fn a_per_tensor_scale_that_is_not_a_normal_number_up_to_max_scale_is_refused(
        which in any::<prop::sample::Index>(),
        scale in bad_scale(),
    ) {
        let target = affine_target(which);
        match run(&with_affine(target, scale, 0)) {
            Err(Error::BadScale { tensor, index: None, value }) => {
                prop_assert_eq!(tensor, target);
                prop_assert_eq!(value.to_bits(), scale.to_bits());
            }
            other => prop_assert!(false, "scale {:e} ({:#x}): {:?}", scale, scale.to_bits(), other),
        }
    }

    /// The accepted edges (the smallest normal scale, `MAX_SCALE`) and values between run.
    #[test]
    fn a_per_tensor_scale_within_range_runs(
        which in any::<prop::sample::Index>(),
        scale in prop_oneof![Just(f32::MIN_POSITIVE), Just(MAX_SCALE), f32::MIN_POSITIVE..=MAX_SCALE],
        zero_point in prop_oneof![Just(-128), Just(127)],
    ) {
        let target = affine_target(which);
        prop_assert!(run(&with_affine(target, scale, zero_point)).is_ok());
    }

    /// f16 table entries: NaN, infinities, a set sign bit and zero are refused naming the
    /// tensor and the entry; every positive finite f16, subnormals included, runs.
    #[test]
    fn an_f16_scale_table_entry_is_checked(
        int4 in any::<bool>(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        bits in prop_oneof![
            Just(0x7C00u16), Just(0xFC00), Just(0x7E00), 0x7C01u16..=0x7FFF,
            0x8000u16..=0xFFFF, Just(0x0000), Just(0x0001), Just(0x03FF), Just(0x7BFF), 0x0001u16..0x7C00,
        ],
    ) {
        let blob: &[u8] = if int4 { &INT4_F16 } else { &INT8_F16 };
        let value = f16::from_bits(bits).to_f32();
        check_table_entry(blob, which, at, &bits.to_le_bytes(), value, value > 0.0 && value.is_finite())?;
    }

    #[test]
    fn an_f32_scale_table_entry_is_checked(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        value in prop_oneof![
            bad_scale(),
            Just(f32::from_bits(1)),
            (1u32..0x0080_0000).prop_map(f32::from_bits),
            Just(MAX_SCALE),
            f32::MIN_POSITIVE..=MAX_SCALE,
        ],
    ) {
        let ok = value > 0.0 && value <= MAX_SCALE;
        check_table_entry(&INT8_F32, which, at, &value.to_le_bytes(), value, ok)?;
    }

    /// The kernels themselves, for every i8 zero point and extreme values, against the
    /// exact product: `(Σ (q - zp)·x) · scale`, no overflow anywhere.
    #[test]
    fn the_affine_kernel_is_exact_for_every_zero_point(
        zero_point in any::<i8>(),
        q in prop::collection::vec(prop_oneof![Just(i8::MIN), Just(i8::MAX), any::<i8>()], 24),
        x in prop::collection::vec(-4.0f32..4.0, 8),
    ) {
        let m = Matrix::new(3, 8, Weights::I8Affine { q: &q, scale: 0.5, zero_point }).expect("shape");
        let mut y = [0f32; 3];
        m.matvec(&x, &mut y, &mut []);
        for (r, &got) in y.iter().enumerate() {
            let want: f64 = (0..8).map(|c| (q[r * 8 + c] as f64 - zero_point as f64) * x[c] as f64).sum::<f64>() * 0.5;
            let mag: f64 = (0..8).map(|c| ((q[r * 8 + c] as f64 - zero_point as f64) * x[c] as f64).abs()).sum();
            prop_assert!((got as f64 - want).abs() <= 1e-5 * mag.max(1.0), "row {}: {} vs {}", r, got, want);
        }
    }
}

/// Writes `raw` over entry `at` of the `which`-th scale table of `blob`; the blob must parse
/// and run if `ok`, else be refused with `BadScale` naming that tensor and entry.
fn check_table_entry(
    blob: &[u8],
    which: prop::sample::Index,
    at: prop::sample::Index,
    raw: &[u8],
    value: f32,
    ok: bool,
) -> Result<(), TestCaseError> {
    let m = Manifest::of(blob);
    // A tied `lm_head` shares the embedding's table: the parser names the embedding.
    let tables: Vec<_> = m.grouped().filter(|e| !(m.head.config.tied_lm_head && e.role == Role::LmHead)).collect();
    let e = *tables[which.index(tables.len())];
    let index = at.index(scale_count(&e));
    let (pos, width) = scale_at(&e, index);
    prop_assert_eq!(width, raw.len());
    let crafted = edit_bytes(blob, |b| b[pos..pos + width].copy_from_slice(raw));
    match run(&crafted) {
        Ok(logits) => prop_assert!(ok && logits.len() == m.head.config.vocab as usize, "{:e} accepted", value),
        Err(Error::BadScale { tensor, index: Some(i), value: v }) => {
            prop_assert!(!ok, "{:e} refused", value);
            prop_assert_eq!((tensor, i as usize), (e.name(), index));
            // NaN payloads may differ (a signalling NaN converts to a quiet one).
            prop_assert!(v.to_bits() == value.to_bits() || (v.is_nan() && value.is_nan()), "{:e} vs {:e}", v, value);
        }
        Err(other) => prop_assert!(false, "{:e}: {:?}", value, other),
    }
    Ok(())
}

/// Each refusal is one line that names the tensor and says what to do.
#[test]
fn quantization_refusals_name_the_tensor_and_what_to_do() {
    let target = TensorName { role: Role::ExpertW1, layer: 1, expert: 2 };
    let crafted = with_affine(target, f32::NAN, 0);
    let line = run(&crafted).expect_err("refused").to_string();
    assert!(line.contains("ExpertW1 of expert 2 of layer 1") && line.contains("NaN"), "{line}");
    assert!(line.contains("itera-pack convert") && !line.contains('\n'), "{line}");
    let crafted = with_affine(target, 0.01, 1 << 30);
    let line = run(&crafted).expect_err("refused").to_string();
    assert!(line.contains("zero point 1073741824") && line.contains("ExpertW1 of expert 2"), "{line}");
}

/// The unedited blobs run: the properties above edit blobs that are otherwise sound.
#[test]
fn the_unedited_blobs_run() {
    for b in [&*AFFINE, &*INT8_F16, &*INT4_F16, &*INT8_F32] {
        let logits = run(b).expect("runs");
        assert!(logits.iter().all(|v| v.is_finite()));
    }
    assert_eq!(Manifest::of(&AFFINE).per_tensor().count(), Manifest::of(&INT8_F32).grouped().count());
}
