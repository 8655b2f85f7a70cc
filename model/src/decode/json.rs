//! A small cursor over one JSON text, for flat records: strings are returned as ranges (no
//! allocation unless an escape must be undone), numbers as their text.

use super::{DecodeError, Text};

/// A syntax error of the cursor: small, so results stay in registers on the hot path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syntax {
    pub at: usize,
    pub what: &'static str,
}

impl From<Syntax> for DecodeError {
    #[inline]
    fn from(s: Syntax) -> DecodeError {
        DecodeError::Syntax { at: s.at, what: s.what }
    }
}

type R<T> = Result<T, Syntax>;

pub(crate) enum Val<'a> {
    Str(Text),
    Num(&'a str),
    Bool(bool),
    Null,
    /// The cursor stands on the `{`: the caller reads or skips it.
    Object,
    /// The cursor stands on the `[`: the caller reads or skips it.
    Array,
}

pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

const MAX_DEPTH: usize = 64;

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub fn err(&self, what: &'static str) -> Syntax {
        Syntax { at: self.i, what }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub fn eat(&mut self, c: u8, what: &'static str) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else if self.i >= self.b.len() {
            Err(self.err("unexpected end of line"))
        } else {
            Err(self.err(what))
        }
    }

    /// After `{` or `,`: the next key, or `None` at the closing `}`.
    /// `first` is whether no member has been read yet.
    #[inline]
    pub fn next_key(&mut self, first: bool, scratch: &mut Vec<u8>) -> R<Option<Text>> {
        self.ws();
        match self.peek() {
            Some(b'}') => {
                self.i += 1;
                return Ok(None);
            }
            Some(b',') if !first => {
                self.i += 1;
                self.ws();
            }
            None => return Err(self.err("unexpected end of line")),
            _ if !first => return Err(self.err("expected `,` or `}`")),
            _ => {}
        }
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a key in double quotes"));
        }
        let k = self.string(scratch)?;
        self.eat(b':', "expected `:` after a key")?;
        Ok(Some(k))
    }

    /// Reads a value; objects and arrays are left for the caller.
    #[inline]
    pub fn value(&mut self, scratch: &mut Vec<u8>) -> R<Val<'a>> {
        self.ws();
        match self.peek() {
            Some(b'"') => Ok(Val::Str(self.string(scratch)?)),
            Some(b'-' | b'0'..=b'9') => Ok(Val::Num(self.number()?)),
            Some(b't') => self.literal(b"true", Val::Bool(true)),
            Some(b'f') => self.literal(b"false", Val::Bool(false)),
            Some(b'n') => self.literal(b"null", Val::Null),
            Some(b'{') => Ok(Val::Object),
            Some(b'[') => Ok(Val::Array),
            None => Err(self.err("unexpected end of line")),
            _ => Err(self.err("unexpected character where a value should be")),
        }
    }

    fn literal(&mut self, word: &[u8], v: Val<'a>) -> R<Val<'a>> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected character where a value should be"))
        }
    }

    #[inline]
    fn number(&mut self) -> R<&'a str> {
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = &self.b[start..self.i];
        if !is_json_number(text) {
            // `01`, `1.`, `.5`, `+1`, `1e`: Rust's float parser takes some of these, JSON does not.
            self.i = start;
            return Err(self.err("invalid number"));
        }
        // Validated as UTF-8 by the caller; all bytes here are ASCII anyway.
        std::str::from_utf8(text).map_err(|_| self.err("invalid number"))
    }

    /// At a `"`: the string's text.
    #[inline]
    pub fn string(&mut self, scratch: &mut Vec<u8>) -> R<Text> {
        self.i += 1;
        let start = self.i;
        // Keys and label values are short: a plain loop beats memchr's set-up for them.
        let short_end = (start + 24).min(self.b.len());
        let mut j = start;
        while j < short_end {
            match self.b[j] {
                b'"' => {
                    self.i = j + 1;
                    return Ok(Text::Line(start as u32, j as u32));
                }
                b'\\' => return self.escaped_string(start, j, scratch),
                c if c < 0x20 => return Err(self.control(j)),
                _ => j += 1,
            }
        }
        match memchr::memchr2(b'"', b'\\', &self.b[start..]) {
            Some(off) if self.b[start + off] == b'"' => {
                self.no_control(start, start + off)?;
                self.i = start + off + 1;
                Ok(Text::Line(start as u32, (start + off) as u32))
            }
            Some(off) => self.escaped_string(start, start + off, scratch),
            None => Err(self.err("unterminated string")),
        }
    }

    /// JSON strings hold no raw control characters (they must be escaped): an error at `at`.
    #[cold]
    fn control(&mut self, at: usize) -> Syntax {
        self.i = at;
        self.err("raw control character inside a string (JSON needs it escaped, like \\t or \\u0000)")
    }

    /// Checks `b[a..b]`, a piece of a string, for raw control characters.
    #[inline]
    fn no_control(&mut self, a: usize, b: usize) -> R<()> {
        match self.b[a..b].iter().position(|&c| c < 0x20) {
            None => Ok(()),
            Some(k) => Err(self.control(a + k)),
        }
    }

    fn escaped_string(&mut self, start: usize, first_escape: usize, scratch: &mut Vec<u8>) -> R<Text> {
        self.no_control(start, first_escape)?;
        let s0 = scratch.len();
        scratch.extend_from_slice(&self.b[start..first_escape]);
        self.i = first_escape;
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Text::Scratch(s0 as u32, scratch.len() as u32));
                }
                b'\\' => {
                    let Some(&e) = self.b.get(self.i + 1) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 2;
                    match e {
                        b'"' => scratch.push(b'"'),
                        b'\\' => scratch.push(b'\\'),
                        b'/' => scratch.push(b'/'),
                        b'b' => scratch.push(8),
                        b'f' => scratch.push(12),
                        b'n' => scratch.push(b'\n'),
                        b'r' => scratch.push(b'\r'),
                        b't' => scratch.push(b'\t'),
                        b'u' => {
                            let cp = self.hex4()?;
                            let ch = if (0xD800..0xDC00).contains(&cp) {
                                if self.b.get(self.i) != Some(&b'\\') || self.b.get(self.i + 1) != Some(&b'u') {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                char::from_u32(0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(cp)
                            };
                            let ch = ch.ok_or_else(|| self.err("lone surrogate in \\u escape"))?;
                            let mut buf = [0u8; 4];
                            scratch.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(self.err("invalid escape in string")),
                    }
                }
                _ => {
                    let rest = &self.b[self.i..];
                    let n = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                    self.no_control(self.i, self.i + n)?;
                    scratch.extend_from_slice(&self.b[self.i..self.i + n]);
                    self.i += n;
                }
            }
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self.b.get(self.i..self.i + 4).ok_or_else(|| self.err("short \\u escape"))?;
        let mut v = 0u32;
        for &c in h {
            let d = (c as char).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// Skips any value (used for `annotations` of metrics).
    pub fn skip_value(&mut self, scratch: &mut Vec<u8>, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let mark = scratch.len();
        match self.value(scratch)? {
            Val::Object => {
                self.i += 1;
                let mut first = true;
                while self.next_key(first, scratch)?.is_some() {
                    first = false;
                    self.skip_value(scratch, depth + 1)?;
                }
            }
            Val::Array => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.skip_value(scratch, depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err("expected `,` or `]`")),
                        }
                    }
                }
            }
            _ => {}
        }
        scratch.truncate(mark);
        Ok(())
    }

    /// After the top-level value: only white space may follow.
    pub fn end(&mut self) -> R<()> {
        self.ws();
        if self.i == self.b.len() { Ok(()) } else { Err(self.err("unexpected text after the object")) }
    }
}

/// The JSON type of a value, for error messages.
pub(crate) fn kind(v: &Val<'_>) -> &'static str {
    match v {
        Val::Str(_) => "a string",
        Val::Num(_) => "a number",
        Val::Bool(_) => "a boolean",
        Val::Null => "null",
        Val::Object => "an object",
        Val::Array => "an array",
    }
}

/// Whether `s` is a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[inline]
fn is_json_number(s: &[u8]) -> bool {
    let digits = |i: &mut usize| {
        let from = *i;
        while s.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == s.len()
}

#[cfg(test)]
mod tests {
    use super::is_json_number;

    #[test]
    fn numbers_follow_the_json_grammar() {
        for ok in ["0", "-0", "7", "-12", "1.5", "0.25", "1e5", "1E+5", "-2.5e-3", "123456789012345678901234567890"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "-", "01", "-01", "1.", ".5", "+1", "1e", "1e+", "1.e5", "--1", "1-", "1.2.3", "1e5e5", "0x10"] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}
