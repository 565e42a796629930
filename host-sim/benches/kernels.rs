//! Criterion benchmarks, so a regression in the hot path is visible:
//!
//! * `matvec/{f32,i8,i4}/ROWSxCOLS`: [`Matrix::matvec`] at the models' shapes (micro
//!   `in_proj` 256x64, `delta_proj` 128x128, `out_proj` 64x128, `lm_head` 2000x64; tiny
//!   `in_proj` 512x128 and `lm_head` 8000x128), int8 with one f16 scale per row and int4 with
//!   f16 scales per 32, as the `int8` and `int4` presets store them; throughput in MACs;
//! * `matvec/i4g8/ROWSxCOLS`: int4 with f16 scales per 8, the `mixed` preset's head;
//! * `ops/…`: the elementwise work of a token: LayerNorm (`d` 64, 128, 256), one scan step
//!   (state 8, 16), and `exp`, `silu`, `softplus`, `gelu`, `softplus_sum` over 128 values (with their
//!   accuracy tested in `itera-edge`'s `math` tests);
//! * `step/{micro,tiny}-{f32,int8}`: one whole [`Session::step`] (forward pass and logits) of
//!   a synthetic model of that shape (`itera-pack synth`), at positions cycling through
//!   `max_seq`;
//! * `prefill/{micro,tiny}-{f32,int8}`: a 128-token [`Session::prefill`] (blocks of 8 tokens,
//!   matrix products); throughput in tokens.
//!
//! The kernels take the path `itera-sim` takes (`select_kernels`: AVX2 / VNNI when detected,
//! `ITERA_KERNELS=scalar` for the portable code).
//!
//! ```sh
//! cargo bench -p itera-sim                  # about a minute
//! cargo bench -p itera-sim -- --quick       # a fast pass
//! cargo bench -p itera-sim -- matvec/i8     # one group
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use itera_edge::kernels::{Matrix, Scales, Weights};
use itera_edge::{Model, Rng, Session};
use itera_pack::quant::{QuantPolicy, INT4_GROUP as I4_GROUP};
use itera_pack::synthetic::{synth_blob, Shape};
use itera_pack::AlignedBytes;

/// `(rows, cols)` of the benchmarked matrices.
const SHAPES: [(usize, usize); 6] = [(256, 64), (128, 128), (64, 128), (2000, 64), (512, 128), (8000, 128)];

fn random_f32(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * (2.0 * rng.next_f32() - 1.0)).collect()
}

fn random_scales(rng: &mut Rng, n: usize) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(0.001 + 0.01 * rng.next_f32())).collect()
}

fn matvec(c: &mut Criterion) {
    let path = itera_sim::engine::select_kernels();
    eprintln!("kernel path: {path}");
    let mut rng = Rng::new(7);
    let mut group = c.benchmark_group("matvec");
    for (rows, cols) in SHAPES {
        let n = rows * cols;
        let x = random_f32(&mut rng, cols, 1.0);
        let mut y = vec![0.0f32; rows];
        let mut scratch = vec![0i8; cols];
        let w = random_f32(&mut rng, n, 1.0 / (cols as f32).sqrt());
        let q: Vec<i8> = (0..n).map(|_| ((rng.next_u32() % 255) as i32 - 127) as i8).collect();
        let row_scales = random_scales(&mut rng, rows);
        let packed: Vec<u8> = (0..rows * cols.div_ceil(2)).map(|_| rng.next_u32() as u8).collect();
        let group_scales = random_scales(&mut rng, rows * cols.div_ceil(I4_GROUP));
        let g8_scales = random_scales(&mut rng, rows * cols.div_ceil(8));
        let matrices = [
            ("f32", Weights::F32(&w)),
            ("i8", Weights::I8 { q: &q, scales: Scales::F16(&row_scales), group: cols }),
            ("i4", Weights::I4 { packed: &packed, scales: Scales::F16(&group_scales), group: I4_GROUP }),
            ("i4g8", Weights::I4 { packed: &packed, scales: Scales::F16(&g8_scales), group: 8 }),
        ];
        group.throughput(Throughput::Elements(n as u64));
        for (dtype, weights) in matrices {
            let Some(m) = Matrix::new(rows, cols, weights) else {
                panic!("{dtype} {rows}x{cols}: the weights do not make a matrix");
            };
            group.bench_function(BenchmarkId::new(dtype, format!("{rows}x{cols}")), |b| {
                b.iter(|| m.matvec(black_box(&x), black_box(&mut y), &mut scratch))
            });
        }
    }
    group.finish();
}

fn ops(c: &mut Criterion) {
    use itera_edge::math;
    let mut rng = Rng::new(9);
    let mut group = c.benchmark_group("ops");
    for d in [64, 128, 256] {
        let x = random_f32(&mut rng, d, 2.0);
        let (w, b) = (random_f32(&mut rng, d, 1.0), random_f32(&mut rng, d, 0.1));
        let mut out = vec![0.0f32; d];
        group.throughput(Throughput::Elements(d as u64));
        group.bench_function(BenchmarkId::new("layer_norm", d), |bench| {
            bench.iter(|| math::layer_norm(black_box(&x), &w, &b, 1e-5, black_box(&mut out)))
        });
    }
    for n in [8, 16] {
        let mut state = random_f32(&mut rng, n, 1.0);
        let (a_log, bu) = (random_f32(&mut rng, n, 1.0), random_f32(&mut rng, n, 1.0));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("scan_step", n), |bench| {
            bench.iter(|| math::scan_step(black_box(&mut state), &a_log, &bu, black_box(0.05)))
        });
    }
    let x = random_f32(&mut rng, 128, 6.0);
    group.throughput(Throughput::Elements(128));
    // Each function by its own type, so the loop inlines it (as the forward pass does).
    fn over<F: Fn(f32) -> f32>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        x: &[f32],
        f: F,
    ) {
        let mut y = vec![0.0f32; x.len()];
        group.bench_function(BenchmarkId::new(name, x.len()), |bench| {
            bench.iter(|| y.iter_mut().zip(black_box(x)).for_each(|(y, &v)| *y = f(v)))
        });
    }
    over(&mut group, "exp", &x, math::exp);
    over(&mut group, "silu", &x, math::silu);
    over(&mut group, "softplus", &x, math::softplus);
    over(&mut group, "gelu", &x, math::gelu);
    // What the forward pass runs: the sum of softplus over a row (its mean is the step size).
    let bias = random_f32(&mut rng, 128, 1.0);
    group.bench_function(BenchmarkId::new("softplus_sum", 128), |bench| {
        bench.iter(|| math::softplus_sum(black_box(&x), &bias))
    });
    group.finish();
}

/// Synthetic models of each benchmarked shape and preset, packed.
fn models() -> Vec<(String, AlignedBytes)> {
    let mut out = Vec::new();
    for shape in [Shape::Micro, Shape::Tiny] {
        for preset in ["f32", "int8"] {
            let quant = QuantPolicy::parse_spec(preset).unwrap_or_else(|e| panic!("{preset}: {e}"));
            let blob = synth_blob(shape, 42, &quant).unwrap_or_else(|e| panic!("synthetic {shape} {preset}: {e:#}"));
            out.push((format!("{shape}-{preset}"), AlignedBytes::from(blob.as_slice())));
        }
    }
    out
}

/// Runs `f` on a fresh session of each benchmarked model, with its benchmark tokens.
fn each_session(
    group: &str,
    c: &mut Criterion,
    mut f: impl FnMut(
        &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        String,
        &mut Session<'_, '_>,
        &[u32],
    ),
) {
    itera_sim::engine::select_kernels();
    let mut group = c.benchmark_group(group);
    for (name, bytes) in models() {
        let model: Model<'_> = itera_sim::open_model(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut arena = itera_sim::new_arena(&model);
        let mut session =
            Session::new(&model, bytemuck::cast_slice_mut(&mut arena)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = model.config();
        let tokens = itera_sim::bench::bench_tokens(c.max_seq as usize, c.vocab);
        f(&mut group, name, &mut session, &tokens);
    }
    group.finish();
}

fn step(c: &mut Criterion) {
    each_session("step", c, |group, name, session, tokens| {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                let pos = session.position() as usize;
                if pos >= tokens.len() {
                    session.reset();
                }
                let token = tokens[pos % tokens.len()];
                black_box(session.step(black_box(token)).map(|logits| logits[0]))
            })
        });
    });
}

fn prefill(c: &mut Criterion) {
    each_session("prefill", c, |group, name, session, tokens| {
        group.throughput(Throughput::Elements(tokens.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                session.reset();
                black_box(session.prefill(black_box(tokens)).map(|logits| logits[0]))
            })
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = matvec, ops, step, prefill
}
criterion_main!(benches);
