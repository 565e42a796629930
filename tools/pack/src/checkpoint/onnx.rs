//! Reader for ONNX exports of an Itera-Lite model (`torch.onnx.export`): the weights are the
//! graph's initializers.
//!
//! The file is decoded with `prost` against the part of the ONNX schema (`onnx.proto`) that
//! holds weights and graph structure: [`ModelProto`], [`GraphProto`], [`NodeProto`],
//! [`AttributeProto`], [`TensorProto`], with the schema's field numbers. Unknown fields are
//! skipped, as protobuf readers do.
//!
//! An export names its parameters two ways. Parameters used as they are keep their module
//! path (`model.layers.0.ssm.conv1d.weight`; the wrapper's prefix, whatever it is, is taken
//! off). Linear weights used by a `MatMul` are stored transposed (`[in, out]`) under an
//! anonymous name (`onnx::MatMul_7131`): each is named here from the node that consumes it,
//! whose name carries the module path with repeated modules numbered by repetition
//! (`/model/ssm/in_proj_2/MatMul` is the third layer's `in_proj`), never from the order of
//! the names. Top-k is the `k` of the graph's `TopK` node. Before anything is named, the
//! graph must be an Itera-Lite graph: one `Conv` and one `Softplus` per layer, learned
//! positions (a `Gather` of the position table), and a `TopK` exactly where there are MoE
//! layers.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use super::{checked_numel, CheckpointError, Meter, RawTensor, SourceConfig, SourceFormat, StateDict};
use super::{StateDictBuilder, TensorData};
use crate::untrusted::shown;

/// `onnx.ModelProto` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// `ir_version = 1`.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// `producer_name = 2`.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// `graph = 7`.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// `opset_import = 8`.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// `domain = 1`.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// `version = 2`.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.GraphProto` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// `node = 1`.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// `name = 2`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `initializer = 5`.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

/// `onnx.NodeProto` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// `input = 1`.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// `output = 2`.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// `name = 3`.
    #[prost(string, tag = "3")]
    pub name: String,
    /// `op_type = 4`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// `attribute = 5`.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `onnx.AttributeProto` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// `name = 1`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `i = 3`.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// `t = 5`.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
}

/// `onnx.TensorProto` (the fields read).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `dims = 1`.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// `data_type = 2` (`TensorProto.DataType`: 1 FLOAT, 7 INT64).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// `float_data = 4`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// `int64_data = 7`.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// `name = 8`.
    #[prost(string, tag = "8")]
    pub name: String,
    /// `raw_data = 9`.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// `data_location = 14` (1: EXTERNAL).
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Whether `head` (a file's first bytes) looks like a serialized `ModelProto`: field 1
/// (`ir_version`, a varint of a known version) first, as every exporter writes it.
pub(crate) fn looks_like_onnx(head: &[u8]) -> bool {
    matches!(head, [0x08, 3..=12, 0x12 | 0x1a | 0x22 | 0x2a | 0x3a | 0x42, ..])
}

fn structure(meter: &Meter, detail: String) -> CheckpointError {
    CheckpointError::Export { file: meter.file().to_string(), format: SourceFormat::Onnx, detail }
}

/// Reads the weights of an ONNX export held in `bytes` (already counted on `meter`).
pub(crate) fn read_onnx(bytes: &[u8], meter: &mut Meter) -> Result<StateDict, CheckpointError> {
    // The decoded message holds about as much as the file again (the raw tensor bytes).
    meter.charge(bytes.len() as u64, || "the decoded ONNX model".to_string())?;
    let model = ModelProto::decode(bytes).map_err(|e| {
        structure(meter, format!("not a valid ONNX protobuf ({e}): the file is truncated or damaged, or not ONNX"))
    })?;
    let graph = model.graph.ok_or_else(|| structure(meter, "it has no graph".into()))?;
    let initializers: BTreeMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();

    // Named parameters: the wrapper's prefix (before `embedding.weight`) taken off. The
    // exporter names the others `onnx::<Op>_<N>`.
    let anonymous = |name: &str| name.contains("::");
    let prefix = initializers
        .keys()
        .filter(|n| !anonymous(n))
        .filter_map(|n| n.strip_suffix("embedding.weight").filter(|p| p.is_empty() || p.ends_with('.')))
        .min_by_key(|p| p.len())
        .ok_or_else(|| structure(meter, "no initializer is an 'embedding.weight': not an Itera-Lite export".into()))?
        .to_string();
    let mut named: Vec<(String, &TensorProto, bool)> = Vec::new();
    for (&name, &t) in initializers.iter().filter(|(n, _)| !anonymous(n)) {
        named.push((name.strip_prefix(prefix.as_str()).unwrap_or(name).to_string(), t, false));
    }
    let layer_of = |n: &str| n.strip_prefix("layers.")?.split('.').next()?.parse::<u32>().ok();
    let layers: BTreeSet<u32> = named.iter().filter_map(|(n, _, _)| layer_of(n)).collect();
    let with = |suffix: &str| -> Vec<u32> {
        layers.iter().copied().filter(|l| named.iter().any(|(n, _, _)| *n == format!("layers.{l}.{suffix}"))).collect()
    };
    let moe_layers = with("moe.layer.norm.weight");
    let ffn_layers = with("moe.norm.weight");
    let all_layers: Vec<u32> = layers.iter().copied().collect();
    let d_state = named
        .iter()
        .find(|(n, _, _)| n == "layers.0.ssm.ssm.A_log")
        .and_then(|(_, t, _)| t.dims.first().copied())
        .ok_or_else(|| structure(meter, "it has no 'layers.0.ssm.ssm.A_log' initializer".into()))?;
    check_graph(&graph, all_layers.len(), !moe_layers.is_empty(), &prefix, meter)?;

    // Anonymous MatMul weights, named by the node that consumes them.
    let wrapper = prefix.trim_end_matches('.');
    for (&name, &t) in initializers.iter().filter(|(n, _)| anonymous(n)) {
        let Some(node) = graph.node.iter().find(|n| n.op_type == "MatMul" && n.input.iter().any(|i| i == name)) else {
            return Err(structure(
                meter,
                format!("initializer '{}' is used by no MatMul and has no module path", shown(name)),
            ));
        };
        let (path, occurrence) = module_path(&node.name, wrapper);
        let pick = |set: &[u32]| {
            set.get(occurrence).copied().ok_or_else(|| {
                structure(
                    meter,
                    format!(
                        "node '{}' is repetition {occurrence} of a layer the export does not have",
                        shown(&node.name)
                    ),
                )
            })
        };
        let full = if path == "ssm.ssm" {
            // B ([d_state, d_inner], stored [d_inner, d_state]) or C (the other way round).
            let which = match t.dims.as_slice() {
                [_, n] if *n == d_state => "B",
                [n, _] if *n == d_state => "C",
                _ => {
                    return Err(structure(
                        meter,
                        format!("'{}' is neither B nor C by its shape {:?}", shown(name), t.dims),
                    ))
                }
            };
            format!("layers.{}.ssm.ssm.{which}", pick(&all_layers)?)
        } else if path.starts_with("ssm.") {
            format!("layers.{}.{path}.weight", pick(&all_layers)?)
        } else if path.starts_with("moe.layer.") {
            format!("layers.{}.{path}.weight", pick(&moe_layers)?)
        } else if path.starts_with("moe.") {
            format!("layers.{}.{path}.weight", pick(&ffn_layers)?)
        } else {
            format!("{path}.weight")
        };
        named.push((full, t, true));
    }

    let mut out = StateDictBuilder::default();
    let mut seen = BTreeSet::new();
    for (name, t, transposed) in named {
        if !seen.insert(name.clone()) {
            return Err(structure(meter, format!("two initializers map to '{}'", shown(&name))));
        }
        let tensor = tensor_of(t, transposed, &name, meter)?;
        out.insert(name, tensor, "float32");
    }
    let top_k = graph_top_k(&graph, &initializers, meter)?;
    let config = top_k.map(|k| SourceConfig::top_k("graph (its TopK node)".into(), k));
    Ok(StateDict { config, format: SourceFormat::Onnx, ..out.finish() })
}

/// The module path of a node (`/model/ssm/in_proj_2/MatMul` → `ssm.in_proj`, repetition 2):
/// the wrapper segment and the op's own segment dropped, each segment's `_N` suffix taken as
/// the repetition (the module's N+1-th use in the trace).
fn module_path(node: &str, wrapper: &str) -> (String, usize) {
    let mut segments: Vec<&str> = node.split('/').filter(|s| !s.is_empty()).collect();
    segments.pop(); // the op: `MatMul`, `MatMul_2`
    if segments.first() == Some(&wrapper) && !wrapper.is_empty() {
        segments.remove(0);
    }
    let mut occurrence = 0;
    let parts: Vec<&str> = segments
        .iter()
        .map(|s| match s.rsplit_once('_') {
            Some((base, n)) if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                occurrence = occurrence.max(n.parse().unwrap_or(0));
                base
            }
            _ => s,
        })
        .collect();
    (parts.join("."), occurrence)
}

/// Refuses a graph that is not an Itera-Lite graph.
fn check_graph(
    graph: &GraphProto,
    layers: usize,
    moe: bool,
    prefix: &str,
    meter: &Meter,
) -> Result<(), CheckpointError> {
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    let refuse = |what: String| Err(structure(meter, format!("{what}: not an Itera-Lite graph")));
    if count("Conv") != layers {
        return refuse(format!("{} Conv nodes for {layers} layers (one causal conv per SSM block)", count("Conv")));
    }
    if count("Softplus") != layers {
        return refuse(format!("{} Softplus nodes for {layers} layers (one per SSM block)", count("Softplus")));
    }
    let positions = format!("{prefix}position_embedding.weight");
    if !graph.node.iter().any(|n| n.op_type == "Gather" && n.input.first() == Some(&positions)) {
        return refuse("no Gather of the learned positions ('position_embedding.weight')".into());
    }
    match (moe, count("TopK")) {
        (true, 0) => refuse("MoE layers without a TopK node".into()),
        (false, n) if n > 0 => refuse(format!("{n} TopK nodes but no MoE layer")),
        _ => Ok(()),
    }
}

/// The `k` of the graph's TopK nodes (their second input: a constant or an initializer).
fn graph_top_k(
    graph: &GraphProto,
    initializers: &BTreeMap<&str, &TensorProto>,
    meter: &Meter,
) -> Result<Option<i64>, CheckpointError> {
    let mut found = None;
    for node in graph.node.iter().filter(|n| n.op_type == "TopK") {
        let k_name = node.input.get(1).map(String::as_str).unwrap_or_default();
        let constant = graph
            .node
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == k_name))
            .and_then(|n| n.attribute.iter().find(|a| a.name == "value"))
            .and_then(|a| a.t.as_ref());
        let k = constant
            .or_else(|| initializers.get(k_name).copied())
            .and_then(int64_scalar)
            .ok_or_else(|| structure(meter, format!("TopK node '{}' has no constant k", shown(&node.name))))?;
        match found {
            Some(other) if other != k => {
                return Err(structure(meter, format!("its TopK nodes pick {other} and {k}: pass --top-k")));
            }
            _ => found = Some(k),
        }
    }
    Ok(found)
}

/// The one value of an int64 tensor.
fn int64_scalar(t: &TensorProto) -> Option<i64> {
    if t.data_type != INT64 {
        return None;
    }
    match (t.int64_data.as_slice(), t.raw_data.as_slice()) {
        ([v], _) => Some(*v),
        ([], raw) if raw.len() == 8 => Some(i64::from_le_bytes(raw.try_into().ok()?)),
        _ => None,
    }
}

/// A float initializer as a tensor, transposed from `[in, out]` when `transposed`.
fn tensor_of(t: &TensorProto, transposed: bool, name: &str, meter: &mut Meter) -> Result<RawTensor, CheckpointError> {
    let file = meter.file().to_string();
    let bad = |why: String| CheckpointError::Export {
        file: file.clone(),
        format: SourceFormat::Onnx,
        detail: format!("initializer '{}' {why}", shown(&t.name)),
    };
    if t.data_location == EXTERNAL {
        return Err(bad("keeps its data in an external file: re-export with the weights inside the model".into()));
    }
    if t.data_type != FLOAT {
        return Err(bad(format!("has data type {} (only FLOAT weights are read)", t.data_type)));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("has dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let numel = checked_numel(&dims).ok_or_else(|| bad(format!("has shape {dims:?}, too large")))?;
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    if values.len() != numel || (!t.raw_data.is_empty() && t.raw_data.len() != 4 * numel) {
        return Err(bad(format!("holds {} values for shape {dims:?}", values.len())));
    }
    meter.charge(4 * numel as u64, || format!("tensor '{}'", shown(name)))?;
    let (shape, data) = match (transposed, dims.as_slice()) {
        (true, &[rows, cols]) => {
            let mut out = vec![0.0; numel];
            for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    out[c * rows + r] = v;
                }
            }
            (vec![cols, rows], out)
        }
        (true, _) => return Err(bad(format!("is a MatMul weight of shape {dims:?}, not a matrix"))),
        (false, _) => (dims, values),
    };
    Ok(RawTensor { shape, data: TensorData::F32(data), storage: Some(format!("onnx:{name}")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_give_module_paths_and_repetitions() {
        assert_eq!(module_path("/model/ssm/in_proj/MatMul", "model"), ("ssm.in_proj".into(), 0));
        assert_eq!(module_path("/model/ssm/in_proj_2/MatMul", "model"), ("ssm.in_proj".into(), 2));
        assert_eq!(module_path("/model/ssm/ssm_1/MatMul_3", "model"), ("ssm.ssm".into(), 1));
        assert_eq!(module_path("/model/ssm/ssm/delta_proj_1/MatMul", "model"), ("ssm.ssm.delta_proj".into(), 1));
        assert_eq!(module_path("/net/moe/layer/experts.3/w2/MatMul", "net"), ("moe.layer.experts.3.w2".into(), 0));
        assert_eq!(module_path("/moe/ffn/w1_1/MatMul", ""), ("moe.ffn.w1".into(), 1));
        assert_eq!(module_path("/model/lm_head/MatMul", "model"), ("lm_head".into(), 0));
    }

    /// The published export, decoded, changed by `edit`, and read back.
    fn read_edited(edit: impl FnOnce(&mut GraphProto)) -> Option<Result<StateDict, CheckpointError>> {
        let (_, bytes) = crate::checkpoint::test_support::fixture("itera_lite_micro.onnx")?;
        let mut model = ModelProto::decode(bytes.as_slice()).expect("the fixture decodes");
        edit(model.graph.as_mut().expect("a graph"));
        let bytes = model.encode_to_vec();
        Some(crate::checkpoint::load_bytes(&bytes, "edited.onnx"))
    }

    #[test]
    fn the_published_export_reads_with_every_weight_named() {
        let Some(sd) = read_edited(|_| ()) else { return };
        let sd = sd.expect("reads");
        assert_eq!(sd.format, SourceFormat::Onnx);
        assert_eq!(sd.config.as_ref().and_then(|c| c.int("top_k_experts")), Some(2));
        // 31 named (prefix off) + 29 anonymous MatMul weights (transposed back).
        assert_eq!(sd.len(), 60);
        assert_eq!(sd.get("layers.2.ssm.in_proj.weight").map(|t| t.shape.clone()), Some(vec![256, 64]));
        assert_eq!(sd.get("layers.1.ssm.ssm.B").map(|t| t.shape.clone()), Some(vec![8, 128]));
        assert_eq!(sd.get("layers.1.ssm.ssm.C").map(|t| t.shape.clone()), Some(vec![128, 8]));
        assert!(
            sd.get("layers.2.moe.ffn.w1.weight").is_some()
                && sd.get("layers.1.moe.layer.experts.3.w2.weight").is_some()
        );
    }

    /// The export with its wrapper renamed: `model.` / `/model/` become `to` (`net.`, or none).
    fn rewrapped(to: &'static str) -> Option<Result<StateDict, CheckpointError>> {
        read_edited(move |g| {
            let rename = |n: &mut String| {
                if let Some(rest) = n.strip_prefix("model.") {
                    *n = format!("{to}{rest}");
                }
            };
            g.initializer.iter_mut().for_each(|t| rename(&mut t.name));
            for node in &mut g.node {
                node.input.iter_mut().for_each(rename);
                node.name = node.name.replacen("/model/", &format!("/{}", to.replace('.', "/")), 1);
            }
        })
    }

    #[test]
    fn any_wrapper_prefix_or_none_reads_the_same() {
        let Some(original) = read_edited(|_| ()) else { return };
        let original = original.expect("reads");
        let tensors = |sd: &StateDict| sd.tensors.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect::<Vec<_>>();
        for to in ["net.", ""] {
            let sd = rewrapped(to).expect("fixture").unwrap_or_else(|e| panic!("prefix '{to}': {e}"));
            assert_eq!(tensors(&sd), tensors(&original), "prefix '{to}'");
        }
    }

    #[test]
    fn graphs_that_are_not_itera_lite_are_refused() {
        let refused = |edit: fn(&mut GraphProto), needle: &str| {
            let Some(result) = read_edited(edit) else { return };
            let err = result.expect_err("refused").to_string();
            assert!(err.contains(needle), "{err}");
        };
        refused(|g| g.node.retain(|n| n.op_type != "TopK"), "MoE layers without a TopK node");
        refused(|g| g.node.retain(|n| n.op_type != "Conv"), "0 Conv nodes for 3 layers");
        refused(
            |g| g.initializer.retain(|t| !t.name.ends_with(".embedding.weight")),
            "no initializer is an 'embedding.weight'",
        );
        refused(
            |g| g.node.iter_mut().filter(|n| n.op_type == "MatMul").for_each(|n| n.op_type = "Gemm".into()),
            "is used by no MatMul",
        );
        refused(|g| g.initializer.iter_mut().for_each(|t| t.data_location = EXTERNAL), "external file");
    }

    #[test]
    fn onnx_files_are_recognised_by_their_first_field() {
        assert!(looks_like_onnx(&[0x08, 0x07, 0x12, 0x07, b'p']));
        assert!(!looks_like_onnx(b"PK\x03\x04"));
        assert!(!looks_like_onnx(&[0x08]));
    }
}
