//! The fixtures' golden logits (an independent float64 reference, `golden/*.json` and
//! `*.f32`), read one way for every test that compares with them.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One golden file: the checkpoint it was computed from and the logits after each token.
pub struct Golden {
    /// The JSON file's name, for messages.
    pub name: String,
    /// The checkpoint, in the fixtures folder.
    pub checkpoint: PathBuf,
    /// Experts per token the reference used.
    pub top_k: u32,
    /// Logits per position.
    pub vocab: usize,
    /// The tokens fed, from an empty state.
    pub tokens: Vec<u32>,
    /// Row-major `[tokens.len()][vocab]`: the logits after `tokens[0..=p]`.
    pub logits: Vec<f32>,
}

/// Every golden file under `dir/golden`, in name order.
pub fn all(dir: &Path) -> Vec<Golden> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("golden"))
        .expect("golden dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|path| read(dir, path)).collect()
}

fn read(dir: &Path, path: &Path) -> Golden {
    let json: Value = serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json");
    let vocab = json["vocab"].as_u64().expect("vocab") as usize;
    let tokens: Vec<u32> =
        json["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id") as u32).collect();
    let logits: Vec<f32> = std::fs::read(dir.join("golden").join(json["logits_file"].as_str().expect("logits_file")))
        .expect("read f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(logits.len(), tokens.len() * vocab, "{}", path.display());
    Golden {
        name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        checkpoint: dir.join(json["checkpoint"].as_str().expect("checkpoint")),
        top_k: json["top_k_experts"].as_u64().expect("top_k") as u32,
        vocab,
        tokens,
        logits,
    }
}
