//! Subscription filters over promoted context properties.
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! filter    := "all" | or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" or ")" | predicate
//! predicate := key "exists"
//!            | key op literal
//! op        := "==" | "!=" | "<" | "<=" | ">" | ">="
//!            | "starts-with" | "ends-with" | "contains"
//! key       := [namespace "."] name   e.g. file.name, http.header.content-type, received_at
//! literal   := "string" | 'string' | integer | float | true | false
//! ```
//!
//! A key names a property by `namespace.name`; the name is the part after the
//! last dot, and a bare name is in the empty namespace. Only promoted properties are visible. A comparison with a missing
//! property, or with a value of another type (a string against a number), is
//! false; so is `!=`. Timestamps compare with RFC 3339 string literals.

use std::cmp::Ordering;
use std::fmt;

use crate::context::Context;
use crate::value::Value;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    /// Split `namespace.name` at the last dot; a bare `name` has the empty
    /// namespace (e.g. `received_at`).
    pub fn parse(text: &str) -> Option<Key> {
        let (ns, name) = text.rsplit_once('.').unwrap_or(("", text));
        if name.is_empty() || (ns.is_empty() && text.contains('.')) {
            return None;
        }
        if !name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') {
            return None;
        }
        Some(Key {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}.{}", self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    StartsWith,
    EndsWith,
    Contains,
}

impl CompareOp {
    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::StartsWith => "starts-with",
            CompareOp::EndsWith => "ends-with",
            CompareOp::Contains => "contains",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Exists(Key),
    Compare(Key, CompareOp, Value),
}

impl Predicate {
    /// The property it tests.
    pub fn key(&self) -> &Key {
        match self {
            Predicate::Exists(k) | Predicate::Compare(k, _, _) => k,
        }
    }
}

/// A parsed subscription filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All,
    Pred(Predicate),
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid filter at character {position}: {message}\n  {source_text}\n  {marker}^")]
pub struct FilterError {
    /// 1-based character position of the problem.
    pub position: usize,
    pub message: String,
    source_text: String,
    marker: String,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0, text };
        if p.tokens.is_empty() {
            return Err(p.error(0, "the filter is empty (write `all` to take every message)"));
        }
        let f = p.or()?;
        if let Some(t) = p.tokens.get(p.at) {
            return Err(p.error(t.pos, &format!("unexpected {}", t.kind.describe())));
        }
        Ok(f)
    }

    /// Whether every context this filter matches has `key` promoted: a
    /// predicate on `key` (`exists`, or any comparison, since a comparison
    /// with a missing property is false) in a conjunction, or on each side
    /// of an `or`; never through `not` or `all`.
    pub fn requires(&self, key: &Key) -> bool {
        self.ensures(&|p| p.key() == key)
    }

    /// Whether every context this filter matches satisfies some predicate
    /// of it for which `holds` is true: one in a conjunction, or one on
    /// each side of an `or`; never through `not` or `all`. (A sound
    /// approximation: `false` does not prove that a context without one
    /// can match.)
    pub fn ensures(&self, holds: &dyn Fn(&Predicate) -> bool) -> bool {
        match self {
            Filter::All | Filter::Not(_) => false,
            Filter::Pred(p) => holds(p),
            Filter::And(fs) => fs.iter().any(|f| f.ensures(holds)),
            Filter::Or(fs) => !fs.is_empty() && fs.iter().all(|f| f.ensures(holds)),
        }
    }

    /// Does the message context match? Only promoted properties count.
    pub fn matches(&self, ctx: &Context) -> bool {
        match self {
            Filter::All => true,
            Filter::Not(f) => !f.matches(ctx),
            Filter::And(fs) => fs.iter().all(|f| f.matches(ctx)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(ctx)),
            Filter::Pred(Predicate::Exists(k)) => ctx.promoted(&k.namespace, &k.name).is_some(),
            Filter::Pred(Predicate::Compare(k, op, lit)) => {
                let Some(v) = ctx.promoted(&k.namespace, &k.name) else {
                    return false;
                };
                compare(v, *op, lit)
            }
        }
    }
}

fn compare(v: &Value, op: CompareOp, lit: &Value) -> bool {
    match op {
        CompareOp::StartsWith | CompareOp::EndsWith | CompareOp::Contains => {
            let (Value::String(s), Value::String(l)) = (v, lit) else {
                return false;
            };
            match op {
                CompareOp::StartsWith => s.starts_with(l.as_str()),
                CompareOp::EndsWith => s.ends_with(l.as_str()),
                _ => s.contains(l.as_str()),
            }
        }
        _ => {
            let Some(ord) = v.compare(lit) else {
                return false;
            };
            match op {
                CompareOp::Eq => ord == Ordering::Equal,
                CompareOp::Ne => ord != Ordering::Equal,
                CompareOp::Lt => ord == Ordering::Less,
                CompareOp::Le => ord != Ordering::Greater,
                CompareOp::Gt => ord == Ordering::Greater,
                CompareOp::Ge => ord != Ordering::Less,
                _ => false,
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(f: &mut fmt::Formatter<'_>, fs: &[Filter], sep: &str) -> fmt::Result {
            for (i, x) in fs.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                match x {
                    Filter::And(_) | Filter::Or(_) => write!(f, "({x})")?,
                    _ => write!(f, "{x}")?,
                }
            }
            Ok(())
        }
        match self {
            Filter::All => f.write_str("all"),
            Filter::Pred(Predicate::Exists(k)) => write!(f, "{k} exists"),
            Filter::Pred(Predicate::Compare(k, op, v)) => {
                let lit = match v {
                    Value::String(s) => quote(s),
                    other => other.to_text(),
                };
                write!(f, "{k} {} {lit}", op.as_str())
            }
            Filter::Not(x) => match **x {
                Filter::Pred(_) | Filter::All | Filter::Not(_) => write!(f, "not {x}"),
                _ => write!(f, "not ({x})"),
            },
            Filter::And(fs) => join(f, fs, "and"),
            Filter::Or(fs) => join(f, fs, "or"),
        }
    }
}

/// A string literal the lexer reads back exactly: only `\\`, `\"`, `\n`,
/// `\r` and `\t` are escaped; every other character is written as it is.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    Word(String),
    Str(String),
    Num(Value),
    Op(CompareOp),
    LParen,
    RParen,
}

impl TokKind {
    fn describe(&self) -> String {
        match self {
            TokKind::Word(w) => format!("`{w}`"),
            TokKind::Str(s) => format!("string {s:?}"),
            TokKind::Num(n) => format!("number {}", n.to_text()),
            TokKind::Op(op) => format!("`{}`", op.as_str()),
            TokKind::LParen => "`(`".into(),
            TokKind::RParen => "`)`".into(),
        }
    }
}

struct Token {
    kind: TokKind,
    /// 0-based character index in the source.
    pos: usize,
}

fn make_error(text: &str, pos: usize, message: &str) -> FilterError {
    FilterError {
        position: pos + 1,
        message: message.to_string(),
        source_text: text.to_string(),
        marker: " ".repeat(pos),
    }
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = match c {
            '(' => {
                i += 1;
                TokKind::LParen
            }
            ')' => {
                i += 1;
                TokKind::RParen
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(make_error(text, start, "this string is never closed")),
                        Some('\\') => {
                            let esc = chars.get(i + 1).copied();
                            s.push(match esc {
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                Some('\'') => '\'',
                                _ => {
                                    return Err(make_error(
                                        text,
                                        i,
                                        "unknown escape (use \\\\, \\\", \\', \\n, \\r or \\t)",
                                    ));
                                }
                            });
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                TokKind::Str(s)
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let (op, len) = match two.as_str() {
                    "==" => (CompareOp::Eq, 2),
                    "!=" => (CompareOp::Ne, 2),
                    "<=" => (CompareOp::Le, 2),
                    ">=" => (CompareOp::Ge, 2),
                    _ if c == '<' => (CompareOp::Lt, 1),
                    _ if c == '>' => (CompareOp::Gt, 1),
                    _ if c == '=' => return Err(make_error(text, i, "use `==` to compare for equality")),
                    _ => return Err(make_error(text, i, "`!` is not an operator here (use `!=` or `not`)")),
                };
                i += len;
                TokKind::Op(op)
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+' | '_'))
                {
                    // Stop at a `-` that is not an exponent sign.
                    if matches!(chars[i], '-' | '+') && !matches!(chars[i - 1], 'e' | 'E') {
                        break;
                    }
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let s = s.replace('_', "");
                if let Ok(n) = s.parse::<i64>() {
                    TokKind::Num(Value::Int(n))
                } else if let Ok(x) = s.parse::<f64>() {
                    if !x.is_finite() {
                        return Err(make_error(text, start, &format!("`{s}` is out of range for a number")));
                    }
                    TokKind::Num(Value::Float(x))
                } else {
                    return Err(make_error(text, start, &format!("`{s}` is not a number")));
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | ':' | '/'))
                {
                    i += 1;
                }
                TokKind::Word(chars[start..i].iter().collect())
            }
            other => return Err(make_error(text, i, &format!("unexpected character `{other}`"))),
        };
        out.push(Token { kind, pos: start });
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, pos: usize, msg: &str) -> FilterError {
        make_error(self.text, pos, msg)
    }

    fn end_pos(&self) -> usize {
        self.text.chars().count()
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token { kind: TokKind::Word(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut items = vec![self.and()?];
        while self.peek_word("or") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Filter::Or(items)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut items = vec![self.unary()?];
        while self.peek_word("and") {
            self.at += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Filter::And(items)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        let Some(tok) = self.tokens.get(self.at) else {
            return Err(self.error(self.end_pos(), "the filter ends too early: expected a condition"));
        };
        let pos = tok.pos;
        match &tok.kind {
            TokKind::Word(w) if w.eq_ignore_ascii_case("not") => {
                self.at += 1;
                Ok(Filter::Not(Box::new(self.unary()?)))
            }
            TokKind::Word(w) if w.eq_ignore_ascii_case("all") => {
                self.at += 1;
                Ok(Filter::All)
            }
            TokKind::LParen => {
                self.at += 1;
                let inner = self.or()?;
                match self.tokens.get(self.at) {
                    Some(Token {
                        kind: TokKind::RParen, ..
                    }) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    Some(t) => Err(self.error(t.pos, &format!("expected `)`, found {}", t.kind.describe()))),
                    None => Err(self.error(pos, "this `(` is never closed")),
                }
            }
            TokKind::Word(w) => {
                let key = Key::parse(w).ok_or_else(|| {
                    self.error(
                        pos,
                        &format!("`{w}` is not a property key: write namespace.name, e.g. file.name"),
                    )
                })?;
                self.at += 1;
                self.predicate(key, pos)
            }
            other => Err(self.error(pos, &format!("expected a property key, found {}", other.describe()))),
        }
    }

    fn predicate(&mut self, key: Key, key_pos: usize) -> Result<Filter, FilterError> {
        let Some(tok) = self.tokens.get(self.at) else {
            return Err(self.error(
                self.end_pos(),
                &format!("`{key}` needs an operator after it (==, !=, <, <=, >, >=, starts-with, ends-with, contains, exists)"),
            ));
        };
        let op = match &tok.kind {
            TokKind::Op(op) => *op,
            TokKind::Word(w) if w.eq_ignore_ascii_case("exists") => {
                self.at += 1;
                return Ok(Filter::Pred(Predicate::Exists(key)));
            }
            TokKind::Word(w) if w.eq_ignore_ascii_case("starts-with") => CompareOp::StartsWith,
            TokKind::Word(w) if w.eq_ignore_ascii_case("ends-with") => CompareOp::EndsWith,
            TokKind::Word(w) if w.eq_ignore_ascii_case("contains") => CompareOp::Contains,
            other => {
                return Err(self.error(
                    tok.pos,
                    &format!("expected an operator after `{key}`, found {}", other.describe()),
                ));
            }
        };
        let op_pos = tok.pos;
        self.at += 1;
        let Some(lit) = self.tokens.get(self.at) else {
            return Err(self.error(
                self.end_pos(),
                &format!("`{key} {}` needs a value to compare with", op.as_str()),
            ));
        };
        let value = match &lit.kind {
            TokKind::Str(s) => Value::String(s.clone()),
            TokKind::Num(n) => n.clone(),
            TokKind::Word(w) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            TokKind::Word(w) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            TokKind::Word(w) => {
                return Err(self.error(lit.pos, &format!("`{w}` is not a value: quote strings, e.g. \"{w}\"")));
            }
            other => return Err(self.error(lit.pos, &format!("expected a value, found {}", other.describe()))),
        };
        if matches!(op, CompareOp::StartsWith | CompareOp::EndsWith | CompareOp::Contains)
            && !matches!(value, Value::String(_))
        {
            return Err(self.error(op_pos, &format!("`{}` compares with a string value", op.as_str())));
        }
        let _ = key_pos;
        self.at += 1;
        Ok(Filter::Pred(Predicate::Compare(key, op, value)))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn requires_a_property_only_when_every_match_has_it() {
        let key = Key::parse("order.id").unwrap();
        let requires = |f: &str| Filter::parse(f).unwrap().requires(&key);
        for yes in [
            "order.id exists",
            "order.id == \"A1\"",
            "order.id != \"A1\"",
            "receive.port == \"in\" and order.id starts-with \"A\"",
            "(order.id exists and a == 1) or order.id > 5",
            "x == 1 and (order.id == 1 or order.id == 2)",
        ] {
            assert!(requires(yes), "{yes}");
        }
        for no in [
            "all",
            "receive.port == \"in\"",
            "order.id exists or x == 1",
            "not order.id exists",
            "not (order.id != 5)",
            "order.idx exists",
            "order.id.x exists",
        ] {
            assert!(!requires(no), "{no}");
        }
    }

    use super::*;

    fn ctx() -> Context {
        let mut c = Context::new();
        c.promote("file", "name", "orders-1.xml");
        c.promote("file", "size", 1200i64);
        c.promote("receive", "port", "in");
        c.promote("app", "ratio", 0.5f64);
        c.promote("app", "urgent", true);
        c.promote(
            "app",
            "when",
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        );
        c.write("app", "hidden", "x");
        c.promote(
            "",
            "received_at",
            time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        );
        c
    }

    fn m(f: &str) -> bool {
        Filter::parse(f).unwrap_or_else(|e| panic!("{e}")).matches(&ctx())
    }

    #[test]
    fn operators() {
        assert!(m(r#"receive.port == "in""#));
        assert!(!m(r#"receive.port != "in""#));
        assert!(m(
            "file.size > 1000 and file.size <= 1200 and file.size >= 1200 and file.size < 1201"
        ));
        assert!(m("file.size == 1200.0"));
        assert!(m("app.ratio < 1"));
        assert!(m(
            r#"file.name ends-with ".xml" and file.name starts-with 'orders' and file.name contains "-1""#
        ));
        assert!(m("file.name exists and not app.missing exists"));
        assert!(m("app.urgent == true"));
        assert!(m(r#"app.when > "2023-01-01T00:00:00Z""#));
        assert!(m("all"));
        assert!(m(r#"received_at > "2026-01-01T00:00:00Z" and received_at exists"#));
    }

    #[test]
    fn only_promoted_properties_route() {
        assert!(!m("app.hidden exists"));
        assert!(!m(r#"app.hidden == "x""#));
    }

    #[test]
    fn mismatched_types_and_missing_properties_are_false() {
        assert!(!m("file.name == 3"));
        assert!(!m("file.name != 3"));
        assert!(!m(r#"app.missing != "x""#));
    }

    #[test]
    fn precedence_and_grouping() {
        assert!(m(r#"receive.port == "x" or receive.port == "in" and file.size > 1"#));
        assert!(!m(
            r#"(receive.port == "x" or receive.port == "in") and file.size > 5000"#
        ));
        assert!(m(r#"NOT (receive.port == "x")"#));
    }

    #[test]
    fn display_round_trips() {
        for f in [
            r#"receive.port == "in" and (file.size > 1 or not app.x exists)"#,
            r#"a.b starts-with "q\"uote" or c.d != -2.5"#,
            "all",
        ] {
            let parsed = Filter::parse(f).unwrap();
            assert_eq!(Filter::parse(&parsed.to_string()).unwrap(), parsed, "{parsed}");
        }
    }

    proptest::proptest! {
        /// What a filter prints parses back to the same filter (the box
        /// stores filters as text).
        #[test]
        fn any_string_literal_round_trips(lit in proptest::prelude::any::<String>(), x in -1e300f64..1e300) {
            let f = Filter::And(vec![
                Filter::Pred(Predicate::Compare(Key::parse("a.b").unwrap(), CompareOp::Eq, Value::String(lit))),
                Filter::Pred(Predicate::Compare(Key::parse("c").unwrap(), CompareOp::Lt, Value::Float(x))),
            ]);
            let text = f.to_string();
            proptest::prop_assert_eq!(Filter::parse(&text).unwrap(), f, "{}", text);
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = Filter::parse("a.b < 1e999").unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = Filter::parse(r#"file.name = "a""#).unwrap_err();
        assert_eq!(e.position, 11);
        assert!(e.message.contains("=="));
        let e = Filter::parse("file.name ==").unwrap_err();
        assert!(e.message.contains("needs a value"), "{e}");
        let e = Filter::parse(".name == \"a\"").unwrap_err();
        assert!(e.message.contains("unexpected character"), "{e}");
        let e = Filter::parse("a. == \"a\"").unwrap_err();
        assert!(e.message.contains("namespace.name"), "{e}");
        let e = Filter::parse("(a.b exists").unwrap_err();
        assert!(e.message.contains("never closed"), "{e}");
        let e = Filter::parse("a.b == ACME").unwrap_err();
        assert!(e.message.contains("quote strings"), "{e}");
        assert!(Filter::parse("").is_err());
        assert!(Filter::parse("a.b exists c.d exists").is_err());
        assert!(Filter::parse("a.b starts-with 3").is_err());
    }
}
