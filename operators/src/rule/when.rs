//! A rule's condition: comparisons between an aggregate's functions and numbers, joined by
//! `and`, `or`, `not` and parentheses — `avg > 90`, `p99 >= 2.5 and count > 10`,
//! `not (max < 0.5 or min > 10)`, `max > avg`. There is no arithmetic: write the computed
//! number. `and` binds tighter than `or`, as in SQL and PromQL; keywords ignore case.
//!
//! A comparison with a NaN side (a function the window could not compute) is false, as in
//! IEEE and PromQL.

use std::fmt;

use alertflow_model::window::{Acc, AggFn};

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// The window's value of a function.
    Fn(AggFn),
    /// A number.
    Num(f64),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `a op b`.
    Cmp(Operand, Cmp, Operand),
    /// Both hold.
    And(Box<Cond>, Box<Cond>),
    /// Either holds.
    Or(Box<Cond>, Box<Cond>),
    /// Does not hold.
    Not(Box<Cond>),
}

/// Why a condition did not parse: the message and the 1-based column it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Num(f64),
    Op(Cmp),
    Open,
    Close,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Num(n) => write!(f, "`{n}`"),
            Tok::Op(c) => write!(f, "`{}`", c.symbol()),
            Tok::Open => f.write_str("`(`"),
            Tok::Close => f.write_str("`)`"),
            Tok::End => f.write_str("the end"),
        }
    }
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
    #[inline]
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b && !a.is_nan() && !b.is_nan(),
        }
    }
}

/// Splits the text into tokens with their 1-based columns.
fn tokens(s: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push((col, if c == '(' { Tok::Open } else { Tok::Close }));
            i += 1;
        } else if matches!(c, '>' | '<' | '=' | '!') {
            let two = chars.get(i + 1) == Some(&'=');
            let op = match (c, two) {
                ('>', false) => Cmp::Gt,
                ('>', true) => Cmp::Ge,
                ('<', false) => Cmp::Lt,
                ('<', true) => Cmp::Le,
                ('=', true) => Cmp::Eq,
                ('!', true) => Cmp::Ne,
                ('=', false) => return Err(ParseError { column: col, message: "`=` is not an operator; compare with `==`".into() }),
                _ => return Err(ParseError { column: col, message: "`!` is not an operator; use `!=` or `not`".into() }),
            };
            out.push((col, Tok::Op(op)));
            i += if two { 2 } else { 1 };
        } else if c.is_ascii_digit()
            || c == '.'
            || ((c == '-' || c == '+') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.'))
        {
            let start = i;
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let exp_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                if d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E' || d == '_' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            let text: String = chars[start..i].iter().filter(|&&d| d != '_').collect();
            let n: f64 = text.parse().map_err(|_| ParseError { column: col, message: format!("`{text}` is not a number") })?;
            out.push((col, Tok::Num(n)));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((col, Tok::Word(chars[start..i].iter().collect())));
        } else if c == '&' || c == '|' {
            let word = if c == '&' { "and" } else { "or" };
            return Err(ParseError { column: col, message: format!("`{c}` is not an operator; write `{word}`") });
        } else {
            return Err(ParseError { column: col, message: format!("unexpected character `{c}`") });
        }
    }
    out.push((chars.len() + 1, Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }
    fn column(&self) -> usize {
        self.toks[self.at].0
    }
    fn next(&mut self) -> (usize, Tok) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(k))
    }
    fn error<T>(&self, message: String) -> Result<T, ParseError> {
        Err(ParseError { column: self.column(), message })
    }

    fn or(&mut self) -> Result<Cond, ParseError> {
        let mut c = self.and()?;
        while self.keyword("or") {
            self.next();
            c = Cond::Or(Box::new(c), Box::new(self.and()?));
        }
        Ok(c)
    }
    fn and(&mut self) -> Result<Cond, ParseError> {
        let mut c = self.unary()?;
        while self.keyword("and") {
            self.next();
            c = Cond::And(Box::new(c), Box::new(self.unary()?));
        }
        Ok(c)
    }
    fn unary(&mut self) -> Result<Cond, ParseError> {
        if self.keyword("not") {
            self.next();
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if *self.peek() == Tok::Open {
            self.next();
            let c = self.or()?;
            if *self.peek() != Tok::Close {
                return self.error(format!("expected `)`, found {}", self.peek()));
            }
            self.next();
            return Ok(c);
        }
        let a = self.operand()?;
        let op = match self.next() {
            (_, Tok::Op(op)) => op,
            (column, t) => return Err(ParseError { column, message: format!("expected a comparison (>, >=, <, <=, ==, !=), found {t}") }),
        };
        let b = self.operand()?;
        if let (Operand::Num(_), Operand::Num(_)) = (a, b) {
            return self.error("a comparison needs a function on at least one side".into());
        }
        Ok(Cond::Cmp(a, op, b))
    }
    fn operand(&mut self) -> Result<Operand, ParseError> {
        match self.next() {
            (_, Tok::Num(n)) => Ok(Operand::Num(n)),
            (column, Tok::Word(w)) => match w.to_ascii_lowercase().parse::<AggFn>() {
                Ok(f) => Ok(Operand::Fn(f)),
                Err(msg) => Err(ParseError { column, message: msg }),
            },
            (column, t) => Err(ParseError { column, message: format!("expected a function name or a number, found {t}") }),
        }
    }
}

impl Cond {
    /// Parses a condition; the error points at the column where it goes wrong.
    pub fn parse(text: &str) -> Result<Cond, ParseError> {
        let mut p = Parser { toks: tokens(text)?, at: 0 };
        if *p.peek() == Tok::End {
            return p.error("the condition is empty; write e.g. `avg > 90`".into());
        }
        let c = p.or()?;
        if *p.peek() != Tok::End {
            return p.error(format!("expected `and`, `or` or the end, found {}", p.peek()));
        }
        Ok(c)
    }

    /// Whether the condition holds for a window's accumulator.
    pub fn holds(&self, acc: &Acc) -> bool {
        let v = |o: &Operand| match *o {
            Operand::Fn(f) => acc.value(f),
            Operand::Num(n) => n,
        };
        match self {
            Cond::Cmp(a, op, b) => op.holds(v(a), v(b)),
            Cond::And(a, b) => a.holds(acc) && b.holds(acc),
            Cond::Or(a, b) => a.holds(acc) || b.holds(acc),
            Cond::Not(a) => !a.holds(acc),
        }
    }

    /// The functions the condition reads, in first-use order, each once.
    pub fn functions(&self) -> Vec<AggFn> {
        fn walk(c: &Cond, out: &mut Vec<AggFn>) {
            match c {
                Cond::Cmp(a, _, b) => {
                    for o in [a, b] {
                        if let Operand::Fn(f) = o
                            && !out.contains(f)
                        {
                            out.push(*f);
                        }
                    }
                }
                Cond::And(a, b) | Cond::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Cond::Not(a) => walk(a, out),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(values: &[f64]) -> Acc {
        let mut a = Acc::of(values[0]);
        for &v in &values[1..] {
            a.add(v);
        }
        a
    }

    #[test]
    fn parses_precedence_and_parentheses() {
        use Operand::*;
        let c = Cond::parse("avg > 90 or max >= 1e2 and count != 3").unwrap();
        let expected = Cond::Or(
            Box::new(Cond::Cmp(Fn(AggFn::Avg), Cmp::Gt, Num(90.0))),
            Box::new(Cond::And(
                Box::new(Cond::Cmp(Fn(AggFn::Max), Cmp::Ge, Num(100.0))),
                Box::new(Cond::Cmp(Fn(AggFn::Count), Cmp::Ne, Num(3.0))),
            )),
        );
        assert_eq!(c, expected);
        let p = Cond::parse("(avg > 90 OR max >= 1e2) AND NOT count == 3").unwrap();
        assert!(matches!(p, Cond::And(_, ref r) if matches!(**r, Cond::Not(_))));
        assert_eq!(p.functions(), vec![AggFn::Avg, AggFn::Max, AggFn::Count]);
        assert_eq!(Cond::parse("-0.5 < min").unwrap(), Cond::Cmp(Num(-0.5), Cmp::Lt, Fn(AggFn::Min)));
    }

    #[test]
    fn evaluates_on_a_window() {
        let a = acc(&[80.0, 100.0, 96.0]); // avg 92, max 100, min 80, count 3
        let holds = |s: &str| Cond::parse(s).unwrap().holds(&a);
        assert!(holds("avg > 90"));
        assert!(!holds("avg > 92"));
        assert!(holds("avg >= 92"));
        assert!(holds("count == 3 and min < 81"));
        assert!(!holds("count == 3 and min < 80"));
        assert!(holds("max < 50 or min <= 80"));
        assert!(holds("not (max < 50)"));
        assert!(holds("max > avg"));
        // p99 was not computed for this accumulator: NaN, so every comparison is false.
        assert!(!holds("p99 > 0"));
        assert!(!holds("p99 != 0"));
        assert!(holds("not p99 > 0"));
    }

    #[test]
    fn errors_name_the_column() {
        let err = |s: &str| Cond::parse(s).unwrap_err();
        assert_eq!(err("avg > 90 and").column, 13);
        assert!(err("avg > 90 and").message.contains("found the end"), "{}", err("avg > 90 and"));
        let e = err("avgg > 90");
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown function `avgg`"), "{e}");
        assert_eq!(err("avg = 90").message, "`=` is not an operator; compare with `==`");
        assert_eq!(err("avg > 90 && max > 1").column, 10);
        assert_eq!(err("(avg > 90").message, "expected `)`, found the end");
        assert_eq!(err("avg 90").column, 5);
        assert!(err("1 > 2").message.contains("a function on at least one side"));
        assert!(err("").message.contains("empty"));
        assert_eq!(err("avg > 9x").column, 8);
    }
}
