//! Golden logits: a JSON description plus a raw `.f32` table.
//!
//! The JSON holds `tokens`, `positions`, `vocab` and `logits_file` (relative to the JSON's
//! folder); other keys (`checkpoint`, `same_weights`, `top_k_experts`, `layout`, ...) are
//! kept for information. The `.f32` file is row-major `[positions][vocab]` little-endian f32: row `p`
//! holds the logits after feeding `tokens[0..=p]` from an empty state.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use itera_edge::{Config, Model};
use itera_pack::untrusted::shown;
use serde::{Deserialize, Serialize};

use crate::compare::{compare, Metrics};
use crate::engine::logits_for_tokens;
use crate::limits;
use itera_pack::files::{read_at_most, write_whole};

/// The JSON half of a golden file.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct GoldenJson {
    tokens: Vec<u32>,
    positions: usize,
    vocab: usize,
    logits_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_k_experts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    same_weights: Vec<String>,
}

/// A validated golden reference, logits loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Golden {
    /// Token ids fed, one per position.
    pub tokens: Vec<u32>,
    /// Rows.
    pub positions: usize,
    /// Logits per row.
    pub vocab: usize,
    /// `positions * vocab` logits, row-major.
    pub logits: Vec<f32>,
    /// Experts mixed per token by the reference, if recorded.
    pub top_k_experts: Option<u32>,
    /// Checkpoint the reference was computed from, if recorded.
    pub checkpoint: Option<String>,
    /// Other published files that hold the same weights as `checkpoint` (its exports), so
    /// that a blob packed from one of them is checked without a warning.
    pub same_weights: Vec<String>,
    /// Where the logits were read from.
    pub logits_path: PathBuf,
}

impl Golden {
    /// Reads and validates a golden JSON and its logits file: `tokens` has `positions`
    /// entries, and the file holds exactly `positions * vocab` f32s.
    pub fn load(json_path: &Path) -> anyhow::Result<Golden> {
        let shown = json_path.display();
        let text = read_at_most(json_path, limits::MAX_GOLDEN_JSON_BYTES, "golden file", "give the golden's JSON")?;
        let j: GoldenJson = serde_json::from_slice(&text).with_context(|| {
            format!("{shown} is not a golden description (needs `tokens`, `positions`, `vocab`, `logits_file`)")
        })?;
        if j.positions == 0 || j.vocab == 0 {
            bail!("{shown}: `positions` ({}) and `vocab` ({}) must be positive", j.positions, j.vocab);
        }
        if j.tokens.len() != j.positions {
            bail!("{shown}: `tokens` has {} ids but `positions` is {}", j.tokens.len(), j.positions);
        }
        let logits_path = json_path.parent().unwrap_or(Path::new("")).join(&j.logits_file);
        let want = j
            .positions
            .checked_mul(j.vocab)
            .and_then(|n| n.checked_mul(4))
            .with_context(|| format!("{shown}: positions × vocab overflows"))?;
        limits::check_logits_table(j.positions, j.vocab).with_context(|| format!("golden {shown}"))?;
        let mismatch = |have: u64| {
            anyhow::anyhow!(
                "golden logits {} have {have} bytes, but positions {} × vocab {} × 4 = {want}; the file does not match its JSON",
                logits_path.display(),
                j.positions,
                j.vocab
            )
        };
        // A file over `want` bytes is refused before it is read; one whose size is unknown
        // (a pipe) is read no further than one byte past `want`. A refused regular file of
        // another size is named by its size, as a short one is below.
        let bytes = read_at_most(&logits_path, want as u64, "golden logits", "the file does not match its JSON")
            .map_err(|e| match std::fs::metadata(&logits_path) {
                Ok(m) if m.is_file() && m.len() != want as u64 => mismatch(m.len()),
                _ => e,
            })?;
        if bytes.len() != want {
            return Err(mismatch(bytes.len() as u64));
        }
        Ok(Golden {
            tokens: j.tokens,
            positions: j.positions,
            vocab: j.vocab,
            logits: f32s_from_le(&bytes),
            top_k_experts: j.top_k_experts,
            checkpoint: j.checkpoint,
            same_weights: j.same_weights,
            logits_path,
        })
    }

    /// Fails unless the golden's vocabulary is `vocab` (the blob's) and its sequence fits
    /// `max_seq` positions.
    pub fn check_fits(&self, vocab: usize, max_seq: usize) -> anyhow::Result<()> {
        if self.vocab != vocab {
            bail!("golden vocab is {}, the blob's is {vocab}: this golden was made for another model", self.vocab);
        }
        if self.positions > max_seq {
            bail!("golden has {} positions, the blob holds at most {max_seq} (max_seq)", self.positions);
        }
        Ok(())
    }

    /// Runs the golden tokens through `model` from an empty session and compares every
    /// position's logits with the reference (after [`Golden::check_fits`]).
    /// `progress(done, total)` is called after each token.
    pub fn check(&self, model: &Model<'_>, progress: impl FnMut(usize, usize)) -> anyhow::Result<Metrics> {
        let c = model.config();
        self.check_fits(c.vocab as usize, c.max_seq as usize)?;
        let logits = logits_for_tokens(model, &self.tokens, progress)?;
        compare(&logits, &self.logits, self.vocab)
    }

    /// A warning when the reference mixed a different number of experts than the blob
    /// will (`top_k` is chosen at packing time, not stored in checkpoints).
    pub fn top_k_warning(&self, config: &Config) -> Option<String> {
        let want = self.top_k_experts?;
        (config.moe_layers != 0 && want != config.top_k).then(|| {
            format!(
                "the golden was computed with top_k_experts = {want} but the blob mixes {} experts per token; repack with `itera-pack convert --top-k-experts {want}`",
                config.top_k
            )
        })
    }

    /// A warning when the golden names its checkpoint and the blob's `source` provenance
    /// (see [`crate::engine::provenance_source`]) names a different file.
    pub fn checkpoint_warning(&self, blob_source: Option<&str>) -> Option<String> {
        let want = self.checkpoint.as_deref()?;
        let have = blob_source?;
        (want != have && !self.same_weights.iter().any(|s| s == have)).then(|| {
            // Both names come from files (the golden JSON, the blob's provenance): escaped.
            format!(
                "the golden was computed from {} but the blob was packed from {}; expect a mismatch",
                shown(want),
                shown(have)
            )
        })
    }

    /// Writes `json_path` and, next to it, `<stem>.f32` holding `logits`
    /// (`tokens.len() * vocab` values).
    pub fn save(json_path: &Path, tokens: &[u32], vocab: usize, logits: &[f32]) -> anyhow::Result<()> {
        if vocab == 0 || logits.len() != tokens.len() * vocab {
            bail!("{} logits are not {} rows of {vocab}", logits.len(), tokens.len());
        }
        let stem = json_path.file_stem().and_then(|s| s.to_str()).unwrap_or("golden");
        let logits_file = format!("{stem}.f32");
        let j = GoldenJson {
            tokens: tokens.to_vec(),
            positions: tokens.len(),
            vocab,
            logits_file: logits_file.clone(),
            top_k_experts: None,
            checkpoint: None,
            same_weights: Vec::new(),
        };
        let f32_path = json_path.parent().unwrap_or(Path::new("")).join(logits_file);
        write_f32_le(&f32_path, logits)?;
        let text = serde_json::to_string_pretty(&j)?;
        write_whole(json_path, |w| w.write_all(text.as_bytes()))
    }
}

/// Decodes little-endian f32s (a trailing partial value is ignored).
pub fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Writes `values` as little-endian f32s, the layout of golden `.f32` files.
/// Written whole or not at all ([`write_whole`]).
pub fn write_f32_le(path: &Path, values: &[f32]) -> anyhow::Result<()> {
    write_whole(path, |w| values.iter().try_for_each(|v| w.write_all(&v.to_le_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("itera-sim-golden-{}-{name}", std::process::id()))
    }

    #[test]
    fn save_then_load_round_trips_and_validates() {
        let json = temp("ok.json");
        let logits = [1.0, -2.5, 3.25, 0.0, 7.0, f32::MIN_POSITIVE];
        Golden::save(&json, &[4, 5], 3, &logits).unwrap();
        let g = Golden::load(&json).unwrap();
        assert_eq!((g.tokens.as_slice(), g.positions, g.vocab), (&[4, 5][..], 2, 3));
        assert_eq!(g.logits, logits);
        assert!(g.check_fits(3, 16).is_ok());
        assert!(g.check_fits(4, 16).unwrap_err().to_string().contains("vocab"));
        assert!(g.check_fits(3, 1).is_err());
        assert_eq!(g.checkpoint_warning(Some("a.pt")), None, "no checkpoint recorded, nothing to compare");

        // A logits file of the wrong length is refused with both sizes.
        std::fs::write(&g.logits_path, [0u8; 20]).unwrap();
        let err = format!("{:#}", Golden::load(&json).unwrap_err());
        assert!(err.contains("20 bytes") && err.contains("24"), "{err}");
        let _ = std::fs::remove_file(&g.logits_path);
        let _ = std::fs::remove_file(&json);
    }

    #[test]
    fn a_golden_for_another_checkpoint_is_flagged() {
        let json = temp("ckpt.json");
        std::fs::write(temp("ckpt.f32"), [0u8; 8]).unwrap();
        let name = temp("ckpt.f32").file_name().unwrap().to_str().unwrap().to_string();
        let text = format!(
            r#"{{"checkpoint":"m.pt","top_k_experts":2,"tokens":[1,2],"positions":2,"vocab":1,"logits_file":"{name}"}}"#
        );
        std::fs::write(&json, text).unwrap();
        let g = Golden::load(&json).unwrap();
        assert_eq!(g.checkpoint_warning(Some("m.pt")), None);
        assert_eq!(g.checkpoint_warning(None), None);
        assert!(g.checkpoint_warning(Some("other.pt")).unwrap().contains("other.pt"));
        // An export listed as holding the same weights is no mismatch.
        let same = Golden { same_weights: vec!["m.onnx".into()], ..g.clone() };
        assert_eq!(same.checkpoint_warning(Some("m.onnx")), None);
        assert!(same.checkpoint_warning(Some("other.pt")).is_some());
        let w = g.checkpoint_warning(Some("x.pt\x1b[2J\n")).unwrap();
        assert!(w.contains("x.pt\\u{1b}[2J\\n") && !w.chars().any(char::is_control), "{w}");
        let mut c = itera_pack::synthetic::tiny_config();
        assert_eq!(g.top_k_warning(&c), None);
        c.top_k = 1;
        assert!(g.top_k_warning(&c).unwrap().contains("--top-k-experts 2"));
        let _ = std::fs::remove_file(&json);
        let _ = std::fs::remove_file(temp("ckpt.f32"));
    }

    #[test]
    fn inconsistent_json_is_refused() {
        let json = temp("bad.json");
        std::fs::write(&json, r#"{"tokens":[1,2],"positions":3,"vocab":3,"logits_file":"x.f32"}"#).unwrap();
        assert!(Golden::load(&json).unwrap_err().to_string().contains("positions"));
        std::fs::write(&json, r#"{"tokens":[1]}"#).unwrap();
        assert!(Golden::load(&json).is_err());
        let _ = std::fs::remove_file(&json);
        assert!(Golden::load(&temp("missing.json")).is_err());
    }
}
