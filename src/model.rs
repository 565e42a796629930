//! The Itera-Lite model ([`Model`]) and its float forward pass, top to bottom, in the steps
//! of the math below. Matrix products go through [`Matrix`] (`kernels`); everything else is
//! written out here as the math reads. The pass runs a block of tokens (a prompt in blocks
//! of up to [`PREFILL_BLOCK`]; generation: one), each projection one product per block.
//!
//! ```text
//! x = E[token] + P[position]
//! for each layer:
//!   SSM:   h = LN(x); [u | g] = in_proj·h; v = silu(conv(u)); dt = mean softplus(delta_proj·v + b)
//!          s = exp(dt·A) ⊙ s + dt·(B·v); y = C·s + D ⊙ v; x += out_proj·(y ⊙ silu(g))
//!   FFN:   x += w2·gelu(w1·LN(x))
//!   MoE:   h = LN(x); z = gate·h; top-k experts by z; x += Σ softmax(z_k)·w2_k·gelu(w1_k·h)
//! logits = lm_head·LN(x)
//! ```
//!
//! The steps are functions of those names: `ssm_block` (with `causal_conv` and `scan`), then
//! `mixer` (with `route`, the router and its softmax). Each symbol of the math is a buffer
//! of the same name in `TokenBuffers` (`s`: the layer's slice of the SSM state; `A =
//! -exp(A_log)`), and `out` holds what a sub-block adds to `x`.

use core::ops::Range;

use heapless::Vec;

use crate::blob::Blob;
use crate::error::Error;
use crate::fixed_model::FixedModel;
use crate::format::{Arithmetic, Config, DType, Quant, Role, ScaleType, TensorEntry, MAX_EXPERTS};
use crate::kernels::{Matrix, Rows, RowsMut, Scales, Weights};
pub use crate::layers::MAX_EXPERT_SLOTS;
use crate::layers::{buffer_lens, hidden_width, tensors_of, top_k, Mixer, Params, Tensors, Views};
use crate::math::{exp_nonpositive, gelu, scan_step, silu, softplus_sum};
use crate::tokenizer::Tokenizer;

/// Tokens per block when a session's arena holds [`Model::prefill_arena_bytes`].
pub const PREFILL_BLOCK: usize = 8;

/// The float layers' views: [`Matrix`] products, f32 vectors.
type Layer<'a> = crate::layers::Layer<Matrix<'a>, &'a [f32]>;
/// An FFN or an expert of a float model.
type Mlp<'a> = crate::layers::Mlp<Matrix<'a>>;
/// A float LayerNorm's weight and bias.
type Norm<'a> = crate::layers::Norm<&'a [f32]>;
/// A float SSM block's parameters.
type Ssm<'a> = crate::layers::Ssm<Matrix<'a>, &'a [f32]>;

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
    params: Params<Matrix<'a>, &'a [f32]>,
}

/// How a float model views its tensors: a [`Matrix`] in whatever dtype the blob stores it,
/// and f32 vectors.
struct FloatViews;

impl<'a> Views<'a> for FloatViews {
    type Matrix = Matrix<'a>;
    type Vector = &'a [f32];

    fn matrix<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<Matrix<'a>, Error> {
        let m = t.float_matrix(role)?;
        if m.needs_scratch() {
            t.needs_scratch(m.cols());
        }
        Ok(m)
    }

    fn lookup<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<Matrix<'a>, Error> {
        t.float_matrix(role)
    }

    fn vector<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<&'a [f32], Error> {
        let e = t.next(role)?;
        t.f32s(&e)
    }
}

impl<'a, I: Iterator<Item = TensorEntry>> Tensors<'_, 'a, I> {
    fn f32s(&self, e: &TensorEntry) -> Result<&'a [f32], Error> {
        if e.dtype != DType::F32 {
            return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype });
        }
        bytemuck::try_cast_slice(self.blob.data(e)).map_err(|_| Error::BlobNotAligned)
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

    /// The next tensor as a float model's matrix.
    fn float_matrix(&mut self, role: Role) -> Result<Matrix<'a>, Error> {
        let e = self.next(role)?;
        let w = self.weights(&e)?;
        Matrix::new(e.shape[0] as usize, e.shape[1] as usize, w).ok_or(Error::BadTensor {
            role,
            layer: e.layer,
            why: "data does not match shape and quantization",
        })
    }
}

/// Which tokens of a block a layer computes: all `n` (positions `pos..pos + n`) move the
/// recurrent state on; the first `skip` of them stop there (their output reaches nothing
/// anyone asked for), rows `skip..n` take the whole layer.
#[derive(Clone, Copy, Debug)]
struct Span {
    pos: usize,
    n: usize,
    skip: usize,
}

impl<'a> FloatModel<'a> {
    /// Builds the weight views of a parsed float blob.
    fn new(blob: &Blob<'a>) -> Result<Self, Error> {
        let config = *blob.config();
        let params = tensors_of(blob).params::<FloatViews>(&config)?;
        Ok(FloatModel { config, params })
    }

    /// Arena bytes for blocks of `block` tokens.
    pub(crate) fn arena_bytes_for(&self, block: usize) -> usize {
        self.float_count(block) * 4 + self.params.scratch_len
    }

    /// f32s at the start of the arena, for blocks of `block` tokens.
    pub(crate) fn float_count(&self, block: usize) -> usize {
        buffer_lens(&self.config, block).iter().sum::<usize>()
    }

    /// Name of the kernel layer 0's `in_proj` runs on.
    fn kernel_name(&self) -> &'static str {
        self.params.layers.first().map_or(self.params.lm_head, |l| l.ssm.in_proj).kernel_name()
    }

    /// A block of `tokens` (at most `buf.block`, positions `pos` on) through the model: reads
    /// and updates the recurrent state in `buf` and, if `logits`, leaves the last token's
    /// logits in `buf.logits` (a prompt's earlier tokens skip the output projection). The
    /// session has checked the tokens and positions.
    #[allow(unsafe_code)] // the AVX2 build of the same code, once the host enabled it
    pub(crate) fn forward(&self, buf: &mut FloatBuffers<'_>, tokens: &[u32], pos: usize, logits: bool) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::avx2() {
            // SAFETY: `avx2()` is true only after `enable_avx2`, whose caller checked that
            // this CPU has AVX2 and F16C.
            unsafe { self.forward_avx2(buf, tokens, pos, logits) };
            return;
        }
        self.forward_portable(buf, tokens, pos, logits);
    }

    /// [`FloatModel::forward_portable`] compiled with AVX2 enabled.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    fn forward_avx2(&self, buf: &mut FloatBuffers<'_>, tokens: &[u32], pos: usize, logits: bool) {
        self.forward_portable(buf, tokens, pos, logits);
    }

    /// The forward pass itself, over a block of tokens (generation: a block of one). Token
    /// `i`'s vectors are row `i` of each block buffer. The projections run once per block
    /// as matrix products (each weight row read once for all the block's tokens); the conv,
    /// the scan and the router run token by token, in order. Every token gets exactly the
    /// operations it would get alone, so the bits do not depend on the block size. `forward`
    /// may run this compiled for AVX2 (the elementwise loops vectorise wider; float sums keep
    /// their order, so the results are the same bits); so every step is inlined into it.
    #[inline(always)]
    fn forward_portable(&self, buf: &mut FloatBuffers<'_>, tokens: &[u32], pos: usize, logits: bool) {
        let (c, p) = (&self.config, &self.params);
        let (k, di) = (c.conv_kernel as usize, c.d_inner as usize);
        let FloatBuffers { block, work: t, conv_history, ssm_state, logits: logits_out } = buf;
        let n = tokens.len().min(*block);

        // x_i = E[token_i] + P[pos + i]
        for (i, (x, &token)) in t.x.each_mut(0..n).zip(tokens).enumerate() {
            x.fill(0.0);
            p.embedding.add_row(token as usize, x);
            p.position.add_row(pos + i, x);
        }

        let histories = conv_history.chunks_exact_mut((k - 1) * di);
        let states = ssm_state.chunks_exact_mut(c.d_state as usize);
        let last_layer = p.layers.len().saturating_sub(1);
        for (l, ((layer, history), s)) in p.layers.iter().zip(histories).zip(states).enumerate() {
            // What the last layer adds to x reaches nothing but the logits: there, tokens
            // whose logits nobody wants (a prompt's, except the last one asked for) skip
            // that path (y, out_proj, the mixer) and only move the recurrent state on.
            let skip = match (l == last_layer, logits) {
                (false, _) => 0,
                (true, true) => n.saturating_sub(1),
                (true, false) => n,
            };
            let span = Span { pos, n, skip };
            self.ssm_block(&layer.ssm, t, history, s, span);
            self.mixer(layer, t, skip..n);
        }

        // logits = lm_head · LN(x) of the block's last token
        if let (true, Some(last)) = (logits, n.checked_sub(1)) {
            layer_norm(t.x.row(last), &p.final_norm, c.norm_eps, t.h.row_mut(0));
            p.lm_head.matvec(t.h.row(0), logits_out, t.scratch);
        }
    }

    /// The SSM block, `x += out_proj·(y ⊙ silu(g))`, over the block's tokens; moves the
    /// layer's conv `history` and SSM state `s` on by all of them.
    #[inline(always)]
    fn ssm_block(&self, p: &Ssm<'_>, t: &mut TokenBuffers<'_>, history: &mut [f32], s: &mut [f32], span: Span) {
        let Span { n, skip, .. } = span;
        // h = LN(x)
        layer_norms(&p.norm, self.config.norm_eps, &t.x, &mut t.h, 0..n);
        // [u | g] = in_proj·h; tokens before `skip` need only u (g gates what they skip).
        if skip > 0 {
            let u_rows = p.in_proj.top(self.config.d_inner as usize);
            u_rows.matmul(t.h.rows(0..skip), t.ug.rows_mut(0..skip), t.scratch);
        }
        p.in_proj.matmul(t.h.rows(skip..n), t.ug.rows_mut(skip..n), t.scratch);
        // v = silu(conv(u))
        self.causal_conv(p, &t.ug, &mut t.v, history, span);
        // delta_proj·v, into y's rows: each token's dt reads its row before its y replaces it.
        p.delta_proj.matmul(t.v.rows(0..n), t.y.rows_mut(0..n), t.scratch);
        self.scan(p, t, s, span);
        // x += out_proj·y (y already gated)
        p.out_proj.matmul(t.y.rows(skip..n), t.out.rows_mut(skip..n), t.scratch);
        add(t.x.span_mut(skip..n), t.out.span(skip..n));
    }

    /// `v = silu(conv(u))` for each token of the block, in order: the causal depthwise conv
    /// over time, channel c: `v_c = bias_c + Σ_j w[c, K-1-j]·u_c(pos-j)`. The last K-1 inputs
    /// live tap-major in a ring, `history` (input of position p in slot p mod (K-1), zeros
    /// before the first), so each tap is one pass over the channels and the newest input
    /// just overwrites the oldest.
    ///
    /// Indexing cannot fail: `history` is K-1 slots of `d_inner` (`FloatBuffers::carve`), a
    /// slot number is taken mod K-1, each `w` is a chunk of exactly K taps and `j < K`.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn causal_conv(&self, p: &Ssm<'_>, ug: &Block<'_>, v: &mut Block<'_>, history: &mut [f32], span: Span) {
        let (k, di) = (self.config.conv_kernel as usize, self.config.d_inner as usize);
        let slots = k - 1;
        for (i, (v, ug)) in v.each_mut(0..span.n).zip(ug.each(0..span.n)).enumerate() {
            let (pos, u) = (span.pos + i, ug.split_at(di).0);
            let past = |j: usize| {
                let slot = (pos + slots - j) % slots;
                &history[slot * di..(slot + 1) * di]
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
                    *v = bias + w[k - 1] * u;
                }
                for j in 1..k {
                    for ((v, w), h) in v.iter_mut().zip(taps()).zip(past(j)) {
                        *v += w[k - 1 - j] * h;
                    }
                }
            }
            let newest = pos % slots;
            history[newest * di..(newest + 1) * di].copy_from_slice(u);
            // Elementwise loops on their own vectorise.
            v.iter_mut().for_each(|v| *v = silu(*v));
        }
    }

    /// The selective scan over the block's tokens, in order. Per token: `dt` from its row of
    /// `delta_proj·v` (in `y`), `s = exp(dt·A) ⊙ s + dt·(B·v)`, and, from token `skip` on,
    /// `y = (C·s + D ⊙ v) ⊙ silu(g)` into the same row.
    #[inline(always)]
    fn scan(&self, p: &Ssm<'_>, t: &mut TokenBuffers<'_>, s: &mut [f32], span: Span) {
        let di = self.config.d_inner as usize;
        let TokenBuffers { ug, v, y, bv, scratch, .. } = t;
        let per_token = y.each_mut(0..span.n).zip(v.each(0..span.n)).zip(ug.each(0..span.n));
        for (i, ((y, v), ug)) in per_token.enumerate() {
            // dt = mean_j softplus(delta_proj·v + b)_j: one step size for all channels.
            let dt = softplus_sum(y, p.delta_bias) / self.config.d_inner as f32;

            // s = exp(dt·A) ⊙ s + dt·(B·v), A = -exp(A_log)
            p.b.matvec(v, bv, scratch);
            scan_step(s, p.a, bv, dt);
            if i < span.skip {
                continue;
            }

            // y = C·s + D ⊙ v, gated by silu(g)
            p.c.matvec(s, y, scratch);
            for (((y, d), v), g) in y.iter_mut().zip(p.d).zip(v.iter()).zip(ug.split_at(di).1) {
                *y = (*y + d * v) * silu(*g);
            }
        }
    }

    /// The FFN or MoE sub-block over the block's `rows`: `x += mixer(LN(x))`.
    #[inline(always)]
    fn mixer(&self, layer: &Layer<'_>, t: &mut TokenBuffers<'_>, rows: Range<usize>) {
        // h = LN(x)
        layer_norms(&layer.mix_norm, self.config.norm_eps, &t.x, &mut t.h, rows.clone());
        match layer.mixer {
            Mixer::Ffn(mlp) => {
                // x += w2·gelu(w1·h)
                mlp.apply(t.h.rows(rows.clone()), &mut t.hidden, t.out.rows_mut(rows.clone()), t.scratch);
                add(t.x.span_mut(rows.clone()), t.out.span(rows));
            }
            Mixer::Moe { gate, first } => {
                // Each token picks its own experts: token by token.
                for i in rows {
                    // x += Σ softmax(z_k)·w2_k·gelu(w1_k·h) over the picked experts k
                    for (k, weight) in self.route(gate, t.h.row(i), t.z, t.scratch) {
                        let expert = self.expert(first + k);
                        expert.apply(t.h.rows(i..i + 1), &mut t.hidden, t.out.rows_mut(i..i + 1), t.scratch);
                        for (x, y) in t.x.row_mut(i).iter_mut().zip(t.out.row(i)) {
                            *x += weight * y;
                        }
                    }
                }
            }
        }
    }

    /// The router of one token: `z = gate·h`, the top-k experts by `z`, and the softmax over
    /// the picked logits only. Each picked expert (its index in the layer) with its weight.
    ///
    /// `z[i]` cannot fail: `top_k` picks indices of `z`.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn route(&self, gate: Matrix<'_>, h: &[f32], z: &mut [f32], scratch: &mut [i8]) -> Vec<(usize, f32), MAX_EXPERTS> {
        gate.matvec(h, z, scratch);
        let picked = top_k(z, self.config.top_k as usize);
        let max = picked.iter().map(|&i| z[i]).fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32, MAX_EXPERTS> = picked.iter().map(|&i| exp_nonpositive(z[i] - max)).collect();
        let total: f32 = e.iter().sum();
        picked.iter().zip(&e).map(|(&i, e)| (i, e / total)).collect()
    }

    /// Expert `at` of `params.experts`: a MoE layer's `first` plus an index below
    /// `n_experts` (its router has `n_experts` rows), which the walk pushed for that layer.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn expert(&self, at: usize) -> &Mlp<'a> {
        &self.params.experts[at]
    }
}

impl Mlp<'_> {
    /// `out_t = w2·gelu(w1·x_t)` for each row of `x` into the rows of `out`, with the first
    /// rows of `hidden` (and `scratch` for integer kernels) as scratch.
    #[inline(always)]
    fn apply(&self, x: Rows<'_>, hidden: &mut Block<'_>, out: RowsMut<'_>, scratch: &mut [i8]) {
        let n = x.len();
        self.w1.matmul(x, hidden.rows_mut(0..n), scratch);
        // `w1` has `ffn_hidden` or `expert_hidden` rows (`Blob::parse` checked the shapes
        // against the config), and `hidden` is the wider of the two.
        for h in hidden.each_mut(0..n) {
            h.split_at_mut(self.w1.rows()).0.iter_mut().for_each(|h| *h = gelu(*h));
        }
        self.w2.matmul(hidden.rows(0..n), out, scratch);
    }
}

/// LayerNorm with `p`'s weight and bias.
fn layer_norm(x: &[f32], p: &Norm<'_>, eps: f32, out: &mut [f32]) {
    crate::math::layer_norm(x, p.weight, p.bias, eps, out);
}

/// [`layer_norm`] of each of `rows` of `x` into the same rows of `out`.
#[inline(always)]
fn layer_norms(p: &Norm<'_>, eps: f32, x: &Block<'_>, out: &mut Block<'_>, rows: Range<usize>) {
    for (x, out) in x.each(rows.clone()).zip(out.each_mut(rows)) {
        layer_norm(x, p, eps, out);
    }
}

/// `x += y`.
#[inline(always)]
fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// One of a session's per-token buffers: a row of `width` values for each token of a block.
pub(crate) struct Block<'s> {
    data: &'s mut [f32],
    width: usize,
}

// Every `Block` is exactly `block * width` long (`FloatBuffers::carve`), and the forward
// pass asks only for rows below `n <= block`: every range below lies inside `data`.
#[allow(clippy::indexing_slicing)]
impl<'s> Block<'s> {
    /// Rows `rows`, one after another.
    #[inline(always)]
    fn span(&self, rows: Range<usize>) -> &[f32] {
        &self.data[rows.start * self.width..rows.end * self.width]
    }

    /// Rows `rows`, one after another, to write.
    #[inline(always)]
    fn span_mut(&mut self, rows: Range<usize>) -> &mut [f32] {
        &mut self.data[rows.start * self.width..rows.end * self.width]
    }

    /// Rows `rows` as a product's input.
    #[inline(always)]
    fn rows(&self, rows: Range<usize>) -> Rows<'_> {
        Rows::new(self.span(rows), self.width)
    }

    /// Rows `rows` as a product's output.
    #[inline(always)]
    fn rows_mut(&mut self, rows: Range<usize>) -> RowsMut<'_> {
        let width = self.width;
        RowsMut::new(self.span_mut(rows), width)
    }

    /// Row `i`: token `i` of the block.
    #[inline(always)]
    fn row(&self, i: usize) -> &[f32] {
        self.span(i..i + 1)
    }

    /// Row `i`, to write.
    #[inline(always)]
    fn row_mut(&mut self, i: usize) -> &mut [f32] {
        self.span_mut(i..i + 1)
    }

    /// Each of rows `rows`.
    #[inline(always)]
    fn each(&self, rows: Range<usize>) -> core::slice::ChunksExact<'_, f32> {
        self.span(rows).chunks_exact(self.width)
    }

    /// Each of rows `rows`, to write.
    #[inline(always)]
    fn each_mut(&mut self, rows: Range<usize>) -> core::slice::ChunksExactMut<'_, f32> {
        let width = self.width;
        self.span_mut(rows).chunks_exact_mut(width)
    }
}

/// The per-token buffers of a block (row `i`: token `i`), each named for the symbol of the
/// math it holds, and the scratch of single-token steps.
pub(crate) struct TokenBuffers<'s> {
    /// The residual stream, `d` wide.
    x: Block<'s>,
    /// `LN(x)`, a sub-block's normalised input, `d` wide.
    h: Block<'s>,
    /// `in_proj·h = [u | g]`, `2 d_inner` wide.
    ug: Block<'s>,
    /// `silu(conv(u))`, `d_inner` wide.
    v: Block<'s>,
    /// `y ⊙ silu(g)`, `d_inner` wide. Before the scan it holds `delta_proj·v`: each token's
    /// `dt` reads its row before its `y` replaces it (one buffer where two would each be
    /// live for half the block).
    y: Block<'s>,
    /// The MLP hidden layer, `max(ffn_hidden, expert_hidden)` wide.
    hidden: Block<'s>,
    /// What a sub-block adds to `x` (`out_proj·y`, the FFN's or an expert's output), `d` wide.
    out: Block<'s>,
    /// `B·v` of one token, `[N]`.
    bv: &'s mut [f32],
    /// One token's router logits, `[n_experts]`.
    z: &'s mut [f32],
    /// The integer kernels' quantized input, `[widest integer matrix cols]` (may be empty).
    scratch: &'s mut [i8],
}

/// A float session's working memory, carved from its arena: the block buffers, the
/// recurrent state of every layer and the logits.
pub(crate) struct FloatBuffers<'s> {
    /// Tokens per block (1: one token at a time).
    pub block: usize,
    /// The block's per-token buffers.
    work: TokenBuffers<'s>,
    /// Per layer: the last K-1 conv inputs `u`, `[layers][K-1][d_inner]`, position p in
    /// slot p mod (K-1).
    conv_history: &'s mut [f32],
    /// Per layer: the SSM state `s`, `[layers][N]`.
    ssm_state: &'s mut [f32],
    /// Output logits, `[vocab]`.
    pub logits: &'s mut [f32],
}

impl<'s> FloatBuffers<'s> {
    /// Splits `floats` (`buffer_lens(c, block)` long in total) into the buffers; `scratch`
    /// is the int8 scratch (`Params::scratch_len` bytes). `None` if `floats` is shorter.
    pub(crate) fn carve(c: &Config, block: usize, mut floats: &'s mut [f32], scratch: &'s mut [i8]) -> Option<Self> {
        let mut parts: [&'s mut [f32]; 12] = Default::default();
        for (part, len) in parts.iter_mut().zip(buffer_lens(c, block)) {
            let (head, tail) = floats.split_at_mut_checked(len)?;
            *part = head;
            floats = tail;
        }
        let [x, h, ug, v, y, bv, hidden, out, z, logits, conv_history, ssm_state] = parts;
        let (d, di) = (c.d_model as usize, c.d_inner as usize);
        // `Blob::parse` refused a zero dimension, so no width is 0.
        let block_of = |data: &'s mut [f32], width: usize| Block { data, width: width.max(1) };
        let work = TokenBuffers {
            x: block_of(x, d),
            h: block_of(h, d),
            ug: block_of(ug, 2 * di),
            v: block_of(v, di),
            y: block_of(y, di),
            hidden: block_of(hidden, hidden_width(c)),
            out: block_of(out, d),
            bv,
            z,
            scratch,
        };
        Some(FloatBuffers { block: block.max(1), work, conv_history, ssm_state, logits })
    }

    /// Zeroes the recurrent state (conv history and SSM state) and the logits.
    pub(crate) fn reset(&mut self) {
        self.conv_history.fill(0.0);
        self.ssm_state.fill(0.0);
        self.logits.fill(0.0);
    }
}
