//! `Tokenizer`: the blob's id-to-text table, read in place.

use crate::error::Error;
use crate::format::{read_u32, TokenizerKind, TokenizerRef};

/// Text written for an id the table does not name when the unknown token itself is unnamed.
const FALLBACK_UNK: &str = "<UNK>";

/// The tokenizer stored in a blob: `count` UTF-8 strings behind an end-offset table.
#[derive(Clone, Copy, Debug)]
pub struct Tokenizer<'a> {
    kind: TokenizerKind,
    unk_id: u32,
    count: u32,
    /// `count + 1` little-endian u32 end offsets.
    ends: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Tokenizer<'a> {
    /// Validates the table at `r` inside `blob[lo..hi]`.
    pub(crate) fn new(blob: &'a [u8], r: &TokenizerRef, lo: usize, hi: usize) -> Result<Self, Error> {
        let bad = Error::BadTokenizer;
        let start = r.offset as usize;
        let len = r.len as usize;
        if !start.is_multiple_of(4) || start < lo || start.checked_add(len).is_none_or(|e| e > hi) {
            return Err(bad("table is misaligned or outside the data section"));
        }
        let table = blob.get(start..start + len).ok_or(bad("table is misaligned or outside the data section"))?;
        let index_len =
            (r.count as usize).checked_add(1).and_then(|n| n.checked_mul(4)).ok_or(bad("count overflows"))?;
        if index_len > len {
            return Err(bad("offset table is longer than the section"));
        }
        // Unknown input maps to `unk_id` and unnamed ids decode as it: it must be an id.
        if r.unk_id >= r.count {
            return Err(Error::UnknownTokenOutOfRange { unk_id: r.unk_id, count: r.count });
        }
        let (ends, strings) = table.split_at(index_len);
        let t = Tokenizer { kind: r.kind, unk_id: r.unk_id, count: r.count, ends, strings };
        let mut prev = 0u32;
        for i in 0..=r.count as usize {
            let end = read_u32(ends, i * 4);
            if (i == 0 && end != 0) || end < prev || end as usize > strings.len() {
                return Err(bad("string offsets are not increasing within the section"));
            }
            if i > 0 && strings.get(prev as usize..end as usize).is_none_or(|s| core::str::from_utf8(s).is_err()) {
                return Err(bad("a token is not valid UTF-8"));
            }
            prev = end;
        }
        if prev as usize != strings.len() {
            return Err(bad("string bytes do not end where the table says"));
        }
        Ok(t)
    }

    /// Word or char level.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of ids the table names.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the table names no ids.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Id that unknown input maps to.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// What goes between two decoded tokens: a space for words, nothing for chars.
    pub fn separator(&self) -> &'static str {
        match self.kind {
            TokenizerKind::Word => " ",
            TokenizerKind::Char => "",
        }
    }

    fn get(&self, id: u32) -> Option<&'a str> {
        if id >= self.count {
            return None;
        }
        let i = id as usize;
        let a = read_u32(self.ends, i * 4) as usize;
        let b = read_u32(self.ends, i * 4 + 4) as usize;
        let s = core::str::from_utf8(self.strings.get(a..b)?).ok()?;
        // An empty entry is an id the source tokenizer did not name.
        (!s.is_empty()).then_some(s)
    }

    /// The text of `id`; ids the table does not name decode as the unknown token.
    pub fn decode(&self, id: u32) -> &'a str {
        self.get(id).or_else(|| self.get(self.unk_id)).unwrap_or(FALLBACK_UNK)
    }

    /// The id of one token's exact text (a word or a character), if named.
    pub fn id_of(&self, text: &str) -> Option<u32> {
        (0..self.count).find(|&i| self.get(i) == Some(text))
    }
}
