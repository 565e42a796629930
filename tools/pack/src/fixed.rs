//! The `integer` preset: lowers a float model to a fixed-point blob
//! (`itera_edge::format::FLAG_FIXED_POINT`), precomputing everything the core's integer
//! forward pass needs, as CMSIS-NN and TFLM converters do: int8 weights with one
//! requantization (multiplier and shift) per row, Q16 vectors, `A = -exp(A_log)` instead of
//! `A_log`, and the activation tables.

use itera_edge::format::{Requant, Role, TableSpec, MAX_REQUANT_SHIFT, TABLES};

use crate::quant;
use crate::writer::{BlobBuilder, Payload};

/// Largest magnitude a Q16 vector element can hold.
const Q16_LIMIT: f64 = 32767.0;

/// Why a tensor cannot be lowered.
#[derive(Debug)]
pub struct LowerError(pub String);

/// `scale / 127` as a [`Requant`] (multiplier in `2^15..2^16`); `None` if it is not positive
/// or too large or too small for a shift in `0..=62`. The value it stands for is returned too.
pub fn requant_of(scale: f64) -> Option<(Requant, f64)> {
    let v = scale / 127.0;
    if !(v > 0.0 && v.is_finite()) {
        return None;
    }
    let mut shift = 15 - v.log2().floor() as i64;
    let mut m = (v * (2f64).powi(shift as i32)).round();
    if m >= 65536.0 {
        m = (m / 2.0).round();
        shift -= 1;
    }
    if !(0..=MAX_REQUANT_SHIFT as i64).contains(&shift) || m < 1.0 {
        return None;
    }
    let r = Requant { multiplier: m as u16, shift: shift as u16 };
    Some((r, 127.0 * m * (2f64).powi(-(shift as i32))))
}

/// Symmetric int8 per row with the row's best scale ([`quant::int8_best_scale`]) and its
/// requantization; the dequantized values for SQNR beside it.
fn int8_requant_rows(name: &str, w: &[f32], cols: usize) -> Result<(Payload, Vec<f32>), LowerError> {
    let cols = cols.max(1);
    let (mut q, mut requant, mut deq) = (Vec::with_capacity(w.len()), Vec::new(), Vec::with_capacity(w.len()));
    for (r, row) in w.chunks(cols).enumerate() {
        let scale = quant::int8_best_scale(row) as f64;
        let (rq, stored) = requant_of(scale).ok_or_else(|| {
            LowerError(format!("row {r} of '{name}' has a scale ({scale:e}) no integer requantization holds"))
        })?;
        requant.push(rq.to_bits());
        for &v in row {
            let qv = (v as f64 / stored).round().clamp(-127.0, 127.0) as i8;
            q.push(qv);
            deq.push((qv as f64 * stored) as f32);
        }
    }
    Ok((Payload::I8Requant { q, requant }, deq))
}

/// Q16 of each value, refusing what does not fit.
fn q16(name: &str, values: impl Iterator<Item = f64>) -> Result<Payload, LowerError> {
    let mut out = Vec::new();
    for (i, v) in values.enumerate() {
        if v.is_nan() || v.abs() > Q16_LIMIT {
            return Err(LowerError(format!(
                "element {i} of '{name}' is {v}, outside the ±{Q16_LIMIT} a Q16 fixed-point vector holds; pack it with a float --quant"
            )));
        }
        out.push((v * 65536.0).round() as i32);
    }
    Ok(Payload::Q16(out))
}

/// A table as the format samples it (Q30).
pub fn table(spec: &TableSpec) -> Vec<i32> {
    let f: fn(f64) -> f64 = match spec.role {
        Role::SigmoidTable => |x| 1.0 / (1.0 + (-x).exp()),
        Role::GeluTable => |x| 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Role::SoftplusTable => |x| (-x).exp().ln_1p(),
        _ => |x| (-x * std::f64::consts::LN_2).exp(),
    };
    let step = 1.0 / f64::from(1u32 << spec.step_log2);
    (0..spec.len).map(|k| (f(k as f64 * step) * f64::from(1u32 << 30)).round() as i32).collect()
}

/// Lowers every tensor of `b` (built with f32 payloads, in canonical order) to its
/// fixed-point form, appends the tables and marks the blob. Returns each matrix's SQNR.
pub fn lower(b: &mut BlobBuilder, names: &[String]) -> Result<Vec<(String, f64)>, LowerError> {
    let mut sqnr = Vec::new();
    for (t, name) in b.tensors.iter_mut().zip(names) {
        let Payload::F32(values) = &t.payload else {
            continue; // a tied lm_head: the embedding's bytes and requantization
        };
        let cols = t.shape[1] as usize;
        t.payload = match t.role {
            Role::ALog => q16(name, values.iter().map(|&v| -(v as f64).exp()))?,
            r if quant::is_quantizable(r) || r == Role::Gate => {
                let (p, deq) = int8_requant_rows(name, values, cols)?;
                sqnr.push((name.clone(), quant::sqnr_db(values, &deq)));
                p
            }
            _ => q16(name, values.iter().map(|&v| v as f64))?,
        };
    }
    for spec in TABLES {
        b.tensors.push(crate::writer::PendingTensor {
            role: spec.role,
            layer: 0,
            expert: 0,
            shape: [1, spec.len],
            payload: Payload::Q16(table(&spec)),
        });
    }
    b.flags |= itera_edge::format::FLAG_FIXED_POINT;
    Ok(sqnr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_holds_the_scale_to_16_bits() {
        for scale in [1e-9, 3.3e-4, 0.0123, 0.5, 1.0, 127.0, 4000.0] {
            let (r, stored) = requant_of(scale).expect("representable");
            assert!(r.is_valid() && r.multiplier >= 1 << 15, "{scale}: {r:?}");
            assert!(((stored - scale) / scale).abs() < 2f64.powi(-15), "{scale}: {stored}");
        }
        assert!(requant_of(0.0).is_none() && requant_of(f64::NAN).is_none() && requant_of(1e12).is_none());
    }

    #[test]
    fn tables_span_their_documented_ranges() {
        let t: Vec<Vec<i32>> = TABLES.iter().map(table).collect();
        assert_eq!(t[0][0], 1 << 29); // sigmoid(0) = 0.5
        assert_eq!(t[1][0], 1 << 29); // Phi(0) = 0.5
        assert_eq!(*t[3].last().expect("samples"), 1 << 29); // 2^-1
        assert!(t.iter().flatten().all(|&v| (0..=1 << 30).contains(&v)));
    }
}
