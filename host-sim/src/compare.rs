//! Agreement between two logit tables of the same shape, `[positions][vocab]` row-major.
//!
//! All sums run in f64. A NaN or infinite difference makes `max_abs_diff` NaN, which no
//! tolerance accepts.

use std::fmt::Write;

use anyhow::bail;
use itera_edge::sample::argmax;
use serde::Serialize;

/// How close `actual` is to `expected`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    /// Largest |actual - expected| over every logit (NaN if any difference is not finite).
    pub max_abs_diff: f64,
    /// Root mean square of the differences.
    pub rmse: f64,
    /// Cosine similarity of the two flattened tables (1 when both are all zeros).
    pub cosine: f64,
    /// Fraction of positions whose argmax (first of equals) is the same.
    pub top1_agreement: f64,
    /// Positions (rows) compared.
    pub positions: usize,
    /// Logits per position (columns).
    pub vocab: usize,
    /// Row of the largest difference.
    pub worst_position: usize,
    /// Column (token id) of the largest difference.
    pub worst_token: usize,
}

/// Pass bounds for [`Metrics::verdict`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bounds {
    /// Largest accepted `max_abs_diff`.
    pub tol: f64,
    /// Smallest accepted `top1_agreement`.
    pub min_top1: f64,
}

impl Default for Bounds {
    /// `tol` 1e-3, `min_top1` 1.0: what an f32 engine must meet against the f64 reference.
    fn default() -> Self {
        Bounds { tol: 1e-3, min_top1: 1.0 }
    }
}

/// Compares two tables of `vocab` columns. Fails if the lengths differ, are empty, or are
/// not a whole number of rows.
pub fn compare(actual: &[f32], expected: &[f32], vocab: usize) -> anyhow::Result<Metrics> {
    if actual.len() != expected.len() {
        bail!("cannot compare {} logits with {} reference logits", actual.len(), expected.len());
    }
    if vocab == 0 || actual.is_empty() || !actual.len().is_multiple_of(vocab) {
        bail!("{} logits are not a whole number of rows of {vocab}", actual.len());
    }
    let positions = actual.len() / vocab;
    let (mut max, mut worst, mut sq, mut dot, mut na, mut nb) = (0.0f64, 0usize, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        let (a, b) = (a as f64, b as f64);
        let d = (a - b).abs();
        if !d.is_finite() {
            if !max.is_nan() {
                worst = i;
            }
            max = f64::NAN;
        } else if d > max {
            max = d;
            worst = i;
        }
        sq += d * d;
        dot += a * b;
        na += a * a;
        nb += b * b;
    }
    let cosine = match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => dot / (na.sqrt() * nb.sqrt()),
    };
    let agree =
        actual.chunks_exact(vocab).zip(expected.chunks_exact(vocab)).filter(|(a, b)| argmax(a) == argmax(b)).count();
    Ok(Metrics {
        max_abs_diff: max,
        rmse: (sq / actual.len() as f64).sqrt(),
        cosine,
        top1_agreement: agree as f64 / positions as f64,
        positions,
        vocab,
        worst_position: worst / vocab,
        worst_token: worst % vocab,
    })
}

impl Metrics {
    /// `Ok(())` if both bounds hold, else one sentence per failed bound.
    pub fn verdict(&self, bounds: &Bounds) -> Result<(), Vec<String>> {
        let mut failed = Vec::new();
        // Both written so that NaN fails.
        let within_tol = self.max_abs_diff <= bounds.tol;
        let enough_top1 = self.top1_agreement >= bounds.min_top1;
        if !within_tol {
            failed.push(format!(
                "max_abs_diff {:.3e} exceeds --tol {:.3e} (worst at position {}, token {})",
                self.max_abs_diff, bounds.tol, self.worst_position, self.worst_token
            ));
        }
        if !enough_top1 {
            failed.push(format!(
                "top1_agreement {:.4} is below --min-top1 {:.4} ({} of {} positions agree)",
                self.top1_agreement,
                bounds.min_top1,
                self.agreeing_positions(),
                self.positions
            ));
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Positions whose argmax agrees.
    pub fn agreeing_positions(&self) -> usize {
        (self.top1_agreement * self.positions as f64).round() as usize
    }

    /// One line per metric, then `PASS` or `FAIL: <reasons>`.
    pub fn render(&self, bounds: &Bounds) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "positions:      {}", self.positions);
        let _ = writeln!(s, "vocab:          {}", self.vocab);
        let _ = writeln!(
            s,
            "max_abs_diff:   {:.3e}  (tol {:.1e}; worst at position {}, token {})",
            self.max_abs_diff, bounds.tol, self.worst_position, self.worst_token
        );
        let _ = writeln!(s, "rmse:           {:.3e}", self.rmse);
        let _ = writeln!(s, "cosine:         {:.12}", self.cosine);
        let _ = writeln!(
            s,
            "top1_agreement: {:.4}  ({}/{} positions; min {})",
            self.top1_agreement,
            self.agreeing_positions(),
            self.positions,
            bounds.min_top1
        );
        match self.verdict(bounds) {
            Ok(()) => s.push_str("PASS\n"),
            Err(why) => {
                let _ = writeln!(s, "FAIL: {}", why.join("; "));
            }
        }
        s
    }

    /// The metrics, the bounds and `pass` as one JSON object.
    pub fn to_json(&self, bounds: &Bounds) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("tol".into(), bounds.tol.into());
            o.insert("min_top1".into(), bounds.min_top1.into());
            o.insert("pass".into(), self.verdict(bounds).is_ok().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f32; 6] = [1.0, 3.0, 2.0, -1.0, 0.5, 0.0];

    #[test]
    fn identical_tables_agree_perfectly() {
        let m = compare(&A, &A, 3).unwrap();
        assert_eq!(m.max_abs_diff, 0.0);
        assert_eq!(m.rmse, 0.0);
        assert!((m.cosine - 1.0).abs() < 1e-15);
        assert_eq!(m.top1_agreement, 1.0);
        assert_eq!((m.positions, m.vocab), (2, 3));
        assert!(m.verdict(&Bounds { tol: 0.0, min_top1: 1.0 }).is_ok());
        assert!(m.render(&Bounds::default()).ends_with("PASS\n"));
    }

    #[test]
    fn a_shifted_table_gives_known_numbers() {
        // Every logit +0.5: argmax unchanged, max = rmse = 0.5.
        let b: Vec<f32> = A.iter().map(|v| v + 0.5).collect();
        let m = compare(&b, &A, 3).unwrap();
        assert_eq!(m.max_abs_diff, 0.5);
        assert!((m.rmse - 0.5).abs() < 1e-12);
        assert_eq!(m.top1_agreement, 1.0);
        // cos = a·b / |a||b|: Σa² = 15.25, Σa = 5.5, so a·b = 15.25 + 0.5·5.5 = 18 and
        // |b|² = 15.25 + 5.5 + 6·0.25 = 22.25.
        let want = 18.0 / (15.25f64.sqrt() * 22.25f64.sqrt());
        assert!((m.cosine - want).abs() < 1e-12, "{} vs {want}", m.cosine);
        let fail = m.verdict(&Bounds { tol: 0.1, min_top1: 1.0 }).unwrap_err();
        assert_eq!(fail.len(), 1);
        assert!(fail[0].contains("--tol"), "{fail:?}");
    }

    #[test]
    fn a_changed_argmax_and_one_large_difference_are_located() {
        let mut b = A;
        b[5] = 2.0; // row 1: argmax moves from 1 to 2; difference 2.0 at position 1, token 2
        let m = compare(&b, &A, 3).unwrap();
        assert_eq!(m.max_abs_diff, 2.0);
        assert_eq!((m.worst_position, m.worst_token), (1, 2));
        assert_eq!(m.top1_agreement, 0.5);
        assert!((m.rmse - (4.0f64 / 6.0).sqrt()).abs() < 1e-12);
        let fail = m.verdict(&Bounds { tol: 3.0, min_top1: 1.0 }).unwrap_err();
        assert!(fail[0].contains("--min-top1"), "{fail:?}");
        assert_eq!(m.to_json(&Bounds::default())["pass"], false);
    }

    #[test]
    fn nan_never_passes_and_bad_shapes_are_errors() {
        let mut b = A;
        b[0] = f32::NAN;
        let m = compare(&b, &A, 3).unwrap();
        assert!(m.max_abs_diff.is_nan());
        assert!(m.verdict(&Bounds { tol: f64::INFINITY, min_top1: 0.0 }).is_err());
        assert!(compare(&A, &A[..5], 3).is_err());
        assert!(compare(&A[..5], &A[..5], 3).is_err());
        assert!(compare(&A, &A, 0).is_err());
        assert!(compare(&[], &[], 3).is_err());
    }

    #[test]
    fn all_zero_tables_have_cosine_one() {
        assert_eq!(compare(&[0.0; 4], &[0.0; 4], 2).unwrap().cosine, 1.0);
        assert_eq!(compare(&[0.0; 4], &[1.0; 4], 2).unwrap().cosine, 0.0);
    }
}
