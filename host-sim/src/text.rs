//! Prompt encoding and streamed decoding with the tokenizer stored in a blob.

use itera_edge::format::TokenizerKind;
use itera_edge::Tokenizer;

/// Encodes `text` as the Itera-Lite tokenizers do.
///
/// * word level: `text.to_lowercase().split_whitespace()`, each word → its id, or the
///   unknown id if the table does not name it (punctuation stays part of the word, as in
///   the source tokenizer: `day,` is its own token);
/// * char level: each character → its id, or the unknown id.
pub fn encode(tok: &Tokenizer<'_>, text: &str) -> Vec<u32> {
    let unk = tok.unk_id();
    match tok.kind() {
        TokenizerKind::Word => text.to_lowercase().split_whitespace().map(|w| tok.id_of(w).unwrap_or(unk)).collect(),
        TokenizerKind::Char => {
            let mut buf = [0u8; 4];
            text.chars().map(|c| tok.id_of(c.encode_utf8(&mut buf)).unwrap_or(unk)).collect()
        }
    }
}

/// Decodes a whole sequence, tokens joined by the tokenizer's separator.
pub fn decode(tok: &Tokenizer<'_>, ids: &[u32]) -> String {
    let mut s = TextStream::new();
    ids.iter().map(|&id| s.piece(tok, id)).collect()
}

/// Decodes one token at a time for streaming: each piece carries the separator that goes
/// before it (none before the first).
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    started: bool,
}

impl TextStream {
    /// A stream whose next piece is the first (no separator).
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream that continues text already printed (the next piece gets a separator).
    pub fn continuing() -> Self {
        TextStream { started: true }
    }

    /// The text to print for `id`.
    pub fn piece(&mut self, tok: &Tokenizer<'_>, id: u32) -> String {
        let sep = if self.started { tok.separator() } else { "" };
        self.started = true;
        format!("{sep}{}", tok.decode(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_pack::inspect::AlignedBytes;
    use itera_pack::writer::TokenizerTable;

    fn blob_with(kind: TokenizerKind, tokens: &[&str]) -> AlignedBytes {
        let sd = itera_pack::synthetic::state_dict(&itera_pack::synthetic::tiny_config(), 1);
        let opts = itera_pack::PackOptions {
            tokenizer: Some(TokenizerTable { kind, unk_id: 1, tokens: tokens.iter().map(|s| s.to_string()).collect() }),
            ..Default::default()
        };
        AlignedBytes::from(itera_pack::convert::build(&sd, &opts).unwrap().finish().unwrap().as_slice())
    }

    #[test]
    fn words_are_lowercased_split_and_unknowns_mapped() {
        let bytes = blob_with(TokenizerKind::Word, &["<PAD>", "<UNK>", "once", "upon", "a", "time,"]);
        let blob = itera_edge::Blob::parse(&bytes).unwrap();
        let tok = blob.tokenizer().unwrap();
        assert_eq!(encode(&tok, "  Once UPON\ta  time, zebra"), vec![2, 3, 4, 5, 1]);
        assert_eq!(decode(&tok, &[2, 3, 1, 40]), "once upon <UNK> <UNK>");
        let mut s = TextStream::continuing();
        assert_eq!(s.piece(&tok, 4), " a");
    }

    #[test]
    fn chars_map_one_by_one() {
        let bytes = blob_with(TokenizerKind::Char, &["", "?", "a", "b", " ", "é"]);
        let blob = itera_edge::Blob::parse(&bytes).unwrap();
        let tok = blob.tokenizer().unwrap();
        assert_eq!(encode(&tok, "ab é!"), vec![2, 3, 4, 5, 1]);
        assert_eq!(decode(&tok, &[3, 2, 4, 5]), "ba é");
    }
}
