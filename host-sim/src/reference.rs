//! An independent reference forward pass: plain f64 code on the CPU, whole sequence at once.
//!
//! It shares nothing with the core's kernels: it reads the blob's tensor table itself
//! ([`Blob::tensors`], [`Blob::data`], [`Blob::scales`]), dequantizes every tensor to f64
//! (f16; int8 grouped or per-tensor affine `(q - zp)·scale`; int4 two per byte, low nibble
//! first) and runs the model as the math reads:
//!
//! ```text
//! x_t = E[token_t] + P[t]
//! per layer:
//!   h = LN(x); [u | g] = in_proj·h; v = silu(bias + Σ_k w_k·u_{t-K+1+k})   (zeros before t = 0)
//!   dt = mean_j softplus(delta_proj·v + b)_j;  A = -exp(A_log)
//!   s = exp(dt·A) ⊙ s + dt·(B·v);  y = C·s + D ⊙ v;  x += out_proj·(y ⊙ silu(g))
//!   FFN: x += w2·gelu(w1·LN(x))
//!   MoE: z = gate·LN(x); top_k by z (ties: lower index); x += Σ softmax(z_picked)_i·expert_i(LN(x))
//! logits = lm_head·LN(x)
//! ```
//!
//! GELU is the exact one, `0.5·x·(1 + erf(x/√2))`, with [`erf`] accurate to about 1e-16.

use anyhow::{bail, Context};
use itera_edge::format::{DType, Quant, Role, ScaleType, TensorEntry};
use itera_edge::{Blob, Config};

use serde::Serialize;

use crate::compare::{compare, Bounds, Metrics};
use crate::engine::check_table_tokens;
use crate::eval::{kl_divergence, log_softmax};

/// A dense row-major matrix of f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub w: Vec<f64>,
}

impl Mat {
    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f64] {
        &self.w[r * self.cols..(r + 1) * self.cols]
    }

    /// `self · x`.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.rows).map(|r| self.row(r).iter().zip(x).map(|(a, b)| a * b).sum()).collect()
    }
}

/// LayerNorm weight and bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Norm {
    /// Weight, `[d]`.
    pub weight: Vec<f64>,
    /// Bias, `[d]`.
    pub bias: Vec<f64>,
}

/// A two-layer GELU MLP (plain FFN or one expert).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Up projection, `[hidden, d]`.
    pub w1: Mat,
    /// Down projection, `[d, hidden]`.
    pub w2: Mat,
}

/// What follows a layer's SSM block.
#[derive(Clone, Debug, PartialEq)]
pub enum Mixer {
    /// A plain FFN.
    Ffn(Mlp),
    /// Router `[n_experts, d]` and the experts.
    Moe {
        /// Router.
        gate: Mat,
        /// Experts, in index order.
        experts: Vec<Mlp>,
    },
}

/// One layer's weights, dequantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// SSM LayerNorm.
    pub norm: Norm,
    /// `[2 d_inner, d]`.
    pub in_proj: Mat,
    /// `[d_inner, K]`.
    pub conv_weight: Mat,
    /// `[d_inner]`.
    pub conv_bias: Vec<f64>,
    /// `[N]`.
    pub a_log: Vec<f64>,
    /// `[N, d_inner]`.
    pub b: Mat,
    /// `[d_inner, N]`.
    pub c: Mat,
    /// `[d_inner]`.
    pub d: Vec<f64>,
    /// `[d_inner, d_inner]`.
    pub delta_proj: Mat,
    /// `[d_inner]`.
    pub delta_bias: Vec<f64>,
    /// `[d, d_inner]`.
    pub out_proj: Mat,
    /// FFN/MoE LayerNorm.
    pub mix_norm: Norm,
    /// FFN or MoE.
    pub mixer: Mixer,
}

/// Every weight of a blob, dequantized to f64.
#[derive(Clone, Debug, PartialEq)]
pub struct RefModel {
    /// Hyper-parameters from the blob.
    pub config: Config,
    /// `[vocab, d]`.
    pub embedding: Mat,
    /// `[max_seq, d]`.
    pub position: Mat,
    /// Layers, in order.
    pub layers: Vec<Layer>,
    /// Final LayerNorm.
    pub final_norm: Norm,
    /// `[vocab, d]`.
    pub lm_head: Mat,
}

/// Reads little-endian values of `W` bytes each with `f`.
fn le<const W: usize>(bytes: &[u8], f: impl Fn([u8; W]) -> f64) -> Vec<f64> {
    bytes.chunks_exact(W).map(|c| f(c.try_into().unwrap_or([0; W]))).collect()
}

/// Column `c`'s int4 value in packed byte `at` (low nibble for even columns; two's
/// complement: 8..=15 are -8..=-1).
fn int4_at(data: &[u8], at: usize, c: usize) -> i32 {
    let byte = data.get(at).copied().unwrap_or(0);
    let nibble = if c.is_multiple_of(2) { byte & 0x0f } else { byte >> 4 };
    if nibble >= 8 {
        nibble as i32 - 16
    } else {
        nibble as i32
    }
}

/// IEEE binary16 bits to f64, exactly (written out, not via a library).
pub fn f16_bits_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The elements of tensor `e`, dequantized to f64, row-major `shape[0] × shape[1]`.
pub fn dequantize(blob: &Blob<'_>, e: &TensorEntry) -> anyhow::Result<Vec<f64>> {
    let (rows, cols) = (e.shape[0] as usize, e.shape[1] as usize);
    let n = rows * cols;
    let data = blob.data(e);
    let grouped_scales = |st: ScaleType| -> Vec<f64> {
        let s = blob.scales(e);
        match st {
            ScaleType::F32 => le::<4>(s, |b| f32::from_le_bytes(b) as f64),
            ScaleType::F16 => le::<2>(s, |b| f16_bits_to_f64(u16::from_le_bytes(b))),
            // A fixed-point blob's row requantization holds scale / 127.
            ScaleType::Requant => le::<4>(s, |b| {
                let r = itera_edge::format::Requant::from_bits(u32::from_le_bytes(b));
                127.0 * f64::from(r.multiplier) * 2f64.powi(-i32::from(r.shift))
            }),
        }
    };
    let out = match (e.dtype, e.quant) {
        (DType::F32, _) => le::<4>(data, |b| f32::from_le_bytes(b) as f64),
        (DType::F16, _) => le::<2>(data, |b| f16_bits_to_f64(u16::from_le_bytes(b))),
        (DType::Q16, _) => le::<4>(data, |b| i32::from_le_bytes(b) as f64 / 65536.0),
        (DType::I8, Quant::PerTensor { scale, zero_point }) => {
            data.iter().map(|&q| (q as i8 as f64 - zero_point as f64) * scale as f64).collect()
        }
        (DType::I8, Quant::Grouped { group, scale_type, .. }) => {
            let scales = grouped_scales(scale_type);
            let (g, per_row) = (group as usize, cols.div_ceil(group as usize));
            let mut out = Vec::with_capacity(n);
            for r in 0..rows {
                for c in 0..cols {
                    let q = data.get(r * cols + c).copied().unwrap_or(0) as i8 as f64;
                    out.push(q * scales.get(r * per_row + c / g).copied().unwrap_or(f64::NAN));
                }
            }
            out
        }
        (DType::I4, Quant::PerTensor { scale, .. }) => {
            let row_bytes = cols.div_ceil(2);
            let mut out = Vec::with_capacity(n);
            for r in 0..rows {
                for c in 0..cols {
                    out.push(int4_at(data, r * row_bytes + c / 2, c) as f64 * scale as f64);
                }
            }
            out
        }
        (DType::I4, Quant::Grouped { group, scale_type, .. }) => {
            let scales = grouped_scales(scale_type);
            let (g, per_row, row_bytes) = (group as usize, cols.div_ceil(group as usize), cols.div_ceil(2));
            let mut out = Vec::with_capacity(n);
            for r in 0..rows {
                for c in 0..cols {
                    let q = int4_at(data, r * row_bytes + c / 2, c);
                    out.push(q as f64 * scales.get(r * per_row + c / g).copied().unwrap_or(f64::NAN));
                }
            }
            out
        }
        (dtype, quant) => bail!("{:?} (layer {}): {dtype:?} with {quant:?} is not a known layout", e.role, e.layer),
    };
    if out.len() != n {
        bail!("{:?} (layer {}): {} elements for shape {rows}×{cols}", e.role, e.layer, out.len());
    }
    Ok(out)
}

impl RefModel {
    /// Reads and dequantizes every tensor of a blob (parsed and validated by [`Blob::parse`]).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<RefModel> {
        let blob = Blob::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::from_blob(&blob)
    }

    /// Reads and dequantizes every tensor of `blob`.
    pub fn from_blob(blob: &Blob<'_>) -> anyhow::Result<RefModel> {
        let config = *blob.config();
        let table: Vec<TensorEntry> = blob.tensors().collect();
        // Every weight becomes an f64 (16 times an int4 weight's bytes): bounded before any is.
        let weights: u64 = table.iter().map(|e| u64::from(e.shape[0]) * u64::from(e.shape[1])).sum();
        let bytes = weights.saturating_mul(8);
        if bytes > crate::limits::MAX_REFERENCE_BYTES {
            bail!(
                "the f64 reference of this blob needs {bytes} bytes ({weights} weights × 8), more than the {} MiB it may take: check this blob with --golden instead",
                crate::limits::MAX_REFERENCE_BYTES >> 20
            );
        }
        let get = |role: Role, layer: u32, expert: u32| -> anyhow::Result<Mat> {
            let e = table
                .iter()
                .find(|e| e.role == role && u32::from(e.layer) == layer && u32::from(e.expert) == expert)
                .with_context(|| format!("the blob has no {role:?} tensor for layer {layer}, expert {expert}"))?;
            Ok(Mat { rows: e.shape[0] as usize, cols: e.shape[1] as usize, w: dequantize(blob, e)? })
        };
        let vec = |role: Role, layer: u32| get(role, layer, 0).map(|m| m.w);
        let norm = |w: Role, b: Role, layer: u32| -> anyhow::Result<Norm> {
            Ok(Norm { weight: vec(w, layer)?, bias: vec(b, layer)? })
        };
        let mut layers = Vec::new();
        for l in 0..config.n_layers {
            let mixer = if config.is_moe(l) {
                let experts = (0..config.n_experts)
                    .map(|x| Ok(Mlp { w1: get(Role::ExpertW1, l, x)?, w2: get(Role::ExpertW2, l, x)? }))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Mixer::Moe { gate: get(Role::Gate, l, 0)?, experts }
            } else {
                Mixer::Ffn(Mlp { w1: get(Role::FfnW1, l, 0)?, w2: get(Role::FfnW2, l, 0)? })
            };
            layers.push(Layer {
                norm: norm(Role::SsmNormWeight, Role::SsmNormBias, l)?,
                in_proj: get(Role::InProj, l, 0)?,
                conv_weight: get(Role::ConvWeight, l, 0)?,
                conv_bias: vec(Role::ConvBias, l)?,
                // A fixed-point blob stores A = -exp(A_log) itself.
                a_log: match blob.arithmetic() {
                    itera_edge::format::Arithmetic::Float => vec(Role::ALog, l)?,
                    itera_edge::format::Arithmetic::Fixed => vec(Role::ALog, l)?.iter().map(|a| (-a).ln()).collect(),
                },
                b: get(Role::B, l, 0)?,
                c: get(Role::C, l, 0)?,
                d: vec(Role::D, l)?,
                delta_proj: get(Role::DeltaProj, l, 0)?,
                delta_bias: vec(Role::DeltaBias, l)?,
                out_proj: get(Role::OutProj, l, 0)?,
                mix_norm: norm(Role::MixNormWeight, Role::MixNormBias, l)?,
                mixer,
            });
        }
        Ok(RefModel {
            config,
            embedding: get(Role::Embedding, 0, 0)?,
            position: get(Role::Position, 0, 0)?,
            layers,
            final_norm: norm(Role::FinalNormWeight, Role::FinalNormBias, 0)?,
            lm_head: get(Role::LmHead, 0, 0)?,
        })
    }

    /// Logits after every position of `tokens`, row-major `[tokens.len()][vocab]`, in f64.
    pub fn logits(&self, tokens: &[u32]) -> anyhow::Result<Vec<f64>> {
        let c = &self.config;
        check_table_tokens(tokens, c)?;
        let (di, k, eps) = (c.d_inner as usize, c.conv_kernel as usize, c.norm_eps as f64);
        // x_t = E[token_t] + P[t]
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .enumerate()
            .map(|(t, &tok)| {
                self.embedding.row(tok as usize).iter().zip(self.position.row(t)).map(|(e, p)| e + p).collect()
            })
            .collect();
        for layer in &self.layers {
            // ---- SSM block, whole sequence ----
            let ug: Vec<Vec<f64>> = x.iter().map(|xt| layer.in_proj.apply(&layer_norm(xt, &layer.norm, eps))).collect();
            let mut state = vec![0.0f64; layer.a_log.len()];
            for t in 0..x.len() {
                // Causal depthwise conv: tap j sees u at time t - (K-1) + j, zero before 0.
                let v: Vec<f64> = (0..di)
                    .map(|ch| {
                        let mut acc = layer.conv_bias[ch];
                        for j in 0..k {
                            if let Some(src) = (t + j).checked_sub(k - 1) {
                                acc += layer.conv_weight.row(ch)[j] * ug[src][ch];
                            }
                        }
                        silu(acc)
                    })
                    .collect();
                let delta = layer.delta_proj.apply(&v);
                let dt = delta.iter().zip(&layer.delta_bias).map(|(z, b)| softplus(z + b)).sum::<f64>() / di as f64;
                let bu = layer.b.apply(&v);
                for ((s, a_log), bu) in state.iter_mut().zip(&layer.a_log).zip(&bu) {
                    *s = (dt * -a_log.exp()).exp() * *s + dt * bu;
                }
                let cs = layer.c.apply(&state);
                let gated: Vec<f64> = (0..di).map(|ch| (cs[ch] + layer.d[ch] * v[ch]) * silu(ug[t][di + ch])).collect();
                for (xi, o) in x[t].iter_mut().zip(layer.out_proj.apply(&gated)) {
                    *xi += o;
                }
            }
            // ---- FFN or MoE ----
            for xt in x.iter_mut() {
                let h = layer_norm(xt, &layer.mix_norm, eps);
                match &layer.mixer {
                    Mixer::Ffn(mlp) => add(xt, &mlp_apply(mlp, &h), 1.0),
                    Mixer::Moe { gate, experts } => {
                        for (i, weight) in route(&gate.apply(&h), c.top_k as usize) {
                            add(xt, &mlp_apply(&experts[i], &h), weight);
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(x.len() * c.vocab as usize);
        for xt in &x {
            out.extend(self.lm_head.apply(&layer_norm(xt, &self.final_norm, eps)));
        }
        Ok(out)
    }
}

fn add(x: &mut [f64], y: &[f64], w: f64) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += w * y);
}

fn mlp_apply(m: &Mlp, h: &[f64]) -> Vec<f64> {
    let hidden: Vec<f64> = m.w1.apply(h).into_iter().map(gelu).collect();
    m.w2.apply(&hidden)
}

/// Indices of the `k` largest values of `z`, largest first; ties go to the lower index.
pub fn top_k(z: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    // Stable sort, descending by value: equal values keep index order.
    idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    idx.truncate(k.min(z.len()));
    idx
}

/// MoE routing: the `k` experts with the largest router logits `z` and their mixing
/// weights, a softmax over the picked logits only.
pub fn route(z: &[f64], k: usize) -> Vec<(usize, f64)> {
    let picked = top_k(z, k);
    let max = picked.iter().map(|&i| z[i]).fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = picked.iter().map(|&i| (z[i] - max).exp()).sum();
    picked.into_iter().map(|i| (i, (z[i] - max).exp() / total)).collect()
}

/// `(x - mean) / sqrt(var + eps) ⊙ weight + bias` (biased variance).
pub fn layer_norm(x: &[f64], p: &Norm, eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter().zip(&p.weight).zip(&p.bias).map(|((v, w), b)| (v - mean) * inv * w + b).collect()
}

/// `x · sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, stable for large |x|.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The exact GELU, `0.5·x·(1 + erf(x/√2))`.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// The error function in f64, to about 1e-16 absolute.
///
/// `|x| < 3`: the series `erf x = 2/√π · e^{-x²} · Σ_n 2^n x^{2n+1} / (1·3···(2n+1))` (all
/// terms positive, so no cancellation); otherwise `1 - erfc |x|` with the continued
/// fraction `erfc x = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let two_x2 = 2.0 * a * a;
        let (mut term, mut sum) = (a, a);
        for n in 1..200 {
            term *= two_x2 / (2 * n + 1) as f64;
            sum += term;
            if term < sum * 1e-18 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * sum
    } else {
        1.0 - erfc_large(a)
    };
    r.copysign(x)
}

/// `erfc x` for `x >= 3` by its continued fraction, evaluated from the tail.
fn erfc_large(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    let mut f = x;
    for n in (1..=120).rev() {
        f = x + (n as f64 / 2.0) / f;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// A fixed, deterministic sequence of `min(64, max_seq)` token ids within the vocabulary.
pub fn default_tokens(config: &Config) -> Vec<u32> {
    let n = 64.min(config.max_seq as usize);
    (0..n as u64).map(|i| ((i * 7919 + 13) % config.vocab.max(1) as u64) as u32).collect()
}

/// Which reference computed the expected logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// [`RefModel::logits`]: f64 on the CPU.
    Cpu,
    /// [`crate::reference_cuda::logits`]: f32 on an NVIDIA GPU.
    Cuda,
    /// [`crate::reference_cuda::logits_on_cpu`]: the same kernels, f32, on the CPU.
    #[serde(rename = "cuda-cpu")]
    CudaCpu,
}

/// The core against a reference: the logit metrics plus mean KL(reference ‖ core).
#[derive(Clone, Debug, PartialEq)]
pub struct RefReport {
    /// Which reference.
    pub backend: Backend,
    /// max |Δlogit|, RMSE, cosine, top-1 agreement, ...
    pub metrics: Metrics,
    /// Mean over positions of KL(softmax(reference) ‖ softmax(core)), nats.
    pub kld_mean: f64,
    /// Where the tokens came from (a golden JSON, `--tokens`, or the default sequence).
    pub tokens_from: String,
}

impl RefReport {
    /// Compares the core's logits `core` with the reference's `expected` (both `[positions][vocab]`).
    pub fn new(
        backend: Backend,
        core: &[f32],
        expected: &[f32],
        vocab: usize,
        tokens_from: String,
    ) -> anyhow::Result<RefReport> {
        let metrics = compare(core, expected, vocab)?;
        let klds: Vec<f64> = core
            .chunks_exact(vocab)
            .zip(expected.chunks_exact(vocab))
            .map(|(c, e)| kl_divergence(&log_softmax(e), &log_softmax(c)))
            .collect();
        let kld_mean = klds.iter().sum::<f64>() / klds.len().max(1) as f64;
        Ok(RefReport { backend, metrics, kld_mean, tokens_from })
    }

    /// The metrics, `kld_mean`, `reference`, `tokens_from`, the bounds and `pass` as JSON.
    pub fn to_json(&self, bounds: &Bounds) -> serde_json::Value {
        let mut v = self.metrics.to_json(bounds);
        if let Some(o) = v.as_object_mut() {
            let kld = if self.kld_mean.is_finite() { self.kld_mean.into() } else { serde_json::Value::Null };
            o.insert("kld_mean".into(), kld);
            o.insert("reference".into(), serde_json::to_value(self.backend).unwrap_or_default());
            o.insert("tokens_from".into(), self.tokens_from.clone().into());
        }
        v
    }

    /// Text report: reference, tokens, the metrics, mean KL, then PASS or FAIL.
    pub fn render(&self, bounds: &Bounds) -> String {
        let name = match self.backend {
            Backend::Cpu => "cpu (f64)",
            Backend::Cuda => "cuda (f32)",
            Backend::CudaCpu => "cuda kernels on the cpu (f32)",
        };
        let body = self.metrics.render(bounds);
        let (head, verdict) = body.trim_end().rsplit_once('\n').unwrap_or(("", body.trim_end()));
        format!(
            "reference:      {name}\ntokens:         {}\n{head}\nkld_mean:       {:.3e}\n{verdict}\n",
            self.tokens_from, self.kld_mean
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{logits_for_tokens, open_model};
    use itera_pack::AlignedBytes;
    use itera_pack::PackOptions;
    use itera_test_support::tiny_blob_with;

    #[test]
    fn erf_matches_known_values() {
        let known = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.9, 0.9999589021219005),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (-1.0, -0.8427007929497149),
        ];
        for (x, want) in known {
            assert!((erf(x) - want).abs() < 1e-15, "erf({x}) = {} want {want}", erf(x));
        }
        // erfc from the continued fraction, relative accuracy.
        for (x, want) in [(3.0, 2.209049699858544e-5), (5.0, 1.537_459_794_428_035e-12)] {
            assert!((erfc_large(x) / want - 1.0).abs() < 1e-13, "erfc({x}) = {}", erfc_large(x));
        }
        assert_eq!(erf(40.0), 1.0);
        assert_eq!(erf(-40.0), -1.0);
        // The two branches meet smoothly at 3.
        assert!((erf(3.0 - 1e-12) - erf(3.0)).abs() < 1e-15);
    }

    #[test]
    fn f16_and_int4_decoding() {
        assert_eq!(f16_bits_to_f64(0x3c00), 1.0);
        assert_eq!(f16_bits_to_f64(0xc000), -2.0);
        assert_eq!(f16_bits_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(f16_bits_to_f64(0x7bff), 65504.0);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2), vec![1, 2]);
        assert_eq!(top_k(&[0.0, 0.0], 5), vec![0, 1]);
    }

    fn core_vs_reference(bytes: &AlignedBytes) -> (f64, f64, usize, usize) {
        let model = open_model(bytes).unwrap();
        let reference = RefModel::from_bytes(bytes).unwrap();
        let tokens = default_tokens(model.config());
        let core = logits_for_tokens(&model, &tokens, |_, _| ()).unwrap();
        let want = reference.logits(&tokens).unwrap();
        let vocab = model.config().vocab as usize;
        let max = core.iter().zip(&want).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        let range = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let agree = core
            .chunks(vocab)
            .zip(want.chunks(vocab))
            .filter(|(a, b)| {
                let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                itera_edge::sample::argmax(a) == itera_edge::sample::argmax(&b32)
            })
            .count();
        (max, range, agree, tokens.len())
    }

    #[test]
    fn core_matches_reference_on_a_synthetic_f32_blob() {
        let (max, range, agree, n) = core_vs_reference(&tiny_blob_with(5, &PackOptions::default()));
        assert!(max < 1e-4, "max |Δ| {max:e} (range {range})");
        assert_eq!(agree, n);
    }

    #[test]
    fn reference_dequantizes_int8_like_the_core() {
        let quant = itera_pack::quant::QuantPolicy::parse_spec("int8").unwrap();
        let (max, range, agree, n) =
            core_vs_reference(&tiny_blob_with(5, &PackOptions { quant, ..Default::default() }));
        // The core also quantizes activations to int8: close, not equal.
        assert!(max < 0.05 * range, "max |Δ| {max:e} vs range {range}");
        assert!(agree as f64 >= 0.9 * n as f64, "{agree}/{n}");
    }

    #[test]
    fn reference_dequantizes_int4() {
        let quant = itera_pack::quant::QuantPolicy::parse_spec("int4").unwrap();
        let (max, range, _, _) = core_vs_reference(&tiny_blob_with(5, &PackOptions { quant, ..Default::default() }));
        assert!(max < 0.1 * range, "max |Δ| {max:e} vs range {range}");
    }
}
