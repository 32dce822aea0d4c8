//! Condition recovery from unfinished queries.
//!
//! Grafana sends the editor's text as it is being typed (`{ resource.service.name = "a" &&
//! span.http.`) with tag-value requests, so the values offered can be narrowed by what the user
//! already wrote. Only conditions that every matching span must satisfy are returned: the
//! conjuncts of the first spanset filter, skipping anything unfinished. A `||` makes earlier
//! conditions optional, so it drops them (`&&` and `||` share one precedence level and
//! associate left, as in Tempo).

use crate::ast::*;
use crate::lexer::{Tok, Token, tokenize_lenient};
use crate::parser::parse_field_tokens;

/// `field op value`, normalised so the field is on the left.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    /// A comparison or regex operator (`= != < <= > >= =~ !~`).
    pub op: BinaryOp,
    /// The constant compared against; `Nil` for `!= nil` (exists) and `= nil` (absent).
    pub value: Literal,
}

/// Conditions that must hold for every span matched by the first spanset filter of `query`,
/// which may be unfinished. Returns an empty list when nothing can be recovered or when the
/// first filter is combined with other spansets (then no single span has to satisfy it).
pub fn parse_lenient(query: &str) -> Vec<Condition> {
    if let Ok(q) = crate::parse(query) {
        let pipeline = match &q.body {
            Body::Spans(p) => Some(p),
            Body::Metrics(MetricsExpr::Pipeline(m)) => Some(&m.pipeline),
            Body::Metrics(_) => None,
        };
        return match pipeline.and_then(|p| p.stages.first()) {
            Some(Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: Some(e) }))) => conjuncts(e),
            _ => Vec::new(),
        };
    }
    let toks = tokenize_lenient(query);
    let Some(open) = toks.iter().position(|t| t.tok == Tok::LBrace) else { return Vec::new() };
    let body = &toks[open + 1..];
    let mut depth = 0i32;
    let mut end = body.len();
    for (i, t) in body.iter().enumerate() {
        match t.tok {
            Tok::LParen | Tok::LBrace => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::RBrace if depth == 0 => {
                end = i;
                break;
            }
            Tok::RBrace => depth -= 1,
            _ => {}
        }
    }
    // `{ a } && { b` and the like: the first filter alone does not constrain the spans.
    if let Some(next) = body.get(end + 1)
        && !matches!(next.tok, Tok::Pipe)
    {
        return Vec::new();
    }
    recover(query, &body[..end])
}

/// Conditions guaranteed by a token run of `&&`/`||`-joined parts, some possibly unfinished.
fn recover(src: &str, toks: &[Token]) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut seg_start = 0;
    let mut pending_or = false;
    let flush = |seg: &[Token], or_before: bool, out: &mut Vec<Condition>| {
        if or_before {
            out.clear();
        }
        out.extend(segment(src, seg));
    };
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::LParen => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::And | Tok::Or if depth == 0 => {
                flush(&toks[seg_start..i], pending_or, &mut out);
                pending_or = t.tok == Tok::Or;
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    flush(&toks[seg_start..], pending_or, &mut out);
    out
}

fn segment(src: &str, seg: &[Token]) -> Vec<Condition> {
    if seg.is_empty() {
        return Vec::new();
    }
    if let Some(e) = parse_field_tokens(src, seg.to_vec()) {
        return conjuncts(&e);
    }
    // An unclosed group: `( .a = 1 && .b =` — recover inside it.
    if seg[0].tok == Tok::LParen {
        let mut depth = 0i32;
        for t in seg {
            match t.tok {
                Tok::LParen => depth += 1,
                Tok::RParen => depth -= 1,
                _ => {}
            }
        }
        if depth > 0 {
            return recover(src, &seg[1..]);
        }
    }
    Vec::new()
}

/// The simple comparisons a field expression requires of every matching span.
fn conjuncts(e: &FieldExpr) -> Vec<Condition> {
    let mut out = Vec::new();
    collect(e, &mut out);
    out
}

fn collect(e: &FieldExpr, out: &mut Vec<Condition>) {
    let FieldExpr::Binary { op, lhs, rhs } = e else { return };
    match op {
        BinaryOp::And => {
            collect(lhs, out);
            collect(rhs, out);
        }
        op if op.is_comparison() => match (&**lhs, &**rhs) {
            (FieldExpr::Field(f), FieldExpr::Literal(l)) => {
                out.push(Condition { field: f.clone(), op: *op, value: l.clone() });
            }
            (FieldExpr::Literal(l), FieldExpr::Field(f)) => {
                let flipped = match op {
                    BinaryOp::Lt => Some(BinaryOp::Gt),
                    BinaryOp::Lte => Some(BinaryOp::Gte),
                    BinaryOp::Gt => Some(BinaryOp::Lt),
                    BinaryOp::Gte => Some(BinaryOp::Lte),
                    BinaryOp::Eq | BinaryOp::Neq => Some(*op),
                    _ => None,
                };
                if let Some(op) = flipped {
                    out.push(Condition { field: f.clone(), op, value: l.clone() });
                }
            }
            _ => {}
        },
        _ => {}
    }
}
