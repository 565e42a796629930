//! Weight quantization on the packer side: quantizers (int8 per row, int4 grouped with an
//! MSE-searched scale, f16), their inverses, SQNR, and the `--quant` policy that decides
//! which tensor gets which dtype.
//!
//! GPTQ rounding against a data-free input second moment was tried and measured on the
//! Itera-Lite fixtures: it does not rescue an int4 head (micro top-1 vs f32 with a scale per
//! 32: 92.7% nearest, 90.0% GPTQ with the LayerNorm moment, 91.8% GPTQ with a
//! self-generated-text moment), so it is not kept; finer scales (`int4g8`) are what helps.
//!
//! Vector tensors (norms, conv, `A_log`, `D`, `delta_proj` bias) and the MoE router gate
//! always stay f32: they are small and precision-sensitive.

use half::f16;
use itera_edge::format::Role;

use crate::writer::Payload;

/// Elements per int4 scale.
pub const INT4_GROUP: usize = 32;

/// A storage dtype the policy can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QDType {
    /// IEEE binary32 (no loss).
    F32,
    /// IEEE binary16.
    F16,
    /// Symmetric int8, one f32 scale per row.
    Int8,
    /// Symmetric int4, one f16 scale per 32 elements of a row (4.5 bits per weight).
    Int4,
    /// Symmetric int4, one f16 scale per 8 elements of a row (6 bits per weight): finer
    /// scales for the tied embedding / `lm_head`, whose logit noise decides top-1.
    Int4G8,
}

impl QDType {
    /// Parses `f32`, `f16`, `int8`/`i8`, `int4`/`i4`, `int4g8`/`i4g8`.
    pub fn parse(s: &str) -> Option<QDType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => QDType::F32,
            "f16" | "fp16" => QDType::F16,
            "int8" | "i8" => QDType::Int8,
            "int4" | "i4" => QDType::Int4,
            "int4g8" | "i4g8" => QDType::Int4G8,
            _ => return None,
        })
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            QDType::F32 => "f32",
            QDType::F16 => "f16",
            QDType::Int8 => "int8",
            QDType::Int4 => "int4",
            QDType::Int4G8 => "int4g8",
        }
    }
}

/// A built-in policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Everything f32; qint8 checkpoint tensors are dequantized.
    F32,
    /// Matrices f16.
    F16,
    /// All matrices int8 (qint8 checkpoint tensors kept exactly).
    Int8,
    /// Matrices int4, embedding and positions int8.
    Int4,
    /// Embedding and `lm_head` int4 with a scale per 8 (`int4g8`); `B` and `C` int8; every
    /// other matrix (positions, `in_proj`, `delta_proj`, `out_proj`, FFN, experts) int4.
    /// The recommended preset for size. Measured (2,048 tinystories tokens vs f32): micro
    /// 0.177x the f32 blob, mean KL 6.7e-4, top-1 96.5%. The head's scale granularity
    /// decides top-1 (the logits are near-tied): int4 per 32 there gives 92.7%, per 16 93.7%.
    /// `B` in int4 triples the KL (2.2e-3); `delta_proj` in int4 costs nothing measurable.
    Mixed,
    /// The checkpoint's own numbers: f32, except tensors stored as qint8, which keep their
    /// int8 values, and weight matrices whose every value lies on one int4 grid (`q · scale`,
    /// `q` in -8..=7, one scale per tensor: a fake-quantized int4 checkpoint), which are stored
    /// as that int4 and that scale, exactly, and computed weight-only.
    Keep,
    /// Integer arithmetic only, for cores without an FPU: every matrix int8 with one
    /// requantization per row, vectors Q16, activation tables (see `fixed.rs` and
    /// docs/FORMAT.md, "Fixed-point blobs"). The whole forward pass and greedy sampling run
    /// in integers, so every target computes the host's bits.
    Integer,
}

impl Preset {
    /// Parses a preset name.
    pub fn parse(s: &str) -> Option<Preset> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Preset::F32,
            "f16" | "fp16" => Preset::F16,
            "int8" | "i8" => Preset::Int8,
            "int4" | "i4" => Preset::Int4,
            "mixed" => Preset::Mixed,
            "keep" => Preset::Keep,
            "integer" | "int" => Preset::Integer,
            _ => return None,
        })
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::F32 => "f32",
            Preset::F16 => "f16",
            Preset::Int8 => "int8",
            Preset::Int4 => "int4",
            Preset::Mixed => "mixed",
            Preset::Keep => "keep",
            Preset::Integer => "integer",
        }
    }

    /// The dtype this preset gives a matrix role (`qint8`: stored as qint8 in the checkpoint).
    pub fn matrix_dtype(self, role: Role, qint8: bool) -> QDType {
        match self {
            Preset::F32 => QDType::F32,
            Preset::F16 => QDType::F16,
            Preset::Int8 => QDType::Int8,
            Preset::Int4 => match role {
                Role::Embedding | Role::Position => QDType::Int8,
                _ => QDType::Int4,
            },
            // The head takes fine int4 scales: per 32 it flips near-tied top-1 tokens
            // (micro: 92.7% top-1; per 8: 96.5%, at 6 bits a weight instead of 8).
            Preset::Mixed => match role {
                Role::Embedding | Role::LmHead => QDType::Int4G8,
                Role::B | Role::C => QDType::Int8,
                _ => QDType::Int4,
            },
            Preset::Keep if qint8 => QDType::Int8,
            Preset::Keep => QDType::F32,
            // Built in f32, then lowered as a whole by `fixed::lower`.
            Preset::Integer => QDType::F32,
        }
    }
}

/// Whether a role is a weight matrix (or the position table) the policy may quantize. Every
/// other role (vectors, the router gate) always stays f32.
pub fn is_quantizable(role: Role) -> bool {
    matches!(
        role,
        Role::Embedding
            | Role::Position
            | Role::InProj
            | Role::B
            | Role::C
            | Role::DeltaProj
            | Role::OutProj
            | Role::FfnW1
            | Role::FfnW2
            | Role::ExpertW1
            | Role::ExpertW2
            | Role::LmHead
    )
}

/// One `pattern = dtype` line of a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Glob over checkpoint tensor names; `*` matches any run of characters.
    pub pattern: String,
    /// Dtype for matching tensors.
    pub dtype: QDType,
    /// 1-based line number in the file.
    pub line: usize,
    /// Where the rule came from (file name), for messages.
    pub origin: String,
}

impl Rule {
    /// `origin:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.origin, self.line)
    }
}

/// Which dtype each tensor is stored in: a preset plus file rules (later rules win).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPolicy {
    /// Base preset.
    pub preset: Preset,
    /// Overrides, in file order.
    pub rules: Vec<Rule>,
}

impl Default for QuantPolicy {
    /// All f32 (the packer's historical behaviour).
    fn default() -> Self {
        QuantPolicy { preset: Preset::F32, rules: Vec::new() }
    }
}

/// Glob match: `*` matches any (possibly empty) run of characters, everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl QuantPolicy {
    /// A bare preset.
    pub fn preset(preset: Preset) -> Self {
        QuantPolicy { preset, rules: Vec::new() }
    }

    /// Parses policy-file text (`pattern = dtype` lines, `#` comments, blank lines) on top of
    /// `preset`. Errors name the line.
    pub fn from_rules(preset: Preset, text: &str, origin: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let Some((pattern, dtype)) = body.split_once('=') else {
                return Err(format!("{origin}:{line}: expected `pattern = dtype`, found `{}`", raw.trim()));
            };
            let pattern = pattern.trim();
            if pattern.is_empty() || pattern.contains(char::is_whitespace) {
                return Err(format!("{origin}:{line}: bad tensor name pattern `{pattern}`"));
            }
            let dtype = QDType::parse(dtype).ok_or_else(|| {
                format!("{origin}:{line}: unknown dtype `{}` (expected f32, f16, int8, int4 or int4g8)", dtype.trim())
            })?;
            rules.push(Rule { pattern: pattern.to_string(), dtype, line, origin: origin.to_string() });
        }
        Ok(QuantPolicy { preset, rules })
    }

    /// A `--quant` value split into its preset name and policy file (`mixed:FILE`), if any.
    fn split_spec(spec: &str) -> (&str, Option<&str>) {
        match spec.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (spec, None),
        }
    }

    /// The policy file a `--quant` value names (`FILE` in `mixed:FILE`), which
    /// [`QuantPolicy::parse_spec`] reads; `None` for a bare preset.
    pub fn spec_file(spec: &str) -> Option<&std::path::Path> {
        Self::split_spec(spec).1.map(std::path::Path::new)
    }

    /// Parses a `--quant` value: `f32`, `f16`, `int8`, `int4`, `mixed`, `keep`, optionally
    /// followed by `:FILE` (rules on top of that preset; `mixed:FILE` is the usual form).
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let (name, file) = Self::split_spec(spec);
        let preset = Preset::parse(name).ok_or_else(|| {
            format!("unknown --quant preset `{name}` (expected f32, f16, int8, int4, mixed or keep, optionally :POLICY_FILE)")
        })?;
        match file {
            None => Ok(QuantPolicy::preset(preset)),
            Some(path) => {
                // A policy file is a few lines: 1 MiB is far more than any needs.
                let text = crate::files::read_text_within(std::path::Path::new(path), 1 << 20, "policy file")
                    .map_err(|e| e.to_string())?;
                QuantPolicy::from_rules(preset, &text, path)
            }
        }
    }

    /// True when every tensor stays f32 (no quantization metadata is recorded then).
    pub fn is_all_f32(&self) -> bool {
        self.preset == Preset::F32 && self.rules.iter().all(|r| r.dtype == QDType::F32)
    }

    /// The dtype for tensor `name` with `role`, and the index of the deciding rule, if any.
    /// Non-quantizable roles are always f32 (rules do not apply to them).
    pub fn resolve(&self, name: &str, role: Role, qint8: bool) -> (QDType, Option<usize>) {
        if !is_quantizable(role) {
            return (QDType::F32, None);
        }
        match self.rules.iter().rposition(|r| glob_match(&r.pattern, name)) {
            Some(i) => (self.rules[i].dtype, Some(i)),
            None => (self.preset.matrix_dtype(role, qint8), None),
        }
    }

    /// The dtype `name` (`role`, rows of `cols`) is stored in: [`QuantPolicy::resolve`], then
    /// the shape's own limit: rows narrower than one int4 group (the SSM's `C`, d_inner x N)
    /// gain nothing from 4 bits (one f16 scale per row) and run slowly, so they take int8.
    pub fn dtype_for(&self, name: &str, role: Role, qint8: bool, cols: usize) -> QDType {
        match self.resolve(name, role, qint8).0 {
            QDType::Int4 | QDType::Int4G8 if cols < INT4_GROUP => QDType::Int8,
            dtype => dtype,
        }
    }

    /// One-line description for provenance.
    pub fn describe(&self) -> String {
        let mut s = self.preset.name().to_string();
        for r in &self.rules {
            s.push_str(&format!("; {}={}", r.pattern, r.dtype.name()));
        }
        s
    }
}

/// Largest quantizer scale the packer accepts from a checkpoint (f16's largest finite
/// value, 65504). With it a qint8 weight `(q - zero_point) * scale` stays below 1.7e7 in
/// magnitude: far beyond any trained weight (Itera-Lite's scales are below 0.1), and far
/// from f32's range in the kernels' sums. A larger scale is damage, not a model.
pub const MAX_QINT8_SCALE: f32 = 65504.0;

/// A checkpoint's per-tensor affine qint8 parameters, range-checked: what the packer and
/// the blob may hold (`zero_point` in int8's range, `scale` a normal f32 in
/// `(0, MAX_QINT8_SCALE]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QInt8Params {
    /// The scale, as the blob stores it.
    pub scale: f32,
    /// The zero point, in -128..=127.
    pub zero_point: i8,
}

impl QInt8Params {
    /// Checks PyTorch's `(scale, zero_point)` before any use. A qint8 value lies in
    /// -128..=127, so a zero point outside that range is no quantizer PyTorch makes and
    /// would overflow the kernels' `q - zero_point` in 32 bits; a scale that is NaN,
    /// infinite, zero, negative or subnormal as an f32 (the dtype the blob stores) makes
    /// every weight NaN, zero or noise. The error says which parameter and its value.
    pub fn check(scale: f64, zero_point: i64) -> Result<QInt8Params, String> {
        let zero_point =
            i8::try_from(zero_point).map_err(|_| format!("zero point {zero_point}, outside int8's -128..=127"))?;
        let stored = scale as f32;
        if !(stored.is_normal() && stored > 0.0 && stored <= MAX_QINT8_SCALE) {
            return Err(format!("scale {scale:e}, not a normal f32 in (0, {MAX_QINT8_SCALE}]"));
        }
        Ok(QInt8Params { scale: stored, zero_point })
    }
}

/// Largest magnitude `dtype` can store with the packer's f16 scales (`None`: any finite
/// f32). An int8 group's f16 scale is at most 65504, so values up to 127 x 65504 fit; int4
/// holds 7 x 65504; f16 itself 65504. Beyond that the scale search would find no finite
/// f16 scale and clip the weights silently, so such tensors are refused instead.
pub fn max_magnitude(dtype: QDType) -> Option<f32> {
    let f16_max = f16::MAX.to_f32();
    match dtype {
        QDType::F32 => None,
        QDType::F16 => Some(f16_max),
        QDType::Int8 => Some(127.0 * f16_max),
        QDType::Int4 | QDType::Int4G8 => Some(7.0 * f16_max),
    }
}

/// Symmetric int8, one f16 scale per row, chosen to minimise the row's squared error
/// (candidates `max|row| / 127 * f`, `f` in 0.60..=1.00; the plain max scaling is among them,
/// so the search is never worse), then `q = round(w / scale)` with the stored scale.
/// An all-zero row gets scale 1 and zeros.
pub fn quantize_int8_rows(w: &[f32], cols: usize) -> Payload {
    quantize_int8_groups(w, cols, cols)
}

/// As [`quantize_int8_rows`], with one scale per `group` elements of a row.
pub fn quantize_int8_groups(w: &[f32], cols: usize, group: usize) -> Payload {
    let cols = cols.max(1);
    let group = group.clamp(1, cols);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len().div_ceil(group));
    for row in w.chunks(cols) {
        for g in row.chunks(group) {
            let scale = int8_best_scale(g);
            scales.push(scale);
            q.extend(g.iter().map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        }
    }
    Payload::I8Grouped { q, group: group as u32, scales, f16_scales: true }
}

/// Squared error of `values` rounded to multiples of `scale` clamped to `lo..=hi`.
fn sq_error(values: &[f32], scale: f32, lo: f32, hi: f32) -> f64 {
    values
        .iter()
        .map(|&v| {
            let e = (v - (v / scale).round().clamp(lo, hi) * scale) as f64;
            e * e
        })
        .sum()
}

/// The f16-representable scale with the least squared error for one int8 row.
pub fn int8_best_scale(row: &[f32]) -> f32 {
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        return 1.0;
    }
    let mut best = (f64::INFINITY, 1.0f32);
    for i in 0..=40 {
        let s = f16::from_f32(amax / 127.0 * (0.6 + 0.01 * i as f32)).to_f32();
        if s > 0.0 && s.is_finite() {
            let e = sq_error(row, s, -127.0, 127.0);
            if e < best.0 {
                best = (e, s);
            }
        }
    }
    best.1
}

/// The f16 scale minimising the squared error of one int4 group. Candidates are
/// `max|w| / 7 * f` and `max|w| / 8 * f` for `f` in 0.50..=1.20 (41 steps, plus `f = 1`),
/// each rounded to f16 before its error is measured (that is what gets stored).
pub fn int4_best_scale(group: &[f32]) -> f16 {
    let amax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return f16::ONE;
    }
    let mut best: Option<(f64, f16)> = None;
    let mut consider = |s: f32| {
        let s16 = if s >= f16::MAX.to_f32() { f16::MAX } else { f16::from_f32(s) };
        let sf = s16.to_f32();
        if !(sf > 0.0 && sf.is_finite()) {
            return;
        }
        let err = sq_error(group, sf, -8.0, 7.0);
        if best.is_none_or(|(b, _)| err < b) {
            best = Some((err, s16));
        }
    };
    consider(amax / 7.0);
    for i in 0..=40 {
        let f = 0.5 + 0.7 * i as f32 / 40.0;
        consider(amax / 7.0 * f);
        consider(amax / 8.0 * f);
    }
    // Every candidate underflowed f16: the smallest positive f16 (values round to 0 or ±1).
    best.map_or(f16::from_bits(1), |(_, s)| s)
}

/// Int4 with a `max|w| / 7` scale (the baseline the MSE search must beat).
pub fn quantize_int4_absmax(w: &[f32], cols: usize) -> Payload {
    quantize_int4_with(w, cols, INT4_GROUP, |g| {
        let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            f16::ONE
        } else {
            f16::from_f32(amax / 7.0)
        }
    })
}

/// Int4 in groups of [`INT4_GROUP`] along each row (the last group of a row may be shorter),
/// one MSE-optimal f16 scale per group, values in -8..=7.
pub fn quantize_int4(w: &[f32], cols: usize) -> Payload {
    quantize_int4_with(w, cols, INT4_GROUP, int4_best_scale)
}

/// Int4 in groups of `group` along each row, each group's f16 scale from `pick`.
fn quantize_int4_with(w: &[f32], cols: usize, group: usize, pick: impl Fn(&[f32]) -> f16) -> Payload {
    let cols = cols.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::new();
    for row in w.chunks(cols) {
        for g in row.chunks(group) {
            let s16 = pick(g);
            let s = s16.to_f32();
            scales.push(s16);
            q.extend(g.iter().map(|&v| if s > 0.0 { (v / s).round().clamp(-8.0, 7.0) as i8 } else { 0 }));
        }
    }
    Payload::I4Grouped { q, group: group as u32, scales }
}

/// Rounds to f16.
pub fn quantize_f16(w: &[f32]) -> Payload {
    Payload::F16(w.iter().map(|&v| f16::from_f32(v)).collect())
}

/// [`quantize`] for a tensor of `role`: the position table, only ever looked up and never
/// multiplied, takes int8 with a scale per 32 (finer scales cost little and keep positions
/// apart; measured: top-1 vs f32 on tiny).
pub fn quantize_role(role: Role, w: &[f32], cols: usize, dtype: QDType) -> Payload {
    match (role, dtype) {
        (Role::Position, QDType::Int8) => quantize_int8_groups(w, cols, 32),
        _ => quantize(w, cols, dtype),
    }
}

/// Quantizes `w` (row-major, `cols` per row) to `dtype`.
pub fn quantize(w: &[f32], cols: usize, dtype: QDType) -> Payload {
    match dtype {
        QDType::F32 => Payload::F32(w.to_vec()),
        QDType::F16 => quantize_f16(w),
        QDType::Int8 => quantize_int8_rows(w, cols),
        QDType::Int4 => quantize_int4(w, cols),
        QDType::Int4G8 => quantize_int4_with(w, cols, 8, int4_best_scale),
    }
}

fn dequant_grouped(q: &[i8], group: usize, cols: usize, scale: impl Fn(usize) -> f32) -> Vec<f32> {
    let cols = cols.max(1);
    let group = group.max(1);
    let per_row = cols.div_ceil(group);
    q.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (r, c) = (i / cols, i % cols);
            v as f32 * scale(r * per_row + c / group)
        })
        .collect()
}

/// Real values of grouped int8.
pub fn dequantize_int8_grouped(q: &[i8], group: usize, scales: &[f32], cols: usize) -> Vec<f32> {
    dequant_grouped(q, group, cols, |i| scales.get(i).copied().unwrap_or(0.0))
}

/// Real values of per-tensor affine int8: `(q - zero_point) * scale`.
pub fn dequantize_int8_per_tensor(q: &[i8], scale: f32, zero_point: i32) -> Vec<f32> {
    q.iter().map(|&v| (v as i32 - zero_point) as f32 * scale).collect()
}

/// The int4 grid `values` lie on exactly, if any: one f32 `scale` and `q` in -8..=7 with
/// `q as f32 * scale == v` bit for bit for every value (the fake quantization `round(w /
/// scale).clamp(-8, 7) * scale` a training script computes in f32). The scale is the smallest
/// nonzero magnitude divided by 1..=8 (it is `|q| · scale` for the smallest `|q|`), the
/// coarsest grid that fits. `None` for an all-zero tensor and for any value off every grid.
pub fn int4_grid(values: &[f32]) -> Option<(f32, Vec<i8>)> {
    let smallest = values.iter().map(|v| v.abs()).filter(|&a| a > 0.0).fold(f32::INFINITY, f32::min);
    if !smallest.is_finite() {
        return None;
    }
    (1..=8).find_map(|k| {
        let scale = smallest / k as f32;
        if !scale.is_normal() {
            return None;
        }
        let q: Option<Vec<i8>> = values
            .iter()
            .map(|&v| {
                let q = (v / scale).round();
                ((-8.0..=7.0).contains(&q) && (q * scale).to_bits() == v.to_bits() || v == 0.0 && q == 0.0)
                    .then_some(q as i8)
            })
            .collect();
        q.map(|q| (scale, q))
    })
}

/// Real values of per-tensor int4: `q * scale`.
pub fn dequantize_int4_per_tensor(q: &[i8], scale: f32) -> Vec<f32> {
    q.iter().map(|&v| v as f32 * scale).collect()
}

/// Real values of grouped int4 (one `i8` per value).
pub fn dequantize_int4_grouped(q: &[i8], group: usize, scales: &[f16], cols: usize) -> Vec<f32> {
    dequant_grouped(q, group, cols, |i| scales.get(i).map_or(0.0, |s| s.to_f32()))
}

/// Real values of any payload (`None` for `SameAs`).
pub fn dequantize(p: &Payload, cols: usize) -> Option<Vec<f32>> {
    Some(match p {
        Payload::F32(v) => v.clone(),
        Payload::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        Payload::I8Grouped { q, group, scales, .. } => dequantize_int8_grouped(q, *group as usize, scales, cols),
        Payload::I8PerTensor { q, scale, zero_point } => dequantize_int8_per_tensor(q, *scale, *zero_point),
        Payload::I4Grouped { q, group, scales } => dequantize_int4_grouped(q, *group as usize, scales, cols),
        Payload::I4PerTensor { q, scale } => dequantize_int4_per_tensor(q, *scale),
        Payload::I8Requant { q, requant } => {
            let scale = |r: &u32| {
                let r = itera_edge::format::Requant::from_bits(*r);
                (127.0 * f64::from(r.multiplier) * 2f64.powi(-i32::from(r.shift))) as f32
            };
            q.chunks(cols.max(1))
                .zip(requant)
                .flat_map(|(row, r)| row.iter().map(move |&v| v as f32 * scale(r)))
                .collect()
        }
        Payload::Q16(v) => v.iter().map(|&x| x as f32 / 65536.0).collect(),
        Payload::SameAs(_) => return None,
    })
}

/// Signal-to-quantization-noise ratio in dB: `10 log10(Σw² / Σ(w − ŵ)²)`; infinite when exact.
pub fn sqnr_db(original: &[f32], dequantized: &[f32]) -> f64 {
    let (mut sig, mut err) = (0f64, 0f64);
    for (&a, &b) in original.iter().zip(dequantized) {
        sig += (a as f64) * (a as f64);
        err += (a as f64 - b as f64) * (a as f64 - b as f64);
    }
    if err == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (sig / err).log10()
}

/// Formats a dB value for provenance: two decimals, `inf` when exact.
pub fn format_db(db: f64) -> String {
    if db.is_infinite() && db > 0.0 {
        "inf".into()
    } else {
        format!("{db:.2}")
    }
}

/// Parses the provenance value `name=db;name=db;...` (`inf` allowed).
pub fn parse_sqnr_meta(v: &str) -> Vec<(String, f64)> {
    v.split(';')
        .filter_map(|kv| {
            let (k, d) = kv.split_once('=')?;
            let d = d.trim();
            let db = if d == "inf" { f64::INFINITY } else { d.parse().ok()? };
            Some((k.trim().to_string(), db))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_test_support::gaussian;

    #[test]
    fn int4_grids_are_found_exactly_or_not_at_all() {
        // A fake-quantized tensor: q · scale in f32, q over the whole -8..=7 range.
        let scale = 0.013_7f32;
        let q: Vec<i8> = (0..64).map(|i| (i % 16) as i8 - 8).collect();
        let values: Vec<f32> = q.iter().map(|&q| q as f32 * scale).collect();
        let (found, back) = int4_grid(&values).expect("on a grid");
        assert_eq!(found.to_bits(), scale.to_bits());
        assert_eq!(back, q);
        assert_eq!(dequantize_int4_per_tensor(&back, found), values);
        // The smallest magnitude is 3 steps: the grid is still found, exactly.
        let coarse: Vec<f32> = [3i8, -6, 7, -8, 5].iter().map(|&q| q as f32 * scale).collect();
        let (s, q) = int4_grid(&coarse).expect("on a grid");
        assert!(q.iter().zip(&coarse).all(|(&q, &v)| (q as f32 * s).to_bits() == v.to_bits()));
        // One value off the grid, a value needing q = 8, or all zeros: no grid.
        let mut off = values.clone();
        off[5] = f32::from_bits(off[5].to_bits() + 1);
        assert_eq!(int4_grid(&off), None);
        assert_eq!(int4_grid(&[scale, 8.0 * scale]), None);
        assert_eq!(int4_grid(&[0.0; 4]), None);
        // A trained float tensor is not on one.
        let trained: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.77).sin() * 0.1).collect();
        assert_eq!(int4_grid(&trained), None);
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.in_proj.weight", "layers.0.ssm.in_proj.weight"));
        assert!(glob_match("embedding.weight", "embedding.weight"));
        assert!(!glob_match("embedding.weight", "position_embedding.weight"));
        assert!(glob_match("*embedding.weight", "position_embedding.weight"));
        assert!(glob_match("layers.*.ssm.ssm.B", "layers.12.ssm.ssm.B"));
        assert!(!glob_match("layers.*.ssm.ssm.B", "layers.12.ssm.ssm.C"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn int8_rows_bound_and_zero_row() {
        let mut w = gaussian(6 * 40, 1, 0.1);
        w[40..80].fill(0.0);
        let p = quantize_int8_rows(&w, 40);
        let Payload::I8Grouped { q, group, scales, .. } = &p else { panic!() };
        assert_eq!(*group, 40);
        assert_eq!(scales.len(), 6);
        assert_eq!(&q[40..80], &[0i8; 40]);
        let d = dequantize(&p, 40).expect("deq");
        for (i, (a, b)) in w.iter().zip(&d).enumerate() {
            assert!((a - b).abs() <= scales[i / 40] / 2.0 * 1.0001, "{i}");
        }
    }

    #[test]
    fn int4_search_no_worse_than_absmax() {
        let w = gaussian(64 * 70, 7, 0.1);
        let best = dequantize(&quantize_int4(&w, 70), 70).expect("deq");
        let base = dequantize(&quantize_int4_absmax(&w, 70), 70).expect("deq");
        let (s_best, s_base) = (sqnr_db(&w, &best), sqnr_db(&w, &base));
        assert!(s_best > s_base + 0.3, "{s_best} vs {s_base}");
        let Payload::I4Grouped { q, scales, .. } = quantize_int4(&w, 70) else { panic!() };
        assert_eq!(scales.len(), 64 * 3);
        assert!(q.iter().all(|v| (-8..=7).contains(v)));
    }

    #[test]
    fn qint8_parameters_are_range_checked_at_their_bounds() {
        for zp in [-128, 0, 127] {
            assert_eq!(QInt8Params::check(0.5, zp).map(|p| p.zero_point as i64), Ok(zp));
        }
        for zp in [-129, 128, 200, 1 << 31, 1 << 32, -(1 << 31) - 1, i64::MIN, i64::MAX] {
            let e = QInt8Params::check(0.5, zp).expect_err("out of int8");
            assert!(e.contains(&format!("zero point {zp}")), "{e}");
        }
        for scale in [f32::MIN_POSITIVE as f64, 1e-3, MAX_QINT8_SCALE as f64] {
            assert_eq!(QInt8Params::check(scale, 0).map(|p| p.scale), Ok(scale as f32));
        }
        for scale in [0.0, -0.0, -1e-3, 1e-40, 1e-300, f64::NAN, f64::INFINITY, 65505.0, 1e30] {
            let e = QInt8Params::check(scale, 0).expect_err("bad scale");
            assert!(e.starts_with("scale "), "{e}");
        }
    }

    #[test]
    fn values_up_to_the_limit_get_finite_f16_scales_and_are_not_clipped() {
        for dtype in [QDType::Int8, QDType::Int4, QDType::Int4G8, QDType::F16] {
            let limit = max_magnitude(dtype).expect("a limit");
            let row: Vec<f32> = (0..32).map(|i| if i == 5 { -limit } else { limit * (i as f32 / 64.0) }).collect();
            let deq = dequantize(&quantize(&row, 32, dtype), 32).expect("values");
            assert!(deq.iter().all(|v| v.is_finite()), "{dtype:?}");
            let err = (deq[5] - row[5]).abs();
            assert!(err <= limit / 7.0, "{dtype:?}: the largest value came back as {} (not clipped)", deq[5]);
        }
        assert_eq!(max_magnitude(QDType::F32), None);
    }

    #[test]
    fn sqnr_exact_is_infinite() {
        assert_eq!(sqnr_db(&[1.0, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert!((sqnr_db(&[1.0], &[0.9]) - 20.0).abs() < 1e-3);
        assert_eq!(parse_sqnr_meta("a=1.50;b=inf"), vec![("a".into(), 1.5), ("b".into(), f64::INFINITY)]);
    }
}
