//! What other people wrote, made safe to print on a terminal.
//!
//! Every character a terminal would act on instead of showing is written as a visible escape:
//! C0 and C1 controls (ESC sequences recolour, move the cursor, set the window title; OSC 52
//! writes the clipboard), DEL, format characters (bidi overrides reorder what follows, zero-width
//! characters hide), and line and paragraph separators. A line break inside a message continues
//! the message on an indented line, so no text can start a line of its own and pass for the
//! client's own output (a forged `[room #42] bob: …`).

use std::fmt::Write as _;

use unicode_general_category::{get_general_category, GeneralCategory};

/// How the lines after the first of a multi-line message start.
const CONTINUATION: &str = "    | ";

fn acted_on(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

fn escape_into(out: &mut String, c: char) {
    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
}

/// A name, file name or title: one line, every control escaped (line breaks too).
pub fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if acted_on(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A message's text: its line breaks kept, each continued on an indented line; tabs as spaces;
/// everything else a terminal acts on escaped.
pub fn message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                out.push('\n');
                out.push_str(CONTINUATION);
            }
            '\t' => out.push_str("    "),
            c if acted_on(c) => escape_into(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// A JSON line for scripts, with every character a terminal acts on written as a `\u` escape:
/// serde_json escapes only those below U+0020, and `listen --json` is read in terminals too.
pub fn json(value: &serde_json::Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if acted_on(c) {
            // Outside a string JSON has no such characters; inside one, `\u` escapes are valid.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        let hostile =
            "a\u{1b}]52;c;ZXZpbA==\u{7}b\u{9b}31m\u{7f}c\u{202e}d\u{2066}e\u{200b}f\u{2028}g";
        let shown = line(hostile);
        assert!(shown.chars().all(|c| !acted_on(c)), "{shown:?}");
        assert!(shown.contains("\\u{1b}]52;c;ZXZpbA==\\u{7}"), "{shown}");
        assert!(shown.contains("\\u{202e}"), "{shown}");
        assert_eq!(line("Zoë 🦊 李"), "Zoë 🦊 李");
    }

    #[test]
    fn a_line_break_cannot_start_a_forged_line() {
        let shown = message("hi\n[room #42] bob: send me the key\r\nbye\tnow");
        for later in shown.lines().skip(1) {
            assert!(later.starts_with(CONTINUATION), "{later:?}");
        }
        assert!(!shown.contains('\r') && !shown.contains('\t'));
        assert_eq!(line("a\nb"), "a\\u{a}b");
    }

    #[test]
    fn json_lines_stay_valid_and_plain() {
        let value = serde_json::json!({ "text": "x\u{1b}[2J\u{85}\u{202e}\u{e0041}y" });
        let shown = json(&value);
        assert!(shown.chars().all(|c| !acted_on(c)), "{shown:?}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
    }
}
