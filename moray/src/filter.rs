//! The LDAP-style filter language of `findObjects`, `updateObjects` and `deleteMany`.
//!
//! ```text
//! filter  = "(" ( "&" filter+ | "|" filter+ | "!" filter | item ) ")"
//! item    = attr "=" "*"            presence
//!         | attr "=" value          equality
//!         | attr "=" [v] "*" ...    substrings (at least one unescaped "*")
//!         | attr ">=" value | attr "<=" value
//! attr    = 1*( ALPHA / DIGIT / "_" / "-" / "." )
//! value   = any characters; "(", ")", "*" and "\" are written "\(", "\)", "\*", "\\"
//! ```
//!
//! Escaping is a backslash before the character (as the original service does), not LDAP's
//! `\XX` hex form. Whitespace is allowed between the parts of `&`/`|` lists and around the
//! whole filter; inside a value it is part of the value.
//!
//! [`Filter`]'s `Display` renders a filter that parses back to the same value, so callers can
//! build filters from untrusted values without worrying about quoting:
//!
//! ```
//! use moray::filter::Filter;
//! let f = Filter::and(vec![
//!     Filter::eq("owner", "8f1c"),
//!     Filter::eq("name", "a(b)*c"),
//! ]);
//! assert_eq!(f.to_string(), r"(&(owner=8f1c)(name=a\(b\)\*c))");
//! assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
//! ```

use std::fmt;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// All must match (`(&...)`).
    And(Vec<Filter>),
    /// At least one must match (`(|...)`).
    Or(Vec<Filter>),
    /// Must not match (`(!...)`).
    Not(Box<Filter>),
    /// `(attr=value)`.
    Equal {
        /// Field.
        attr: String,
        /// Value (unescaped).
        value: String,
    },
    /// `(attr>=value)`.
    GreaterOrEqual {
        /// Field.
        attr: String,
        /// Value (unescaped).
        value: String,
    },
    /// `(attr<=value)`.
    LessOrEqual {
        /// Field.
        attr: String,
        /// Value (unescaped).
        value: String,
    },
    /// `(attr=*)`: the field has a value.
    Present {
        /// Field.
        attr: String,
    },
    /// `(attr=initial*any1*any2*final)`; at least one part is non-empty.
    Substring {
        /// Field.
        attr: String,
        /// Required prefix.
        initial: Option<String>,
        /// Required inner pieces, in order.
        any: Vec<String>,
        /// Required suffix.
        fin: Option<String>,
    },
}

/// Why a filter did not parse: the message names the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at byte {pos}: {message}")]
pub struct ParseError {
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was expected.
    pub message: String,
}

/// Longest filter accepted, in bytes (a guard against absurd inputs).
pub const MAX_FILTER_LEN: usize = 64 * 1024;
/// Deepest nesting accepted (a guard against stack exhaustion).
pub const MAX_DEPTH: usize = 64;

impl Filter {
    /// `(attr=value)`.
    pub fn eq(attr: impl Into<String>, value: impl Into<String>) -> Filter {
        Filter::Equal {
            attr: attr.into(),
            value: value.into(),
        }
    }

    /// `(attr>=value)`.
    pub fn ge(attr: impl Into<String>, value: impl Into<String>) -> Filter {
        Filter::GreaterOrEqual {
            attr: attr.into(),
            value: value.into(),
        }
    }

    /// `(attr<=value)`.
    pub fn le(attr: impl Into<String>, value: impl Into<String>) -> Filter {
        Filter::LessOrEqual {
            attr: attr.into(),
            value: value.into(),
        }
    }

    /// `(attr=*)`.
    pub fn present(attr: impl Into<String>) -> Filter {
        Filter::Present { attr: attr.into() }
    }

    /// `(&...)`.
    pub fn and(filters: Vec<Filter>) -> Filter {
        Filter::And(filters)
    }

    /// `(|...)`.
    pub fn or(filters: Vec<Filter>) -> Filter {
        Filter::Or(filters)
    }

    /// `(!f)`.
    pub fn negate(f: Filter) -> Filter {
        Filter::Not(Box::new(f))
    }

    /// Parses a filter string.
    ///
    /// # Errors
    /// [`ParseError`] naming the first byte that does not fit the grammar.
    pub fn parse(s: &str) -> Result<Filter, ParseError> {
        if s.len() > MAX_FILTER_LEN {
            return Err(ParseError {
                pos: MAX_FILTER_LEN,
                message: format!("filter longer than {MAX_FILTER_LEN} bytes"),
            });
        }
        let mut p = Parser {
            s: s.as_bytes(),
            src: s,
            pos: 0,
        };
        p.skip_ws();
        let f = p.filter(0)?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(p.err("unexpected text after the filter"));
        }
        Ok(f)
    }

    /// Every attribute the filter mentions, in order of appearance (with repeats).
    pub fn attributes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_attrs(&mut out);
        out
    }

    fn collect_attrs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(v) | Filter::Or(v) => v.iter().for_each(|f| f.collect_attrs(out)),
            Filter::Not(f) => f.collect_attrs(out),
            Filter::Equal { attr, .. }
            | Filter::GreaterOrEqual { attr, .. }
            | Filter::LessOrEqual { attr, .. }
            | Filter::Present { attr }
            | Filter::Substring { attr, .. } => out.push(attr),
        }
    }
}

/// Escapes a value for use inside a filter (`(`, `)`, `*`, `\` get a backslash).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '(' | ')' | '*' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn is_attr_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(v) => {
                f.write_str("(&")?;
                for x in v {
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
            Filter::Or(v) => {
                f.write_str("(|")?;
                for x in v {
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
            Filter::Not(x) => write!(f, "(!{x})"),
            Filter::Equal { attr, value } => write!(f, "({attr}={})", escape(value)),
            Filter::GreaterOrEqual { attr, value } => write!(f, "({attr}>={})", escape(value)),
            Filter::LessOrEqual { attr, value } => write!(f, "({attr}<={})", escape(value)),
            Filter::Present { attr } => write!(f, "({attr}=*)"),
            Filter::Substring {
                attr,
                initial,
                any,
                fin,
            } => {
                write!(f, "({attr}=")?;
                if let Some(i) = initial {
                    f.write_str(&escape(i))?;
                }
                f.write_str("*")?;
                for a in any {
                    write!(f, "{}*", escape(a))?;
                }
                if let Some(x) = fin {
                    f.write_str(&escape(x))?;
                }
                f.write_str(")")
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

/// One piece of a value: literal text, or an unescaped `*`.
enum Piece {
    Text(String),
    Star,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ParseError {
        ParseError {
            pos: self.pos,
            message: message.to_owned(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", b as char)))
        }
    }

    fn filter(&mut self, depth: usize) -> Result<Filter, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH}")));
        }
        self.expect(b'(')?;
        let f = match self.peek() {
            Some(b'&') => {
                self.pos += 1;
                Filter::And(self.list(depth)?)
            }
            Some(b'|') => {
                self.pos += 1;
                Filter::Or(self.list(depth)?)
            }
            Some(b'!') => {
                self.pos += 1;
                self.skip_ws();
                let inner = self.filter(depth + 1)?;
                self.skip_ws();
                Filter::Not(Box::new(inner))
            }
            _ => self.item()?,
        };
        self.expect(b')')?;
        Ok(f)
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Filter>, ParseError> {
        let mut v = Vec::new();
        self.skip_ws();
        while self.peek() == Some(b'(') {
            v.push(self.filter(depth + 1)?);
            self.skip_ws();
        }
        if v.is_empty() {
            return Err(self.err("'&' and '|' need at least one filter"));
        }
        Ok(v)
    }

    fn item(&mut self) -> Result<Filter, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(is_attr_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected an attribute name (letters, digits, '_', '-', '.')"));
        }
        let attr = self.src[start..self.pos].to_owned();
        let op = match (self.peek(), self.s.get(self.pos + 1).copied()) {
            (Some(b'='), _) => {
                self.pos += 1;
                b'='
            }
            (Some(b'>'), Some(b'=')) => {
                self.pos += 2;
                b'>'
            }
            (Some(b'<'), Some(b'=')) => {
                self.pos += 2;
                b'<'
            }
            (Some(b'~'), Some(b'=')) => {
                return Err(self.err("approximate match (~=) is not supported"));
            }
            (Some(b':'), _) => {
                return Err(self.err("extensible matches are not supported"));
            }
            _ => return Err(self.err("expected '=', '>=' or '<='")),
        };
        let pieces = self.value()?;
        let stars = pieces.iter().filter(|p| matches!(p, Piece::Star)).count();
        match op {
            b'=' if stars == 0 => Ok(Filter::Equal {
                attr,
                value: join_text(pieces),
            }),
            b'=' if stars == 1 && pieces.len() == 1 => Ok(Filter::Present { attr }),
            b'=' => Ok(substring(attr, pieces)),
            _ if stars > 0 => Err(self.err("'*' is only allowed with '=' (escape it as \\*)")),
            b'>' => Ok(Filter::GreaterOrEqual {
                attr,
                value: join_text(pieces),
            }),
            _ => Ok(Filter::LessOrEqual {
                attr,
                value: join_text(pieces),
            }),
        }
    }

    /// Reads a value up to the closing ')' (not consumed), unescaping as it goes.
    fn value(&mut self) -> Result<Vec<Piece>, ParseError> {
        let mut pieces = Vec::new();
        let mut cur = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated value: expected ')'")),
                Some(b')') => break,
                Some(b'(') => return Err(self.err("unescaped '(' in a value (write \\()")),
                Some(b'*') => {
                    self.pos += 1;
                    if !cur.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut cur)));
                    }
                    pieces.push(Piece::Star);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(c) = self.src[self.pos..].chars().next() else {
                        return Err(self.err("a backslash must be followed by a character"));
                    };
                    cur.push(c);
                    self.pos += c.len_utf8();
                }
                Some(_) => {
                    let c = self.src[self.pos..]
                        .chars()
                        .next()
                        .expect("pos is on a char boundary inside the string");
                    cur.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        if !cur.is_empty() {
            pieces.push(Piece::Text(cur));
        }
        Ok(pieces)
    }
}

fn join_text(pieces: Vec<Piece>) -> String {
    pieces
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => t,
            Piece::Star => String::new(),
        })
        .collect()
}

/// Builds a substring filter from pieces with at least one star and at least one text.
fn substring(attr: String, pieces: Vec<Piece>) -> Filter {
    // Split into the texts between stars: n stars give n+1 (possibly empty) segments.
    let mut segs: Vec<String> = vec![String::new()];
    for p in pieces {
        match p {
            Piece::Star => segs.push(String::new()),
            Piece::Text(t) => segs.last_mut().expect("never empty").push_str(&t),
        }
    }
    let fin = segs.pop().filter(|s| !s.is_empty());
    let mut it = segs.into_iter();
    let initial = it.next().filter(|s| !s.is_empty());
    let any: Vec<String> = it.filter(|s| !s.is_empty()).collect();
    if initial.is_none() && any.is_empty() && fin.is_none() {
        // Only stars, e.g. "**": as permissive as presence.
        return Filter::Present { attr };
    }
    Filter::Substring {
        attr,
        initial,
        any,
        fin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Filter {
        Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn table_of_valid_filters() {
        let cases: Vec<(&str, Filter)> = vec![
            ("(a=b)", Filter::eq("a", "b")),
            ("(a=)", Filter::eq("a", "")),
            ("(a>=10)", Filter::ge("a", "10")),
            ("(a<=10)", Filter::le("a", "10")),
            ("(a=*)", Filter::present("a")),
            ("(a=**)", Filter::present("a")),
            (
                "(a=x*)",
                Filter::Substring {
                    attr: "a".into(),
                    initial: Some("x".into()),
                    any: vec![],
                    fin: None,
                },
            ),
            (
                "(a=*x*y*z)",
                Filter::Substring {
                    attr: "a".into(),
                    initial: None,
                    any: vec!["x".into(), "y".into()],
                    fin: Some("z".into()),
                },
            ),
            (r"(a=\*)", Filter::eq("a", "*")),
            (r"(a=\(\)\\)", Filter::eq("a", r"()\")),
            (r"(a=\x)", Filter::eq("a", "x")),
            ("(a=with space)", Filter::eq("a", "with space")),
            ("(a=é漢)", Filter::eq("a", "é漢")),
            (
                " (& (a=1) (b=2) ) ",
                Filter::and(vec![Filter::eq("a", "1"), Filter::eq("b", "2")]),
            ),
            (
                "(|(a=1)(!(b=2)))",
                Filter::or(vec![
                    Filter::eq("a", "1"),
                    Filter::negate(Filter::eq("b", "2")),
                ]),
            ),
            ("(_id>=5)", Filter::ge("_id", "5")),
            ("(a.b-c=1)", Filter::eq("a.b-c", "1")),
            ("(a=b=c)", Filter::eq("a", "b=c")),
        ];
        for (s, want) in cases {
            assert_eq!(p(s), want, "{s}");
        }
    }

    #[test]
    fn table_of_invalid_filters() {
        for s in [
            "",
            "a=b",
            "(a=b",
            "(a=b))",
            "((a=b))",
            "(=b)",
            "(a)",
            "(&)",
            "(|)",
            "(!)",
            "(a~=b)",
            "(a:caseIgnoreMatch:=b)",
            "(a>=b*)",
            "(a<=*)",
            "(a=b(c)",
            "(a=b\\",
            "(a b=c)",
            "(a=b)(c=d)",
            "(!(a=b)(c=d))",
        ] {
            assert!(Filter::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "(!".repeat(MAX_DEPTH + 5) + "(a=b)" + &")".repeat(MAX_DEPTH + 5);
        assert!(Filter::parse(&deep).is_err());
        let ok = "(!".repeat(10) + "(a=b)" + &")".repeat(10);
        assert!(Filter::parse(&ok).is_ok());
    }

    fn attr() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_.-]{0,12}"
    }

    fn text() -> impl Strategy<Value = String> {
        // Includes every special character and some non-ASCII.
        proptest::collection::vec(
            prop_oneof![
                Just('('),
                Just(')'),
                Just('*'),
                Just('\\'),
                Just(' '),
                Just('='),
                Just('é'),
                any::<char>(),
                "[a-z0-9]".prop_map(|s| s.chars().next().unwrap_or('a')),
            ],
            0..12,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn nonempty_text() -> impl Strategy<Value = String> {
        text().prop_filter("non-empty", |s| !s.is_empty())
    }

    fn leaf() -> impl Strategy<Value = Filter> {
        prop_oneof![
            (attr(), text()).prop_map(|(a, v)| Filter::eq(a, v)),
            (attr(), text()).prop_map(|(a, v)| Filter::ge(a, v)),
            (attr(), text()).prop_map(|(a, v)| Filter::le(a, v)),
            attr().prop_map(Filter::present),
            (
                attr(),
                proptest::option::of(nonempty_text()),
                proptest::collection::vec(nonempty_text(), 0..3),
                proptest::option::of(nonempty_text())
            )
                .prop_filter("a substring needs a piece", |(_, i, a, f)| {
                    i.is_some() || !a.is_empty() || f.is_some()
                })
                .prop_map(|(attr, initial, any, fin)| Filter::Substring {
                    attr,
                    initial,
                    any,
                    fin
                }),
        ]
    }

    fn filter() -> impl Strategy<Value = Filter> {
        leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
                proptest::collection::vec(inner.clone(), 1..4).prop_map(Filter::Or),
                inner.prop_map(Filter::negate),
            ]
        })
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(f in filter()) {
            let s = f.to_string();
            prop_assert_eq!(Filter::parse(&s).map_err(|e| e.to_string()), Ok(f));
        }

        #[test]
        fn never_panics_on_arbitrary_text(s in ".{0,64}") {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn never_panics_on_filter_like_text(s in "[()&|!=<>*\\\\a-c ]{0,48}") {
            if let Ok(f) = Filter::parse(&s) {
                // Whatever parses renders to something that parses to the same thing.
                prop_assert_eq!(Filter::parse(&f.to_string()).ok(), Some(f));
            }
        }

        #[test]
        fn escape_makes_any_value_an_equality(v in text()) {
            let s = format!("(a={})", escape(&v));
            prop_assert_eq!(Filter::parse(&s).ok(), Some(Filter::eq("a", v)));
        }
    }
}
