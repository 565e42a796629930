//! The f16, int8 and int4 kernels against independent references, and whole models packed
//! with each dtype against the same model in f32.

use half::f16;
use itera_edge::checksum::{fnv1a_f32, FNV_OFFSET};
use itera_edge::kernels::{Matrix, Rows, RowsMut, Scales, Weights};
use itera_edge::{sample::argmax, Blob, Model, Rng, Session};
use itera_pack::synthetic::{micro_config, tiny_config};
use itera_pack::writer::{BlobBuilder, Payload};
use itera_pack::{AlignedBytes, PackOptions};
use itera_test_support::craft::is_matrix;
use itera_test_support::session::{arena, assert_arena_bounds, prefill_arena};

static PATH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` once per kernel path this machine has (portable, then AVX2 where the CPU has it),
/// with the path's name. Tests hold a lock so the global path never switches under another.
#[allow(unsafe_code)]
fn for_each_path(mut f: impl FnMut(&str)) {
    let _guard = PATH.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(target_arch = "x86_64")]
    itera_edge::kernels::disable_avx2();
    f("scalar");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        // SAFETY: both features were just detected.
        unsafe { itera_edge::kernels::enable_avx2() };
        f("avx2");
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            // SAFETY: detected just now.
            unsafe { itera_edge::kernels::enable_avx512_vnni() };
            f("avx2-vnni");
        }
        itera_edge::kernels::disable_avx2();
    }
}

/// The kernel-name suffix of a float or int4 kernel on `path` (VNNI only changes int8).
fn family(path: &str) -> &'static str {
    if path == "scalar" {
        "scalar"
    } else {
        "avx2"
    }
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * (2.0 * rng.next_f32() - 1.0)).collect()
}

/// The input quantization, written out independently: symmetric, `max|x| / 127`.
fn quantize_ref(x: &[f32]) -> Option<(f32, Vec<i8>)> {
    let amax = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    if amax == 0.0 {
        return None;
    }
    let sx = amax / 127.0;
    Some((sx, x.iter().map(|v| (v / sx).round().clamp(-127.0, 127.0) as i8).collect()))
}

/// A quantized matrix as plain values: `w[r][c] = (q - zp) * scale[r][c / group]`.
struct Quantized {
    rows: usize,
    cols: usize,
    q: Vec<i8>,
    group: usize,
    scales: Vec<f32>,
    zero_point: i32,
}

impl Quantized {
    fn groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    fn scale(&self, r: usize, c: usize) -> f32 {
        if self.scales.len() == 1 {
            self.scales[0]
        } else {
            self.scales[r * self.groups() + c / self.group]
        }
    }

    fn value(&self, r: usize, c: usize) -> f32 {
        (self.q[r * self.cols + c] as i32 - self.zero_point) as f32 * self.scale(r, c)
    }

    /// Bit-exact scalar model of the integer kernel: exact integer sums per group, then
    /// `Σ_g acc_g as f32 * s_g` in group order, times `sx`.
    fn int_ref(&self, x: &[f32]) -> Vec<f32> {
        let Some((sx, xq)) = quantize_ref(x) else { return vec![0.0; self.rows] };
        (0..self.rows)
            .map(|r| {
                let mut sum = 0.0f32;
                for g in 0..self.groups() {
                    let cols = g * self.group..((g + 1) * self.group).min(self.cols);
                    let acc: i64 = cols
                        .clone()
                        .map(|c| (self.q[r * self.cols + c] as i64 - self.zero_point as i64) * xq[c] as i64)
                        .sum();
                    sum += acc as f32 * self.scale(r, g * self.group);
                }
                sum * sx
            })
            .collect()
    }

    /// f64 product of the dequantized weights with the dequantized input; also returns
    /// `Σ |w·x|` per row, the scale the error is measured against.
    fn f64_ref(&self, x: &[f32]) -> Vec<(f64, f64)> {
        let Some((sx, xq)) = quantize_ref(x) else { return vec![(0.0, 0.0); self.rows] };
        (0..self.rows)
            .map(|r| {
                let terms = (0..self.cols).map(|c| self.value(r, c) as f64 * (xq[c] as f64 * sx as f64));
                terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()))
            })
            .collect()
    }
}

fn quantize_i8(rng: &mut Rng, rows: usize, cols: usize, group: usize) -> Quantized {
    let q = (0..rows * cols).map(|_| (rng.next_u32() % 256) as u8 as i8).collect();
    let scales = random(rng, rows * cols.div_ceil(group), 0.01).iter().map(|s| s.abs() + 1e-3).collect();
    Quantized { rows, cols, q, group, scales, zero_point: 0 }
}

fn quantize_i4(rng: &mut Rng, rows: usize, cols: usize, group: usize) -> Quantized {
    let q = (0..rows * cols).map(|_| (rng.next_u32() % 16) as i8 - 8).collect();
    let scales =
        random(rng, rows * cols.div_ceil(group), 0.05).iter().map(|s| f16::from_f32(s.abs() + 1e-3).to_f32()).collect();
    Quantized { rows, cols, q, group, scales, zero_point: 0 }
}

/// Packs int4 values row by row, low nibble first (as the packer writes them).
fn pack_i4(q: &[i8], cols: usize) -> Vec<u8> {
    q.chunks(cols)
        .flat_map(|row| row.chunks(2).map(|p| (p[0] as u8 & 0x0F) | ((*p.get(1).unwrap_or(&0) as u8) << 4)))
        .collect()
}

fn check(name: &str, m: &Matrix<'_>, reference: &Quantized, x: &[f32]) {
    let mut y = vec![f32::NAN; m.rows()];
    let mut scratch = vec![0i8; m.cols()];
    m.matvec(x, &mut y, &mut scratch);
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        reference.int_ref(x).iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{name}: integer kernel differs from the scalar integer reference"
    );
    for (r, (&got, (want, mag))) in y.iter().zip(reference.f64_ref(x)).enumerate() {
        assert!((got as f64 - want).abs() <= 1e-4 * mag.max(1e-30), "{name} row {r}: {got} vs {want} (Σ|t| {mag})");
    }
    for r in [0, m.rows() / 2, m.rows() - 1] {
        let mut row = vec![1.0f32; m.cols()];
        m.add_row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            assert_eq!(*v, 1.0 + reference.value(r, c), "{name}: add_row({r})[{c}]");
        }
    }
}

const SHAPES: [(usize, usize, usize); 16] = [
    (9, 64, 32),
    (13, 8, 8),
    (5, 32, 32),
    (5, 64, 64),
    (7, 96, 32),
    (3, 19, 19),
    (4, 40, 8),
    (6, 128, 32),
    (3, 13, 13),
    (4, 50, 10),
    (2, 200, 200),
    (11, 72, 72),
    (9, 128, 128),
    // Scales per 8 (the mixed preset's head): the AVX2 path's 8-row blocks and remainders.
    (13, 64, 8),
    (9, 128, 8),
    (3, 192, 8),
];

#[test]
fn int8_grouped_and_per_row_match_both_references() {
    for_each_path(|path| {
        let mut rng = Rng::new(7);
        for (rows, cols, group) in SHAPES {
            let r = quantize_i8(&mut rng, rows, cols, group);
            let w = Weights::I8 { q: &r.q, scales: Scales::F32(&r.scales), group };
            let m = Matrix::new(rows, cols, w).expect("shape");
            assert_eq!(m.kernel_name(), format!("i8-{path}"));
            for scale in [1.0, 1e-3, 50.0] {
                check(&format!("i8 {rows}x{cols}/{group}"), &m, &r, &random(&mut rng, cols, scale));
            }
            let zeros = vec![0.0; cols];
            check("i8 zero input", &m, &r, &zeros);
        }
    });
}

#[test]
fn int8_per_tensor_affine_is_weight_only_and_path_independent() {
    // Weight-only: the f32 input meets the dequantized weights, so the result tracks the f64
    // product of the dequantized matrix with the *unquantized* input, and every kernel path
    // gives the same bits (one fixed order of float operations).
    let mut first: Option<Vec<u32>> = None;
    for_each_path(|path| {
        let mut rng = Rng::new(8);
        let mut bits = Vec::new();
        for (rows, cols, _) in SHAPES {
            for zero_point in [0, -3, 17, -128] {
                let mut r = quantize_i8(&mut rng, rows, cols, cols);
                r.scales = vec![0.0123];
                r.zero_point = zero_point.into();
                let m =
                    Matrix::new(rows, cols, Weights::I8Affine { q: &r.q, scale: 0.0123, zero_point }).expect("shape");
                assert_eq!(m.kernel_name(), format!("i8w-{}", family(path)));
                assert!(!m.needs_scratch());
                let x = random(&mut rng, cols, 2.0);
                let mut y = vec![f32::NAN; rows];
                m.matvec(&x, &mut y, &mut []);
                for (row, &got) in y.iter().enumerate() {
                    let terms = (0..cols).map(|c| r.value(row, c) as f64 * x[c] as f64);
                    let (want, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + f64::abs(t)));
                    assert!((got as f64 - want).abs() <= 1e-6 * mag, "{rows}x{cols} zp {zero_point} row {row}");
                }
                let mut row = vec![1.0f32; cols];
                m.add_row(rows - 1, &mut row);
                for (c, v) in row.iter().enumerate() {
                    assert_eq!(*v, 1.0 + r.value(rows - 1, c), "add_row[{c}]");
                }
                bits.extend(y.iter().map(|v| v.to_bits()));
            }
        }
        match &first {
            None => first = Some(bits),
            Some(f) => assert!(f == &bits, "{path} differs from the portable path"),
        }
    });
}

#[test]
fn int4_matches_both_references() {
    for_each_path(|path| {
        let mut rng = Rng::new(9);
        for (rows, cols, group) in SHAPES {
            if group % 2 == 1 && group < cols {
                continue;
            }
            let r = quantize_i4(&mut rng, rows, cols, group);
            let packed = pack_i4(&r.q, cols);
            let scales: Vec<f16> = r.scales.iter().map(|&s| f16::from_f32(s)).collect();
            let m = Matrix::new(rows, cols, Weights::I4 { packed: &packed, scales: Scales::F16(&scales), group })
                .expect("shape");
            assert_eq!(m.kernel_name(), format!("i4-{}", family(path)));
            for scale in [1.0, 1e-3, 50.0] {
                check(&format!("i4 {rows}x{cols}/{group}"), &m, &r, &random(&mut rng, cols, scale));
            }
        }
    });
}

#[test]
fn f16_equals_f32_of_the_converted_weights() {
    for_each_path(|_path| {
        let mut rng = Rng::new(10);
        for (rows, cols, _) in SHAPES {
            let w: Vec<f16> = random(&mut rng, rows * cols, 0.3).into_iter().map(f16::from_f32).collect();
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let (a, b) = (
                Matrix::new(rows, cols, Weights::F16(&w)).unwrap(),
                Matrix::new(rows, cols, Weights::F32(&wf)).unwrap(),
            );
            assert!(a.kernel_name().starts_with("f16-"), "{}", a.kernel_name());
            let x = random(&mut rng, cols, 1.0);
            let (mut ya, mut yb) = (vec![0.0; rows], vec![0.0; rows]);
            a.matvec(&x, &mut ya, &mut []);
            b.matvec(&x, &mut yb, &mut []);
            assert_eq!(ya, yb);
            let (mut ra, mut rb) = (vec![0.5; cols], vec![0.5; cols]);
            a.add_row(rows - 1, &mut ra);
            b.add_row(rows - 1, &mut rb);
            assert_eq!(ra, rb);
        }
    });
}

#[test]
fn malformed_quantized_matrices_are_refused_not_run() {
    let q = [0i8; 12];
    let i8m = |rows, cols, group, scales: &'static [f32]| {
        Matrix::new(rows, cols, Weights::I8 { q: &q, scales: Scales::F32(scales), group }).is_some()
    };
    assert!(i8m(3, 4, 4, &[1.0; 3]));
    assert!(!i8m(3, 4, 4, &[1.0; 2]), "too few scales");
    assert!(!i8m(3, 4, 0, &[1.0; 3]), "group 0");
    assert!(!i8m(4, 4, 4, &[1.0; 4]), "too few elements");
    let packed = [0u8; 6];
    let s16 = [f16::ONE; 6];
    assert!(Matrix::new(3, 4, Weights::I4 { packed: &packed, scales: Scales::F16(&s16[..3]), group: 4 }).is_some());
    assert!(Matrix::new(3, 3, Weights::I4 { packed: &packed, scales: Scales::F16(&s16[..3]), group: 3 }).is_some());
    assert!(Matrix::new(3, 4, Weights::I4 { packed: &packed[..5], scales: Scales::F16(&s16[..3]), group: 4 }).is_none());
    assert!(Matrix::new(3, 4, Weights::I4 { packed: &packed, scales: Scales::F16(&s16), group: 1 }).is_none());
    let affine = |n: usize, scale: f32| Matrix::new(3, 4, Weights::I8Affine { q: &q[..n], scale, zero_point: 3 });
    assert!(affine(12, 0.5).is_some());
    assert!(affine(11, 0.5).is_none(), "too few elements");
    assert!(affine(12, f32::NAN).is_none(), "NaN scale");
}

// ---------------------------------------------------------------------------------------
// Whole models.

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    F16,
    I8,
    I8Affine,
    I4,
    I4Tensor,
}

/// Symmetric per-group quantization with `qmax` levels each side.
fn symmetric(w: &[f32], cols: usize, group: usize, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::new();
    for row in w.chunks(cols) {
        for g in row.chunks(group) {
            let amax = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / qmax } else { 1.0 };
            let s = if qmax < 100.0 { f16::from_f32(s).to_f32() } else { s };
            scales.push(s);
            q.extend(g.iter().map(|v| (v / s).round().clamp(-qmax - 1.0, qmax) as i8));
        }
    }
    (q, scales)
}

fn convert(b: &mut BlobBuilder, kind: Kind) {
    for t in &mut b.tensors {
        let Payload::F32(w) = &t.payload else { continue };
        if !is_matrix(t.role) {
            continue;
        }
        let cols = t.shape[1] as usize;
        t.payload = match kind {
            Kind::F16 => Payload::F16(w.iter().map(|&v| f16::from_f32(v)).collect()),
            Kind::I8 => {
                let (q, scales) = symmetric(w, cols, cols, 127.0);
                Payload::I8Grouped { q, group: cols as u32, scales, f16_scales: false }
            }
            Kind::I8Affine => {
                let (lo, hi) = w.iter().fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
                let scale = (hi - lo) / 255.0;
                let zero_point = (-128.0 - lo / scale).round() as i32;
                let q =
                    w.iter().map(|v| ((v / scale).round() + zero_point as f32).clamp(-128.0, 127.0) as i8).collect();
                Payload::I8PerTensor { q, scale, zero_point }
            }
            Kind::I4Tensor => {
                // One scale for the tensor, as a fake-quantized int4 checkpoint publishes it.
                let amax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let scale = if amax > 0.0 { amax / 7.0 } else { 1.0 };
                let q = w.iter().map(|v| (v / scale).round().clamp(-8.0, 7.0) as i8).collect();
                Payload::I4PerTensor { q, scale }
            }
            Kind::I4 => {
                let (q, scales) = symmetric(w, cols, 32, 7.0);
                Payload::I4Grouped { q, group: 32, scales: scales.into_iter().map(f16::from_f32).collect() }
            }
        };
    }
}

fn blob(config: &itera_edge::Config, kind: Option<Kind>) -> AlignedBytes {
    let mut b = itera_test_support::builder(config, 11, &PackOptions::default());
    if let Some(kind) = kind {
        convert(&mut b, kind);
    }
    AlignedBytes::from(b.finish().expect("finish").as_slice())
}

const TOKENS: [u32; 12] = [1, 17, 5, 42, 3, 9, 1999, 0, 250, 77, 8, 1024];

fn run(bytes: &[u8], tokens: &[u32]) -> (Vec<Vec<f32>>, &'static str, usize) {
    let blob = Blob::parse(bytes).expect("parse");
    let model = Model::new(&blob).expect("model");
    let vocab = model.config().vocab;
    let mut arena = arena(&model);
    let mut s = Session::new(&model, &mut arena).expect("session");
    let logits = tokens.iter().map(|&t| s.step(t % vocab).expect("step").to_vec()).collect();
    (logits, model.kernel_name(), model.arena_bytes())
}

/// The checksum of `logits`, row after row, that the firmware and `itera-sim greedy` print
/// as `logits_fnv1a`.
fn fnv1a(logits: &[Vec<f32>]) -> u64 {
    logits.iter().fold(FNV_OFFSET, |h, row| fnv1a_f32(h, row))
}

/// (top-1 agreement, max |Δ| / logit range) of `b` against `a`.
fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f32) {
    let agree = a.iter().zip(b).filter(|(x, y)| argmax(x) == argmax(y)).count() as f64 / a.len() as f64;
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let (lo, hi) = x.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        worst = worst.max(d / (hi - lo));
    }
    (agree, worst)
}

#[test]
fn quantized_models_track_the_f32_model() {
    for_each_path(|path| {
        let config = micro_config();
        let (base, kernel, arena) = run(&blob(&config, None), &TOKENS);
        assert_eq!(kernel, format!("f32-{}", family(path)));
        for (kind, name, min_agree, max_rel) in [
            (Kind::F16, "f16", 1.0, 1e-3),
            (Kind::I8, "i8", 0.9, 0.02),
            (Kind::I8Affine, "i8w", 0.9, 0.03),
            (Kind::I4, "i4", 0.75, 0.2),
        ] {
            let (logits, k, a) = run(&blob(&config, Some(kind)), &TOKENS);
            let (agree, rel) = compare(&base, &logits);
            eprintln!("{kind:?}: kernel {k}, arena {a} bytes (f32: {arena}), top-1 {agree:.3}, max|Δ|/range {rel:.5}");
            assert!(k == name || k.starts_with(&format!("{name}-")), "{k} on {path}");
            assert!(agree >= min_agree && rel <= max_rel, "{kind:?}: top-1 {agree}, max|Δ|/range {rel}");
            let scratch = if matches!(kind, Kind::F16 | Kind::I8Affine) { 0 } else { config.d_inner as usize };
            assert_eq!(a, arena + scratch, "{kind:?}: arena = f32 buffers + widest integer row");
        }
    });
}

#[test]
fn int8_logits_are_bit_identical_run_to_run() {
    // Integer paths are exact and the float epilogue runs in one fixed order, so every kernel
    // path on every target must give these bits. The firmware reproduces them on a Cortex-M4
    // (boards/qemu-an386); a change here is a change of results and must be deliberate.
    const PINNED: [(Kind, u64); 3] =
        [(Kind::I8, 0xbc27_9762_4b5c_af36), (Kind::I4, 0x2791_ff43_e48d_8afd), (Kind::I8, 0x0623_3251_d3e3_5f68)];
    for_each_path(|path| {
        for ((config, kind), (pinned_kind, pinned)) in
            [(micro_config(), Kind::I8), (micro_config(), Kind::I4), (tiny_config(), Kind::I8)].into_iter().zip(PINNED)
        {
            assert_eq!(kind, pinned_kind);
            let bytes = blob(&config, Some(kind));
            let (a, _, _) = run(&bytes, &TOKENS);
            let (b, _, _) = run(&bytes, &TOKENS);
            let (ha, hb) = (fnv1a(&a), fnv1a(&b));
            eprintln!("{kind:?} vocab {} on {path}: FNV-1a of logits for {TOKENS:?}: {ha:#018x}", config.vocab);
            assert_eq!(ha, hb);
            assert_eq!(ha, pinned, "{kind:?} vocab {} on {path}: logits changed", config.vocab);
            // A reset session reproduces the same logits too.
            let blob = Blob::parse(&bytes).unwrap();
            let model = Model::new(&blob).unwrap();
            let mut arena = arena(&model);
            let mut s = Session::new(&model, &mut arena).unwrap();
            for _ in 0..2 {
                let again: Vec<Vec<f32>> = TOKENS.iter().map(|&t| s.step(t % config.vocab).unwrap().to_vec()).collect();
                assert_eq!(fnv1a(&again), ha);
                s.reset();
            }
        }
    });
}

#[test]
fn an_integer_model_arena_one_byte_short_is_refused() {
    let bytes = blob(&tiny_config(), Some(Kind::I4));
    assert_arena_bounds(&Model::new(&Blob::parse(&bytes).expect("parse")).expect("model"));
}

/// Host timing of one matvec per dtype and of whole micro-model tokens (not a check; run
/// with `cargo test --release -p itera-edge --test kernels -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    let config = micro_config();
    for kind in [None, Some(Kind::F16), Some(Kind::I8), Some(Kind::I4)] {
        let bytes = blob(&config, kind);
        let blob = Blob::parse(&bytes).unwrap();
        let model = Model::new(&blob).unwrap();
        let mut arena = arena(&model);
        let mut s = Session::new(&model, &mut arena).unwrap();
        let n = 2000;
        let start = Instant::now();
        for i in 0..n {
            if s.position() == config.max_seq {
                s.reset();
            }
            std::hint::black_box(s.step(i % config.vocab).unwrap());
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        eprintln!("micro {:?} ({}): {us:.1} us/token", kind, model.kernel_name());
    }
    let mut rng = Rng::new(1);
    let (rows, cols) = (2048, 512);
    let w = random(&mut rng, rows * cols, 0.1);
    let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let (q8, s8) = symmetric(&w, cols, cols, 127.0);
    let (q4, s4) = symmetric(&w, cols, 32, 7.0);
    let p4 = pack_i4(&q4, cols);
    let s4: Vec<f16> = s4.iter().map(|&s| f16::from_f32(s)).collect();
    let mats = [
        Matrix::new(rows, cols, Weights::F32(&w)).unwrap(),
        Matrix::new(rows, cols, Weights::F16(&w16)).unwrap(),
        Matrix::new(rows, cols, Weights::I8 { q: &q8, scales: Scales::F32(&s8), group: cols }).unwrap(),
        Matrix::new(rows, cols, Weights::I4 { packed: &p4, scales: Scales::F16(&s4), group: 32 }).unwrap(),
    ];
    let x = random(&mut rng, cols, 1.0);
    let mut y = vec![0.0; rows];
    let mut scratch = vec![0i8; cols];
    for m in mats {
        let n = 200;
        let start = Instant::now();
        for _ in 0..n {
            m.matvec(std::hint::black_box(&x), &mut y, &mut scratch);
        }
        let s = start.elapsed().as_secs_f64() / n as f64;
        eprintln!("{rows}x{cols} {}: {:.1} us, {:.2} GMAC/s", m.kernel_name(), s * 1e6, (rows * cols) as f64 / s / 1e9);
    }
    // The float-activation formats at the tiny model's in_proj shape (cache resident), one
    // token and a prefill block of eight, on every path: f32 against the weight-only ones.
    let (rows, cols, block) = (512, 128, itera_edge::model::PREFILL_BLOCK);
    let w = random(&mut rng, rows * cols, 0.1);
    let q: Vec<i8> = (0..rows * cols).map(|_| rng.next_u32() as i8).collect();
    let nibbles: Vec<i8> = (0..rows * cols).map(|_| (rng.next_u32() % 16) as i8 - 8).collect();
    let packed = pack_i4(&nibbles, cols);
    let x = random(&mut rng, block * cols, 1.0);
    let mut y = vec![0.0; block * rows];
    for_each_path(|path| {
        for weights in [
            Weights::F32(&w),
            Weights::I8Affine { q: &q, scale: 0.01, zero_point: 0 },
            Weights::I8Affine { q: &q, scale: 0.01, zero_point: 3 },
            Weights::I4Tensor { packed: &packed, scale: 0.01 },
        ] {
            let zero_point = match weights {
                Weights::I8Affine { zero_point, .. } => format!(" zero point {zero_point}"),
                _ => String::new(),
            };
            let m = Matrix::new(rows, cols, weights).unwrap();
            for tokens in [1, block] {
                let n = 4000 / tokens;
                let start = Instant::now();
                for _ in 0..n {
                    let x = Rows::new(std::hint::black_box(&x[..tokens * cols]), cols);
                    m.matmul(x, RowsMut::new(&mut y[..tokens * rows], rows), &mut []);
                }
                let s = start.elapsed().as_secs_f64() / n as f64;
                let gmacs = (tokens * rows * cols) as f64 / s / 1e9;
                eprintln!(
                    "{path} {rows}x{cols} x {tokens} tokens {}{zero_point}: {:.2} us, {gmacs:.2} GMAC/s",
                    m.kernel_name(),
                    s * 1e6
                );
            }
        }
    });
}

#[test]
fn prefill_in_blocks_is_stepping_bit_for_bit() {
    // A prompt of 21 tokens: two full blocks and a partial one, on every dtype and path.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for_each_path(|path| {
        let kinds = [None, Some(Kind::F16), Some(Kind::I8), Some(Kind::I8Affine), Some(Kind::I4), Some(Kind::I4Tensor)];
        for kind in kinds {
            let bytes = blob(&micro_config(), kind);
            let blob = Blob::parse(&bytes).expect("parse");
            let model = Model::new(&blob).expect("model");
            assert!(model.prefill_arena_bytes() > model.arena_bytes());
            let vocab = model.config().vocab;
            let prompt: Vec<u32> = (0..21).map(|i| (i * 37 + 5) % vocab).collect();
            let mut small = arena(&model);
            let mut big = prefill_arena(&model);
            let mut one = Session::new(&model, &mut small).expect("session");
            let mut blocked = Session::new(&model, &mut big).expect("session");
            let mut stepped = Vec::new();
            for &t in &prompt {
                stepped = one.step(t).expect("step").to_vec();
            }
            let got = blocked.prefill(&prompt).expect("prefill").to_vec();
            assert_eq!(bits(&got), bits(&stepped), "{kind:?} on {path}: prefill logits");
            assert_eq!(blocked.position(), one.position());
            // The recurrent state agrees too: the next tokens give the same logits.
            for t in [3, vocab - 1] {
                let a = bits(one.step(t).expect("step"));
                assert_eq!(bits(blocked.step(t).expect("step")), a, "{kind:?} on {path}: after prefill");
            }
            // A one-token-at-a-time arena prefills to the same bits.
            one.reset();
            assert_eq!(bits(one.prefill(&prompt).expect("prefill")), bits(&got));
        }
    });
}

#[test]
fn argmax_is_the_first_maximum_on_every_path() {
    let naive = |v: &[f32]| {
        let mut best: Option<usize> = None;
        for (i, &x) in v.iter().enumerate() {
            if best.is_none_or(|b| x > v[b]) && !x.is_nan() {
                best = Some(i);
            }
        }
        best.unwrap_or(0) as u32
    };
    for_each_path(|path| {
        let mut rng = Rng::new(12);
        for n in [1, 7, 8, 9, 64, 2000, 2003] {
            let mut v: Vec<f32> = (0..n).map(|_| (rng.next_u32() % 50) as f32).collect();
            assert_eq!(argmax(&v), naive(&v), "{path}: n {n}, ties");
            v[n / 2] = f32::NAN;
            assert_eq!(argmax(&v), naive(&v), "{path}: n {n}, a NaN");
        }
        assert_eq!(argmax(&[f32::NAN; 10]), 0);
    });
}

#[test]
fn matmul_is_matvec_per_token_and_never_panics() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for_each_path(|path| {
        let mut rng = Rng::new(13);
        for (rows, cols) in [(5, 64), (13, 40), (8, 128), (3, 7)] {
            let w = random(&mut rng, rows * cols, 0.3);
            let m = Matrix::new(rows, cols, Weights::F32(&w)).expect("shape");
            for n in [1, 2, 5, 8] {
                let (xs, ys) = (cols + 3, rows + 1);
                let x = random(&mut rng, n * xs, 1.0);
                let mut y = vec![f32::NAN; n * ys];
                m.matmul(Rows::new(&x, xs), RowsMut::new(&mut y, ys), &mut []);
                for t in 0..n {
                    let mut one = vec![0.0; rows];
                    m.matvec(&x[t * xs..t * xs + cols], &mut one, &mut []);
                    assert_eq!(bits(&y[t * ys..t * ys + rows]), bits(&one), "{path}: {rows}x{cols}, n {n}, token {t}");
                }
                // Strides that do not fit the buffers: no panic, whatever is written.
                m.matmul(Rows::new(&x, xs), RowsMut::new(&mut y, 1), &mut []);
                m.matmul(Rows::new(&x[..cols / 2], xs), RowsMut::new(&mut y, ys), &mut []);
                m.matmul(Rows::new(&x, cols / 2), RowsMut::new(&mut y, ys), &mut []);
                m.matmul(Rows::new(&x, 0), RowsMut::new(&mut y, 0), &mut []);
            }
        }
    });
}

#[test]
fn weight_only_blocks_are_matvec_bit_for_bit() {
    // Shapes around the tiles (2 rows x 4 tokens, 8 rows for one token) and the vector width
    // (8 columns, tails of 1 to 7), every block size up to PREFILL_BLOCK, strides past the
    // rows, int8 with a zero point and without (a path of its own on AVX2); each output
    // against matvec and against dot_f32 of the dequantized row.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let dot = itera_edge::kernels::dot_f32;
    for_each_path(|path| {
        let mut rng = Rng::new(31);
        for (rows, cols) in [(1, 1), (1, 8), (3, 7), (5, 19), (8, 64), (9, 33), (13, 40), (16, 128), (17, 129)] {
            let q: Vec<i8> = (0..rows * cols).map(|_| rng.next_u32() as i8).collect();
            let nibbles: Vec<i8> = (0..rows * cols).map(|_| (rng.next_u32() % 16) as i8 - 8).collect();
            let packed = pack_i4(&nibbles, cols);
            let zero_point = (rng.next_u32() % 256) as i32 as i8;
            let affine = |zero_point: i8| {
                let values = q.iter().map(|&v| f32::from(v) - f32::from(zero_point)).collect::<Vec<_>>();
                (Weights::I8Affine { q: &q, scale: 0.0123, zero_point }, values, 0.0123f32)
            };
            let int4 = Weights::I4Tensor { packed: &packed, scale: 0.037 };
            for (weights, values, scale) in
                [affine(zero_point), affine(0), (int4, nibbles.iter().map(|&v| f32::from(v)).collect(), 0.037)]
            {
                let m = Matrix::new(rows, cols, weights).expect("shape");
                for n in 1..=itera_edge::model::PREFILL_BLOCK {
                    let (xs, ys) = (cols + 3, rows + 2);
                    let x = random(&mut rng, n * xs, 1.0);
                    let mut y = vec![f32::NAN; n * ys];
                    m.matmul(Rows::new(&x, xs), RowsMut::new(&mut y, ys), &mut []);
                    for t in 0..n {
                        let xt = &x[t * xs..t * xs + cols];
                        let mut one = vec![f32::NAN; rows];
                        m.matvec(xt, &mut one, &mut []);
                        let name = m.kernel_name();
                        assert_eq!(
                            bits(&y[t * ys..t * ys + rows]),
                            bits(&one),
                            "{path} {name}: {rows}x{cols}, n {n}, token {t}"
                        );
                        let want: Vec<f32> = values.chunks(cols).map(|row| dot(row, xt) * scale).collect();
                        assert_eq!(bits(&one), bits(&want), "{path} {name}: {rows}x{cols} against dot_f32");
                        // The columns past each output row are not written.
                        assert!(y[t * ys + rows..(t + 1) * ys].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
    });
}

#[test]
fn the_top_rows_of_a_matrix_compute_as_in_the_whole() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for_each_path(|path| {
        let mut rng = Rng::new(29);
        let (rows, cols) = (24, 64);
        let w = random(&mut rng, rows * cols, 0.3);
        let halves: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let i8s = quantize_i8(&mut rng, rows, cols, 32);
        let i4s = quantize_i4(&mut rng, rows, cols, 8);
        let half_scales: Vec<f16> = i4s.scales.iter().map(|&s| f16::from_f32(s)).collect();
        let packed = pack_i4(&i4s.q, cols);
        let kinds = [
            Weights::F32(&w),
            Weights::F16(&halves),
            Weights::I8 { q: &i8s.q, scales: Scales::F32(&i8s.scales), group: 32 },
            Weights::I8Affine { q: &i8s.q, scale: 0.01, zero_point: 3 },
            Weights::I4 { packed: &packed, scales: Scales::F16(&half_scales), group: 8 },
        ];
        let x = random(&mut rng, cols, 1.0);
        let mut scratch = vec![0i8; cols];
        for weights in kinds {
            let m = Matrix::new(rows, cols, weights).expect("shape");
            let mut all = vec![0.0; rows];
            m.matvec(&x, &mut all, &mut scratch);
            for top in [0, 1, 5, 8, 13, 24, 40] {
                let t = m.top(top);
                assert_eq!((t.rows(), t.cols()), (top.min(rows), cols));
                let mut y = vec![f32::NAN; t.rows()];
                t.matvec(&x, &mut y, &mut scratch);
                assert_eq!(bits(&y), bits(&all[..t.rows()]), "{path}: {} top {top}", m.kernel_name());
            }
        }
    });
}

#[test]
fn float_matvec_reads_only_the_first_cols_of_a_longer_input() {
    // The model hands a block buffer (several tokens' rows) to `matvec`: only the first
    // `cols` values are the input, whatever the width modulo the eight lanes.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for_each_path(|path| {
        let mut rng = Rng::new(14);
        for cols in [13, 64, 70] {
            let rows = 5;
            let w = random(&mut rng, rows * cols, 0.3);
            let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let q: Vec<i8> = (0..rows * cols).map(|_| (rng.next_u32() % 256) as u8 as i8).collect();
            let x = random(&mut rng, 3 * cols + 5, 1.0);
            for weights in
                [Weights::F32(&w), Weights::F16(&w16), Weights::I8Affine { q: &q, scale: 0.01, zero_point: 3 }]
            {
                let m = Matrix::new(rows, cols, weights).expect("shape");
                let (mut long, mut exact) = (vec![0.0; rows], vec![0.0; rows]);
                m.matvec(&x, &mut long, &mut []);
                m.matvec(&x[..cols], &mut exact, &mut []);
                assert_eq!(bits(&long), bits(&exact), "{} {rows}x{cols} on {path}", m.kernel_name());
            }
        }
    });
}
