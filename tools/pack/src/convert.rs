//! From a checkpoint's state dict to a blob: name mapping, config inference, checks.

use std::collections::BTreeSet;

use itera_edge::format::{for_each_expected, Config, Expected, Role};
use thiserror::Error;

use crate::checkpoint::{RawTensor, SourceConfig, StateDict, TensorData};
use crate::quant::{self, Preset, QDType, QInt8Params, QuantPolicy};
use crate::tokenizer_json::parse_tokenizer_declared;
use crate::untrusted::shown;
use crate::writer::{BlobBuilder, Payload, PendingTensor, TokenizerTable};

/// Experts mixed per token when neither `--top-k-experts` nor the checkpoint says.
pub const DEFAULT_TOP_K: u32 = 2;

/// Packer options.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// Experts mixed per token (`--top-k-experts`): `None` takes the checkpoint config's
    /// `top_k_experts`, and [`DEFAULT_TOP_K`] when the checkpoint has none.
    pub top_k: Option<u32>,
    /// LayerNorm epsilon.
    pub norm_eps: f32,
    /// Tokenizer to embed.
    pub tokenizer: Option<TokenizerTable>,
    /// Provenance pairs to record (the packer adds its own version).
    pub meta: Vec<(String, String)>,
    /// Which dtype each tensor is stored in (default: all f32, qint8 tensors dequantized).
    pub quant: QuantPolicy,
    /// Where [`PackOptions::tokenizer`] came from and the vocabulary it declares, if known
    /// ([`read_tokenizer_file`]): checked against the checkpoint's vocab.
    pub tokenizer_source: Option<TokenizerSource>,
}

/// A tokenizer file's name and the `vocab_size` it states, for the checks against the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenizerSource {
    /// The file, as messages name it.
    pub file: String,
    /// The file's own `vocab_size`, if it states one.
    pub vocab_size: Option<u32>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            top_k: None,
            norm_eps: 1e-5,
            tokenizer: None,
            meta: Vec::new(),
            quant: QuantPolicy::default(),
            tokenizer_source: None,
        }
    }
}

/// Why a state dict cannot become a blob. Each message names the tensor or layer. Names
/// that come from the checkpoint are kept raw in the fields and escaped
/// ([`shown`]) in the message.
#[derive(Debug, Error, PartialEq)]
pub enum ConvertError {
    /// A tensor the model needs is absent.
    #[error("missing tensor '{0}': the checkpoint is incomplete or not an Itera-Lite model")]
    Missing(String),
    /// A tensor the packer does not know.
    #[error("unexpected tensor '{}': not part of an Itera-Lite model (wrong checkpoint, or a newer architecture)", quoted(.0))]
    Unexpected(String),
    /// A tensor's shape disagrees with the shapes of the others.
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?} from the other tensors")]
    Shape {
        /// Checkpoint name.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// NaN or infinity in the weights.
    #[error(
        "tensor '{name}' holds a non-finite value ({value}) at element {index}: refusing to pack a broken checkpoint"
    )]
    NonFinite {
        /// Checkpoint name.
        name: String,
        /// Flat element index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A MoE layer without experts.
    #[error("layer {layer} is a Mixture-of-Experts layer with zero experts ('{name}' has shape {shape:?}{config}) but top_k is {top_k}: the router cannot pick any expert. The checkpoint is broken (its MoE layers were saved empty); re-export it with its experts")]
    EmptyMoe {
        /// Layer index.
        layer: u32,
        /// Router tensor name.
        name: String,
        /// Router shape.
        shape: Vec<usize>,
        /// Requested top_k.
        top_k: u32,
        /// What the checkpoint's config says of it (`, and its config says num_experts 0`), or empty.
        config: String,
    },
    /// The checkpoint's config and its tensors disagree.
    #[error("the checkpoint's {origin} says {field} {says}, but {tensor} has {has}: its config and its weights disagree; re-export the checkpoint")]
    ConfigMismatch {
        /// Where the config is (`config (models.config.IteraLiteConfig)`).
        origin: String,
        /// The config's field.
        field: &'static str,
        /// Its value.
        says: String,
        /// The tensor (or tensors) it was checked against.
        tensor: String,
        /// What the tensors give.
        has: String,
    },
    /// `--top-k-experts` of 0, or larger than the expert count.
    #[error("{asked_by} {top_k} is out of range: each token mixes at least 1 expert and at most the {experts} experts of the checkpoint's MoE layers; pass --top-k-experts from 1 to {experts}")]
    TopK {
        /// Who asked: `--top-k-experts`, or the config's field.
        asked_by: String,
        /// Requested.
        top_k: u32,
        /// Available.
        experts: u32,
    },
    /// Inconsistent structure.
    #[error("{0}")]
    Structure(String),
    /// A `--quant` policy rule that cannot be applied (names its file and line).
    #[error("quantization policy {0}")]
    Policy(String),
    /// A qint8 tensor whose quantizer parameters are out of range ([`QInt8Params::check`]).
    #[error("tensor '{}' is stored as qint8 with {detail}: its quantizer parameters are damaged; re-export the checkpoint (e.g. torch.quantization.quantize_dynamic) or pack an f32 one", quoted(.name))]
    QuantParams {
        /// Checkpoint name.
        name: String,
        /// Which parameter, and its value.
        detail: String,
    },
    /// A value beyond what the tensor's storage dtype can hold with f16 scales.
    #[error("tensor '{}' holds {value:e} at element {index}, beyond the +-{limit:e} that {dtype} can store; store it as f32 (a --quant policy rule `{} = f32`)", quoted(.name), quoted(.name))]
    Unrepresentable {
        /// Checkpoint name.
        name: String,
        /// Storage dtype asked for.
        dtype: &'static str,
        /// Flat element index.
        index: usize,
        /// The value.
        value: f32,
        /// Largest magnitude the dtype holds.
        limit: f32,
    },
    /// A tokenizer that does not fit the checkpoint's vocabulary.
    #[error("tokenizer {}: {detail}", shown(.file))]
    TokenizerFit {
        /// The tokenizer, as given (or "table" for one built in code).
        file: String,
        /// What does not fit, and what to pass instead.
        detail: String,
    },
}

/// Most characters of a checkpoint's tensor name a message quotes: Itera-Lite's longest is
/// under 50, and a hostile name of megabytes must not make a message of megabytes.
const QUOTED_NAME_CHARS: usize = 96;

/// A tensor name from the checkpoint as a message quotes it: escaped ([`shown`]) and, past
/// [`QUOTED_NAME_CHARS`], cut with its length stated.
fn quoted(name: &str) -> String {
    let escaped = shown(name);
    match escaped.char_indices().nth(QUOTED_NAME_CHARS) {
        Some((cut, _)) => format!("{}... ({} bytes)", &escaped[..cut], name.len()),
        None => escaped,
    }
}

/// Training-only buffers that carry no inference weight.
fn ignored(name: &str) -> bool {
    name.ends_with(".router.expert_counts")
}

/// The checkpoint name of one model tensor.
pub fn checkpoint_name(c: &Config, e: &Expected) -> String {
    let l = e.layer;
    let mix = if c.is_moe(l as u32) { "moe.layer" } else { "moe" };
    match e.role {
        Role::Embedding => "embedding.weight".into(),
        Role::Position => "position_embedding.weight".into(),
        Role::SsmNormWeight => format!("layers.{l}.ssm.norm.weight"),
        Role::SsmNormBias => format!("layers.{l}.ssm.norm.bias"),
        Role::InProj => format!("layers.{l}.ssm.in_proj.weight"),
        Role::ConvWeight => format!("layers.{l}.ssm.conv1d.weight"),
        Role::ConvBias => format!("layers.{l}.ssm.conv1d.bias"),
        Role::ALog => format!("layers.{l}.ssm.ssm.A_log"),
        Role::B => format!("layers.{l}.ssm.ssm.B"),
        Role::C => format!("layers.{l}.ssm.ssm.C"),
        Role::D => format!("layers.{l}.ssm.ssm.D"),
        Role::DeltaProj => format!("layers.{l}.ssm.ssm.delta_proj.weight"),
        Role::DeltaBias => format!("layers.{l}.ssm.ssm.delta_proj.bias"),
        Role::OutProj => format!("layers.{l}.ssm.out_proj.weight"),
        Role::MixNormWeight => format!("layers.{l}.{mix}.norm.weight"),
        Role::MixNormBias => format!("layers.{l}.{mix}.norm.bias"),
        Role::FfnW1 => format!("layers.{l}.moe.ffn.w1.weight"),
        Role::FfnW2 => format!("layers.{l}.moe.ffn.w2.weight"),
        Role::Gate => format!("layers.{l}.moe.layer.router.gate.weight"),
        Role::ExpertW1 => format!("layers.{l}.moe.layer.experts.{}.w1.weight", e.expert),
        Role::ExpertW2 => format!("layers.{l}.moe.layer.experts.{}.w2.weight", e.expert),
        Role::FinalNormWeight => "norm.weight".into(),
        Role::FinalNormBias => "norm.bias".into(),
        Role::LmHead => "lm_head.weight".into(),
        // Made by the packer for fixed-point blobs, not read from a checkpoint.
        Role::SigmoidTable => "(table) sigmoid".into(),
        Role::GeluTable => "(table) gelu".into(),
        Role::SoftplusTable => "(table) softplus".into(),
        Role::Exp2Table => "(table) exp2".into(),
    }
}

/// The checkpoint shape of a tensor with blob shape `shape`.
fn checkpoint_shape(role: Role, shape: [u32; 2]) -> Vec<usize> {
    let [r, c] = shape.map(|v| v as usize);
    match role {
        Role::ConvWeight => vec![r, 1, c],
        _ if r == 1 && !matches!(role, Role::Gate) => vec![c],
        _ => vec![r, c],
    }
}

fn get<'a>(sd: &'a StateDict, name: &str) -> Result<&'a RawTensor, ConvertError> {
    sd.get(name).ok_or_else(|| ConvertError::Missing(name.to_string()))
}

fn dim(sd: &StateDict, name: &str, axis: usize) -> Result<u32, ConvertError> {
    let t = get(sd, name)?;
    t.shape.get(axis).map(|&v| v as u32).ok_or_else(|| {
        ConvertError::Structure(format!("tensor '{}' has shape {:?}, which has no axis {axis}", quoted(name), t.shape))
    })
}

/// Reads the hyper-parameters off the tensor shapes.
pub fn infer_config(sd: &StateDict, opts: &PackOptions) -> Result<Config, ConvertError> {
    let mut layers = BTreeSet::new();
    let mut moe_layers = 0u32;
    for name in sd.names() {
        if let Some(rest) = name.strip_prefix("layers.") {
            let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let l: u32 = idx.parse().map_err(|_| ConvertError::Unexpected(name.to_string()))?;
            if l >= 32 {
                return Err(ConvertError::Structure(format!(
                    "tensor '{}': more than 32 layers are not supported",
                    quoted(name)
                )));
            }
            layers.insert(l);
            if tail.starts_with("moe.layer.") {
                moe_layers |= 1 << l;
            }
        }
    }
    let n_layers = layers.len() as u32;
    if n_layers == 0 {
        return Err(ConvertError::Missing("layers.0.ssm.in_proj.weight".into()));
    }
    if layers.iter().copied().ne(0..n_layers) {
        return Err(ConvertError::Structure(format!("layer indices {layers:?} are not contiguous from 0")));
    }
    let first_moe = (0..n_layers).find(|l| moe_layers >> l & 1 == 1);
    let first_ffn = (0..n_layers).find(|l| moe_layers >> l & 1 == 0);
    let source = sd.config.as_ref();
    let (top_k, top_k_source) = resolve_top_k(opts.top_k, source);
    let (mut n_experts, mut expert_hidden) = (0, 0);
    if let Some(l) = first_moe {
        let gate = format!("layers.{l}.moe.layer.router.gate.weight");
        n_experts = dim(sd, &gate, 0)?;
        for m in (0..n_layers).filter(|l| moe_layers >> l & 1 == 1) {
            let name = format!("layers.{m}.moe.layer.router.gate.weight");
            let t = get(sd, &name)?;
            if t.shape.first() == Some(&0) {
                let config = match source.and_then(|c| c.int("num_experts").map(|n| (c, n))) {
                    Some((c, n)) => format!(", and its {} says num_experts {n}", c.origin),
                    None => String::new(),
                };
                return Err(ConvertError::EmptyMoe { layer: m, name, shape: t.shape.clone(), top_k, config });
            }
        }
        expert_hidden = dim(sd, &format!("layers.{l}.moe.layer.experts.0.w1.weight"), 0)?;
        if top_k == 0 || top_k > n_experts {
            return Err(ConvertError::TopK { asked_by: top_k_source, top_k, experts: n_experts });
        }
    }
    let ffn_hidden = match first_ffn {
        Some(l) => dim(sd, &format!("layers.{l}.moe.ffn.w1.weight"), 0)?,
        None => 0,
    };
    let embedding = "embedding.weight";
    let tied = match (sd.get("lm_head.weight"), sd.get(embedding)) {
        (None, _) => true,
        // Same storage in the checkpoint, or bit-identical values: store once either way.
        (Some(lm), Some(e)) => lm.shape == e.shape && lm.data == e.data,
        _ => false,
    };
    let norm_eps = match source.and_then(|c| c.float("layer_norm_eps")) {
        Some(eps) if eps.is_finite() && eps > 0.0 => eps as f32,
        _ => opts.norm_eps,
    };
    let config = Config {
        vocab: dim(sd, embedding, 0)?,
        d_model: dim(sd, embedding, 1)?,
        n_layers,
        d_inner: dim(sd, "layers.0.ssm.in_proj.weight", 0)? / 2,
        d_state: dim(sd, "layers.0.ssm.ssm.A_log", 0)?,
        conv_kernel: dim(sd, "layers.0.ssm.conv1d.weight", 2)?,
        max_seq: dim(sd, "position_embedding.weight", 0)?,
        ffn_hidden,
        n_experts,
        expert_hidden,
        top_k: if first_moe.is_some() { top_k } else { 0 },
        moe_layers,
        norm_eps,
        tied_lm_head: tied,
    };
    if let Some(source) = source {
        check_source_config(source, &config)?;
    }
    Ok(config)
}

/// Experts per token and who said so: `--top-k-experts` (overriding the checkpoint's config with a
/// warning where they differ), else the config's `top_k_experts` (a negative one as 0, which
/// the range check refuses naming the config), else [`DEFAULT_TOP_K`].
fn resolve_top_k(asked: Option<u32>, source: Option<&SourceConfig>) -> (u32, String) {
    let said = source.and_then(|c| c.int("top_k_experts").map(|k| (c, k)));
    match (asked, said) {
        (Some(k), Some((c, said))) if i64::from(k) != said => {
            eprintln!("warning: --top-k-experts {k} overrides the checkpoint's {} (top_k_experts {said})", c.origin);
            (k, "--top-k-experts".into())
        }
        (Some(k), _) => (k, "--top-k-experts".into()),
        (None, Some((c, said))) => {
            (u32::try_from(said).unwrap_or(0), format!("the checkpoint's {} top_k_experts", c.origin))
        }
        (None, None) => (DEFAULT_TOP_K, "--top-k-experts".into()),
    }
}

/// Cross-checks every field of the checkpoint's own config that the tensor shapes also give.
fn check_source_config(source: &SourceConfig, c: &Config) -> Result<(), ConvertError> {
    let moe: Vec<i64> = (0..c.n_layers).filter(|l| c.moe_layers >> l & 1 == 1).map(i64::from).collect();
    let first_moe = moe.first().copied().unwrap_or(0);
    let router = format!("layers.{first_moe}.moe.layer.router.gate.weight");
    let expert = format!("layers.{first_moe}.moe.layer.experts.0.w1.weight");
    let checks: [(&'static str, i64, String, &str); 9] = [
        ("vocab_size", c.vocab.into(), "embedding.weight".into(), "rows"),
        ("hidden_size", c.d_model.into(), "embedding.weight".into(), "columns"),
        ("num_layers", c.n_layers.into(), "the state dict".into(), "layers"),
        ("ssm_state_size", c.d_state.into(), "layers.0.ssm.ssm.A_log".into(), "entries"),
        ("ssm_conv_kernel", c.conv_kernel.into(), "layers.0.ssm.conv1d.weight".into(), "taps"),
        (
            "ssm_expand_factor",
            i64::from(c.d_inner / c.d_model.max(1)),
            "layers.0.ssm.in_proj.weight".into(),
            "x d_model / 2 rows",
        ),
        ("num_experts", c.n_experts.into(), router, "experts (rows)"),
        ("expert_size", c.expert_hidden.into(), expert, "rows"),
        ("max_seq_length", c.max_seq.into(), "position_embedding.weight".into(), "rows"),
    ];
    for (field, has, tensor, unit) in checks {
        // A model without MoE layers has nothing to check num_experts and expert_size against.
        if moe.is_empty() && matches!(field, "num_experts" | "expert_size") {
            continue;
        }
        if let Some(says) = source.int(field).filter(|&v| v != has) {
            return Err(ConvertError::ConfigMismatch {
                origin: source.origin.clone(),
                field,
                says: says.to_string(),
                tensor,
                has: format!("{has} {unit}"),
            });
        }
    }
    if let Some(says) = source.ints("moe_layers").filter(|v| *v != moe.as_slice()) {
        return Err(ConvertError::ConfigMismatch {
            origin: source.origin.clone(),
            field: "moe_layers",
            says: format!("{says:?}"),
            tensor: "the state dict".into(),
            has: format!("MoE routers in layers {moe:?}"),
        });
    }
    Ok(())
}

/// Dequantized f32 values (PyTorch's `(q - zero_point) * scale`, computed in f64, where
/// no zero point can overflow; [`build`] range-checks the parameters first).
pub fn to_f32(t: &RawTensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        TensorData::QInt8 { q, scale, zero_point } => {
            q.iter().map(|&q| ((q as f64 - *zero_point as f64) * scale) as f32).collect()
        }
        TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

/// Checks an embedded tokenizer against the model's vocabulary: a tokenizer made for
/// another model would pack cleanly and fail (or decode garbage) on every prompt.
fn check_tokenizer(t: &TokenizerTable, source: Option<&TokenizerSource>, vocab: u32) -> Result<(), ConvertError> {
    let file = source.map_or_else(|| "table".to_string(), |s| s.file.clone());
    let fit = |detail: String| Err(ConvertError::TokenizerFit { file: file.clone(), detail });
    let count = t.tokens.len() as u64;
    if let Some(declared) = source.and_then(|s| s.vocab_size) {
        if declared != vocab {
            return fit(format!(
                "its vocab_size is {declared} but the checkpoint's vocab is {vocab}: it was made for another model; pass the tokenizer made for this checkpoint (vocab_size {vocab})"
            ));
        }
    }
    if count > u64::from(vocab) {
        return fit(format!(
            "it names ids up to {} but the checkpoint's vocab is {vocab} (ids 0 to {}): it was made for another model; pass the tokenizer made for this checkpoint",
            count - 1,
            u64::from(vocab).saturating_sub(1)
        ));
    }
    if u64::from(t.unk_id) >= count {
        return fit(format!("its unknown-token id {} is beyond its {count} ids; add an `<UNK>` token to it", t.unk_id));
    }
    Ok(())
}

/// Checks a state dict against the config it implies and builds the blob contents.
pub fn build(sd: &StateDict, opts: &PackOptions) -> Result<BlobBuilder, ConvertError> {
    let config = infer_config(sd, opts)?;
    if let Some(t) = &opts.tokenizer {
        check_tokenizer(t, opts.tokenizer_source.as_ref(), config.vocab)?;
    }
    let policy = &opts.quant;
    let mut used = BTreeSet::new();
    let mut tensors = Vec::new();
    let mut sqnr: Vec<(String, f64)> = Vec::new();
    // Per rule: (matched a quantizable matrix, matched an always-f32 tensor).
    let mut hits = vec![(false, false); policy.rules.len()];
    let mut names = Vec::new();
    for_each_expected(&config, |e| {
        let name = checkpoint_name(&config, &e);
        names.push(name.clone());
        if e.role == Role::LmHead && config.tied_lm_head {
            used.insert(name);
            tensors.push(PendingTensor {
                role: e.role,
                layer: e.layer,
                expert: e.expert,
                shape: e.shape,
                payload: Payload::SameAs(0),
            });
            return Ok(());
        }
        let t = get(sd, &name)?;
        let expected = checkpoint_shape(e.role, e.shape);
        if t.shape != expected {
            return Err(ConvertError::Shape { name, expected, found: t.shape.clone() });
        }
        // Quantizer parameters are checked before any use, for every policy: even f32
        // dequantizes with them.
        let qparams = match &t.data {
            TensorData::QInt8 { scale, zero_point, .. } => Some(
                QInt8Params::check(*scale, *zero_point)
                    .map_err(|detail| ConvertError::QuantParams { name: name.clone(), detail })?,
            ),
            _ => None,
        };
        let values = to_f32(t);
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ConvertError::NonFinite { name, index, value });
        }
        let qint8 = matches!(t.data, TensorData::QInt8 { .. });
        let quantizable = quant::is_quantizable(e.role);
        for (rule, hit) in policy.rules.iter().zip(hits.iter_mut()) {
            if quant::glob_match(&rule.pattern, &name) {
                if quantizable {
                    hit.0 = true;
                } else {
                    hit.1 = true;
                }
            }
        }
        let cols = e.shape[1] as usize;
        let dtype = policy.dtype_for(&name, e.role, qint8, cols);
        // `keep` stores an int4 checkpoint's matrices as the int4 they are (no rule said otherwise).
        let ruled = policy.rules.iter().any(|r| quant::glob_match(&r.pattern, &name));
        let int4 = (policy.preset == Preset::Keep && quantizable && !qint8 && !ruled)
            .then(|| quant::int4_grid(&values))
            .flatten();
        let kept_int4 = int4.is_some();
        let payload = match (&t.data, qparams, dtype, int4) {
            (_, _, _, Some((scale, q))) => Payload::I4PerTensor { q, scale },
            (TensorData::QInt8 { q, .. }, Some(params), QDType::Int8, None) => {
                keep_qint8(q, params, e.shape, policy.preset == Preset::Keep)
            }
            (_, _, dtype, None) => {
                if let Some(limit) = quant::max_magnitude(dtype) {
                    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.abs() > limit) {
                        return Err(ConvertError::Unrepresentable { name, dtype: dtype.name(), index, value, limit });
                    }
                }
                quant::quantize_role(e.role, &values, cols, dtype)
            }
        };
        if dtype != QDType::F32 || kept_int4 {
            let deq = quant::dequantize(&payload, cols).unwrap_or_default();
            if let Some((index, &value)) = deq.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ConvertError::Structure(format!(
                    "tensor '{}' overflows {} at element {index} ({value}); store it as f32",
                    quoted(&name),
                    dtype.name()
                )));
            }
            sqnr.push((name.clone(), quant::sqnr_db(&values, &deq)));
        }
        used.insert(name);
        tensors.push(PendingTensor { role: e.role, layer: e.layer, expert: e.expert, shape: e.shape, payload });
        Ok(())
    })?;
    if let Some(extra) = sd.names().find(|n| !used.contains(*n) && !ignored(n)) {
        return Err(ConvertError::Unexpected(extra.to_string()));
    }
    for (rule, &(matrix, fixed)) in policy.rules.iter().zip(&hits) {
        if fixed && !matrix && rule.dtype != QDType::F32 {
            return Err(ConvertError::Policy(format!(
                "{}: `{} = {}` names only tensors that always stay f32 (norms, conv, A_log, D, delta_proj bias, router gate, positions)",
                rule.location(),
                rule.pattern,
                rule.dtype.name()
            )));
        }
        if !fixed && !matrix {
            eprintln!("warning: {}: pattern `{}` matches no tensor", shown(&rule.location()), shown(&rule.pattern));
        }
    }
    let mut builder =
        BlobBuilder { config: Some(config), tensors, tokenizer: opts.tokenizer.clone(), meta: Vec::new(), flags: 0 };
    if policy.preset == Preset::Integer {
        if policy.rules.iter().any(|r| r.dtype != QDType::F32) {
            return Err(ConvertError::Policy(
                "--quant integer takes no per-tensor rules: every matrix is int8 with integer requantization".into(),
            ));
        }
        sqnr = crate::fixed::lower(&mut builder, &names).map_err(|e| ConvertError::Structure(e.0))?;
    }
    let mut meta = vec![("packer".to_string(), format!("itera-pack {}", env!("CARGO_PKG_VERSION")))];
    meta.extend(opts.meta.iter().cloned());
    if !policy.is_all_f32() {
        meta.push(("quant".into(), policy.describe()));
        let pairs: Vec<String> = sqnr.iter().map(|(n, db)| format!("{n}={}", quant::format_db(*db))).collect();
        meta.push(("sqnr_db".into(), pairs.join(";")));
    }
    builder.meta = meta;
    Ok(builder)
}

/// A PyTorch qint8 tensor stored as it is, values and scale exactly. `weight_only` (the
/// `keep` preset) stores the per-tensor affine pair, which the core multiplies against the
/// float input: the checkpoint's dequantized model, to float rounding. Otherwise a symmetric
/// tensor takes per-row scales (all equal) and the fast int8 × int8 kernels, which also
/// quantize the input; a nonzero zero point always stays affine.
fn keep_qint8(q: &[i8], params: QInt8Params, shape: [u32; 2], weight_only: bool) -> Payload {
    let [rows, cols] = shape;
    let QInt8Params { scale, zero_point } = params;
    if zero_point == 0 && !weight_only {
        Payload::I8Grouped { q: q.to_vec(), group: cols, scales: vec![scale; rows as usize], f16_scales: false }
    } else {
        Payload::I8PerTensor { q: q.to_vec(), scale, zero_point: i32::from(zero_point) }
    }
}

/// Reads a tokenizer JSON file (word-level `token_to_id`/`id_to_token` or char-level
/// `token2id`/`id2token`) into a table.
pub fn read_tokenizer(path: &std::path::Path) -> anyhow::Result<TokenizerTable> {
    Ok(read_tokenizer_file(path)?.0)
}

/// Largest tokenizer file read (64 MiB): a tokenizer of the most ids allowed
/// ([`crate::tokenizer_json::MAX_TOKENIZER_IDS`]) is about 20 MB of JSON.
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 64 << 20;

/// [`read_tokenizer`], with the file's name and its own `vocab_size` for
/// [`PackOptions::tokenizer_source`].
pub fn read_tokenizer_file(path: &std::path::Path) -> anyhow::Result<(TokenizerTable, TokenizerSource)> {
    let file = path.display().to_string();
    let text = crate::files::read_text_within(path, MAX_TOKENIZER_FILE_BYTES, "tokenizer")?;
    let (table, vocab_size) =
        parse_tokenizer_declared(&text).map_err(|e| anyhow::anyhow!("tokenizer {}: {e}", shown(&file)))?;
    Ok((table, TokenizerSource { file, vocab_size }))
}
