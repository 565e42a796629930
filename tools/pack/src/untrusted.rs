//! Strings from checkpoints and blobs (tensor names, provenance, tokenizer text) are
//! untrusted: printed raw, a name holding `ESC [ 2 J` clears the user's terminal, and one
//! holding a newline forges a line of output. Every such string goes through [`shown`]
//! before it reaches a terminal or a log.

use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1) and every Unicode bidirectional
/// override escaped as `\u{..}` (`\n`, `\t`, `\r` as themselves escaped), the rest as it is.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_bidi_control(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                _ => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Unicode controls that reorder text on screen (the "Trojan Source" characters).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn controls_are_escaped_and_text_is_kept() {
        assert_eq!(shown("layers.0.ssm\x1b[2J"), "layers.0.ssm\\u{1b}[2J");
        assert_eq!(shown("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(shown("\u{202e}cod"), "\\u{202e}cod");
        assert_eq!(shown("\u{9b}"), "\\u{9b}");
        assert_eq!(shown("été · ok"), "été · ok");
    }
}
