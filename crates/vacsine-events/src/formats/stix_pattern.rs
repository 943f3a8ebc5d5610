//! STIX 2.1 patterning: a parser and evaluator for the subset that can be evaluated against
//! the observables of one event, and a precise "not evaluable" report for the rest.
//!
//! Evaluated: comparisons `=` over `ipv4-addr:value`, `ipv6-addr:value`, `domain-name:value`,
//! `url:value`, `file:hashes.MD5` / `'SHA-1'` / `'SHA-256'` / `'SHA-512'`, and `ISSUBSET` of a
//! CIDR over the address types; joined by `AND` / `OR` (and parentheses) inside brackets, and
//! observation expressions joined by `AND` / `OR` (and parentheses).
//!
//! Not evaluated, reported with the reason (never guessed): qualifiers (`WITHIN`, `REPEATS`,
//! `START … STOP`), `FOLLOWEDBY`, `NOT`, the operators `!=`, `<`, `>`, `<=`, `>=`, `IN`,
//! `LIKE`, `MATCHES`, `ISSUPERSET`, `EXISTS`, any other object type or property, and
//! non-string constants.
//!
//! Semantics: an observation expression `[C]` holds when one observed object satisfies `C`;
//! each observable of the event is one object, except the hashes, which together describe the
//! event's one file. Observation expressions joined by `AND`/`OR` are evaluated over the same
//! event.
//!
//! Bounds: at most [`MAX_PATTERN_COMPARISONS`] comparisons and [`MAX_PATTERN_DEPTH`] levels of
//! brackets and parentheses; recursion is only per nesting level, so a pattern cannot exhaust
//! the stack, and sequences of `OR`/`AND` are read in loops into flat lists.

use std::fmt;

use crate::limits::{MAX_PATTERN_COMPARISONS, MAX_PATTERN_DEPTH};
use crate::observable::{quote, Cidr, Domain, HashAlgo, Observable, Url};

/// Why a pattern is refused: a syntax error, a bound, or a construct that is not evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PatternError {
    /// 1-based byte column in the pattern.
    pub column: usize,
    /// Well-formed STIX this evaluator does not evaluate (as opposed to a syntax error).
    pub not_evaluable: bool,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.not_evaluable {
            "not evaluable"
        } else {
            "invalid pattern"
        };
        write!(f, "{what} at column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBracket,
    RBracket,
    LParen,
    RParen,
    Colon,
    Dot,
    Op(&'static str),
    Word(String),
    Str(String),
    /// A constant this evaluator does not compare (number, boolean, b'', h'', t'').
    Other(String),
    End,
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> PatternError {
        PatternError {
            column: at + 1,
            not_evaluable: false,
            message: msg.into(),
        }
    }

    fn next(&mut self) -> Result<(usize, Tok), PatternError> {
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&c) = self.b.get(self.pos) else {
            return Ok((start, Tok::End));
        };
        let one = |t| (start, t);
        self.pos += 1;
        Ok(match c {
            b'[' => one(Tok::LBracket),
            b']' => one(Tok::RBracket),
            b'(' => one(Tok::LParen),
            b')' => one(Tok::RParen),
            b':' => one(Tok::Colon),
            b'.' => one(Tok::Dot),
            b'=' => one(Tok::Op("=")),
            b'!' if self.b.get(self.pos) == Some(&b'=') => {
                self.pos += 1;
                one(Tok::Op("!="))
            }
            b'<' | b'>' => {
                let eq = self.b.get(self.pos) == Some(&b'=');
                if eq {
                    self.pos += 1;
                }
                one(Tok::Op(match (c, eq) {
                    (b'<', false) => "<",
                    (b'<', true) => "<=",
                    (_, false) => ">",
                    _ => ">=",
                }))
            }
            b'\'' => one(Tok::Str(self.string(start)?)),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while self.pos < self.b.len()
                    && (self.b[self.pos].is_ascii_alphanumeric()
                        || matches!(self.b[self.pos], b'_' | b'-'))
                {
                    self.pos += 1;
                }
                let w = &self.s[start..self.pos];
                if matches!(w, "b" | "h" | "t") && self.b.get(self.pos) == Some(&b'\'') {
                    self.pos += 1;
                    let v = self.string(self.pos - 1)?;
                    one(Tok::Other(format!("{w}'{v}'")))
                } else if w == "true" || w == "false" {
                    one(Tok::Other(w.to_string()))
                } else {
                    one(Tok::Word(w.to_string()))
                }
            }
            c if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                while self.pos < self.b.len()
                    && (self.b[self.pos].is_ascii_digit() || self.b[self.pos] == b'.')
                {
                    self.pos += 1;
                }
                one(Tok::Other(self.s[start..self.pos].to_string()))
            }
            _ => {
                let ch = self.s[start..].chars().next().unwrap_or('?');
                self.pos = start + ch.len_utf8();
                return Err(self.err(start, format!("unexpected character {ch:?}")));
            }
        })
    }

    /// A quoted string; `pos` is just past the opening quote. `\'` and `\\` are the escapes.
    fn string(&mut self, open: usize) -> Result<String, PatternError> {
        let mut v = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\'' => {
                    self.pos += i + 1;
                    return Ok(v);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('\'' | '\\'))) => v.push(e),
                    _ => {
                        return Err(self.err(
                            self.pos + i,
                            "bad escape in string (only \\' and \\\\ are allowed)",
                        ))
                    }
                },
                c => v.push(c),
            }
        }
        Err(self.err(open, "string not closed (expected ')"))
    }
}

/// One evaluable comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// `path = 'value'`: the observed object equals this observable.
    Equals(Observable),
    /// `ipvN-addr:value ISSUBSET 'cidr'`: the observed address (or network) is inside.
    IsSubset(Cidr),
}

/// A boolean tree of comparisons (inside brackets) or of observation expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Comparison(Comparison),
    /// One observation expression `[…]`: one observed object satisfies the tree.
    Observation(Box<Node>),
    All(Vec<Node>),
    Any(Vec<Node>),
}

/// A parsed, evaluable pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    root: Node,
    comparisons: usize,
}

struct Parser<'a> {
    lx: Lexer<'a>,
    tok: Tok,
    at: usize,
    comparisons: usize,
}

fn not_evaluable(at: usize, msg: impl Into<String>) -> PatternError {
    PatternError {
        column: at + 1,
        not_evaluable: true,
        message: msg.into(),
    }
}

impl<'a> Parser<'a> {
    fn bump(&mut self) -> Result<(), PatternError> {
        let (at, t) = self.lx.next()?;
        self.at = at;
        self.tok = t;
        Ok(())
    }

    fn syntax(&self, msg: impl Into<String>) -> PatternError {
        self.lx.err(self.at, msg)
    }

    fn word_is(&self, w: &str) -> bool {
        matches!(&self.tok, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }

    fn describe(&self) -> String {
        match &self.tok {
            Tok::End => "the end of the pattern".into(),
            Tok::Word(w) => format!("{w:?}"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Other(s) => quote(s),
            Tok::Op(o) => format!("{o:?}"),
            t => format!("{t:?}"),
        }
    }

    fn depth_check(&self, depth: usize) -> Result<(), PatternError> {
        if depth > MAX_PATTERN_DEPTH {
            return Err(self.syntax(format!(
                "nested more than {MAX_PATTERN_DEPTH} levels deep (refused)"
            )));
        }
        Ok(())
    }

    /// Qualifiers after an observation expression are not evaluated.
    fn refuse_qualifier(&self) -> Result<(), PatternError> {
        for q in ["WITHIN", "REPEATS", "START", "STOP"] {
            if self.word_is(q) {
                return Err(not_evaluable(
                    self.at,
                    format!("qualifier {q} (timing and repetition of observations are not evaluated on single events)"),
                ));
            }
        }
        Ok(())
    }

    // observation level: OR of AND of primaries; FOLLOWEDBY refused.
    fn obs_or(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut any = vec![self.obs_and(depth)?];
        loop {
            if self.word_is("OR") {
                self.bump()?;
                any.push(self.obs_and(depth)?);
            } else if self.word_is("FOLLOWEDBY") {
                return Err(not_evaluable(
                    self.at,
                    "FOLLOWEDBY (the order of observations over time is not evaluated on single events)",
                ));
            } else {
                break;
            }
        }
        Ok(if any.len() == 1 {
            any.pop().unwrap_or(Node::Any(vec![]))
        } else {
            Node::Any(any)
        })
    }

    fn obs_and(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut all = vec![self.obs_primary(depth)?];
        while self.word_is("AND") {
            self.bump()?;
            all.push(self.obs_primary(depth)?);
        }
        Ok(if all.len() == 1 {
            all.pop().unwrap_or(Node::All(vec![]))
        } else {
            Node::All(all)
        })
    }

    fn obs_primary(&mut self, depth: usize) -> Result<Node, PatternError> {
        self.depth_check(depth + 1)?;
        let node = match self.tok {
            Tok::LBracket => {
                self.bump()?;
                let inner = self.cmp_or(depth + 1)?;
                if self.tok != Tok::RBracket {
                    return Err(
                        self.syntax(format!("expected ']' or AND/OR, found {}", self.describe()))
                    );
                }
                self.bump()?;
                Node::Observation(Box::new(inner))
            }
            Tok::LParen => {
                self.bump()?;
                let inner = self.obs_or(depth + 1)?;
                if self.tok != Tok::RParen {
                    return Err(self.syntax(format!("expected ')', found {}", self.describe())));
                }
                self.bump()?;
                inner
            }
            _ => {
                return Err(self.syntax(format!(
                    "expected an observation expression '[...]', found {}",
                    self.describe()
                )))
            }
        };
        self.refuse_qualifier()?;
        Ok(node)
    }

    // comparison level (inside brackets)
    fn cmp_or(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut any = vec![self.cmp_and(depth)?];
        while self.word_is("OR") {
            self.bump()?;
            any.push(self.cmp_and(depth)?);
        }
        Ok(if any.len() == 1 {
            any.pop().unwrap_or(Node::Any(vec![]))
        } else {
            Node::Any(any)
        })
    }

    fn cmp_and(&mut self, depth: usize) -> Result<Node, PatternError> {
        let start = self.at;
        let mut all = vec![self.cmp_primary(depth)?];
        while self.word_is("AND") {
            self.bump()?;
            all.push(self.cmp_primary(depth)?);
        }
        if all.len() == 1 {
            return Ok(all.pop().unwrap_or(Node::All(vec![])));
        }
        let mut types = Vec::new();
        for n in &all {
            object_types(n, &mut types);
        }
        types.sort_unstable();
        types.dedup();
        if types.len() > 1 {
            return Err(not_evaluable(
                start,
                format!(
                    "comparisons joined by AND inside one observation expression are about different object types ({}); they describe one object, so this never matches",
                    types.join(", ")
                ),
            ));
        }
        Ok(Node::All(all))
    }

    fn cmp_primary(&mut self, depth: usize) -> Result<Node, PatternError> {
        if self.tok == Tok::LParen {
            self.depth_check(depth + 1)?;
            self.bump()?;
            let inner = self.cmp_or(depth + 1)?;
            if self.tok != Tok::RParen {
                return Err(self.syntax(format!("expected ')', found {}", self.describe())));
            }
            self.bump()?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, PatternError> {
        let start = self.at;
        if self.word_is("EXISTS") {
            return Err(not_evaluable(self.at, "EXISTS is not evaluated"));
        }
        let Tok::Word(ty) = self.tok.clone() else {
            return Err(self.syntax(format!(
                "expected an object path such as ipv4-addr:value, found {}",
                self.describe()
            )));
        };
        self.bump()?;
        if self.tok != Tok::Colon {
            return Err(self.syntax(format!(
                "expected ':' after the object type {ty:?}, found {}",
                self.describe()
            )));
        }
        self.bump()?;
        let mut props: Vec<String> = Vec::new();
        match &self.tok {
            Tok::Word(w) => props.push(w.clone()),
            _ => {
                return Err(self.syntax(format!(
                    "expected a property name, found {}",
                    self.describe()
                )))
            }
        }
        self.bump()?;
        loop {
            match self.tok {
                Tok::Dot => {
                    self.bump()?;
                    match &self.tok {
                        Tok::Word(w) | Tok::Str(w) => props.push(w.clone()),
                        _ => {
                            return Err(self.syntax(format!(
                                "expected a property name after '.', found {}",
                                self.describe()
                            )))
                        }
                    }
                    self.bump()?;
                }
                Tok::LBracket => {
                    return Err(not_evaluable(
                        self.at,
                        "list index in an object path is not evaluated",
                    ));
                }
                _ => break,
            }
        }
        let path = format!("{ty}:{}", props.join("."));
        let target = target(&ty, &props).ok_or_else(|| {
            not_evaluable(
                start,
                format!(
                    "object path {} is not evaluated (expected ipv4-addr:value, ipv6-addr:value, domain-name:value, url:value or file:hashes.MD5/'SHA-1'/'SHA-256'/'SHA-512')",
                    quote(&path)
                ),
            )
        })?;
        if self.word_is("NOT") {
            return Err(not_evaluable(self.at, "NOT is not evaluated"));
        }
        let op_at = self.at;
        let op = match &self.tok {
            Tok::Op("=") => "=",
            Tok::Op(o) => {
                return Err(not_evaluable(
                    op_at,
                    format!("operator {o} is not evaluated (expected = or ISSUBSET)"),
                ))
            }
            Tok::Word(w) => {
                let up = w.to_ascii_uppercase();
                match up.as_str() {
                    "ISSUBSET" => "ISSUBSET",
                    "LIKE" | "MATCHES" | "IN" | "ISSUPERSET" => {
                        return Err(not_evaluable(
                            op_at,
                            format!("operator {up} is not evaluated (expected = or ISSUBSET)"),
                        ))
                    }
                    _ => {
                        return Err(self.syntax(format!(
                            "expected a comparison operator after {path}, found {}",
                            self.describe()
                        )))
                    }
                }
            }
            _ => {
                return Err(self.syntax(format!(
                    "expected a comparison operator after {path}, found {}",
                    self.describe()
                )))
            }
        };
        self.bump()?;
        let val_at = self.at;
        let value = match &self.tok {
            Tok::Str(s) => s.clone(),
            Tok::Other(o) => {
                return Err(not_evaluable(
                    val_at,
                    format!(
                        "constant {} is not evaluated for {path} (expected a string)",
                        quote(o)
                    ),
                ))
            }
            _ => {
                return Err(self.syntax(format!(
                    "expected a value after {op}, found {}",
                    self.describe()
                )))
            }
        };
        self.bump()?;
        self.comparisons += 1;
        if self.comparisons > MAX_PATTERN_COMPARISONS {
            return Err(PatternError {
                column: start + 1,
                not_evaluable: false,
                message: format!(
                    "more than {MAX_PATTERN_COMPARISONS} comparisons in one pattern (refused)"
                ),
            });
        }
        let bad = |e: crate::observable::InvalidValue| PatternError {
            column: val_at + 1,
            not_evaluable: false,
            message: format!("{path}: {e}"),
        };
        let cmp = match (op, target) {
            ("=", Target::Ip4) | ("=", Target::Ip6) => {
                let o = Observable::parse_ip_or_cidr(&value).map_err(bad)?;
                let v4 = match &o {
                    Observable::Ipv4(_) => true,
                    Observable::Cidr(c) => c.network().is_ipv4(),
                    _ => false,
                };
                if v4 != (target == Target::Ip4) {
                    return Err(PatternError {
                        column: val_at + 1,
                        not_evaluable: false,
                        message: format!("{path}: {} is not of this address family", quote(&value)),
                    });
                }
                Comparison::Equals(o)
            }
            ("ISSUBSET", Target::Ip4) | ("ISSUBSET", Target::Ip6) => {
                let c: Cidr = value.parse().map_err(bad)?;
                if c.network().is_ipv4() != (target == Target::Ip4) {
                    return Err(PatternError {
                        column: val_at + 1,
                        not_evaluable: false,
                        message: format!("{path}: {} is not of this address family", quote(&value)),
                    });
                }
                Comparison::IsSubset(c)
            }
            ("=", Target::Domain) => {
                Comparison::Equals(Observable::Domain(Domain::parse(&value).map_err(bad)?))
            }
            ("=", Target::Url) => {
                Comparison::Equals(Observable::Url(Url::parse(&value).map_err(bad)?))
            }
            ("=", Target::Hash(a)) => Comparison::Equals(Observable::hash(a, &value).map_err(bad)?),
            (_, _) => {
                return Err(not_evaluable(
                    op_at,
                    format!("ISSUBSET applies to addresses, not to {path}"),
                ))
            }
        };
        Ok(Node::Comparison(cmp))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ip4,
    Ip6,
    Domain,
    Url,
    Hash(HashAlgo),
}

fn target(ty: &str, props: &[String]) -> Option<Target> {
    let p: Vec<&str> = props.iter().map(String::as_str).collect();
    match (ty, p.as_slice()) {
        ("ipv4-addr", ["value"]) => Some(Target::Ip4),
        ("ipv6-addr", ["value"]) => Some(Target::Ip6),
        ("domain-name", ["value"]) => Some(Target::Domain),
        ("url", ["value"]) => Some(Target::Url),
        ("file", ["hashes", algo]) => HashAlgo::parse(algo).map(Target::Hash),
        _ => None,
    }
}

fn object_types(n: &Node, out: &mut Vec<&'static str>) {
    match n {
        Node::Comparison(Comparison::Equals(o)) => out.push(match o {
            Observable::Hash { .. } => "file",
            Observable::Domain(_) => "domain-name",
            Observable::Url(_) => "url",
            Observable::Ipv6(_) => "ipv6-addr",
            Observable::Cidr(c) if !c.network().is_ipv4() => "ipv6-addr",
            _ => "ipv4-addr",
        }),
        Node::Comparison(Comparison::IsSubset(c)) => out.push(if c.network().is_ipv4() {
            "ipv4-addr"
        } else {
            "ipv6-addr"
        }),
        Node::Observation(x) => object_types(x, out),
        Node::All(v) | Node::Any(v) => v.iter().for_each(|x| object_types(x, out)),
    }
}

/// One observed object: an observable, or the event's file (all its hashes).
enum Object<'a> {
    One(&'a Observable),
    File(Vec<&'a Observable>),
}

fn cmp_holds(c: &Comparison, o: &Object) -> bool {
    match (c, o) {
        (Comparison::Equals(x), Object::One(y)) => x == *y,
        (Comparison::Equals(x), Object::File(hs)) => hs.iter().any(|h| h == &x),
        (Comparison::IsSubset(net), Object::One(y)) => match y {
            Observable::Ipv4(a) => net.contains((*a).into()),
            Observable::Ipv6(a) => net.contains((*a).into()),
            Observable::Cidr(c) => net.contains_cidr(c),
            _ => false,
        },
        (Comparison::IsSubset(_), Object::File(_)) => false,
    }
}

fn holds_on(n: &Node, o: &Object) -> bool {
    match n {
        Node::Comparison(c) => cmp_holds(c, o),
        Node::All(v) => v.iter().all(|x| holds_on(x, o)),
        Node::Any(v) => v.iter().any(|x| holds_on(x, o)),
        Node::Observation(x) => holds_on(x, o),
    }
}

fn holds(n: &Node, objects: &[Object]) -> bool {
    match n {
        Node::Observation(inner) => objects.iter().any(|o| holds_on(inner, o)),
        Node::All(v) => v.iter().all(|x| holds(x, objects)),
        Node::Any(v) => v.iter().any(|x| holds(x, objects)),
        Node::Comparison(_) => false,
    }
}

impl Pattern {
    /// Parses a pattern; what cannot be evaluated is an error with `not_evaluable` set.
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let mut p = Parser {
            lx: Lexer {
                s,
                b: s.as_bytes(),
                pos: 0,
            },
            tok: Tok::End,
            at: 0,
            comparisons: 0,
        };
        p.bump()?;
        let root = p.obs_or(0)?;
        if p.tok != Tok::End {
            if p.word_is("FOLLOWEDBY") {
                return Err(not_evaluable(p.at, "FOLLOWEDBY is not evaluated"));
            }
            return Err(p.syntax(format!(
                "expected AND, OR or the end of the pattern, found {}",
                p.describe()
            )));
        }
        Ok(Pattern {
            root,
            comparisons: p.comparisons,
        })
    }

    pub fn comparisons(&self) -> usize {
        self.comparisons
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Whether the observables of one event satisfy the pattern.
    pub fn matches(&self, observed: &[Observable]) -> bool {
        let mut objects: Vec<Object> = Vec::with_capacity(observed.len());
        let mut hashes = Vec::new();
        for o in observed {
            match o {
                Observable::Hash { .. } => hashes.push(o),
                _ => objects.push(Object::One(o)),
            }
        }
        if !hashes.is_empty() {
            objects.push(Object::File(hashes));
        }
        holds(&self.root, &objects)
    }

    /// When every alternative is one comparison (`[a] OR [b]`, `[a OR b]`), the observables
    /// each of which alone satisfies the pattern: an address, a network (for `ISSUBSET`), a
    /// domain, a URL, a hash. `None` when some alternative needs several comparisons together
    /// (`AND`): no single value is then an indicator by itself.
    pub fn sufficient_observables(&self) -> Option<Vec<Observable>> {
        fn walk(n: &Node, out: &mut Vec<Observable>) -> bool {
            match n {
                Node::Comparison(Comparison::Equals(o)) => {
                    out.push(o.clone());
                    true
                }
                Node::Comparison(Comparison::IsSubset(c)) => {
                    out.push(Observable::Cidr(*c));
                    true
                }
                Node::Observation(x) => walk(x, out),
                Node::Any(v) => v.iter().all(|x| walk(x, out)),
                Node::All(v) if v.len() == 1 => walk(&v[0], out),
                Node::All(_) => false,
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out).then(|| {
            let mut seen = Vec::with_capacity(out.len());
            for o in out {
                if !seen.contains(&o) {
                    seen.push(o);
                }
            }
            seen
        })
    }
}
