//! Reads the two tokenizer JSON layouts Itera-Lite ships into a [`TokenizerTable`].

use std::collections::BTreeMap;

use itera_edge::format::TokenizerKind;
use serde::Deserialize;

use crate::untrusted::shown;
use crate::writer::TokenizerTable;

#[derive(Deserialize)]
struct Json {
    #[serde(alias = "token2id")]
    token_to_id: Option<BTreeMap<String, u32>>,
    #[serde(alias = "id2token")]
    id_to_token: Option<BTreeMap<String, String>>,
    level: Option<String>,
    vocab_size: Option<u32>,
}

/// Most ids a tokenizer table may name (ids 0 to `MAX_TOKENIZER_IDS - 1`; bounds memory on
/// hostile input). Itera-Lite vocabularies are 2,000 to 16,000 tokens.
pub const MAX_TOKENIZER_IDS: u32 = 1 << 20;

/// Parses tokenizer JSON: word level (`token_to_id`, `id_to_token`; text is lower-cased and
/// split on whitespace) or char level (`token2id`, `id2token`, `"level": "char"`).
pub fn parse_tokenizer(text: &str) -> Result<TokenizerTable, String> {
    Ok(parse_tokenizer_declared(text)?.0)
}

/// [`parse_tokenizer`], with the file's own `vocab_size` (if it states one), which the
/// packer checks against the model's vocabulary.
pub fn parse_tokenizer_declared(text: &str) -> Result<(TokenizerTable, Option<u32>), String> {
    let j: Json = serde_json::from_str(text).map_err(|e| format!("not tokenizer JSON: {e}"))?;
    let kind = match j.level.as_deref() {
        Some("char") => TokenizerKind::Char,
        None | Some("word") => TokenizerKind::Word,
        Some(other) => return Err(format!("unknown tokenizer level '{}' (expected 'word' or 'char')", shown(other))),
    };
    let mut by_id: BTreeMap<u32, String> = BTreeMap::new();
    // The maps are consumed, not cloned: a hostile file's strings are held once.
    if let Some(m) = j.id_to_token {
        for (id, tok) in m {
            let id: u32 = id.parse().map_err(|_| format!("id_to_token key '{}' is not an integer", shown(&id)))?;
            by_id.insert(id, tok);
        }
    }
    if let Some(m) = j.token_to_id {
        for (tok, id) in m {
            by_id.entry(id).or_insert(tok);
        }
    }
    if by_id.is_empty() {
        return Err("no tokens: expected token_to_id/id_to_token (or token2id/id2token)".into());
    }
    let max_id = by_id.keys().next_back().copied().unwrap_or(0);
    if max_id >= MAX_TOKENIZER_IDS {
        return Err(format!(
            "token id {max_id} is beyond the largest id a tokenizer may name ({}); Itera-Lite vocabularies are far smaller: pass the tokenizer made for this model",
            MAX_TOKENIZER_IDS - 1
        ));
    }
    let unk_id = by_id.iter().find(|(_, t)| t.as_str() == "<UNK>").map_or(1, |(&id, _)| id);
    let mut tokens = vec![String::new(); max_id as usize + 1];
    for (id, tok) in by_id {
        tokens[id as usize] = tok;
    }
    Ok((TokenizerTable { kind, unk_id, tokens }, j.vocab_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts() {
        let w = parse_tokenizer(
            r#"{"vocab_size": 10, "token_to_id": {"<UNK>": 1, "the": 4}, "id_to_token": {"1": "<UNK>", "4": "the"}}"#,
        )
        .expect("word");
        assert_eq!(w.kind, TokenizerKind::Word);
        assert_eq!(w.tokens, ["", "<UNK>", "", "", "the"]);
        let c = parse_tokenizer(
            r#"{"token2id": {" ": 4, "<UNK>": 1}, "id2token": {"4": " ", "1": "<UNK>"}, "level": "char"}"#,
        )
        .expect("char");
        assert_eq!(c.kind, TokenizerKind::Char);
        assert_eq!(c.tokens[4], " ");
        assert!(parse_tokenizer("[1, 2]").is_err());
        assert!(parse_tokenizer(r#"{"level": "bpe", "token2id": {"a": 0}}"#).is_err());
    }
}
