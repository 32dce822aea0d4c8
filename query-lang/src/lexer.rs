//! Hand-written lexer.
//!
//! Attributes are lexed as one token (`span.http.method`, `."name with space"`), the way Tempo
//! does it: after a scope prefix every character up to whitespace or one of
//! `{ } ( ) = ~ ! < > & | ^ ,` belongs to the name, so names may contain dots, dashes and
//! colons. Scoped intrinsics (`span:duration`) are one token too. Keywords stay identifiers and
//! are resolved by the parser, which knows the context.

use crate::ast::Scope;
use crate::error::ParseError;

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Re,
    NRe,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    And,
    Or,
    Not,
    Desc,
    Ance,
    Tilde,
    NotChild,
    NotParent,
    NotDesc,
    NotAnce,
    UnionChild,
    UnionParent,
    UnionDesc,
    UnionAnce,
    UnionSibl,
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    Ident(String),
    /// A user attribute with its scope.
    Attr {
        scope: Scope,
        parent: bool,
        name: String,
    },
    /// `span:id` and friends: the full text, e.g. `span:id`.
    ScopedIntrinsic(String),
    Eof,
}

impl Tok {
    /// Human description used in "found ..." of error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Str(s) => format!("string {}", crate::printer::quote_string(s)),
            Tok::Int(i) => format!("integer {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Duration(_) => "duration".to_string(),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Attr { .. } => "attribute".to_string(),
            Tok::ScopedIntrinsic(s) => format!("'{s}'"),
            Tok::Eof => "end of query".to_string(),
            other => format!("'{}'", other.symbol()),
        }
    }

    /// Source text of punctuation tokens.
    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Pipe => "|",
            Tok::Eq => "=",
            Tok::Neq => "!=",
            Tok::Lt => "<",
            Tok::Lte => "<=",
            Tok::Gt => ">",
            Tok::Gte => ">=",
            Tok::Re => "=~",
            Tok::NRe => "!~",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Not => "!",
            Tok::Desc => ">>",
            Tok::Ance => "<<",
            Tok::Tilde => "~",
            Tok::NotChild => "!>",
            Tok::NotParent => "!<",
            Tok::NotDesc => "!>>",
            Tok::NotAnce => "!<<",
            Tok::UnionChild => "&>",
            Tok::UnionParent => "&<",
            Tok::UnionDesc => "&>>",
            Tok::UnionAnce => "&<<",
            Tok::UnionSibl => "&~",
            _ => "",
        }
    }
}

/// A token with its byte range in the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// Operators, longest first so the scan is maximal munch.
const OPERATORS: &[(&str, Tok)] = &[
    ("!>>", Tok::NotDesc),
    ("!<<", Tok::NotAnce),
    ("&>>", Tok::UnionDesc),
    ("&<<", Tok::UnionAnce),
    ("&&", Tok::And),
    ("||", Tok::Or),
    ("!=", Tok::Neq),
    ("=~", Tok::Re),
    ("!~", Tok::NRe),
    (">=", Tok::Gte),
    ("<=", Tok::Lte),
    (">>", Tok::Desc),
    ("<<", Tok::Ance),
    ("!>", Tok::NotChild),
    ("!<", Tok::NotParent),
    ("&>", Tok::UnionChild),
    ("&<", Tok::UnionParent),
    ("&~", Tok::UnionSibl),
    ("{", Tok::LBrace),
    ("}", Tok::RBrace),
    ("(", Tok::LParen),
    (")", Tok::RParen),
    (",", Tok::Comma),
    ("|", Tok::Pipe),
    ("=", Tok::Eq),
    ("<", Tok::Lt),
    (">", Tok::Gt),
    ("+", Tok::Add),
    ("-", Tok::Sub),
    ("*", Tok::Mul),
    ("/", Tok::Div),
    ("%", Tok::Mod),
    ("^", Tok::Pow),
    ("!", Tok::Not),
    ("~", Tok::Tilde),
];

/// Characters that end an unquoted attribute name (besides whitespace).
pub fn is_attribute_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',')
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

const INTRINSIC_SCOPES: [&str; 5] = ["span", "trace", "event", "link", "instrumentation"];

/// Splits a whole query into tokens (ending with [`Tok::Eof`]).
pub fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    loop {
        let t = lx.next_token()?;
        let eof = t.tok == Tok::Eof;
        out.push(t);
        if eof {
            return Ok(out);
        }
    }
}

/// Tokens up to the first lexical error; used by the lenient parser on unfinished text.
pub fn tokenize_lenient(src: &str) -> Vec<Token> {
    let mut lx = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    while let Ok(t) = lx.next_token() {
        if t.tok == Tok::Eof {
            break;
        }
        out.push(t);
    }
    out
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn err(&self, offset: usize, msg: impl Into<String>, found: impl Into<String>) -> ParseError {
        ParseError::new(self.src, offset, msg, found)
    }

    fn found_here(&self) -> String {
        match self.peek() {
            None => "end of query".to_string(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if let Some(body) = trimmed.strip_prefix("/*") {
                match body.find("*/") {
                    Some(i) => self.pos += i + 4,
                    None => return Err(self.err(self.pos, "unterminated comment", "end of query")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        self.skip_trivia()?;
        let start = self.pos;
        let tok = self.scan()?;
        Ok(Token { tok, start, end: self.pos })
    }

    fn scan(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let Some(c) = self.peek() else { return Ok(Tok::Eof) };
        if c == '"' {
            return self.string();
        }
        if c == '`' {
            return self.raw_string();
        }
        if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.number();
        }
        if c == '.' {
            self.pos += 1;
            return self.attribute(Scope::Unscoped, false, start);
        }
        if is_ident_start(c) {
            let len = self.rest().find(|ch: char| !is_ident_char(ch)).unwrap_or(self.rest().len());
            let word = &self.src[start..start + len];
            self.pos += len;
            match self.peek() {
                Some('.') => {
                    let scope = match word {
                        "span" => Some(Scope::Span),
                        "resource" => Some(Scope::Resource),
                        "event" => Some(Scope::Event),
                        "link" => Some(Scope::Link),
                        "instrumentation" => Some(Scope::Instrumentation),
                        _ => None,
                    };
                    if let Some(scope) = scope {
                        self.pos += 1;
                        return self.attribute(scope, false, start);
                    }
                    if word == "parent" {
                        self.pos += 1;
                        let rest = self.rest();
                        let (scope, skip) = if rest.starts_with("span.") {
                            (Scope::Span, 5)
                        } else if rest.starts_with("resource.") {
                            (Scope::Resource, 9)
                        } else {
                            (Scope::Unscoped, 0)
                        };
                        self.pos += skip;
                        return self.attribute(scope, true, start);
                    }
                }
                Some(':') if INTRINSIC_SCOPES.contains(&word) => {
                    self.pos += 1;
                    let rest = self.rest();
                    let len = if rest.starts_with(is_ident_start) {
                        rest.find(|ch: char| !is_ident_char(ch)).unwrap_or(rest.len())
                    } else {
                        0
                    };
                    if len == 0 {
                        return Err(self.err(
                            self.pos,
                            format!("expected an intrinsic name after '{word}:'"),
                            self.found_here(),
                        ));
                    }
                    self.pos += len;
                    return Ok(Tok::ScopedIntrinsic(self.src[start..self.pos].to_string()));
                }
                _ => {}
            }
            return Ok(Tok::Ident(word.to_string()));
        }
        let rest = self.rest();
        if rest.starts_with("==") {
            return Err(self.err(start, "'==' is not a TraceQL operator; use '=' for equality", "'=='"));
        }
        for (text, tok) in OPERATORS {
            if rest.starts_with(text) {
                self.pos += text.len();
                return Ok(tok.clone());
            }
        }
        let hint = match c {
            '\'' => "; strings use double quotes or backticks",
            '[' | ']' => "; TraceQL has no brackets, spanset filters use '{ }'",
            '&' => "; did you mean '&&'?",
            _ => "",
        };
        Err(self.err(start, format!("unexpected character{hint}"), format!("{c:?}")))
    }

    /// After a scope prefix: the attribute name, with optional quoted parts.
    fn attribute(&mut self, scope: Scope, parent: bool, start: usize) -> Result<Tok, ParseError> {
        let mut name = String::new();
        let mut any = false;
        while let Some(c) = self.peek() {
            if c == '"' {
                any = true;
                let qstart = self.pos;
                self.pos += 1;
                loop {
                    match self.peek() {
                        None => {
                            return Err(self.err(qstart, "unterminated quoted attribute name", "end of query"));
                        }
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => {
                            let at = self.pos;
                            self.pos += 1;
                            match self.peek() {
                                Some(e @ ('"' | '\\')) => {
                                    name.push(e);
                                    self.pos += 1;
                                }
                                _ => {
                                    return Err(self.err(
                                        at,
                                        "invalid escape in quoted attribute name (only \\\" and \\\\ are allowed)",
                                        self.found_here(),
                                    ));
                                }
                            }
                        }
                        Some(ch) => {
                            name.push(ch);
                            self.pos += ch.len_utf8();
                        }
                    }
                }
            } else if is_attribute_char(c) {
                any = true;
                name.push(c);
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        if !any {
            let prefix = &self.src[start..self.pos];
            return Err(self.err(self.pos, format!("expected an attribute name after '{prefix}'"), self.found_here()));
        }
        Ok(Tok::Attr { scope, parent, name })
    }

    fn string(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(start, "unterminated string literal", "end of query"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(Tok::Str(out)),
                '\\' => {
                    let at = self.pos - 1;
                    let Some(e) = self.peek() else {
                        return Err(self.err(start, "unterminated string literal", "end of query"));
                    };
                    self.pos += e.len_utf8();
                    let ch = match e {
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        '\\' => '\\',
                        '"' => '"',
                        'x' => self.hex_escape(2, at)?,
                        'u' => self.hex_escape(4, at)?,
                        'U' => self.hex_escape(8, at)?,
                        '0'..='7' => {
                            let digits = format!("{e}{}", self.rest().get(..2).unwrap_or(""));
                            let v = u32::from_str_radix(&digits, 8)
                                .ok()
                                .filter(|v| *v < 0x80 && digits.len() == 3)
                                .ok_or_else(|| {
                                    self.err(at, "invalid octal escape (\\000 to \\177)", format!("{digits:?}"))
                                })?;
                            self.pos += 2;
                            char::from_u32(v).unwrap_or('\0')
                        }
                        other => {
                            return Err(self.err(at, "invalid escape sequence in string", format!("'\\{other}'")));
                        }
                    };
                    out.push(ch);
                }
                c => out.push(c),
            }
        }
    }

    fn hex_escape(&mut self, n: usize, at: usize) -> Result<char, ParseError> {
        let digits = self.rest().get(..n).unwrap_or("");
        let value = if digits.len() == n && digits.chars().all(|c| c.is_ascii_hexdigit()) {
            u32::from_str_radix(digits, 16).ok()
        } else {
            None
        };
        // \x escapes produce bytes in Go; only the ASCII ones are also characters.
        let ch = value.filter(|v| n != 2 || *v < 0x80).and_then(char::from_u32);
        match ch {
            Some(c) => {
                self.pos += n;
                Ok(c)
            }
            None => Err(self.err(at, "invalid hex or unicode escape in string", format!("{digits:?}"))),
        }
    }

    fn raw_string(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        self.pos += 1;
        match self.rest().find('`') {
            Some(i) => {
                let s = self.rest()[..i].replace('\r', "");
                self.pos += i + 1;
                Ok(Tok::Str(s))
            }
            None => Err(self.err(start, "unterminated raw string literal", "end of query")),
        }
    }

    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = self.pos;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let mut is_float = false;
        if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
            is_float = true;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
        let mut has_exp = false;
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            let mut j = i + 1;
            if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_digit() {
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
                is_float = true;
                has_exp = true;
            }
        }
        let text = &self.src[start..i];
        self.pos = i;
        if !has_exp && let Some((ns, len)) = scan_duration(self.src, start) {
            self.pos = start + len;
            return Ok(Tok::Duration(ns));
        }
        if is_float {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
                _ => Err(self.err(start, "number out of range", format!("{text:?}"))),
            }
        } else {
            text.parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| self.err(start, "integer out of range (must fit in 64 bits)", text.to_string()))
        }
    }
}

fn is_duration_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '.' | 'n' | 's' | 'u' | 'm' | 'h' | 'd' | 'w' | 'y' | 'µ' | 'μ')
}

/// Tries to read a duration such as `1h30m`, `1.5s`, `300ms`, `2d` at `start`. Returns the
/// nanoseconds and the byte length consumed.
fn scan_duration(src: &str, start: usize) -> Option<(i64, usize)> {
    let rest = &src[start..];
    let len = rest.find(|c: char| !is_duration_char(c)).unwrap_or(rest.len());
    let text = &rest[..len];
    if !text.contains(|c: char| c.is_alphabetic()) {
        return None;
    }
    parse_duration(text).map(|ns| (ns, len))
}

/// Parses a sequence of `<number><unit>` parts. Units: ns us µs ms s m h d w y. Days, weeks and
/// years (Prometheus units) take whole numbers only.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i128 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            "y" => 31_536_000_000_000_000,
            _ => return None,
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if num.contains('.') && (frac_part.is_empty() || frac_part.contains('.') || matches!(unit, "d" | "w" | "y")) {
            return None;
        }
        let int_val: i128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        total = total.checked_add(int_val.checked_mul(unit_ns)?)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: i128 = digits.parse().ok()?;
            let scale = 10i128.pow(digits.len() as u32);
            total = total.checked_add(frac * unit_ns / scale)?;
        }
        if total > i64::MAX as i128 {
            return None;
        }
    }
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("2d"), Some(172_800_000_000_000));
        assert_eq!(parse_duration("1.5d"), None);
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("1"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn attribute_tokens() {
        let t = tokenize(r#"{ span."a b".c = 1 }"#).unwrap_or_default();
        assert_eq!(t[1].tok, Tok::Attr { scope: Scope::Span, parent: false, name: "a b.c".into() });
        let t = tokenize("parent.resource.x").unwrap_or_default();
        assert_eq!(t[0].tok, Tok::Attr { scope: Scope::Resource, parent: true, name: "x".into() });
    }
}
