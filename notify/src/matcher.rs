//! Label matchers as Alertmanager writes them: `name="value"` with `=`, `!=`, `=~` or `!~`,
//! alone or as a `{a="b", c=~"d"}` list.
//!
//! Semantics (Alertmanager's `pkg/labels`): a regex is fully anchored, `^(?:re)$`, so
//! `env=~"prod"` does not match `production`; a missing label matches as the empty string, so
//! `foo!=""` requires `foo` to be present and `foo=~".*"` also matches alerts without it.
//!
//! The text form follows Alertmanager's classic parser (`pkg/labels/parse.go`): values may be
//! quoted (`\"`, `\\` and `\n` are escapes; any other backslash is literal) or bare; a bare
//! value runs to the next comma. Label names are `[a-zA-Z_:][a-zA-Z0-9_:]*`, or any text in
//! double quotes as Alertmanager's UTF-8 matchers allow.

use std::fmt;
use std::str::FromStr;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels::Labels;

/// How a matcher compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`: the value equals the matcher's.
    Equal,
    /// `!=`: the value differs from the matcher's.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The operator as written: `=`, `!=`, `=~` or `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a matcher does not parse or build. Each variant names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// Not `name op value`: a bad label name or a missing operator.
    #[error("bad matcher format `{0}`: write it like severity=\"page\", with =, !=, =~ or !~")]
    BadFormat(String),
    /// Nothing after the operator (an empty value is written `""`).
    #[error("matcher `{0}` has no value: write an empty value as \"\"")]
    MissingValue(String),
    /// A double quote inside a value that is not escaped, or an unclosed quote.
    #[error("matcher `{0}` has an unescaped or unclosed double quote in its value")]
    UnescapedQuote(String),
    /// An opening `{` without a closing `}`, or the other way round.
    #[error("matcher list `{0}` has unbalanced braces")]
    UnbalancedBraces(String),
    /// The regex of `=~` / `!~` does not compile.
    #[error("matcher `{text}` has an invalid regex: {why}")]
    InvalidRegex {
        /// The matcher.
        text: String,
        /// The regex compiler's message.
        why: String,
    },
    /// One matcher was expected, the text holds a different number.
    #[error("expected exactly one matcher in `{text}`, found {found}")]
    NotOne {
        /// The text.
        text: String,
        /// How many it holds.
        found: usize,
    },
}

/// One label matcher.
#[derive(Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    /// The anchored regex for `=~` / `!~`, compiled once.
    re: Option<Regex>,
}

impl Matcher {
    /// A matcher of label `name`; a regex value is anchored as `^(?:value)$`.
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Matcher, MatcherError> {
        let (name, value) = (name.into(), value.into());
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError::InvalidRegex {
                text: format!("{}{op}{}", quote_name(&name), quote_value(&value)),
                why: e.to_string(),
            })?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher { name, op, value, re })
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }
    /// The value (for regex matchers, the regex as written, without the anchors).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value matches (a missing label is passed as `""`).
    pub fn matches_value(&self, v: &str) -> bool {
        match (&self.op, &self.re) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // `new` compiles a regex for every regex operator.
            (MatchOp::Regex | MatchOp::NotRegex, None) => unreachable!("regex matcher without a compiled regex"),
        }
    }

    /// Whether the labels match; a missing label matches as the empty string.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    /// Whether the matcher matches the empty string, i.e. also alerts without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&o.name, o.op, &o.value)
    }
}
impl Eq for Matcher {}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}

/// The Alertmanager form: `name="value"`, the value always quoted and escaped, the name quoted
/// only when it is not a classic label name. Parsing it gives the same matcher back.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", quote_name(&self.name), self.op, quote_value(&self.value))
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_matcher(s)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_matcher(&s).map_err(serde::de::Error::custom)
    }
}

/// A conjunction of matchers: labels match when every matcher does (an empty list matches
/// everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    /// Whether every matcher matches the labels.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
    /// Whether every matcher matches the empty string (the list would match an alert with no
    /// labels at all).
    pub fn all_match_empty(&self) -> bool {
        self.0.iter().all(Matcher::matches_empty)
    }
}

impl std::ops::Deref for Matchers {
    type Target = [Matcher];
    fn deref(&self) -> &[Matcher] {
        &self.0
    }
}

/// `{a="b", c=~"d"}`.
impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

impl FromStr for Matchers {
    type Err = MatcherError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_matchers(s).map(Matchers)
    }
}

/// As a list of matcher strings.
impl Serialize for Matchers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| m.to_string()))
    }
}

/// From a list of strings, each one matcher or a `{…}` list, as Alertmanager's `matchers:`
/// field; or from one such string.
impl<'de> Deserialize<'de> for Matchers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let lines = match Form::deserialize(d)? {
            Form::One(s) => vec![s],
            Form::Many(v) => v,
        };
        let mut out = Vec::new();
        for line in &lines {
            out.extend(parse_matchers(line).map_err(serde::de::Error::custom)?);
        }
        Ok(Matchers(out))
    }
}

/// Parses exactly one matcher (braces allowed: `{a="b"}`).
pub fn parse_matcher(s: &str) -> Result<Matcher, MatcherError> {
    let mut v = parse_matchers(s)?;
    if v.len() != 1 {
        return Err(MatcherError::NotOne { text: s.to_string(), found: v.len() });
    }
    Ok(v.remove(0))
}

/// Parses a comma-separated list of matchers, optionally in braces: `{a="b", c=~"d"}`,
/// `a=b,c!=d`. A trailing comma is allowed; `{}` and `""` are the empty list.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, MatcherError> {
    let t = s.trim();
    let inner = match (t.strip_prefix('{'), t.ends_with('}')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => t,
        _ => return Err(MatcherError::UnbalancedBraces(s.to_string())),
    };
    let tokens = split_top_level(inner);
    let last = tokens.len().saturating_sub(1);
    let mut out = Vec::with_capacity(tokens.len());
    for (i, tok) in tokens.iter().enumerate() {
        // As Alertmanager: a blank last token is a trailing comma; a blank one inside is an
        // error (`a="b",,c="d"`).
        if i == last && tok.trim().is_empty() {
            continue;
        }
        out.push(parse_one(tok)?);
    }
    Ok(out)
}

/// Splits on commas outside double quotes (a `\"` inside quotes does not close them).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            ',' if !in_quotes => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            '"' if !escaped => in_quotes = !in_quotes,
            _ => {}
        }
        escaped = c == '\\' && !escaped;
    }
    out.push(&s[start..]);
    out
}

/// One `name op value`.
fn parse_one(token: &str) -> Result<Matcher, MatcherError> {
    let text = token.trim();
    let bad = || MatcherError::BadFormat(text.to_string());
    let (name, rest) = if text.starts_with('"') {
        let (name, len) = read_quoted(text).ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        (name, &text[len..])
    } else {
        let len = text.bytes().enumerate().take_while(|&(i, b)| is_name_byte(b, i == 0)).count();
        if len == 0 {
            return Err(bad());
        }
        (text[..len].to_string(), &text[len..])
    };
    let rest = rest.trim_start();
    // `=~` before `=`: otherwise `a=~"x"` would read as `a = "~x"`.
    let op = [MatchOp::Regex, MatchOp::Equal, MatchOp::NotEqual, MatchOp::NotRegex]
        .into_iter()
        .find(|op| rest.starts_with(op.as_str()))
        .ok_or_else(bad)?;
    let raw = rest[op.as_str().len()..].trim();
    if raw.is_empty() {
        return Err(MatcherError::MissingValue(text.to_string()));
    }
    let value = unescape_value(raw).ok_or_else(|| MatcherError::UnescapedQuote(text.to_string()))?;
    Matcher::new(name, op, value)
}

/// A quoted string at the start of `s`: its unescaped text and the byte length it spans.
fn read_quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                e @ ('"' | '\\') => out.push(e),
                e => {
                    out.push('\\');
                    out.push(e);
                }
            },
            c => out.push(c),
        }
    }
    None
}

/// Alertmanager's value unescaping: an optional surrounding pair of quotes; `\n`, `\"` and
/// `\\` are escapes, any other backslash stays literal; a quote anywhere else is an error.
fn unescape_value(raw: &str) -> Option<String> {
    let (body, mut expect_close) = match raw.strip_prefix('"') {
        Some(b) => (b, true),
        None => (raw, false),
    };
    let mut out = String::with_capacity(body.len());
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        let is_last = i + c.len_utf8() == body.len();
        if escaped {
            escaped = false;
            match c {
                'n' => out.push('\n'),
                '"' | '\\' => out.push(c),
                _ => {
                    out.push('\\');
                    out.push(c);
                }
            }
            continue;
        }
        match c {
            '\\' if !is_last => escaped = true,
            '"' if expect_close && is_last => expect_close = false,
            '"' => return None,
            c => out.push(c),
        }
    }
    (!expect_close).then_some(out)
}

fn is_name_byte(b: u8, first: bool) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || (!first && b.is_ascii_digit())
}

/// Whether `name` is a classic label name, written without quotes.
fn is_classic_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().enumerate().all(|(i, b)| is_name_byte(b, i == 0))
}

fn quote_name(name: &str) -> String {
    if is_classic_name(name) { name.to_string() } else { quote_value(name) }
}

/// Quotes and escapes as Alertmanager prints values: `\` → `\\`, newline → `\n`, `"` → `\"`.
fn quote_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(name, op, value).unwrap()
    }

    /// Alertmanager's `TestMatcher` (pkg/labels/matcher_test.go).
    #[test]
    fn matching_follows_alertmanager() {
        use MatchOp::*;
        let cases = [
            (Equal, "bar", "bar", true),
            (Equal, "bar", "foo-bar", false),
            (NotEqual, "bar", "bar", false),
            (NotEqual, "bar", "foo-bar", true),
            (Regex, "bar", "bar", true),
            (Regex, "bar", "foo-bar", false),
            (Regex, ".*bar", "foo-bar", true),
            (NotRegex, "bar", "bar", false),
            (NotRegex, "bar", "foo-bar", true),
            (NotRegex, ".*bar", "foo-bar", false),
            (Regex, "foo.bar", "foo-bar", true),
            (Regex, r"foo\.bar", "foo-bar", false),
            (Regex, r"foo\.bar", "foo.bar", true),
            (Equal, "foo\nbar", "foo\nbar", true),
            (Regex, "foo.bar", "foo\nbar", false),
            (Regex, "(?s)foo.bar", "foo\nbar", true),
            (Equal, "~!=\"", "~!=\"", true),
            // Anchoring: an alternation is anchored as a whole, not its first/last branch.
            (Regex, "db|infra", "infra", true),
            (Regex, "db|infra", "dbx", false),
            (Regex, "db|infra", "xinfra", false),
        ];
        for (op, value, input, want) in cases {
            assert_eq!(m("", op, value).matches_value(input), want, "{op} {value:?} on {input:?}");
        }
    }

    #[test]
    fn a_missing_label_matches_as_empty() {
        let none: [(&str, &str); 0] = [];
        let with = [("foo", "x")];
        let present = parse_matcher(r#"foo!="""#).unwrap();
        assert!(!present.matches(&none), "foo!=\"\" requires presence");
        assert!(present.matches(&with));
        let any = parse_matcher(r#"foo=~".*""#).unwrap();
        assert!(any.matches(&none), "foo=~\".*\" matches absence");
        assert!(any.matches(&with));
        let eq_empty = parse_matcher(r#"foo="""#).unwrap();
        assert!(eq_empty.matches(&none));
        assert!(!eq_empty.matches(&with));
        assert!(parse_matcher(r#"foo!~"x""#).unwrap().matches(&none));
        assert!(parse_matcher(r#"foo=~"x|""#).unwrap().matches_empty());
        assert!(!parse_matcher(r#"foo=~"x+""#).unwrap().matches_empty());
    }

    /// Alertmanager's `TestMatchers` (pkg/labels/parse_test.go): accepted inputs.
    #[test]
    fn parses_alertmanager_text() {
        use MatchOp::*;
        let cases: Vec<(&str, Vec<Matcher>)> = vec![
            (r#"{foo="bar"}"#, vec![m("foo", Equal, "bar")]),
            (r#"{foo=~"bar.*"}"#, vec![m("foo", Regex, "bar.*")]),
            (r#"{foo!="bar"}"#, vec![m("foo", NotEqual, "bar")]),
            (r#"{foo!~"bar.*"}"#, vec![m("foo", NotRegex, "bar.*")]),
            (r#"{foo="bar", baz!="quux"}"#, vec![m("foo", Equal, "bar"), m("baz", NotEqual, "quux")]),
            (
                r#"{foo="bar",baz!~".*quux", derp="wat"}"#,
                vec![m("foo", Equal, "bar"), m("baz", NotRegex, ".*quux"), m("derp", Equal, "wat")],
            ),
            (r#"{foo="bar", instance=~"some-api.*"}"#, vec![m("foo", Equal, "bar"), m("instance", Regex, "some-api.*")]),
            (r#"{foo=""}"#, vec![m("foo", Equal, "")]),
            (r#"{foo="bar,quux", job="job1"}"#, vec![m("foo", Equal, "bar,quux"), m("job", Equal, "job1")]),
            (r#"{foo = "bar", dings != "bums", }"#, vec![m("foo", Equal, "bar"), m("dings", NotEqual, "bums")]),
            ("foo=bar,dings!=bums", vec![m("foo", Equal, "bar"), m("dings", NotEqual, "bums")]),
            (
                r#"{quote="She said: \"Hi, ladies! That's gender-neutral…\""}"#,
                vec![m("quote", Equal, r#"She said: "Hi, ladies! That's gender-neutral…""#)],
            ),
            (r#"statuscode=~"5..""#, vec![m("statuscode", Regex, "5..")]),
            ("tricky=~~~", vec![m("tricky", Regex, "~~")]),
            (r#"trickier==\\=\=\""#, vec![m("trickier", Equal, r#"=\=\=""#)]),
            (
                r#"contains_quote != "\"" , contains_comma !~ "foo,bar" , "#,
                vec![m("contains_quote", NotEqual, "\""), m("contains_comma", NotRegex, "foo,bar")],
            ),
            (r#"severity="page""#, vec![m("severity", Equal, "page")]),
            (r#"team=~"db|infra""#, vec![m("team", Regex, "db|infra")]),
            (r#"env!="dev""#, vec![m("env", NotEqual, "dev")]),
            (r#"{"service name"="api"}"#, vec![m("service name", Equal, "api")]),
            ("{}", vec![]),
            ("", vec![]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_matchers(input).unwrap_or_else(|e| panic!("{input}: {e}")), want, "{input}");
        }
    }

    /// Alertmanager's `TestMatchers`: rejected inputs, each error naming the offending text.
    #[test]
    fn rejects_bad_text_naming_it() {
        type Expect = fn(&MatcherError) -> bool;
        let cases: [(&str, Expect); 13] = [
            ("job=", |e| matches!(e, MatcherError::MissingValue(t) if t == "job=")),
            (r#"job="value"#, |e| matches!(e, MatcherError::UnescapedQuote(_))),
            (r#"job=value""#, |e| matches!(e, MatcherError::UnescapedQuote(_))),
            (r#"trickier==\\=\=\"""#, |e| matches!(e, MatcherError::UnescapedQuote(_))),
            (r#"contains_unescaped_quote = foo"bar"#, |e| matches!(e, MatcherError::UnescapedQuote(_))),
            (r#"{invalid-name = "valid label"}"#, |e| matches!(e, MatcherError::BadFormat(t) if t == r#"invalid-name = "valid label""#)),
            (r#"{foo=~"invalid[regexp"}"#, |e| matches!(e, MatcherError::InvalidRegex { .. })),
            (r#""{foo=\"bar"}"#, |_| true),
            (r#""foo=\"bar""#, |e| matches!(e, MatcherError::BadFormat(_))),
            (r#""foo=\"bar\"""#, |e| matches!(e, MatcherError::BadFormat(_))),
            (r#""{foo=\"bar\"}""#, |e| matches!(e, MatcherError::BadFormat(_))),
            (r#""foo="bar"""#, |e| matches!(e, MatcherError::BadFormat(_))),
            (r#"a="b",,c="d""#, |e| matches!(e, MatcherError::BadFormat(t) if t.is_empty())),
        ];
        for (input, ok) in cases {
            match parse_matchers(input) {
                Ok(v) => panic!("{input} parsed as {v:?}"),
                Err(e) => assert!(ok(&e), "{input}: unexpected {e:?}"),
            }
        }
        let e = parse_matchers(r#"{foo=~"invalid[regexp"}"#).unwrap_err().to_string();
        assert!(e.contains(r#"foo=~"invalid[regexp""#), "{e}");
        assert!(matches!(parse_matchers(r#"{a="b""#), Err(MatcherError::UnbalancedBraces(_))));
        assert!(matches!(parse_matcher(r#"a="b",c="d""#), Err(MatcherError::NotOne { found: 2, .. })));
    }

    /// Alertmanager's `TestMatcherString`, and parsing the printed form gives the matcher back.
    #[test]
    fn prints_and_round_trips() {
        use MatchOp::*;
        let cases = [
            ("foo", Equal, "bar", r#"foo="bar""#),
            ("foo", NotEqual, "bar", r#"foo!="bar""#),
            ("foo", Regex, "bar", r#"foo=~"bar""#),
            ("foo", NotRegex, "bar", r#"foo!~"bar""#),
            ("foo", Equal, r"back\slash", r#"foo="back\\slash""#),
            ("foo", Equal, r#"double"quote"#, r#"foo="double\"quote""#),
            ("foo", Equal, "new\nline", r#"foo="new\nline""#),
            ("foo", Equal, "tab\tstop", "foo=\"tab\tstop\""),
            ("foo", Equal, "🙂", "foo=\"🙂\""),
            ("foo!", NotEqual, "bar", r#""foo!"!="bar""#),
            ("foo bar", Equal, "baz", r#""foo bar"="baz""#),
            ("a", Equal, "x, y}", r#"a="x, y}""#),
            ("a", Equal, "\\", r#"a="\\""#),
        ];
        for (name, op, value, want) in cases {
            let matcher = m(name, op, value);
            assert_eq!(matcher.to_string(), want);
            assert_eq!(parse_matcher(want).unwrap(), matcher, "{want}");
        }
        let list = Matchers(vec![m("a", Equal, "x, y}"), m("b c", Regex, "\"|\\\\")]);
        assert_eq!(list.to_string().parse::<Matchers>().unwrap(), list);
    }

    #[test]
    fn deserializes_from_toml_strings() {
        #[derive(Deserialize)]
        struct C {
            one: Matcher,
            list: Matchers,
            braces: Matchers,
        }
        let c: C = toml::from_str(
            r#"
            one = 'team=~"db|infra"'
            list = ['severity="page"', 'env!=dev']
            braces = '{a="b", c=~"d"}'
            "#,
        )
        .unwrap();
        assert_eq!(c.one, m("team", MatchOp::Regex, "db|infra"));
        assert_eq!(c.list.0, vec![m("severity", MatchOp::Equal, "page"), m("env", MatchOp::NotEqual, "dev")]);
        assert_eq!(c.braces.0, vec![m("a", MatchOp::Equal, "b"), m("c", MatchOp::Regex, "d")]);
        let err = toml::from_str::<C>("one = 'x=~\"(\"'\nlist = []\nbraces = []").err().unwrap().to_string();
        assert!(err.contains(r#"x=~"(""#), "{err}");
        let json = serde_json::to_string(&c.list).unwrap();
        assert_eq!(json, r#"["severity=\"page\"","env!=\"dev\""]"#);
        assert_eq!(serde_json::from_str::<Matchers>(&json).unwrap(), c.list);
    }
}
