//! Canonical printer: AST to TraceQL text such that `parse(print(q)) == q`.
//!
//! Parentheses are emitted only where precedence requires them (plus around the operand of a
//! unary operator when it is itself an operation, for readability). Intrinsics use their
//! scoped spelling, durations the largest exact unit, strings Go-compatible escapes.

use std::fmt::{self, Write};

use crate::ast::*;
use crate::lexer::is_attribute_char;

/// Canonical text of a query.
pub fn print(q: &Query) -> String {
    let mut out = String::new();
    write_query(&mut out, q);
    out
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_field_expr(&mut s, self);
        f.write_str(&s)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_field(&mut s, self);
        f.write_str(&s)
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_literal(&mut s, self);
        f.write_str(&s)
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_pipeline(&mut s, self);
        f.write_str(&s)
    }
}

impl fmt::Display for ScalarExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_scalar(&mut s, self, 0);
        f.write_str(&s)
    }
}

impl fmt::Display for MetricsExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_metrics(&mut s, self, true);
        f.write_str(&s)
    }
}

fn write_query(out: &mut String, q: &Query) {
    match &q.body {
        Body::Spans(p) => write_pipeline(out, p),
        Body::Metrics(m) => write_metrics(out, m, true),
    }
    if !q.hints.is_empty() {
        out.push_str(" with(");
        for (i, h) in q.hints.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&h.name);
            out.push('=');
            write_literal(out, &h.value);
        }
        out.push(')');
    }
}

fn write_pipeline(out: &mut String, p: &Pipeline) {
    for (i, s) in p.stages.iter().enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        write_stage(out, s);
    }
}

fn write_stage(out: &mut String, s: &Stage) {
    match s {
        Stage::Spanset(e) => write_spanset(out, e, 0),
        Stage::ScalarFilter(f) => {
            write_scalar(out, &f.lhs, 0);
            let _ = write!(out, " {} ", f.op.as_str());
            write_scalar(out, &f.rhs, 0);
        }
        Stage::By(e) => {
            out.push_str("by(");
            write_field_expr(out, e);
            out.push(')');
        }
        Stage::Select(fields) => {
            out.push_str("select(");
            write_fields(out, fields);
            out.push(')');
        }
        Stage::Coalesce => out.push_str("coalesce()"),
    }
}

fn write_fields(out: &mut String, fields: &[Field]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_field(out, f);
    }
}

fn spanset_level(op: SpansetOp) -> u8 {
    if op.is_logical() { 1 } else { 2 }
}

/// `min_level`: the operand sits where only operators of at least this level bind without
/// parentheses.
fn write_spanset(out: &mut String, e: &SpansetExpr, min_level: u8) {
    match e {
        SpansetExpr::Filter(f) => write_filter(out, f),
        SpansetExpr::Pipeline(p) => {
            out.push('(');
            write_pipeline(out, p);
            out.push(')');
        }
        SpansetExpr::Op { op, lhs, rhs } => {
            let level = spanset_level(*op);
            let paren = level < min_level;
            if paren {
                out.push('(');
            }
            write_spanset(out, lhs, level);
            let _ = write!(out, " {} ", op.as_str());
            write_spanset(out, rhs, level + 1);
            if paren {
                out.push(')');
            }
        }
    }
}

fn write_filter(out: &mut String, f: &SpansetFilter) {
    match &f.expr {
        None => out.push_str("{ }"),
        Some(e) => {
            out.push_str("{ ");
            write_field_expr(out, e);
            out.push_str(" }");
        }
    }
}

/// Level assigned to unary operators and negative literals when deciding parentheses: they
/// absorb `* / % ^` to their right, so they must be wrapped under those operators.
const UNARY_LEVEL: u8 = 4;

fn field_level(e: &FieldExpr) -> u8 {
    match e {
        FieldExpr::Binary { op, .. } => op.precedence(),
        FieldExpr::Unary { .. } => UNARY_LEVEL,
        FieldExpr::Literal(l) if l.is_negative() && *l != Literal::Int(i64::MIN) => UNARY_LEVEL,
        _ => u8::MAX,
    }
}

fn write_field_expr(out: &mut String, e: &FieldExpr) {
    write_field_in(out, e, 0, false);
}

/// `min_level`: lowest operator level allowed unparenthesised here; `strict` for right
/// operands of left-associative operators, where equal levels need parentheses too.
fn write_field_in(out: &mut String, e: &FieldExpr, min_level: u8, strict: bool) {
    let level = field_level(e);
    let paren = level < min_level || (strict && level == min_level);
    if paren {
        out.push('(');
    }
    match e {
        FieldExpr::Literal(l) => write_literal(out, l),
        FieldExpr::Field(f) => write_field(out, f),
        FieldExpr::Unary { op, expr } => {
            out.push_str(op.as_str());
            let inner_paren = matches!(**expr, FieldExpr::Binary { .. }) || expr_is_negative_literal(expr);
            if inner_paren {
                out.push('(');
            }
            write_field_in(out, expr, 0, false);
            if inner_paren {
                out.push(')');
            }
        }
        FieldExpr::Binary { op, lhs, rhs } => {
            let p = op.precedence();
            let right_assoc = *op == BinaryOp::Pow;
            write_field_in(out, lhs, p, right_assoc);
            let _ = write!(out, " {} ", op.as_str());
            write_field_in(out, rhs, p, !right_assoc);
        }
    }
    if paren {
        out.push(')');
    }
}

fn expr_is_negative_literal(e: &FieldExpr) -> bool {
    matches!(e, FieldExpr::Literal(l) if l.is_negative())
}

fn scalar_level(e: &ScalarExpr) -> u8 {
    match e {
        ScalarExpr::Binary { op, .. } => op.to_binary().precedence(),
        _ => u8::MAX,
    }
}

fn write_scalar(out: &mut String, e: &ScalarExpr, min_level: u8) {
    write_scalar_in(out, e, min_level, false)
}

fn write_scalar_in(out: &mut String, e: &ScalarExpr, min_level: u8, strict: bool) {
    let level = scalar_level(e);
    let paren = level < min_level || (strict && level == min_level);
    if paren {
        out.push('(');
    }
    match e {
        ScalarExpr::Aggregate(a) => write_aggregate(out, a),
        ScalarExpr::Literal(l) => write_literal(out, l),
        ScalarExpr::Binary { op, lhs, rhs } => {
            let p = op.to_binary().precedence();
            let right_assoc = *op == ArithOp::Pow;
            write_scalar_in(out, lhs, p, right_assoc);
            let _ = write!(out, " {} ", op.as_str());
            write_scalar_in(out, rhs, p, !right_assoc);
        }
        ScalarExpr::Pipeline(p) => {
            out.push('(');
            write_pipeline(out, &p.pipeline);
            out.push_str(" | ");
            write_aggregate(out, &p.aggregate);
            out.push(')');
        }
    }
    if paren {
        out.push(')');
    }
}

fn write_aggregate(out: &mut String, a: &Aggregate) {
    out.push_str(a.op.as_str());
    out.push('(');
    if let Some(e) = &a.expr {
        write_field_expr(out, e);
    }
    out.push(')');
}

/// `top`: printed as a whole query (no parentheses around a metrics pipeline).
fn write_metrics(out: &mut String, m: &MetricsExpr, top: bool) {
    write_metrics_in(out, m, 0, false, top)
}

fn metrics_level(m: &MetricsExpr) -> u8 {
    match m {
        MetricsExpr::Binary { op, .. } => op.to_binary().precedence(),
        _ => u8::MAX,
    }
}

fn write_metrics_in(out: &mut String, m: &MetricsExpr, min_level: u8, strict: bool, top: bool) {
    match m {
        MetricsExpr::Pipeline(p) => {
            if !top {
                out.push('(');
            }
            write_pipeline(out, &p.pipeline);
            out.push_str(" | ");
            write_metrics_function(out, &p.function);
            write_second_stages(out, &p.stages);
            if !top {
                out.push(')');
            }
        }
        MetricsExpr::Scalar(l) => write_literal(out, l),
        MetricsExpr::Binary { op, lhs, rhs } => {
            let level = metrics_level(m);
            let paren = level < min_level || (strict && level == min_level);
            if paren {
                out.push('(');
            }
            write_metrics_in(out, lhs, level, false, false);
            let _ = write!(out, " {} ", op.as_str());
            write_metrics_in(out, rhs, level, true, false);
            if paren {
                out.push(')');
            }
        }
        MetricsExpr::Staged { expr, stages } => {
            if !top {
                out.push('(');
            }
            write_metrics_in(out, expr, 0, false, false);
            write_second_stages(out, stages);
            if !top {
                out.push(')');
            }
        }
    }
}

fn write_metrics_function(out: &mut String, f: &MetricsFunction) {
    out.push_str(f.op.name());
    out.push('(');
    match &f.op {
        MetricsOp::Rate | MetricsOp::CountOverTime => {}
        MetricsOp::MinOverTime(fl)
        | MetricsOp::MaxOverTime(fl)
        | MetricsOp::AvgOverTime(fl)
        | MetricsOp::SumOverTime(fl)
        | MetricsOp::HistogramOverTime(fl) => write_field(out, fl),
        MetricsOp::QuantileOverTime(fl, qs) => {
            write_field(out, fl);
            for q in qs {
                out.push_str(", ");
                write_float(out, *q);
            }
        }
        MetricsOp::Compare { filter, top_n, start, end } => {
            write_filter(out, filter);
            if *start != 0 || *end != 0 {
                let _ = write!(out, ", {top_n}, {start}, {end}");
            } else if *top_n != 10 {
                let _ = write!(out, ", {top_n}");
            }
        }
    }
    out.push(')');
    if !f.by.is_empty() {
        out.push_str(" by (");
        write_fields(out, &f.by);
        out.push(')');
    }
}

fn write_second_stages(out: &mut String, stages: &[SecondStage]) {
    for s in stages {
        match s {
            SecondStage::TopK(n) => {
                let _ = write!(out, " | topk({n})");
            }
            SecondStage::BottomK(n) => {
                let _ = write!(out, " | bottomk({n})");
            }
            SecondStage::Filter { op, value } => {
                let _ = write!(out, " {} ", op.as_str());
                write_literal(out, value);
            }
        }
    }
}

fn write_field(out: &mut String, f: &Field) {
    match f {
        Field::Intrinsic(i) => out.push_str(i.canonical_name()),
        Field::Attribute(a) => write_attribute(out, a),
    }
}

/// Attribute with scope; the name is quoted when the lexer would otherwise split or
/// misread it.
pub fn write_attribute(out: &mut String, a: &Attribute) {
    if a.parent {
        out.push_str("parent");
        if a.scope != Scope::Unscoped {
            out.push('.');
        }
    }
    out.push_str(a.scope.prefix());
    let needs_quotes = a.name.is_empty()
        || a.name.contains(|c: char| !is_attribute_char(c) || c == '"')
        || (a.scope == Scope::Unscoped && !a.parent && a.name.starts_with(|c: char| c.is_ascii_digit()))
        || (a.parent && a.scope == Scope::Unscoped && (a.name.starts_with("span.") || a.name.starts_with("resource.")));
    if needs_quotes {
        out.push_str(&quote_attribute(&a.name));
    } else {
        out.push_str(&a.name);
    }
}

/// An attribute name in double quotes, as written after a scope (`span."my key"`): only `"` and `\` are
/// escaped there (other characters, control characters too, stand for themselves), unlike in string literals.
pub fn quote_attribute(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn write_literal(out: &mut String, l: &Literal) {
    match l {
        Literal::String(s) => out.push_str(&quote_string(s)),
        Literal::Int(i64::MIN) => out.push_str("minInt"),
        Literal::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Literal::Float(f) => write_float(out, *f),
        Literal::Duration(d) => write_duration(out, *d),
        Literal::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Literal::Nil => out.push_str("nil"),
        Literal::Status(s) => out.push_str(s.as_str()),
        Literal::Kind(k) => out.push_str(k.as_str()),
    }
}

/// Shortest text that parses back to the same float, always with a '.' so it stays a float.
fn write_float(out: &mut String, f: f64) {
    let s = format!("{f:?}");
    // Debug gives e.g. `1e300`, `1.5`, `0.1`; exponent forms need a mantissa dot for clarity.
    if !s.contains('.')
        && let Some((m, e)) = s.split_once('e')
    {
        let _ = write!(out, "{m}.0e{e}");
        return;
    }
    out.push_str(&s);
}

fn write_duration(out: &mut String, ns: i64) {
    if ns < 0 {
        out.push('-');
    }
    let v = ns.unsigned_abs();
    const UNITS: [(u64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (size, unit) in UNITS {
        if v.is_multiple_of(size) && (v > 0 || unit == "ns") {
            let _ = write!(out, "{}{unit}", v / size);
            return;
        }
    }
}

/// Double-quoted string literal with Go-compatible escapes.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
