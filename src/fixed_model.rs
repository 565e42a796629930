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
//!   SSM:   h = LN(x); [u | g] = in_proj·h; u = silu(conv(u)); dt = mean softplus(delta_proj·u + b)
//!          s = exp(dt·A) ⊙ s + dt·(B·u); y = C·s + D ⊙ u; x += out_proj·(y ⊙ silu(g))
//!   FFN:   x += w2·gelu(w1·LN(x))
//!   MoE:   h = LN(x); z = gate·h; top-k experts by z; x += Σ softmax(z_k)·w2_k·gelu(w1_k·h)
//! logits = lm_head·LN(x)
//! ```

use heapless::Vec;

use crate::blob::Blob;
use crate::error::Error;
use crate::fixed::{self, Table, Tables, FRAC};
use crate::format::{Config, DType, Quant, Requant, Role, ScaleType, TensorEntry, MAX_EXPERTS, MAX_LAYERS, TABLES};
use crate::model::{buffer_lens, tensors_of, top_k, Tensors, MAX_EXPERT_SLOTS};

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

/// LayerNorm parameters, Q16.
#[derive(Clone, Copy, Debug)]
struct Norm<'a> {
    weight: &'a [i32],
    bias: &'a [i32],
}

/// The SSM block's parameters.
#[derive(Clone, Copy, Debug)]
struct Ssm<'a> {
    norm: Norm<'a>,
    in_proj: FixedMatrix<'a>,
    /// `[d_inner, K]`, row per channel.
    conv_weight: &'a [i32],
    conv_bias: &'a [i32],
    /// `A = -exp(A_log)`, precomputed by the packer.
    a: &'a [i32],
    b: FixedMatrix<'a>,
    c: FixedMatrix<'a>,
    d: &'a [i32],
    delta_proj: FixedMatrix<'a>,
    delta_bias: &'a [i32],
    out_proj: FixedMatrix<'a>,
}

/// A two-layer GELU MLP: a plain FFN or one expert.
#[derive(Clone, Copy, Debug)]
struct Mlp<'a> {
    w1: FixedMatrix<'a>,
    w2: FixedMatrix<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Mixer<'a> {
    Ffn(Mlp<'a>),
    Moe { gate: FixedMatrix<'a>, first: usize },
}

#[derive(Clone, Copy, Debug)]
struct Layer<'a> {
    ssm: Ssm<'a>,
    mix_norm: Norm<'a>,
    mixer: Mixer<'a>,
}

/// A fixed-point model: zero-copy views of every weight and table of the blob.
#[derive(Clone, Debug)]
pub(crate) struct FixedModel<'a> {
    config: Config,
    embedding: FixedMatrix<'a>,
    position: FixedMatrix<'a>,
    layers: Vec<Layer<'a>, MAX_LAYERS>,
    experts: Vec<Mlp<'a>, MAX_EXPERT_SLOTS>,
    final_norm: Norm<'a>,
    lm_head: FixedMatrix<'a>,
    tables: Tables<'a>,
    /// The config's `norm_eps` in Q32.
    eps_q32: u64,
    /// Bytes of int8 scratch: the widest matrix's `cols`.
    scratch_len: usize,
}

impl<'a, I: Iterator<Item = TensorEntry>> Tensors<'_, 'a, I> {
    fn q16s(&self, e: &TensorEntry) -> Result<&'a [i32], Error> {
        if e.dtype != DType::Q16 {
            return Err(Error::UnsupportedDType { role: e.role, layer: e.layer, dtype: e.dtype });
        }
        bytemuck::try_cast_slice(self.blob.data(e)).map_err(|_| Error::BlobNotAligned)
    }

    fn q16_vector(&mut self, role: Role) -> Result<&'a [i32], Error> {
        let e = self.next(role)?;
        self.q16s(&e)
    }

    fn q16_norm(&mut self, weight: Role, bias: Role) -> Result<Norm<'a>, Error> {
        Ok(Norm { weight: self.q16_vector(weight)?, bias: self.q16_vector(bias)? })
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
        self.scratch_len = self.scratch_len.max(cols);
        Ok(FixedMatrix { rows, cols, q, requant })
    }

    fn fixed_mlp(&mut self, w1: Role, w2: Role) -> Result<Mlp<'a>, Error> {
        Ok(Mlp { w1: self.fixed_matrix(w1)?, w2: self.fixed_matrix(w2)? })
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
        let embedding = t.fixed_matrix(Role::Embedding)?;
        let position = t.fixed_matrix(Role::Position)?;
        let mut layers = Vec::new();
        let mut experts = Vec::new();
        for l in 0..config.n_layers {
            let ssm = Ssm {
                norm: t.q16_norm(Role::SsmNormWeight, Role::SsmNormBias)?,
                in_proj: t.fixed_matrix(Role::InProj)?,
                conv_weight: t.q16_vector(Role::ConvWeight)?,
                conv_bias: t.q16_vector(Role::ConvBias)?,
                a: t.q16_vector(Role::ALog)?,
                b: t.fixed_matrix(Role::B)?,
                c: t.fixed_matrix(Role::C)?,
                d: t.q16_vector(Role::D)?,
                delta_proj: t.fixed_matrix(Role::DeltaProj)?,
                delta_bias: t.q16_vector(Role::DeltaBias)?,
                out_proj: t.fixed_matrix(Role::OutProj)?,
            };
            let mix_norm = t.q16_norm(Role::MixNormWeight, Role::MixNormBias)?;
            let mixer = if config.is_moe(l) {
                let gate = t.fixed_matrix(Role::Gate)?;
                let first = experts.len();
                for _ in 0..config.n_experts {
                    let mlp = t.fixed_mlp(Role::ExpertW1, Role::ExpertW2)?;
                    experts.push(mlp).map_err(|_| Error::Capacity {
                        what: "expert weight pairs",
                        needed: first + config.n_experts as usize,
                        max: MAX_EXPERT_SLOTS,
                    })?;
                }
                Mixer::Moe { gate, first }
            } else {
                Mixer::Ffn(t.fixed_mlp(Role::FfnW1, Role::FfnW2)?)
            };
            layers.push(Layer { ssm, mix_norm, mixer }).map_err(|_| Error::Capacity {
                what: "layers",
                needed: config.n_layers as usize,
                max: MAX_LAYERS,
            })?;
        }
        let final_norm = t.q16_norm(Role::FinalNormWeight, Role::FinalNormBias)?;
        let lm_head = t.fixed_matrix(Role::LmHead)?;
        let tables = Tables {
            sigmoid: t.activation_table(0)?,
            gelu: t.activation_table(1)?,
            softplus: t.activation_table(2)?,
            exp2: t.activation_table(3)?,
        };
        Ok(FixedModel {
            config,
            embedding,
            position,
            layers,
            experts,
            final_norm,
            lm_head,
            tables,
            eps_q32: fixed::q32_of_f32_bits(config.norm_eps.to_bits()),
            scratch_len: t.scratch_len,
        })
    }

    /// Exact bytes of arena: the `i32` buffers, then the int8 scratch.
    pub(crate) fn arena_bytes(&self) -> usize {
        self.word_count() * 4 + self.scratch_len
    }

    /// `i32`s at the start of the arena.
    pub(crate) fn word_count(&self) -> usize {
        buffer_lens(&self.config, 1).iter().sum::<usize>()
    }

    /// Hyper-parameters.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// One token at position `pos` through the model: updates the recurrent state in `s`
    /// and, if `logits`, leaves the Q16 logits in `s.logits`. The session checked the token
    /// and the position.
    #[inline(never)]
    pub(crate) fn forward(&self, s: &mut FixedState<'_>, token: u32, pos: usize, logits: bool) {
        let c = &self.config;
        let (eps, t) = (self.eps_q32, &self.tables);
        let k = c.conv_kernel as usize;
        let di = c.d_inner as usize;

        // x = E[token] + P[pos]
        s.x.fill(0);
        self.embedding.add_row(token as usize, s.x);
        self.position.add_row(pos, s.x);

        let history = s.conv.chunks_exact_mut((k - 1) * di);
        let states = s.ssm.chunks_exact_mut(c.d_state as usize);
        for ((layer, history), state) in self.layers.iter().zip(history).zip(states) {
            // ---- SSM block: x += out_proj · (y ⊙ silu(g)) ----
            let p = &layer.ssm;
            fixed::layer_norm(s.x, p.norm.weight, p.norm.bias, eps, s.h);
            p.in_proj.matvec(s.h, s.ug, s.xq);
            let (u, g) = s.ug.split_at(di.min(s.ug.len()));

            // Causal depthwise conv over time, then SiLU (the ring as in model.rs).
            let slots = k - 1;
            conv_silu(t, p.conv_weight, p.conv_bias, u, history, pos, s.v);
            let newest = pos % slots;
            if let Some(slot) = history.get_mut(newest * di..(newest + 1) * di) {
                slot.copy_from_slice(u);
            }

            // dt = mean_j softplus(delta_proj · u + b)_j
            p.delta_proj.matvec(s.v, s.t, s.xq);
            let sum: i64 = s.t.iter().zip(p.delta_bias).map(|(&x, &b)| t.softplus(x.saturating_add(b)) as i64).sum();
            // Softplus is never negative: the floor is the quotient.
            let dt = fixed::saturate(fixed::div_floor(sum, di));

            // s = exp(dt·A) ⊙ s + dt·(B·u)
            p.b.matvec(s.v, s.bu, s.xq);
            for ((st, &a), &bu) in state.iter_mut().zip(p.a).zip(s.bu.iter()) {
                let decay = t.exp_neg(fixed::mul_shift(dt, a, FRAC).saturating_neg());
                *st = fixed::mul_shift(*st, decay, 30).saturating_add(fixed::mul_shift(dt, bu, FRAC));
            }

            // y = C·s + D ⊙ u, gated by silu(g)
            p.c.matvec(state, s.t, s.xq);
            for (((y, &d), &v), &g) in s.t.iter_mut().zip(p.d).zip(s.v.iter()).zip(g) {
                let y_plus = y.saturating_add(fixed::mul_shift(d, v, FRAC));
                *y = fixed::mul_shift(y_plus, t.silu(g), FRAC);
            }
            p.out_proj.matvec(s.t, s.h, s.xq);
            add(s.x, s.h);

            // ---- FFN or MoE: x += mixer(LN(x)) ----
            fixed::layer_norm(s.x, layer.mix_norm.weight, layer.mix_norm.bias, eps, s.h);
            match layer.mixer {
                Mixer::Ffn(mlp) => {
                    mlp.apply(t, s.h, s.hidden, s.acc, s.xq);
                    add(s.x, s.acc);
                }
                Mixer::Moe { gate, first } => {
                    gate.matvec(s.h, s.z, s.xq);
                    let picked = top_k(s.z, c.top_k as usize);
                    // Softmax over the picked router logits, Q30: exp(z - max) / Σ.
                    let z = |i: usize| s.z.get(i).copied().unwrap_or(i32::MIN);
                    let max = picked.iter().map(|&i| z(i)).max().unwrap_or(0);
                    let e: Vec<i32, MAX_EXPERTS> =
                        picked.iter().map(|&i| t.exp_neg(max.saturating_sub(z(i)))).collect();
                    // The max's own term is 2^30, so the total is at least that.
                    let total = e.iter().map(|&v| v as i64).sum::<i64>().max(1);
                    for (&i, &e) in picked.iter().zip(&e) {
                        let weight = fixed::saturate(((e as i64) << 30) / total);
                        if let Some(expert) = self.experts.get(first + i) {
                            expert.apply(t, s.h, s.hidden, s.acc, s.xq);
                            for (x, &y) in s.x.iter_mut().zip(s.acc.iter()) {
                                *x = x.saturating_add(fixed::mul_shift(weight, y, 30));
                            }
                        }
                    }
                }
            }
        }

        // logits = lm_head · LN(x)
        if logits {
            fixed::layer_norm(s.x, self.final_norm.weight, self.final_norm.bias, eps, s.h);
            self.lm_head.matvec(s.h, s.logits, s.xq);
        }
    }
}

/// `v_c = silu(bias_c + Σ_j w[c, K-1-j] · u_c(pos - j))` for every channel `c`: the causal
/// depthwise conv of `model.rs`, its taps summed in Q32 and rounded once. The last K-1
/// inputs lie tap-major in `history`, position p in slot p mod (K-1). The published K = 4
/// zips the four inputs (no index per tap).
#[allow(clippy::too_many_arguments)]
fn conv_silu(t: &Tables<'_>, weight: &[i32], bias: &[i32], u: &[i32], history: &[i32], pos: usize, v: &mut [i32]) {
    let di = u.len();
    let k = weight.len() / di.max(1);
    let slots = k.saturating_sub(1).max(1);
    let past = |j: usize| {
        let slot = (pos + slots - j) % slots;
        history.get(slot * di..(slot + 1) * di).unwrap_or_default()
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
        let hidden = hidden.get_mut(..self.w1.rows().min(hidden.len())).unwrap_or_default();
        self.w1.matvec(x, hidden, xq);
        hidden.iter_mut().for_each(|h| *h = t.gelu(*h));
        self.w2.matvec(hidden, out, xq);
    }
}

/// `x += y`, saturating.
fn add(x: &mut [i32], y: &[i32]) {
    x.iter_mut().zip(y).for_each(|(x, &y)| *x = x.saturating_add(y));
}

/// A fixed-point session's working memory, carved from its arena: the buffers of
/// `model.rs`'s `State` for one token at a time, as Q16 `i32`.
pub(crate) struct FixedState<'s> {
    pub x: &'s mut [i32],
    pub h: &'s mut [i32],
    pub ug: &'s mut [i32],
    pub v: &'s mut [i32],
    pub t: &'s mut [i32],
    pub bu: &'s mut [i32],
    pub hidden: &'s mut [i32],
    pub acc: &'s mut [i32],
    pub z: &'s mut [i32],
    /// Output logits, Q16, `[vocab]`.
    pub logits: &'s mut [i32],
    pub conv: &'s mut [i32],
    pub ssm: &'s mut [i32],
    pub xq: &'s mut [i8],
}

impl<'s> FixedState<'s> {
    /// Splits `words` (exactly `buffer_lens(c, 1)` long in total) into the buffers.
    pub(crate) fn carve(c: &Config, mut words: &'s mut [i32], xq: &'s mut [i8]) -> Self {
        let mut parts: [&'s mut [i32]; 12] = Default::default();
        for (part, len) in parts.iter_mut().zip(buffer_lens(c, 1)) {
            let (head, tail) = words.split_at_mut(len.min(words.len()));
            *part = head;
            words = tail;
        }
        let [x, h, ug, v, t, bu, hidden, acc, z, logits, conv, ssm] = parts;
        FixedState { x, h, ug, v, t, bu, hidden, acc, z, logits, conv, ssm, xq }
    }

    /// Zeroes the recurrent state and the logits.
    pub(crate) fn reset(&mut self) {
        self.conv.fill(0);
        self.ssm.fill(0);
        self.logits.fill(0);
    }
}
