//! The forward pass of a fixed-point blob ([`crate::format::FLAG_FIXED_POINT`]): the same
//! model as `model.rs`, step for step, in integers only (`fixed.rs` holds the arithmetic).
//! Activations are Q16 `i32`; every product quantizes its input to int8, sums `q · xq`
//! exactly in `i32` and requantizes each row by its multiplier and shift; LayerNorm takes an
//! integer square root; SiLU, GELU, softplus and `exp` come from the blob's tables; the scan
//! state is Q16 and its decay Q30; the router's softmax is Q30. No float is computed, so
//! every target gives the host's bits.
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

use heapless::Vec;

use crate::blob::Blob;
use crate::error::Error;
use crate::fixed::{self, Table, Tables, FRAC};
use crate::format::{Config, DType, Quant, Requant, Role, ScaleType, TensorEntry, MAX_EXPERTS, TABLES};
use crate::layers::{buffer_lens, tensors_of, top_k, Mixer, Params, Tensors, Views};

/// An int8 matrix with one integer requantization per row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FixedMatrix<'a> {
    rows: usize,
    cols: usize,
    /// Row-major, `rows * cols`.
    q: &'a [i8],
    /// One [`Requant`] per row, as stored.
    requant: &'a [u32],
}

impl FixedMatrix<'_> {
    /// Rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// `y = W·x` in Q16: `x` quantized to int8 in `xq` (`cols` bytes), exact integer dots,
    /// each row requantized. Shorter slices compute a prefix.
    fn matvec(&self, x: &[i32], y: &mut [i32], xq: &mut [i8]) {
        let n = self.cols.min(x.len()).min(xq.len());
        let (x, xq) = (x.get(..n).unwrap_or_default(), xq.get_mut(..n).unwrap_or_default());
        let y = y.get_mut(..self.rows.min(y.len())).unwrap_or_default();
        let Some(scale) = fixed::quantize(x, xq) else {
            y.fill(0);
            return;
        };
        if n == self.cols {
            // Exact sums, four rows per input load on every backend.
            crate::kernels::i8_row_dots(self.q, self.cols, xq, y);
        } else {
            y.fill(0);
        }
        requantize_rows(y, self.requant, scale, fixed::sum_headroom(self.cols));
    }

    /// `out += W[row, ..]` in Q16 (embedding and position lookups).
    fn add_row(&self, row: usize, out: &mut [i32]) {
        let (Some(&r), Some(q)) = (self.requant.get(row), self.q.get(row * self.cols..(row + 1) * self.cols)) else {
            return;
        };
        let r = Requant::from_bits(r);
        for (o, &q) in out.iter_mut().zip(q) {
            *o = o.saturating_add(fixed::dequantize(q, r));
        }
    }
}

/// Each row's sum to its Q16 output ([`fixed::Requantizer`]). A function of its own so that
/// its few live values stay in registers (inlined into `matvec`, ARMv6-M spilled them).
#[inline(never)]
fn requantize_rows(y: &mut [i32], requant: &[u32], scale: fixed::InputScale, headroom: Option<u32>) {
    let rows = fixed::Requantizer::new(scale, headroom);
    for (out, &r) in y.iter_mut().zip(requant) {
        *out = rows.apply(*out, Requant::from_bits(r));
    }
}

/// An FFN or an expert of a fixed-point model.
type Mlp<'a> = crate::layers::Mlp<FixedMatrix<'a>>;
/// A fixed-point SSM block's parameters (`a` holds `A` itself, Q16).
type Ssm<'a> = crate::layers::Ssm<FixedMatrix<'a>, &'a [i32]>;
/// A fixed-point layer.
type Layer<'a> = crate::layers::Layer<FixedMatrix<'a>, &'a [i32]>;

/// A fixed-point model: zero-copy views of every weight and table of the blob.
#[derive(Clone, Debug)]
pub(crate) struct FixedModel<'a> {
    config: Config,
    /// Every matrix counts in `params.scratch_len`: all products quantize their input.
    params: Params<FixedMatrix<'a>, &'a [i32]>,
    tables: Tables<'a>,
    /// The config's `norm_eps` in Q32.
    eps_q32: u64,
}

/// How a fixed-point model views its tensors: [`FixedMatrix`] (int8 with per-row
/// requantization) and Q16 vectors.
struct FixedViews;

impl<'a> Views<'a> for FixedViews {
    type Matrix = FixedMatrix<'a>;
    type Vector = &'a [i32];

    fn matrix<I: Iterator<Item = TensorEntry>>(
        t: &mut Tensors<'_, 'a, I>,
        role: Role,
    ) -> Result<FixedMatrix<'a>, Error> {
        t.fixed_matrix(role)
    }

    fn lookup<I: Iterator<Item = TensorEntry>>(
        t: &mut Tensors<'_, 'a, I>,
        role: Role,
    ) -> Result<FixedMatrix<'a>, Error> {
        t.fixed_matrix(role)
    }

    fn vector<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<&'a [i32], Error> {
        let e = t.next(role)?;
        t.q16s(&e)
    }
}

impl<'a, I: Iterator<Item = TensorEntry>> Tensors<'_, 'a, I> {
    fn q16s(&self, e: &TensorEntry) -> Result<&'a [i32], Error> {
        if e.dtype != DType::Q16 {
            return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype });
        }
        bytemuck::try_cast_slice(self.blob.data(e)).map_err(|_| Error::BlobNotAligned)
    }

    fn fixed_matrix(&mut self, role: Role) -> Result<FixedMatrix<'a>, Error> {
        let e = self.next(role)?;
        let (rows, cols) = (e.shape[0] as usize, e.shape[1] as usize);
        let bad = |why| Error::BadTensor { role, layer: e.layer, why };
        match (e.dtype, e.quant) {
            (DType::I8, Quant::Grouped { scale_type: ScaleType::Requant, .. }) => {}
            _ => return Err(Error::UnsupportedDType { role, layer: e.layer, dtype: e.dtype }),
        }
        let q: &'a [i8] = bytemuck::cast_slice(self.blob.data(&e));
        let requant: &'a [u32] = bytemuck::try_cast_slice(self.blob.scales(&e)).map_err(|_| Error::BlobNotAligned)?;
        if q.len() != rows * cols || requant.len() != rows {
            return Err(bad("data does not match shape and quantization"));
        }
        if cols > crate::kernels::MAX_INT_COLS {
            return Err(bad("rows are longer than the integer kernels take"));
        }
        self.needs_scratch(cols);
        Ok(FixedMatrix { rows, cols, q, requant })
    }

    fn activation_table(&mut self, at: usize) -> Result<Table<'a>, Error> {
        let spec = TABLES.get(at).ok_or(Error::Malformed("tensor table out of canonical order"))?;
        let e = self.next(spec.role)?;
        Table::new(self.q16s(&e)?, spec).ok_or(Error::BadTensor {
            role: spec.role,
            layer: 0,
            why: "table length does not match the format",
        })
    }
}

impl<'a> FixedModel<'a> {
    /// Builds the weight views of a parsed fixed-point blob.
    pub(crate) fn new(blob: &Blob<'a>) -> Result<Self, Error> {
        let config = *blob.config();
        let mut t = tensors_of(blob);
        let params = t.params::<FixedViews>(&config)?;
        let tables = Tables {
            sigmoid: t.activation_table(0)?,
            gelu: t.activation_table(1)?,
            softplus: t.activation_table(2)?,
            exp2: t.activation_table(3)?,
        };
        Ok(FixedModel { config, params, tables, eps_q32: fixed::q32_of_f32_bits(config.norm_eps.to_bits()) })
    }

    /// Exact bytes of arena: the `i32` buffers, then the int8 scratch.
    pub(crate) fn arena_bytes(&self) -> usize {
        self.word_count() * 4 + self.params.scratch_len
    }

    /// `i32`s at the start of the arena.
    pub(crate) fn word_count(&self) -> usize {
        buffer_lens(&self.config, 1).iter().sum::<usize>()
    }

    /// Hyper-parameters.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// One token at position `pos` through the model: updates the recurrent state in `buf`
    /// and, if `logits`, leaves the Q16 logits in `buf.logits`. The session checked the
    /// token and the position.
    #[inline(never)]
    pub(crate) fn forward(&self, buf: &mut FixedBuffers<'_>, token: u32, pos: usize, logits: bool) {
        let (c, p) = (&self.config, &self.params);
        let (k, di) = (c.conv_kernel as usize, c.d_inner as usize);
        let FixedBuffers { work: w, conv_history, ssm_state, logits: logits_out } = buf;

        // x = E[token] + P[pos]
        w.x.fill(0);
        p.embedding.add_row(token as usize, w.x);
        p.position.add_row(pos, w.x);

        let histories = conv_history.chunks_exact_mut((k - 1) * di);
        let states = ssm_state.chunks_exact_mut(c.d_state as usize);
        for ((layer, history), s) in p.layers.iter().zip(histories).zip(states) {
            self.ssm_block(&layer.ssm, w, history, s, pos);
            self.mixer(layer, w);
        }

        // logits = lm_head · LN(x)
        if logits {
            let norm = &p.final_norm;
            fixed::layer_norm(w.x, norm.weight, norm.bias, self.eps_q32, w.h);
            p.lm_head.matvec(w.h, logits_out, w.scratch);
        }
    }

    /// The SSM block, `x += out_proj·(y ⊙ silu(g))`, for the token at `pos`; moves the
    /// layer's conv `history` and SSM state `s` on by it.
    ///
    /// Indexing cannot fail: `ug` is `2 d_inner` long and `history` K-1 slots of `d_inner`
    /// (`FixedBuffers::carve`), and a slot number is taken mod K-1.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn ssm_block(&self, p: &Ssm<'_>, w: &mut TokenBuffers<'_>, history: &mut [i32], s: &mut [i32], pos: usize) {
        let t = &self.tables;
        let (k, di) = (self.config.conv_kernel as usize, self.config.d_inner as usize);
        // h = LN(x); [u | g] = in_proj·h
        fixed::layer_norm(w.x, p.norm.weight, p.norm.bias, self.eps_q32, w.h);
        p.in_proj.matvec(w.h, w.ug, w.scratch);
        let (u, g) = w.ug.split_at(di);

        // v = silu(conv(u)), then u joins the ring (as in model.rs)
        causal_conv(t, p.conv_weight, p.conv_bias, u, history, pos, w.v);
        let newest = pos % (k - 1);
        history[newest * di..(newest + 1) * di].copy_from_slice(u);

        // dt = mean_j softplus(delta_proj·v + b)_j, through y (which `y` replaces below)
        p.delta_proj.matvec(w.v, w.y, w.scratch);
        let sum: i64 = w.y.iter().zip(p.delta_bias).map(|(&x, &b)| t.softplus(x.saturating_add(b)) as i64).sum();
        // Softplus is never negative: the floor is the quotient.
        let dt = fixed::saturate(fixed::div_floor(sum, di));

        // s = exp(dt·A) ⊙ s + dt·(B·v)
        p.b.matvec(w.v, w.bv, w.scratch);
        for ((s, &a), &bv) in s.iter_mut().zip(p.a).zip(w.bv.iter()) {
            let decay = t.exp_neg(fixed::mul_shift(dt, a, FRAC).saturating_neg());
            *s = fixed::mul_shift(*s, decay, 30).saturating_add(fixed::mul_shift(dt, bv, FRAC));
        }

        // y = C·s + D ⊙ v, gated by silu(g)
        p.c.matvec(s, w.y, w.scratch);
        for (((y, &d), &v), &g) in w.y.iter_mut().zip(p.d).zip(w.v.iter()).zip(g) {
            let y_plus = y.saturating_add(fixed::mul_shift(d, v, FRAC));
            *y = fixed::mul_shift(y_plus, t.silu(g), FRAC);
        }

        // x += out_proj·y
        p.out_proj.matvec(w.y, w.out, w.scratch);
        add(w.x, w.out);
    }

    /// The FFN or MoE sub-block: `x += mixer(LN(x))`.
    #[inline(always)]
    fn mixer(&self, layer: &Layer<'_>, w: &mut TokenBuffers<'_>) {
        let t = &self.tables;
        // h = LN(x)
        fixed::layer_norm(w.x, layer.mix_norm.weight, layer.mix_norm.bias, self.eps_q32, w.h);
        match layer.mixer {
            Mixer::Ffn(mlp) => {
                // x += w2·gelu(w1·h)
                mlp.apply(t, w.h, w.hidden, w.out, w.scratch);
                add(w.x, w.out);
            }
            Mixer::Moe { gate, first } => {
                // x += Σ softmax(z_k)·w2_k·gelu(w1_k·h) over the picked experts k
                for (k, weight) in self.route(gate, w.h, w.z, w.scratch) {
                    self.expert(first + k).apply(t, w.h, w.hidden, w.out, w.scratch);
                    for (x, &y) in w.x.iter_mut().zip(w.out.iter()) {
                        *x = x.saturating_add(fixed::mul_shift(weight, y, 30));
                    }
                }
            }
        }
    }

    /// The router: `z = gate·h`, the top-k experts by `z`, and the softmax over the picked
    /// logits only, in Q30: `exp(z - max) / Σ`. Each picked expert (its index in the layer)
    /// with its weight.
    ///
    /// `z[i]` cannot fail: `top_k` picks indices of `z`.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn route(
        &self,
        gate: FixedMatrix<'_>,
        h: &[i32],
        z: &mut [i32],
        scratch: &mut [i8],
    ) -> Vec<(usize, i32), MAX_EXPERTS> {
        gate.matvec(h, z, scratch);
        let picked = top_k(z, self.config.top_k as usize);
        let max = picked.iter().map(|&i| z[i]).max().unwrap_or(0);
        let e: Vec<i32, MAX_EXPERTS> = picked.iter().map(|&i| self.tables.exp_neg(max.saturating_sub(z[i]))).collect();
        // The max's own term is 2^30, so the total is at least that.
        let total = e.iter().map(|&v| v as i64).sum::<i64>().max(1);
        picked.iter().zip(&e).map(|(&i, &e)| (i, fixed::saturate(((e as i64) << 30) / total))).collect()
    }

    /// Expert `at` of `params.experts`: a MoE layer's `first` plus an index below
    /// `n_experts` (its router has `n_experts` rows), which the walk pushed for that layer.
    #[inline(always)]
    #[allow(clippy::indexing_slicing)]
    fn expert(&self, at: usize) -> &Mlp<'a> {
        &self.params.experts[at]
    }
}

/// `v_c = silu(bias_c + Σ_j w[c, K-1-j] · u_c(pos - j))` for every channel `c`: the causal
/// depthwise conv of `model.rs`, its taps summed in Q32 and rounded once. The last K-1
/// inputs lie tap-major in `history`, position p in slot p mod (K-1). The published K = 4
/// zips the four inputs (no index per tap).
#[allow(clippy::too_many_arguments)]
fn causal_conv(t: &Tables<'_>, weight: &[i32], bias: &[i32], u: &[i32], history: &[i32], pos: usize, v: &mut [i32]) {
    let di = u.len();
    let k = weight.len() / di.max(1);
    let slots = k.saturating_sub(1).max(1);
    // `history` is K-1 slots of `d_inner` (`FixedBuffers::carve`), a slot number is taken
    // mod K-1: each range lies inside it.
    #[allow(clippy::indexing_slicing)]
    let past = |j: usize| {
        let slot = (pos + slots - j) % slots;
        &history[slot * di..(slot + 1) * di]
    };
    // Each product is below 2^62; the sum of K of them saturates.
    let tap = |acc: i64, w: i32, x: i32| acc.saturating_add(fixed::mul_wide(w, x));
    if let (4, (w4, [])) = (k, weight.as_chunks::<4>()) {
        let inputs = u.iter().zip(past(1)).zip(past(2)).zip(past(3));
        for (((v, &b), w), (((&u0, &u1), &u2), &u3)) in v.iter_mut().zip(bias).zip(w4).zip(inputs) {
            let acc = tap(tap(tap(tap((b as i64) << FRAC, w[3], u0), w[2], u1), w[1], u2), w[0], u3);
            *v = t.silu(fixed::narrow(acc, FRAC));
        }
        return;
    }
    for (ch, ((v, &b), w)) in v.iter_mut().zip(bias).zip(weight.chunks_exact(k.max(1))).enumerate() {
        let newest = (w.last().copied().unwrap_or(0), u.get(ch).copied().unwrap_or(0));
        let older = w.iter().rev().skip(1).enumerate().map(|(j, &wj)| (wj, past(j + 1).get(ch).copied().unwrap_or(0)));
        let acc = core::iter::once(newest).chain(older).fold((b as i64) << FRAC, |acc, (w, x)| tap(acc, w, x));
        *v = t.silu(fixed::narrow(acc, FRAC));
    }
}

impl Mlp<'_> {
    /// `out = w2 · gelu(w1 · x)`, with `hidden` as scratch.
    fn apply(&self, t: &Tables<'_>, x: &[i32], hidden: &mut [i32], out: &mut [i32], xq: &mut [i8]) {
        // `w1` has `ffn_hidden` or `expert_hidden` rows (`Blob::parse` checked the shapes
        // against the config), and `hidden` is the wider of the two.
        let hidden = hidden.split_at_mut(self.w1.rows()).0;
        self.w1.matvec(x, hidden, xq);
        hidden.iter_mut().for_each(|h| *h = t.gelu(*h));
        self.w2.matvec(hidden, out, xq);
    }
}

/// `x += y`, saturating.
fn add(x: &mut [i32], y: &[i32]) {
    x.iter_mut().zip(y).for_each(|(x, &y)| *x = x.saturating_add(y));
}

/// One token's buffers, each named for the symbol of the math it holds (as `model.rs`'s
/// `TokenBuffers`, Q16), and the int8 scratch of the products.
pub(crate) struct TokenBuffers<'s> {
    /// The residual stream, `[d]`.
    x: &'s mut [i32],
    /// `LN(x)`, `[d]`.
    h: &'s mut [i32],
    /// `in_proj·h = [u | g]`, `[2 d_inner]`.
    ug: &'s mut [i32],
    /// `silu(conv(u))`, `[d_inner]`.
    v: &'s mut [i32],
    /// `y ⊙ silu(g)`, `[d_inner]`; before the scan, `delta_proj·v`.
    y: &'s mut [i32],
    /// `B·v`, `[N]`.
    bv: &'s mut [i32],
    /// The MLP hidden layer, `[max(ffn_hidden, expert_hidden)]`.
    hidden: &'s mut [i32],
    /// What a sub-block adds to `x`, `[d]`.
    out: &'s mut [i32],
    /// Router logits, `[n_experts]`.
    z: &'s mut [i32],
    /// The products' quantized input, `[widest matrix cols]`.
    scratch: &'s mut [i8],
}

/// A fixed-point session's working memory, carved from its arena: the buffers of
/// `model.rs`'s `FloatBuffers` for one token at a time, as Q16 `i32`.
pub(crate) struct FixedBuffers<'s> {
    work: TokenBuffers<'s>,
    /// Per layer: the last K-1 conv inputs `u`, `[layers][K-1][d_inner]`.
    conv_history: &'s mut [i32],
    /// Per layer: the SSM state `s`, Q16, `[layers][N]`.
    ssm_state: &'s mut [i32],
    /// Output logits, Q16, `[vocab]`.
    pub logits: &'s mut [i32],
}

impl<'s> FixedBuffers<'s> {
    /// Splits `words` (`buffer_lens(c, 1)` long in total) into the buffers; `None` if it
    /// is shorter.
    pub(crate) fn carve(c: &Config, mut words: &'s mut [i32], scratch: &'s mut [i8]) -> Option<Self> {
        let mut parts: [&'s mut [i32]; 12] = Default::default();
        for (part, len) in parts.iter_mut().zip(buffer_lens(c, 1)) {
            let (head, tail) = words.split_at_mut_checked(len)?;
            *part = head;
            words = tail;
        }
        let [x, h, ug, v, y, bv, hidden, out, z, logits, conv_history, ssm_state] = parts;
        let work = TokenBuffers { x, h, ug, v, y, bv, hidden, out, z, scratch };
        Some(FixedBuffers { work, conv_history, ssm_state, logits })
    }

    /// Zeroes the recurrent state and the logits.
    pub(crate) fn reset(&mut self) {
        self.conv_history.fill(0);
        self.ssm_state.fill(0);
        self.logits.fill(0);
    }
}
