//! Perplexity of a model on text, and its agreement with a reference model (KL divergence,
//! top-1 agreement, probability and logit differences), position by position.
//!
//! The tokens are cut into consecutive windows of the model's `max_seq` positions; each
//! window starts from an empty session. Within a window, the logits after position `p`
//! predict the token at `p + 1`, so a window of `n` tokens gives `n - 1` predicted
//! positions (its last token is never fed: nothing in the window follows it). Every metric
//! is computed over the same predicted positions, and all arithmetic runs in f64.

use std::path::Path;

use anyhow::{bail, Context};
use itera_edge::sample::argmax;
use itera_edge::Model;
use serde::Serialize;

use crate::engine::{new_arena, new_session};

/// Reads the text file to evaluate, refusing one over `max` bytes before reading it (the
/// whole text is held while it is encoded).
pub fn read_text(path: &Path, max: u64) -> anyhow::Result<String> {
    let bytes = itera_pack::files::read_at_most(path, max, "text", "evaluate a part of it (e.g. head -c 100M)")?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "text {} is not UTF-8 (first bad byte at offset {}): convert it to UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `log softmax(logits)` in f64 (stable: the maximum is subtracted first).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&v| v as f64 - log_z).collect()
}

/// Negative log-likelihood of `target` under `softmax(logits)`, in nats.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    -log_softmax(logits)[target as usize]
}

/// `KL(p ‖ q) = Σ p (log p − log q)` for two log-probability vectors of the same length, in
/// nats. Terms with `p = 0` count zero.
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .map(|(&lp, &lq)| {
            let p = lp.exp();
            if p == 0.0 {
                0.0
            } else {
                p * (lp - lq)
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// `exp(mean NLL)`; NaN for no positions.
pub fn perplexity_of(nlls: &[f64]) -> f64 {
    if nlls.is_empty() {
        return f64::NAN;
    }
    (nlls.iter().sum::<f64>() / nlls.len() as f64).exp()
}

/// The `q`-th quantile (0..=1) by nearest rank: the smallest value with at least `q` of the
/// values at or below it. NaN for no values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Agreement of the evaluated model with a reference model, over the predicted positions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceStats {
    /// Perplexity of the reference model on the same windows.
    pub reference_perplexity: f64,
    /// Mean of KL(reference ‖ this) per position, nats.
    pub kld_mean: f64,
    /// 99th percentile (nearest rank) of the per-position KL.
    pub kld_p99: f64,
    /// Largest per-position KL.
    pub kld_max: f64,
    /// Fraction of positions whose argmax is the same in both models.
    pub top1_agreement: f64,
    /// Mean |p_ref(t) − p_this(t)| where t is the reference's top token.
    pub mean_abs_dp_top: f64,
    /// Root mean square of the logit differences, over every logit of every position.
    pub rmse: f64,
    /// Cosine similarity of the two flattened logit tables.
    pub cosine: f64,
}

/// What [`evaluate`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// Tokens evaluated (after truncation).
    pub tokens: usize,
    /// Windows of at most `max_seq` tokens.
    pub windows: usize,
    /// Window length (the model's `max_seq`).
    pub window: usize,
    /// Predicted positions (tokens minus one per window).
    pub positions: usize,
    /// Mean NLL of the next token, nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Agreement with the reference, when one was given.
    pub reference: Option<ReferenceStats>,
}

/// Runs `model` (and `reference`, when given, on the same windows) over `tokens`, calling
/// `progress(done, total)` with tokens fed so far.
pub fn evaluate(
    model: &Model<'_>,
    reference: Option<&Model<'_>>,
    tokens: &[u32],
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<EvalReport> {
    let c = model.config();
    let (vocab, window) = (c.vocab as usize, c.max_seq as usize);
    if let Some(r) = reference {
        let rc = r.config();
        if rc.vocab as usize != vocab {
            bail!("the reference has a vocabulary of {} ids, this model {vocab}: they cannot be compared", rc.vocab);
        }
        if (rc.max_seq as usize) < window {
            bail!("the reference holds {} positions (max_seq), fewer than this model's {window}", rc.max_seq);
        }
    }
    if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        bail!("token id {t} (position {i}) is out of range: the model's vocabulary has {vocab} ids (does the tokenizer belong to this model?)");
    }
    if tokens.len() < 2 {
        bail!("{} token(s) to evaluate: at least 2 are needed (one to feed, one to predict)", tokens.len());
    }
    if window < 2 {
        bail!("the model holds {window} position(s): nothing can be predicted within a window");
    }

    let mut arena = new_arena(model);
    let mut session = new_session(model, &mut arena)?;
    let mut ref_arena = reference.map(new_arena);
    let mut ref_session = match (reference, ref_arena.as_mut()) {
        (Some(r), Some(a)) => Some(new_session(r, a).context("cannot start a reference session")?),
        _ => None,
    };

    let mut nlls = Vec::new();
    let mut ref_nlls = Vec::new();
    let mut klds = Vec::new();
    let (mut agree, mut dp_sum) = (0usize, 0.0f64);
    let (mut sq, mut dot, mut na, mut nb, mut n_logits) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
    let mut windows = 0;
    // Each model's logits as f32 (a fixed-point model's Q16 converted).
    let (mut logits_f32, mut ref_f32) = (vec![0.0f32; vocab], vec![0.0f32; vocab]);
    for (w, chunk) in tokens.chunks(window).enumerate() {
        windows += 1;
        session.reset();
        if let Some(rs) = ref_session.as_mut() {
            rs.reset();
        }
        for p in 0..chunk.len() - 1 {
            let target = chunk[p + 1];
            session.step_logits(chunk[p])?.copy_to_f32(&mut logits_f32);
            let logits = &logits_f32[..];
            let lp = log_softmax(logits);
            nlls.push(-lp[target as usize]);
            if let Some(rs) = ref_session.as_mut() {
                rs.step_logits(chunk[p])?.copy_to_f32(&mut ref_f32);
                let ref_logits = &ref_f32[..];
                let lr = log_softmax(ref_logits);
                ref_nlls.push(-lr[target as usize]);
                klds.push(kl_divergence(&lr, &lp));
                let top = argmax(ref_logits);
                if argmax(logits) == top {
                    agree += 1;
                }
                dp_sum += (lr[top as usize].exp() - lp[top as usize].exp()).abs();
                for (&a, &b) in logits.iter().zip(ref_logits) {
                    let (a, b) = (a as f64, b as f64);
                    sq += (a - b) * (a - b);
                    dot += a * b;
                    na += a * a;
                    nb += b * b;
                }
                n_logits += vocab;
            }
        }
        progress((w * window + chunk.len()).min(tokens.len()), tokens.len());
    }

    let positions = nlls.len();
    let mean_nll = if positions == 0 { f64::NAN } else { nlls.iter().sum::<f64>() / positions as f64 };
    let reference = ref_session.map(|_| {
        let n = klds.len().max(1) as f64;
        ReferenceStats {
            reference_perplexity: perplexity_of(&ref_nlls),
            kld_mean: klds.iter().sum::<f64>() / n,
            kld_p99: quantile(&klds, 0.99),
            kld_max: klds.iter().copied().fold(0.0, f64::max),
            top1_agreement: agree as f64 / n,
            mean_abs_dp_top: dp_sum / n,
            rmse: (sq / n_logits.max(1) as f64).sqrt(),
            cosine: match (na == 0.0, nb == 0.0) {
                (true, true) => 1.0,
                (true, false) | (false, true) => 0.0,
                _ => dot / (na.sqrt() * nb.sqrt()),
            },
        }
    });
    Ok(EvalReport { tokens: tokens.len(), windows, window, positions, mean_nll, perplexity: mean_nll.exp(), reference })
}

impl EvalReport {
    /// One JSON object: the report's fields, with the reference's flattened in (null without
    /// a reference).
    pub fn to_json(&self) -> serde_json::Value {
        let r = self.reference.as_ref();
        serde_json::json!({
            "tokens": self.tokens,
            "windows": self.windows,
            "window": self.window,
            "positions": self.positions,
            "mean_nll": finite(self.mean_nll),
            "perplexity": finite(self.perplexity),
            "reference_perplexity": r.map(|r| finite(r.reference_perplexity)),
            "kld_mean": r.map(|r| finite(r.kld_mean)),
            "kld_p99": r.map(|r| finite(r.kld_p99)),
            "kld_max": r.map(|r| finite(r.kld_max)),
            "top1_agreement": r.map(|r| r.top1_agreement),
            "mean_abs_dp_top": r.map(|r| finite(r.mean_abs_dp_top)),
            "rmse": r.map(|r| finite(r.rmse)),
            "cosine": r.map(|r| finite(r.cosine)),
        })
    }

    /// Human-readable lines.
    pub fn render(&self) -> String {
        let mut s = format!(
            "tokens:      {} in {} window(s) of {} ({} predicted positions)\n\
             perplexity:  {:.4} (mean NLL {:.4} nats)\n",
            self.tokens, self.windows, self.window, self.positions, self.perplexity, self.mean_nll
        );
        if let Some(r) = &self.reference {
            s += &format!(
                "reference:   perplexity {:.4}\n\
                 KL(ref‖this): mean {:.6e}, p99 {:.6e}, max {:.6e} nats\n\
                 top-1 agreement: {:.4}\n\
                 mean |Δp| of the reference's top token: {:.6e}\n\
                 logits: rmse {:.6e}, cosine {:.9}\n",
                r.reference_perplexity,
                r.kld_mean,
                r.kld_p99,
                r.kld_max,
                r.top1_agreement,
                r.mean_abs_dp_top,
                r.rmse,
                r.cosine
            );
        }
        s
    }
}

/// JSON has no NaN or infinity: those become null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_test_support::tiny_blob;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn texts_must_be_utf8_and_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("itera-sim-eval-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        std::fs::write(&path, b"once \xff upon").unwrap();
        let e = read_text(&path, 100).unwrap_err().to_string();
        assert!(e.contains("t.txt") && e.contains("not UTF-8") && e.contains("offset 5"), "{e}");
        assert!(read_text(&path, 5).unwrap_err().to_string().contains("larger than 5 bytes"));
        std::fs::write(&path, "once upon").unwrap();
        assert_eq!(read_text(&path, 100).unwrap(), "once upon");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kl_of_identical_distributions_is_zero() {
        let lp = log_softmax(&[1.0, -2.0, 0.5, 3.0]);
        assert_eq!(kl_divergence(&lp, &lp), 0.0);
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!(close(total, 1.0));
    }

    #[test]
    fn kl_of_a_known_two_class_example() {
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3).
        let p = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.25f64.ln(), 0.75f64.ln()];
        assert!(close(kl_divergence(&p, &q), 0.5 * (4.0f64 / 3.0).ln()));
        // Same through logits: softmax([0, ln 3]) = (0.25, 0.75).
        let from_logits = kl_divergence(&log_softmax(&[0.0, 0.0]), &log_softmax(&[0.0, 3.0f32.ln()]));
        assert!((from_logits - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-7, "{from_logits}");
        // Not symmetric: KL(q‖p) = 0.25 ln 0.5 + 0.75 ln 1.5.
        assert!(close(kl_divergence(&q, &p), 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln()));
    }

    #[test]
    fn perplexity_of_uniform_logits_is_the_vocabulary_size() {
        for vocab in [2usize, 7, 2000] {
            let logits = vec![0.25f32; vocab];
            let nlls: Vec<f64> = (0..5).map(|t| nll(&logits, t % vocab as u32)).collect();
            let ppl = perplexity_of(&nlls);
            assert!((ppl - vocab as f64).abs() < 1e-9 * vocab as f64, "{vocab}: {ppl}");
        }
        assert!(perplexity_of(&[]).is_nan());
        // A confident correct prediction: NLL near 0, perplexity near 1.
        assert!(nll(&[50.0, 0.0], 0) < 1e-20);
        // Large logits stay finite.
        assert!(nll(&[1e4, -1e4], 1).is_finite());
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn windows_reset_and_match_a_hand_computed_perplexity() {
        let bytes = tiny_blob(2);
        let model = crate::open_model(&bytes).unwrap();
        let max_seq = model.config().max_seq as usize; // 16
        let vocab = model.config().vocab as usize;
        let tokens: Vec<u32> = (0..40u32).map(|i| (i * 7 + 3) % vocab as u32).collect();
        let r = evaluate(&model, None, &tokens, |_, _| ()).unwrap();
        assert_eq!((r.windows, r.window, r.positions), (3, max_seq, 40 - 3));
        assert!(r.reference.is_none());
        // By hand: each window from an empty session.
        let mut nlls = Vec::new();
        for chunk in tokens.chunks(max_seq) {
            let logits = crate::logits_for_tokens(&model, chunk, |_, _| ()).unwrap();
            for p in 0..chunk.len() - 1 {
                nlls.push(nll(&logits[p * vocab..(p + 1) * vocab], chunk[p + 1]));
            }
        }
        assert!((r.perplexity - perplexity_of(&nlls)).abs() < 1e-9 * r.perplexity);
        let j = r.to_json();
        assert!(j["kld_mean"].is_null() && j["reference_perplexity"].is_null());
    }

    #[test]
    fn a_model_agrees_with_itself_and_not_with_another() {
        let (a, b) = (tiny_blob(2), tiny_blob(9));
        let (ma, mb) = (crate::open_model(&a).unwrap(), crate::open_model(&b).unwrap());
        let tokens: Vec<u32> = (0..20u32).map(|i| (i * 5 + 1) % 48).collect();
        let same = evaluate(&ma, Some(&ma), &tokens, |_, _| ()).unwrap();
        let s = same.reference.unwrap();
        assert_eq!((s.kld_mean, s.kld_max, s.top1_agreement, s.rmse), (0.0, 0.0, 1.0, 0.0));
        assert!((s.reference_perplexity - same.perplexity).abs() < 1e-12);
        let other = evaluate(&ma, Some(&mb), &tokens, |_, _| ()).unwrap().reference.unwrap();
        assert!(other.kld_mean > 0.0 && other.kld_max >= other.kld_p99 && other.kld_p99 > 0.0);
        assert!(other.rmse > 0.0 && other.cosine < 1.0);
        assert!(evaluate(&ma, None, &[1], |_, _| ()).is_err());
        assert!(evaluate(&ma, None, &[1, 48], |_, _| ()).unwrap_err().to_string().contains("out of range"));
    }
}
