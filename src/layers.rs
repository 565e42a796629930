//! What a model is made of, whichever arithmetic runs it: the views of every weight, layer by
//! layer, read by one walk over the blob's tensor table in canonical order. The views are
//! generic over what a matrix and a vector are (float: [`crate::kernels::Matrix`] and
//! `&[f32]`, `model.rs`; fixed point: `FixedMatrix` and Q16 `&[i32]`, `fixed_model.rs`), so
//! the table's order is written down once. Also what both forward passes share besides: the
//! sizes of the buffers they work in, and the router's pick.

use heapless::Vec;

use crate::blob::Blob;
use crate::error::Error;
use crate::format::{Config, Role, TensorEntry, MAX_EXPERTS, MAX_LAYERS};

/// Most expert weight pairs (over all MoE layers) a model holds.
pub const MAX_EXPERT_SLOTS: usize = 64;

/// LayerNorm parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Norm<V> {
    pub weight: V,
    pub bias: V,
}

/// The SSM block's parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ssm<M, V> {
    pub norm: Norm<V>,
    pub in_proj: M,
    /// `[d_inner, K]`, row per channel.
    pub conv_weight: V,
    pub conv_bias: V,
    /// The decay rates as the blob stores them ([`Role::ALog`]): `A_log` in a float blob
    /// (`A = -exp(A_log)`), `A` itself in a fixed-point one (the packer took the exponential).
    pub a: V,
    pub b: M,
    pub c: M,
    pub d: V,
    pub delta_proj: M,
    pub delta_bias: V,
    pub out_proj: M,
}

/// A two-layer GELU MLP: a plain FFN or one expert.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mlp<M> {
    pub w1: M,
    pub w2: M,
}

/// What follows the SSM block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mixer<M> {
    Ffn(Mlp<M>),
    /// Router, and where this layer's experts start in [`Params::experts`].
    Moe {
        gate: M,
        first: usize,
    },
}

/// One layer: the SSM block, then the FFN or MoE mixer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layer<M, V> {
    pub ssm: Ssm<M, V>,
    pub mix_norm: Norm<V>,
    pub mixer: Mixer<M>,
}

/// Every weight of a model, as views into its blob.
#[derive(Clone, Debug)]
pub(crate) struct Params<M, V> {
    pub embedding: M,
    pub position: M,
    pub layers: Vec<Layer<M, V>, MAX_LAYERS>,
    pub experts: Vec<Mlp<M>, MAX_EXPERT_SLOTS>,
    pub final_norm: Norm<V>,
    pub lm_head: M,
    /// Bytes of int8 scratch the products need: the widest integer matrix's `cols` (0 if none).
    pub scratch_len: usize,
}

/// How one arithmetic reads the tensors it computes with: the views [`Params`] holds.
pub(crate) trait Views<'a> {
    /// A weight matrix.
    type Matrix: Copy;
    /// A weight vector (norms, conv, scan parameters).
    type Vector: Copy;

    /// The next tensor as a matrix the forward pass multiplies with (its int8 scratch need,
    /// if any, counts in [`Tensors::scratch_len`]).
    fn matrix<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<Self::Matrix, Error>;

    /// The next tensor as a matrix the forward pass only reads rows of (embedding, position).
    fn lookup<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<Self::Matrix, Error>;

    /// The next tensor as a vector.
    fn vector<I: Iterator<Item = TensorEntry>>(t: &mut Tensors<'_, 'a, I>, role: Role) -> Result<Self::Vector, Error>;
}

/// Walks the blob's tensor table in canonical order, handing out the views a [`Views`]
/// implementation makes of each tensor.
pub(crate) struct Tensors<'b, 'a, I> {
    pub(crate) blob: &'b Blob<'a>,
    rows: I,
    /// Widest `cols` of an integer matrix that a product runs on so far.
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

    /// Counts a product's int8 scratch need of `cols` bytes.
    pub(crate) fn needs_scratch(&mut self, cols: usize) {
        self.scratch_len = self.scratch_len.max(cols);
    }

    fn norm<W: Views<'a>>(&mut self, weight: Role, bias: Role) -> Result<Norm<W::Vector>, Error> {
        Ok(Norm { weight: W::vector(self, weight)?, bias: W::vector(self, bias)? })
    }

    fn mlp<W: Views<'a>>(&mut self, w1: Role, w2: Role) -> Result<Mlp<W::Matrix>, Error> {
        Ok(Mlp { w1: W::matrix(self, w1)?, w2: W::matrix(self, w2)? })
    }

    fn ssm<W: Views<'a>>(&mut self) -> Result<Ssm<W::Matrix, W::Vector>, Error> {
        Ok(Ssm {
            norm: self.norm::<W>(Role::SsmNormWeight, Role::SsmNormBias)?,
            in_proj: W::matrix(self, Role::InProj)?,
            conv_weight: W::vector(self, Role::ConvWeight)?,
            conv_bias: W::vector(self, Role::ConvBias)?,
            a: W::vector(self, Role::ALog)?,
            b: W::matrix(self, Role::B)?,
            c: W::matrix(self, Role::C)?,
            d: W::vector(self, Role::D)?,
            delta_proj: W::matrix(self, Role::DeltaProj)?,
            delta_bias: W::vector(self, Role::DeltaBias)?,
            out_proj: W::matrix(self, Role::OutProj)?,
        })
    }

    /// Every weight of a model of `config`, in table order (what follows, such as a
    /// fixed-point blob's activation tables, is left to read).
    pub(crate) fn params<W: Views<'a>>(&mut self, config: &Config) -> Result<Params<W::Matrix, W::Vector>, Error> {
        let embedding = W::lookup(self, Role::Embedding)?;
        let position = W::lookup(self, Role::Position)?;
        let mut layers = Vec::new();
        let mut experts = Vec::new();
        for l in 0..config.n_layers {
            let ssm = self.ssm::<W>()?;
            let mix_norm = self.norm::<W>(Role::MixNormWeight, Role::MixNormBias)?;
            let mixer = if config.is_moe(l) {
                let gate = W::matrix(self, Role::Gate)?;
                let first = experts.len();
                for _ in 0..config.n_experts {
                    let mlp = self.mlp::<W>(Role::ExpertW1, Role::ExpertW2)?;
                    experts.push(mlp).map_err(|_| Error::Capacity {
                        what: "expert weight pairs",
                        needed: first + config.n_experts as usize,
                        max: MAX_EXPERT_SLOTS,
                    })?;
                }
                Mixer::Moe { gate, first }
            } else {
                Mixer::Ffn(self.mlp::<W>(Role::FfnW1, Role::FfnW2)?)
            };
            layers.push(Layer { ssm, mix_norm, mixer }).map_err(|_| Error::Capacity {
                what: "layers",
                needed: config.n_layers as usize,
                max: MAX_LAYERS,
            })?;
        }
        let final_norm = self.norm::<W>(Role::FinalNormWeight, Role::FinalNormBias)?;
        let lm_head = W::matrix(self, Role::LmHead)?;
        Ok(Params { embedding, position, layers, experts, final_norm, lm_head, scratch_len: self.scratch_len })
    }
}

/// Lengths (in f32s, or Q16 words) of the buffers a session carves from its arena, in the
/// order of the model's buffers, for blocks of up to `block` tokens (the per-token buffers
/// hold one row per token).
pub(crate) fn buffer_lens(c: &Config, block: usize) -> [usize; 12] {
    let (d, di, n, k) = (c.d_model as usize, c.d_inner as usize, c.d_state as usize, c.conv_kernel as usize);
    let b = block.max(1);
    [
        b * d,                              // x
        b * d,                              // h
        b * 2 * di,                         // ug
        b * di,                             // v
        b * di,                             // y
        n,                                  // bv
        b * hidden_width(c),                // hidden
        b * d,                              // out
        c.n_experts as usize,               // z
        c.vocab as usize,                   // logits
        c.n_layers as usize * (k - 1) * di, // conv history
        c.n_layers as usize * n,            // ssm state
    ]
}

/// Width of the MLP hidden buffer: the wider of the FFN's and (with any MoE layer) an
/// expert's hidden layer.
pub(crate) fn hidden_width(c: &Config) -> usize {
    let any_moe = c.moe_layers != 0;
    (c.ffn_hidden as usize).max(if any_moe { c.expert_hidden as usize } else { 0 })
}

/// The router's pick: the `k` largest entries of `z`, by value; ties go to the lower index.
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
