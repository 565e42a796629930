//! Prompt encoding and streamed decoding with the tokenizer stored in a blob, or with a
//! tokenizer JSON read by the packer ([`TokenizerTable`]). Encoding lives here only:
//! [`encode`] works on anything that can look a token up ([`Vocab`]).

use std::collections::HashMap;

use itera_edge::format::TokenizerKind;
use itera_edge::Tokenizer;
use itera_pack::untrusted::shown;
use itera_pack::writer::TokenizerTable;

/// A token table that text can be encoded with.
pub trait Vocab {
    /// Word or char level.
    fn kind(&self) -> TokenizerKind;
    /// Id that unknown input maps to.
    fn unk_id(&self) -> u32;
    /// The id of one token's exact text, if named (the first id when named twice).
    fn id_of(&self, text: &str) -> Option<u32>;
}

impl Vocab for Tokenizer<'_> {
    fn kind(&self) -> TokenizerKind {
        Tokenizer::kind(self)
    }
    fn unk_id(&self) -> u32 {
        Tokenizer::unk_id(self)
    }
    fn id_of(&self, text: &str) -> Option<u32> {
        Tokenizer::id_of(self, text)
    }
}

/// A [`TokenizerTable`] (e.g. from `itera_pack::convert::read_tokenizer`) indexed for fast
/// lookup. Empty entries (ids the JSON does not name) never match.
#[derive(Clone, Debug)]
pub struct TableVocab {
    kind: TokenizerKind,
    unk_id: u32,
    ids: HashMap<String, u32>,
}

impl TableVocab {
    /// Indexes `table`; when a text is named by several ids, the first wins (as in the core).
    pub fn new(table: &TokenizerTable) -> Self {
        let mut ids = HashMap::with_capacity(table.tokens.len());
        for (i, t) in table.tokens.iter().enumerate() {
            if !t.is_empty() {
                ids.entry(t.clone()).or_insert(i as u32);
            }
        }
        TableVocab { kind: table.kind, unk_id: table.unk_id, ids }
    }
}

impl Vocab for TableVocab {
    fn kind(&self) -> TokenizerKind {
        self.kind
    }
    fn unk_id(&self) -> u32 {
        self.unk_id
    }
    fn id_of(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
}

/// Encodes `text` as the Itera-Lite tokenizers do.
///
/// * word level: `text.to_lowercase().split_whitespace()`, each word → its id, or the
///   unknown id if the table does not name it (punctuation stays part of the word, as in
///   the source tokenizer: `day,` is its own token);
/// * char level: each character → its id, or the unknown id.
pub fn encode<V: Vocab + ?Sized>(tok: &V, text: &str) -> Vec<u32> {
    encode_iter(tok, text).collect()
}

/// [`encode`] one token at a time, so that a caller who wants only the first N tokens of
/// a long text never holds more than those.
///
/// Words are lower-cased one by one: the same as lower-casing the whole text first (no
/// character's lower case is whitespace, and a final sigma's context ends at whitespace)
/// without a lower-cased copy of the text.
pub fn encode_iter<'t, V: Vocab + ?Sized>(tok: &'t V, text: &'t str) -> impl Iterator<Item = u32> + 't {
    let unk = tok.unk_id();
    let (words, chars) = match tok.kind() {
        TokenizerKind::Word => (Some(text.split_whitespace()), None),
        TokenizerKind::Char => (None, Some(text.chars())),
    };
    let words = words.into_iter().flatten().map(move |w| tok.id_of(&w.to_lowercase()).unwrap_or(unk));
    let chars = chars.into_iter().flatten().map(move |c| tok.id_of(c.encode_utf8(&mut [0u8; 4])).unwrap_or(unk));
    words.chain(chars)
}

/// How much of an encoded text the tokenizer did not know: a model sees every unknown
/// word as one and the same token, so a perplexity or a generation on a text that is
/// mostly unknown says little about the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unknown {
    /// Tokens that are the tokenizer's unknown id.
    pub unknown: usize,
    /// All tokens.
    pub tokens: usize,
}

impl Unknown {
    /// Counts the unknown id `unk_id` in `ids`.
    pub fn count(unk_id: u32, ids: &[u32]) -> Self {
        Unknown { unknown: ids.iter().filter(|&&id| id == unk_id).count(), tokens: ids.len() }
    }

    /// The unknown share, 0 to 1 (0 for no tokens).
    pub fn share(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.unknown as f64 / self.tokens as f64
        }
    }

    /// "N of M tokens (P%)".
    pub fn describe(&self) -> String {
        format!("{} of {} tokens ({:.1}%)", self.unknown, self.tokens, 100.0 * self.share())
    }
}

/// The pieces of `text` (words, or characters at char level) that `tok` does not name,
/// in order, each once: what a user can fix in a prompt.
pub fn unknown_pieces<'t, V: Vocab + ?Sized>(tok: &V, text: &'t str) -> Vec<&'t str> {
    let pieces: Box<dyn Iterator<Item = &'t str>> = match tok.kind() {
        TokenizerKind::Word => Box::new(text.split_whitespace()),
        TokenizerKind::Char => Box::new(text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()])),
    };
    let mut unknown: Vec<&str> = Vec::new();
    for piece in pieces {
        let known = match tok.kind() {
            TokenizerKind::Word => tok.id_of(&piece.to_lowercase()).is_some(),
            TokenizerKind::Char => tok.id_of(piece).is_some(),
        };
        if !known && !unknown.contains(&piece) {
            unknown.push(piece);
        }
    }
    unknown
}

/// Encodes `text` with a tokenizer table (see [`encode`]).
pub fn encode_with_table(table: &TokenizerTable, text: &str) -> Vec<u32> {
    encode(&TableVocab::new(table), text)
}

/// `text` as it may reach a terminal: newlines and tabs kept (a char-level tokenizer has
/// them as tokens), every other control or bidi character escaped by
/// [`itera_pack::untrusted::shown`]. Token text comes from the blob, so a token holding
/// `ESC [ 2 J` would otherwise clear the user's screen. Exact text stays in `--json`
/// output, where JSON escapes it.
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in text.split_inclusive(['\n', '\t']) {
        let (body, end) = match piece.strip_suffix(['\n', '\t']) {
            Some(body) => (body, &piece[body.len()..]),
            None => (piece, ""),
        };
        out += &shown(body);
        out += end;
    }
    out
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
    use itera_pack::AlignedBytes;

    fn blob_with(kind: TokenizerKind, tokens: &[&str]) -> AlignedBytes {
        let opts = itera_pack::PackOptions {
            tokenizer: Some(TokenizerTable { kind, unk_id: 1, tokens: tokens.iter().map(|s| s.to_string()).collect() }),
            ..Default::default()
        };
        itera_test_support::tiny_blob_with(1, &opts)
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
    fn terminal_text_keeps_lines_and_tabs_and_escapes_other_controls() {
        assert_eq!(for_terminal("once\n\tupon"), "once\n\tupon");
        assert_eq!(for_terminal("a\x1b[2Jb\r\n\u{202e}"), "a\\u{1b}[2Jb\\r\n\\u{202e}");
        assert_eq!(for_terminal(""), "");
        assert_eq!(for_terminal("été\u{9b}"), "été\\u{9b}");
    }

    #[test]
    fn chars_map_one_by_one() {
        let bytes = blob_with(TokenizerKind::Char, &["", "?", "a", "b", " ", "é"]);
        let blob = itera_edge::Blob::parse(&bytes).unwrap();
        let tok = blob.tokenizer().unwrap();
        assert_eq!(encode(&tok, "ab é!"), vec![2, 3, 4, 5, 1]);
        assert_eq!(decode(&tok, &[3, 2, 4, 5]), "ba é");
    }

    #[test]
    fn tables_encode_like_the_blob_tokenizer() {
        for (kind, tokens, text) in [
            (TokenizerKind::Word, &["<PAD>", "<UNK>", "once", "", "a", "once"][..], "Once upon A  once"),
            (TokenizerKind::Char, &["", "?", "a", "b", " ", "a"][..], "ab a!"),
        ] {
            let table = TokenizerTable { kind, unk_id: 1, tokens: tokens.iter().map(|s| s.to_string()).collect() };
            let bytes = blob_with(kind, tokens);
            let blob = itera_edge::Blob::parse(&bytes).unwrap();
            let tok = blob.tokenizer().unwrap();
            assert_eq!(encode_with_table(&table, text), encode(&tok, text), "{kind:?}");
        }
        let words = TokenizerTable { kind: TokenizerKind::Word, unk_id: 1, tokens: vec!["".into(), "<UNK>".into()] };
        assert_eq!(encode_with_table(&words, "x"), vec![1]);
        // Word by word lower-casing is the whole text's, final sigma included.
        let text = "ΟΔΟΣ Σ\tΑΣ.";
        let lowered: Vec<String> = text.to_lowercase().split_whitespace().map(String::from).collect();
        let words = TokenizerTable { kind: TokenizerKind::Word, unk_id: 0, tokens: lowered.clone() };
        assert_eq!(encode_with_table(&words, text), (0..lowered.len() as u32).collect::<Vec<_>>(), "{lowered:?}");
        assert_eq!(encode_iter(&TableVocab::new(&words), text).take(1).collect::<Vec<_>>(), vec![0]);
    }
}
