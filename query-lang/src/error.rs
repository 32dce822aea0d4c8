//! Error types. Parse errors carry a position so an editor or API client can point at the
//! problem; validation errors separate "makes no sense" from "not supported yet" because the
//! API answers them differently (400 versus 501-like messages).

use thiserror::Error;

/// A query that is not valid TraceQL syntax.
///
/// Displays as `expected '}' after field expression at 1:23, found end of query`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} at {line}:{column}, found {found}")]
pub struct ParseError {
    /// What went wrong, usually phrased as what was expected.
    pub message: String,
    /// Description of the text at the error position (`'=='`, `end of query`, ...).
    pub found: String,
    /// Byte offset into the query.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl ParseError {
    pub(crate) fn new(query: &str, offset: usize, message: impl Into<String>, found: impl Into<String>) -> Self {
        let offset = clamp_to_char_boundary(query, offset);
        let before = &query[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = query[line_start..offset].chars().count() + 1;
        ParseError { message: message.into(), found: found.into(), offset, line, column }
    }

    /// Multi-line rendering with the offending line and a caret, for terminals.
    pub fn render(&self, query: &str) -> String {
        let offset = clamp_to_char_boundary(query, self.offset);
        let line_start = query[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = query[offset..].find('\n').map_or(query.len(), |i| offset + i);
        let line_text = &query[line_start..line_end];
        let pad: String = query[line_start..offset].chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        format!("{self}\n  {line_text}\n  {pad}^")
    }
}

fn clamp_to_char_boundary(s: &str, mut i: usize) -> usize {
    if i > s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A query that parses but cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The query makes no sense (type mismatch, invalid regex, `topk(0)`, ...).
    #[error("invalid query: {0}")]
    Invalid(String),
    /// The query is meaningful but Strata cannot execute it yet (`parent.`, complex scalar filters, ...).
    #[error("{0} not yet supported")]
    Unsupported(String),
}

impl ValidationError {
    /// True for [`ValidationError::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, ValidationError::Unsupported(_))
    }
}
