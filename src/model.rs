//! The Itera-Lite model: its weights as views into the blob, and the forward pass, top to
//! bottom. Matrix products go through [`Matrix`] (see `kernels.rs`); everything else is
//! written out here as the math reads. The pass runs a block of tokens (a prompt in blocks
//! of up to [`PREFILL_BLOCK`]; generation: one), projections as one product per block.
//!
//! ```text
//! x = E[token] + P[position]
//! for each layer:
//!   SSM:   h = LN(x); [u | g] = in_proj·h; u = silu(conv(u)); dt = mean softplus(delta_proj·u + b)
//!          s = exp(dt·A) ⊙ s + dt·(B·u); y = C·s + D ⊙ u; x += out_proj·(y ⊙ silu(g))
//!   FFN:   x += w2·gelu(w1·LN(x))
//!   MoE:   h = LN(x); z = gate·h; top-k experts by z; x += Σ softmax(z_k)·w2_k·gelu(w1_k·h)
//! logits = lm_head·LN(x)
//! ```

use heapless::Vec;

use crate::math::{exp_nonpositive, gelu, scan_step, silu, softplus_sum};

use crate::blob::Blob;
use crate::error::Error;
use crate::fixed_model::FixedModel;
use crate::format::{Arithmetic, Config, DType, Quant, Role, ScaleType, TensorEntry, MAX_EXPERTS, MAX_LAYERS};
use crate::kernels::{Matrix, Scales, Weights};
use crate::tokenizer::Tokenizer;

/// Tokens per block when a session's arena holds [`Model::prefill_arena_bytes`].
pub const PREFILL_BLOCK: usize = 8;

/// Most expert weight pairs (over all MoE layers) a [`Model`] holds.
pub const MAX_EXPERT_SLOTS: usize = 64;

/// LayerNorm parameters.
#[derive(Clone, Copy, Debug)]
struct Norm<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
}

/// The SSM block's parameters.
#[derive(Clone, Copy, Debug)]
struct Ssm<'a> {
    norm: Norm<'a>,
    in_proj: Matrix<'a>,
    /// `[d_inner, K]`, row per channel.
    conv_weight: &'a [f32],
    conv_bias: &'a [f32],
    a_log: &'a [f32],
    b: Matrix<'a>,
    c: Matrix<'a>,
    d: &'a [f32],
    delta_proj: Matrix<'a>,
    delta_bias: &'a [f32],
    out_proj: Matrix<'a>,
}

/// A two-layer GELU MLP: a plain FFN or one expert.
#[derive(Clone, Copy, Debug)]
struct Mlp<'a> {
    w1: Matrix<'a>,
    w2: Matrix<'a>,
}

/// What follows the SSM block.
#[derive(Clone, Copy, Debug)]
enum Mixer<'a> {
    Ffn(Mlp<'a>),
    /// Router, and where this layer's experts start in `Model::experts`.
    Moe {
        gate: Matrix<'a>,
        first: usize,
    },
}

#[derive(Clone, Copy, Debug)]
struct Layer<'a> {
    ssm: Ssm<'a>,
    mix_norm: Norm<'a>,
    mixer: Mixer<'a>,
}

/// A model ready to run: config plus zero-copy views of every weight in the blob, computed
/// in float (`FloatModel`, below) or, for a fixed-point blob, in integers only
/// (`fixed_model.rs`).
#[derive(Clone, Debug)]
pub struct Model<'a> {
    body: Body<'a>,
    tokenizer: Option<Tokenizer<'a>>,
}

/// Which forward pass a model runs. Held by value (no heap): a model is one or the other,
/// so the enum costs the larger one's size, not both.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Body<'a> {
    /// f32 activations.
    Float(FloatModel<'a>),
    /// Integer arithmetic only.
    Fixed(FixedModel<'a>),
}

impl<'a> Model<'a> {
    /// Builds the weight views of a parsed blob. Fails only on a dtype this build cannot run.
    pub fn new(blob: &Blob<'a>) -> Result<Self, Error> {
        let body = match blob.arithmetic() {
            Arithmetic::Float => Body::Float(FloatModel::new(blob)?),
            Arithmetic::Fixed => Body::Fixed(FixedModel::new(blob)?),
        };
        Ok(Model { body, tokenizer: blob.tokenizer() })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &Config {
        match &self.body {
            Body::Float(m) => &m.config,
            Body::Fixed(m) => m.config(),
        }
    }

    /// Float or fixed-point arithmetic, as the blob says.
    pub fn arithmetic(&self) -> Arithmetic {
        match self.body {
            Body::Float(_) => Arithmetic::Float,
            Body::Fixed(_) => Arithmetic::Fixed,
        }
    }

    /// The blob's tokenizer, if it has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer<'a>> {
        self.tokenizer.as_ref()
    }

    /// The forward pass this model runs.
    pub(crate) fn body(&self) -> &Body<'a> {
        &self.body
    }

    /// Exact bytes of arena a [`crate::Session`] needs (a 4-aligned buffer): the f32 (or,
    /// fixed point, `i32`) buffers, then the int8 scratch of the integer kernels (none for
    /// float-only models). Such a session runs a prompt one token at a time.
    pub fn arena_bytes(&self) -> usize {
        match &self.body {
            Body::Float(m) => m.arena_bytes_for(1),
            Body::Fixed(m) => m.arena_bytes(),
        }
    }

    /// Bytes of arena with which a [`crate::Session`] runs a prompt in blocks of
    /// [`PREFILL_BLOCK`] tokens, each projection one matrix product per block (weights read
    /// once per block, not once per token). Same results, bit for bit; more RAM. A
    /// fixed-point model runs token by token: [`Model::arena_bytes`].
    pub fn prefill_arena_bytes(&self) -> usize {
        match &self.body {
            Body::Float(m) => m.arena_bytes_for(PREFILL_BLOCK),
            Body::Fixed(m) => m.arena_bytes(),
        }
    }

    /// Name of the kernel the bulk of the work runs on (layer 0's `in_proj`; every
    /// projection of a blob normally shares one dtype).
    pub fn kernel_name(&self) -> &'static str {
        match &self.body {
            Body::Float(m) => m.kernel_name(),
            Body::Fixed(_) => "i8-fixed",
        }
    }

    /// Multiply-accumulates of one token through the weights (experts: the `top_k` picked).
    pub fn macs_per_token(&self) -> usize {
        let c = self.config();
        let (d, di, n) = (c.d_model as usize, c.d_inner as usize, c.d_state as usize);
        let ssm = 2 * di * d + di * c.conv_kernel as usize + di * di + 2 * n * di + d * di;
        let mixers: usize = (0..c.n_layers)
            .map(|l| match c.is_moe(l) {
                true => c.n_experts as usize * d + c.top_k as usize * 2 * d * c.expert_hidden as usize,
                false => 2 * d * c.ffn_hidden as usize,
            })
            .sum();
        c.n_layers as usize * ssm + mixers + c.vocab as usize * d
    }
}

/// A float model: config plus zero-copy views of every weight in the blob.
#[derive(Clone, Debug)]
pub(crate) struct FloatModel<'a> {
    config: Config,
    embedding: Matrix<'a>,
    position: Matrix<'a>,
    layers: Vec<Layer<'a>, MAX_LAYERS>,
    experts: Vec<Mlp<'a>, MAX_EXPERT_SLOTS>,
    final_norm: Norm<'a>,
    lm_head: Matrix<'a>,
    /// Bytes of int8 scratch `matvec` needs: the widest integer matrix's `cols` (0 if none).
    scratch_len: usize,
}

/// Walks the blob's tensor table in canonical order, handing out typed views (the float
/// ones here, the fixed-point ones in `fixed_model.rs`).
pub(crate) struct Tensors<'b, 'a, I> {
    pub(crate) blob: &'b Blob<'a>,
    rows: I,
    /// Widest `cols` of an integer matrix that `matvec` runs on so far.
    pub(crate) scratch_len: usize,
}

/// A walk over `blob`'s table from its first tensor.
pub(crate) fn tensors_of<'b, 'a>(blob: &'b Blob<'a>) -> Tensors<'b, 'a, impl Iterator<Item = TensorEntry> + 'a> {
    Tensors { blob, rows: blob.tensors(), scratch_len: 0 }
}

impl<'a, I: Iterator<Item = TensorEntry>> Tensors<'_, 'a, I> {
    /// The next tensor, which must have `role`.
    pub(crate) fn next(&mut self, role: Role) -> Result<TensorEntry, Error> {
        match self.rows.next() {
            Some(e) if e.role == role => Ok(e),
            _ => Err(Error::Malformed("tensor table out of canonical order")),
        }
    }

    fn f32s(&self, e: &TensorEntry) -> Result<&'a [f32], Error> {
        if e.dtype != DType::F32 {
            return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype });
        }
        bytemuck::try_cast_slice(self.blob.data(e)).map_err(|_| Error::BlobNotAligned)
    }

    fn vector(&mut self, role: Role) -> Result<&'a [f32], Error> {
        let e = self.next(role)?;
        self.f32s(&e)
    }

    fn scales(&self, e: &TensorEntry, scale_type: ScaleType) -> Result<Scales<'a>, Error> {
        let bytes = self.blob.scales(e);
        Ok(match scale_type {
            ScaleType::F32 => Scales::F32(bytemuck::try_cast_slice(bytes).map_err(|_| Error::BlobNotAligned)?),
            ScaleType::F16 => Scales::F16(bytemuck::try_cast_slice(bytes).map_err(|_| Error::BlobNotAligned)?),
            // Requantization rows belong to fixed-point blobs, which `FixedModel` runs.
            ScaleType::Requant => return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype }),
        })
    }

    /// A weight matrix in whatever dtype the blob stores it.
    fn weights(&self, e: &TensorEntry) -> Result<Weights<'a>, Error> {
        let data = self.blob.data(e);
        let aligned = |_| Error::BlobNotAligned;
        Ok(match (e.dtype, e.quant) {
            (DType::F32, Quant::None) => Weights::F32(bytemuck::try_cast_slice(data).map_err(aligned)?),
            (DType::F16, Quant::None) => Weights::F16(bytemuck::try_cast_slice(data).map_err(aligned)?),
            (DType::I8, Quant::PerTensor { scale, zero_point }) => Weights::I8Affine {
                q: bytemuck::cast_slice(data),
                scale,
                // `Blob::parse` refused a zero point outside qint8's range.
                zero_point: i8::try_from(zero_point)
                    .map_err(|_| Error::ZeroPointOutOfRange { tensor: e.name(), zero_point })?,
            },
            (DType::I8, Quant::Grouped { group, scale_type, .. }) => Weights::I8 {
                q: bytemuck::cast_slice(data),
                scales: self.scales(e, scale_type)?,
                group: group as usize,
            },
            // `Blob::parse` refused a nonzero zero point: int4 as published is symmetric.
            (DType::I4, Quant::PerTensor { scale, .. }) => Weights::I4Tensor { packed: data, scale },
            (DType::I4, Quant::Grouped { group, scale_type, .. }) => {
                Weights::I4 { packed: data, scales: self.scales(e, scale_type)?, group: group as usize }
            }
            _ => return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype }),
        })
    }

    /// The next tensor as a matrix; `matvec`: whether the forward pass multiplies with it
    /// (then its int8 scratch need counts), or only reads rows.
    fn matrix_for(&mut self, role: Role, matvec: bool) -> Result<Matrix<'a>, Error> {
        let e = self.next(role)?;
        let w = self.weights(&e)?;
        let m = Matrix::new(e.shape[0] as usize, e.shape[1] as usize, w).ok_or(Error::BadTensor {
            role,
            layer: e.layer,
            why: "data does not match shape and quantization",
        })?;
        if matvec && m.needs_scratch() {
            self.scratch_len = self.scratch_len.max(m.cols());
        }
        Ok(m)
    }

    fn matrix(&mut self, role: Role) -> Result<Matrix<'a>, Error> {
        self.matrix_for(role, true)
    }

    fn table(&mut self, role: Role) -> Result<Matrix<'a>, Error> {
        self.matrix_for(role, false)
    }

    fn norm(&mut self, weight: Role, bias: Role) -> Result<Norm<'a>, Error> {
        Ok(Norm { weight: self.vector(weight)?, bias: self.vector(bias)? })
    }

    fn mlp(&mut self, w1: Role, w2: Role) -> Result<Mlp<'a>, Error> {
        Ok(Mlp { w1: self.matrix(w1)?, w2: self.matrix(w2)? })
    }
}

impl<'a> FloatModel<'a> {
    /// Builds the weight views of a parsed float blob.
    fn new(blob: &Blob<'a>) -> Result<Self, Error> {
        let config = *blob.config();
        let mut t = tensors_of(blob);
        let embedding = t.table(Role::Embedding)?;
        let position = t.table(Role::Position)?;
        let mut layers = Vec::new();
        let mut experts = Vec::new();
        for l in 0..config.n_layers {
            let ssm = Ssm {
                norm: t.norm(Role::SsmNormWeight, Role::SsmNormBias)?,
                in_proj: t.matrix(Role::InProj)?,
                conv_weight: t.vector(Role::ConvWeight)?,
                conv_bias: t.vector(Role::ConvBias)?,
                a_log: t.vector(Role::ALog)?,
                b: t.matrix(Role::B)?,
                c: t.matrix(Role::C)?,
                d: t.vector(Role::D)?,
                delta_proj: t.matrix(Role::DeltaProj)?,
                delta_bias: t.vector(Role::DeltaBias)?,
                out_proj: t.matrix(Role::OutProj)?,
            };
            let mix_norm = t.norm(Role::MixNormWeight, Role::MixNormBias)?;
            let mixer = if config.is_moe(l) {
                let gate = t.matrix(Role::Gate)?;
                let first = experts.len();
                for _ in 0..config.n_experts {
                    let mlp = t.mlp(Role::ExpertW1, Role::ExpertW2)?;
                    experts.push(mlp).map_err(|_| Error::Capacity {
                        what: "expert weight pairs",
                        needed: first + config.n_experts as usize,
                        max: MAX_EXPERT_SLOTS,
                    })?;
                }
                Mixer::Moe { gate, first }
            } else {
                Mixer::Ffn(t.mlp(Role::FfnW1, Role::FfnW2)?)
            };
            let layer = Layer { ssm, mix_norm, mixer };
            layers.push(layer).map_err(|_| Error::Capacity {
                what: "layers",
                needed: config.n_layers as usize,
                max: MAX_LAYERS,
            })?;
        }
        let final_norm = t.norm(Role::FinalNormWeight, Role::FinalNormBias)?;
        let lm_head = t.matrix(Role::LmHead)?;
        let scratch_len = t.scratch_len;
        Ok(FloatModel { config, embedding, position, layers, experts, final_norm, lm_head, scratch_len })
    }

    /// Arena bytes for blocks of `block` tokens.
    pub(crate) fn arena_bytes_for(&self, block: usize) -> usize {
        self.float_count(block) * 4 + self.scratch_len
    }

    /// f32s at the start of the arena, for blocks of `block` tokens.
    pub(crate) fn float_count(&self, block: usize) -> usize {
        buffer_lens(&self.config, block).iter().sum::<usize>()
    }

    /// Name of the kernel layer 0's `in_proj` runs on.
    fn kernel_name(&self) -> &'static str {
        self.layers.first().map_or(self.lm_head, |l| l.ssm.in_proj).kernel_name()
    }

    /// A block of `tokens` (at most `s.block`, positions `pos` on) through the model: reads
    /// and updates the recurrent state in `s` and, if `logits`, leaves the last token's
    /// logits in `s.logits` (a prompt's earlier tokens skip the output projection). The
    /// session has checked the tokens and positions.
    #[allow(unsafe_code)] // the AVX2 build of the same code, once the host enabled it
    pub(crate) fn forward(&self, s: &mut State<'_>, tokens: &[u32], pos: usize, logits: bool) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::avx2() {
            // SAFETY: `avx2()` is true only after `enable_avx2`, whose caller checked that
            // this CPU has AVX2 and F16C.
            unsafe { self.forward_avx2(s, tokens, pos, logits) };
            return;
        }
        self.forward_portable(s, tokens, pos, logits);
    }

    /// [`Model::forward_portable`] compiled with AVX2 enabled.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    fn forward_avx2(&self, s: &mut State<'_>, tokens: &[u32], pos: usize, logits: bool) {
        self.forward_portable(s, tokens, pos, logits);
    }

    /// The forward pass itself, over a block of tokens (generation: a block of one). Token
    /// `i`'s vectors are row `i` of each block buffer. The projections run once per block
    /// as matrix products (each weight row read once for all the block's tokens); the conv,
    /// the scan and the router run token by token, in order. Every token gets exactly the
    /// operations it would get alone, so the bits do not depend on the block size. `forward`
    /// may run this compiled for AVX2 (the elementwise loops vectorise wider; float sums keep
    /// their order, so the results are the same bits).
    #[inline(always)]
    fn forward_portable(&self, s: &mut State<'_>, tokens: &[u32], pos: usize, logits: bool) {
        let c = &self.config;
        let eps = c.norm_eps;
        let k = c.conv_kernel as usize;
        let (d, di) = (c.d_model as usize, c.d_inner as usize);
        let n = tokens.len().min(s.block);
        let hid = s.hidden.len() / s.block;

        // x_i = E[token_i] + P[pos + i]
        for (i, (x, &token)) in s.x.chunks_exact_mut(d).zip(tokens).enumerate() {
            x.fill(0.0);
            self.embedding.add_row(token as usize, x);
            self.position.add_row(pos + i, x);
        }

        let history = s.conv.chunks_exact_mut((k - 1) * di);
        let states = s.ssm.chunks_exact_mut(c.d_state as usize);
        let last_layer = self.layers.len().saturating_sub(1);
        for (l, ((layer, history), state)) in self.layers.iter().zip(history).zip(states).enumerate() {
            // What the last layer adds to x reaches nothing but the logits: there, tokens
            // whose logits nobody wants (a prompt's, except the last one asked for) skip
            // that path (y, out_proj, the mixer) and only move the recurrent state on.
            // Tokens `skip..n` take the whole layer.
            let skip = match (l == last_layer, logits) {
                (false, _) => 0,
                (true, true) => n.saturating_sub(1),
                (true, false) => n,
            };
            let m = n - skip;

            // ---- SSM block: x += out_proj · (y ⊙ silu(g)) ----
            let p = &layer.ssm;
            layer_norms(s.x, &p.norm, eps, s.h, d, n);
            // [u | g] = in_proj · h; tokens before `skip` need only u (g gates what they skip).
            if skip > 0 {
                p.in_proj.top(di).matmul(s.h, d, s.ug, 2 * di, skip, s.xq);
            }
            let (h, ug) = (s.h.get(skip * d..).unwrap_or_default(), s.ug.get_mut(skip * 2 * di..).unwrap_or_default());
            p.in_proj.matmul(h, d, ug, 2 * di, m, s.xq);

            // Causal depthwise conv over time, channel c: v_c = bias_c + Σ_j w[c, K-1-j]·u_c(pos-j).
            // The last K-1 inputs live tap-major in a ring (input of position p in slot
            // p mod (K-1), zeros before the first), so each tap is one pass over the
            // channels and the newest input just overwrites the oldest.
            let slots = k - 1;
            for (i, (v, ug)) in s.v.chunks_exact_mut(di).zip(s.ug.chunks_exact(2 * di)).take(n).enumerate() {
                let (pos, u) = (pos + i, ug.split_at(di).0);
                let past = |j: usize| {
                    let slot = (pos + slots - j) % slots;
                    history.get(slot * di..(slot + 1) * di).unwrap_or_default()
                };
                if let (4, (w4, [])) = (k, p.conv_weight.as_chunks::<4>()) {
                    // The published K: all taps in one pass (fixed-stride weights vectorise).
                    let (h1, h2, h3) = (past(1), past(2), past(3));
                    let inputs = u.iter().zip(h1).zip(h2).zip(h3);
                    for (((v, &bias), w), (((u, a), b), c)) in v.iter_mut().zip(p.conv_bias).zip(w4).zip(inputs) {
                        *v = bias + w[3] * u + w[2] * a + w[1] * b + w[0] * c;
                    }
                } else {
                    let taps = || p.conv_weight.chunks_exact(k);
                    for (((v, &bias), &u), w) in v.iter_mut().zip(p.conv_bias).zip(u).zip(taps()) {
                        *v = bias + w.get(k - 1).copied().unwrap_or(0.0) * u;
                    }
                    for j in 1..k {
                        for ((v, w), h) in v.iter_mut().zip(taps()).zip(past(j)) {
                            *v += w.get(k - 1 - j).copied().unwrap_or(0.0) * h;
                        }
                    }
                }
                let newest = pos % slots;
                if let Some(slot) = history.get_mut(newest * di..(newest + 1) * di) {
                    slot.copy_from_slice(u);
                }
                // Elementwise loops on their own vectorise.
                v.iter_mut().for_each(|v| *v = silu(*v));
            }

            p.delta_proj.matmul(s.v, di, s.t, di, n, s.xq);
            let per_token = s.t.chunks_exact_mut(di).zip(s.v.chunks_exact(di)).zip(s.ug.chunks_exact(2 * di));
            for (i, ((t, v), ug)) in per_token.take(n).enumerate() {
                // dt = mean_j softplus(delta_proj · u + b)_j: one step size for all channels.
                let dt = softplus_sum(t, p.delta_bias) / c.d_inner as f32;

                // s = exp(dt·A) ⊙ s + dt·(B·u), A = -exp(A_log)
                p.b.matvec(v, s.bu, s.xq);
                scan_step(state, p.a_log, s.bu, dt);
                if i < skip {
                    continue;
                }

                // y = C·s + D ⊙ u, gated by silu(g)
                p.c.matvec(state, t, s.xq);
                for (((y, d), v), g) in t.iter_mut().zip(p.d).zip(v.iter()).zip(ug.split_at(di).1) {
                    *y = (*y + d * v) * silu(*g);
                }
            }
            // From here on, rows `skip..n` of the block buffers.
            let x = s.x.get_mut(skip * d..).unwrap_or_default();
            let h = s.h.get_mut(skip * d..).unwrap_or_default();
            let y = s.t.get(skip * di..).unwrap_or_default();
            p.out_proj.matmul(y, di, h, d, m, s.xq);
            add(x, h, d * m);

            // ---- FFN or MoE: x += mixer(LN(x)) ----
            layer_norms(x, &layer.mix_norm, eps, h, d, m);
            match layer.mixer {
                Mixer::Ffn(mlp) => {
                    mlp.apply(h, s.hidden, hid, s.acc, m, s.xq);
                    add(x, s.acc, d * m);
                }
                Mixer::Moe { gate, first } => {
                    // Each token picks its own experts: token by token.
                    for (x, h) in x.chunks_exact_mut(d).zip(h.chunks_exact(d)).take(m) {
                        gate.matvec(h, s.z, s.xq);
                        let picked = top_k(s.z, c.top_k as usize);
                        // Softmax over the picked router logits only.
                        // `picked` indexes `s.z` (from `top_k`), so `get` is always `Some`.
                        let z = |i: usize| s.z.get(i).copied().unwrap_or(f32::NEG_INFINITY);
                        let max = picked.iter().map(|&i| z(i)).fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f32, MAX_EXPERTS> = picked.iter().map(|&i| exp_nonpositive(z(i) - max)).collect();
                        let total: f32 = e.iter().sum();
                        for (&i, e) in picked.iter().zip(&e) {
                            let weight = e / total;
                            if let Some(expert) = self.experts.get(first + i) {
                                expert.apply(h, s.hidden, hid, s.acc, 1, s.xq);
                                for (x, y) in x.iter_mut().zip(s.acc.iter()) {
                                    *x += weight * y;
                                }
                            }
                        }
                    }
                }
            }
        }

        // logits = lm_head · LN(x) of the block's last token
        if let (true, Some(last)) = (logits, n.checked_sub(1)) {
            let x = s.x.chunks_exact(d).nth(last).unwrap_or_default();
            layer_norm(x, &self.final_norm, eps, s.h);
            self.lm_head.matvec(s.h, s.logits, s.xq);
        }
    }
}

impl Mlp<'_> {
    /// `out_i = w2 · gelu(w1 · x_i)` for the first `n` rows of `x` (`d` wide) into the rows
    /// of `out` (`d` wide), with `hidden` (rows `hid` apart; and `scratch` for integer
    /// kernels) as scratch.
    fn apply(&self, x: &[f32], hidden: &mut [f32], hid: usize, out: &mut [f32], n: usize, scratch: &mut [i8]) {
        let (d, rows) = (self.w1.cols(), self.w1.rows().min(hid));
        self.w1.matmul(x, d, hidden, hid, n, scratch);
        for h in hidden.chunks_exact_mut(hid.max(1)).take(n) {
            h.iter_mut().take(rows).for_each(|h| *h = gelu(*h));
        }
        self.w2.matmul(hidden, hid, out, self.w2.rows(), n, scratch);
    }
}

/// The `k` largest entries of `z`, by value; ties go to the lower index.
pub(crate) fn top_k<T: PartialOrd + Copy>(z: &[T], k: usize) -> Vec<usize, MAX_EXPERTS> {
    let mut picked: Vec<usize, MAX_EXPERTS> = Vec::new();
    for _ in 0..k.min(z.len()) {
        let mut best: Option<usize> = None;
        for (i, &v) in z.iter().enumerate() {
            if picked.contains(&i) {
                continue;
            }
            if best.is_none_or(|b| z.get(b).is_none_or(|&zb| v > zb)) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            if picked.push(b).is_err() {
                break;
            }
        }
    }
    picked
}

/// LayerNorm with `p`'s weight and bias.
fn layer_norm(x: &[f32], p: &Norm<'_>, eps: f32, out: &mut [f32]) {
    crate::math::layer_norm(x, p.weight, p.bias, eps, out);
}

/// [`layer_norm`] of each of the first `n` rows (`d` wide) of `x` into the rows of `out`.
fn layer_norms(x: &[f32], p: &Norm<'_>, eps: f32, out: &mut [f32], d: usize, n: usize) {
    for (x, out) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).take(n) {
        layer_norm(x, p, eps, out);
    }
}

/// `x += y` over the first `len` values.
fn add(x: &mut [f32], y: &[f32], len: usize) {
    x.iter_mut().zip(y).take(len).for_each(|(x, y)| *x += y);
}

/// Lengths (in f32s) of the buffers a session carves from its arena, in [`State`] order,
/// for blocks of up to `block` tokens (the per-token buffers hold one row per token).
pub(crate) fn buffer_lens(c: &Config, block: usize) -> [usize; 12] {
    let (d, di, n, k) = (c.d_model as usize, c.d_inner as usize, c.d_state as usize, c.conv_kernel as usize);
    let any_moe = c.moe_layers != 0;
    let hidden = (c.ffn_hidden as usize).max(if any_moe { c.expert_hidden as usize } else { 0 });
    let layers = c.n_layers as usize;
    let b = block.max(1);
    [
        b * d,                 // x
        b * d,                 // h
        b * 2 * di,            // ug
        b * di,                // v
        b * di,                // t
        n,                     // bu
        b * hidden,            // hidden
        b * d,                 // acc
        c.n_experts as usize,  // z
        c.vocab as usize,      // logits
        layers * (k - 1) * di, // conv history
        layers * n,            // ssm state
    ]
}

/// A session's working memory, carved from its arena. The per-token buffers (`x`, `h`,
/// `ug`, `v`, `t`, `hidden`, `acc`) hold `block` rows, one per token of a block.
pub(crate) struct State<'s> {
    /// Tokens per block (1: one token at a time).
    pub block: usize,
    /// Residual stream, `[block][d]`.
    pub x: &'s mut [f32],
    /// Normalised input of the current sub-block (and its output), `[block][d]`.
    pub h: &'s mut [f32],
    /// `in_proj` output `[u | g]`, `[block][2 d_inner]`.
    pub ug: &'s mut [f32],
    /// Conv + silu output, `[block][d_inner]`.
    pub v: &'s mut [f32],
    /// `delta_proj` output, then `y`, `[block][d_inner]`.
    pub t: &'s mut [f32],
    /// `B·u`, `[N]`.
    pub bu: &'s mut [f32],
    /// MLP hidden layer, `[block][max(ffn_hidden, expert_hidden)]`.
    pub hidden: &'s mut [f32],
    /// MLP output, `[block][d]`.
    pub acc: &'s mut [f32],
    /// Router logits, `[n_experts]`.
    pub z: &'s mut [f32],
    /// Output logits, `[vocab]`.
    pub logits: &'s mut [f32],
    /// Per layer: the last K-1 conv inputs, `[layers][K-1][d_inner]`, position p in slot p mod (K-1).
    pub conv: &'s mut [f32],
    /// Per layer: SSM state, `[layers][N]`.
    pub ssm: &'s mut [f32],
    /// The integer kernels' quantized input, `[widest integer matrix cols]` (may be empty).
    pub xq: &'s mut [i8],
}

impl<'s> State<'s> {
    /// Splits `floats` (exactly `buffer_lens(c, block)` long in total) into the buffers;
    /// `xq` is the int8 scratch (`Model::scratch_len` bytes).
    pub(crate) fn carve(c: &Config, block: usize, mut floats: &'s mut [f32], xq: &'s mut [i8]) -> Self {
        let lens = buffer_lens(c, block);
        let mut parts: [&'s mut [f32]; 12] = Default::default();
        for (part, len) in parts.iter_mut().zip(lens) {
            let (head, tail) = floats.split_at_mut(len.min(floats.len()));
            *part = head;
            floats = tail;
        }
        let [x, h, ug, v, t, bu, hidden, acc, z, logits, conv, ssm] = parts;
        State { block: block.max(1), x, h, ug, v, t, bu, hidden, acc, z, logits, conv, ssm, xq }
    }

    /// Zeroes the recurrent state (conv history and SSM state) and the logits.
    pub(crate) fn reset(&mut self) {
        self.conv.fill(0.0);
        self.ssm.fill(0.0);
        self.logits.fill(0.0);
    }
}
