//! Criterion benchmarks, so a regression in the hot path is visible:
//!
//! * `matvec/{f32,i8,i4}/ROWSxCOLS`: [`Matrix::matvec`] at the models' shapes (micro
//!   `in_proj` 256x64, `delta_proj` 128x128, `out_proj` 64x128, `lm_head` 2000x64; tiny
//!   `in_proj` 512x128 and `lm_head` 8000x128), int8 with one f16 scale per row and int4 with
//!   f16 scales per 32, as the `int8` and `int4` presets store them; throughput in MACs;
//! * `step/{micro,tiny}-{f32,int8}`: one whole [`Session::step`] (forward pass and logits) of
//!   a synthetic model of that shape (`itera-pack synth`), at positions cycling through
//!   `max_seq`.
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
use itera_pack::inspect::AlignedBytes;
use itera_pack::quant::QuantPolicy;
use itera_pack::synthetic::{synth_blob, Shape};

/// `(rows, cols)` of the benchmarked matrices.
const SHAPES: [(usize, usize); 6] = [(256, 64), (128, 128), (64, 128), (2000, 64), (512, 128), (8000, 128)];

/// Int4 elements per scale, as the `int4` preset stores them.
const I4_GROUP: usize = 32;

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
        let matrices = [
            ("f32", Weights::F32(&w)),
            ("i8", Weights::I8 { q: &q, scales: Scales::F16(&row_scales), group: cols }),
            ("i4", Weights::I4 { packed: &packed, scales: Scales::F16(&group_scales), group: I4_GROUP }),
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

fn step(c: &mut Criterion) {
    itera_sim::engine::select_kernels();
    let mut group = c.benchmark_group("step");
    group.throughput(Throughput::Elements(1));
    for shape in [Shape::Micro, Shape::Tiny] {
        for preset in ["f32", "int8"] {
            let quant = QuantPolicy::parse_spec(preset).unwrap_or_else(|e| panic!("{preset}: {e}"));
            let blob = synth_blob(shape, 42, &quant).unwrap_or_else(|e| panic!("synthetic {shape} {preset}: {e:#}"));
            let bytes = AlignedBytes::from(blob.as_slice());
            let model: Model<'_> = itera_sim::open_model(&bytes).unwrap_or_else(|e| panic!("{shape} {preset}: {e}"));
            let mut arena = itera_sim::new_arena(&model);
            let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena))
                .unwrap_or_else(|e| panic!("{shape} {preset}: {e}"));
            let c = model.config();
            let tokens = itera_sim::bench::bench_tokens(c.max_seq as usize, c.vocab);
            group.bench_function(format!("{shape}-{preset}"), |b| {
                b.iter(|| {
                    let pos = session.position() as usize;
                    if pos >= tokens.len() {
                        session.reset();
                    }
                    let token = tokens[pos % tokens.len()];
                    black_box(session.step(black_box(token)).map(|logits| logits[0]))
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = matvec, step
}
criterion_main!(benches);
