//! Semantic checks that run after parsing.
//!
//! The rules follow Tempo's validation so the same queries are accepted, with one addition:
//! metrics functions over a field of a known non-numeric type are rejected. Children are checked
//! before their parent, so an unsupported feature deep inside an expression is reported as
//! unsupported rather than as a type error caused by it.

use crate::ast::*;
use crate::error::ValidationError;

/// Most `by()` fields a metrics function may group by.
pub const MAX_GROUP_BYS: usize = 5;
/// Largest `topN` of `compare()`.
pub const MAX_COMPARE_TOP_N: i64 = 1000;

type R = Result<(), ValidationError>;

fn invalid(msg: impl Into<String>) -> R {
    Err(ValidationError::Invalid(msg.into()))
}

fn unsupported(msg: impl Into<String>) -> R {
    Err(ValidationError::Unsupported(msg.into()))
}

/// Checks a parsed query.
pub fn validate(q: &Query) -> R {
    match &q.body {
        Body::Spans(p) => pipeline(p),
        Body::Metrics(m) => {
            metrics(m)?;
            if !matches!(m, MetricsExpr::Pipeline(_)) || has_second_stages(m) {
                reject_compare(m)?;
            }
            Ok(())
        }
    }
}

fn has_second_stages(m: &MetricsExpr) -> bool {
    match m {
        MetricsExpr::Pipeline(p) => !p.stages.is_empty(),
        MetricsExpr::Staged { .. } => true,
        MetricsExpr::Binary { lhs, rhs, .. } => has_second_stages(lhs) || has_second_stages(rhs),
        MetricsExpr::Scalar(_) => false,
    }
}

/// `compare()` produces a fixed set of series; second stages and arithmetic over it are meaningless.
fn reject_compare(m: &MetricsExpr) -> R {
    match m {
        MetricsExpr::Pipeline(p) if matches!(p.function.op, MetricsOp::Compare { .. }) => {
            invalid("compare() cannot be used with second stage functions, filters or arithmetic")
        }
        MetricsExpr::Binary { lhs, rhs, .. } => {
            reject_compare(lhs)?;
            reject_compare(rhs)
        }
        MetricsExpr::Staged { expr, .. } => reject_compare(expr),
        _ => Ok(()),
    }
}

fn metrics(m: &MetricsExpr) -> R {
    match m {
        MetricsExpr::Pipeline(p) => {
            pipeline(&p.pipeline)?;
            metrics_function(&p.function)?;
            second_stages(&p.stages)
        }
        MetricsExpr::Scalar(l) => match l {
            Literal::Int(_) | Literal::Float(_) => Ok(()),
            other => invalid(format!("metrics arithmetic needs a number, found {other}")),
        },
        MetricsExpr::Binary { op, lhs, rhs } => {
            if !matches!(op, ArithOp::Add | ArithOp::Sub | ArithOp::Mul | ArithOp::Div) {
                return invalid(format!("unsupported math operation between metrics queries: {}", op.as_str()));
            }
            if matches!((&**lhs, &**rhs), (MetricsExpr::Scalar(_), MetricsExpr::Scalar(_))) {
                return invalid("metrics arithmetic needs at least one metrics query");
            }
            metrics(lhs)?;
            metrics(rhs)
        }
        MetricsExpr::Staged { expr, stages } => {
            metrics(expr)?;
            second_stages(stages)
        }
    }
}

fn second_stages(stages: &[SecondStage]) -> R {
    for s in stages {
        match s {
            SecondStage::TopK(n) | SecondStage::BottomK(n) if *n <= 0 => {
                return invalid("topk/bottomk limit must be greater than 0");
            }
            SecondStage::Filter { value, .. } if value.as_f64().is_none() => {
                return invalid(format!("metrics filters compare with a number, found {value}"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn metrics_function(f: &MetricsFunction) -> R {
    for b in &f.by {
        field(b)?;
    }
    if let Some(fl) = f.op.field() {
        field(fl)?;
        let t = fl.static_type();
        if !matches!(f.op, MetricsOp::Compare { .. }) && t != Type::Attribute && !t.is_numeric() {
            return invalid(format!("{}() needs a numeric field, {fl} is a {t}", f.op.name()));
        }
    }
    match &f.op {
        MetricsOp::QuantileOverTime(_, qs) => {
            if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                return invalid(format!("quantile must be between 0 and 1: {q}"));
            }
            if f.by.len() >= MAX_GROUP_BYS {
                return unsupported(format!("metrics group by {} values", f.by.len()));
            }
        }
        MetricsOp::HistogramOverTime(_) if f.by.len() >= MAX_GROUP_BYS => {
            return unsupported(format!("metrics group by {} values", f.by.len()));
        }
        MetricsOp::Compare { filter, top_n, start, end } => {
            if !f.by.is_empty() {
                return invalid("compare() does not take by()");
            }
            spanset_filter(filter)?;
            if *top_n <= 0 || *top_n > MAX_COMPARE_TOP_N {
                return invalid(format!(
                    "compare() top number of values must be an integer between 1 and {MAX_COMPARE_TOP_N}"
                ));
            }
            if *start != 0 || *end != 0 {
                if *start <= 0 || *end <= 0 {
                    return invalid("compare() timestamps must be positive integer unix nanoseconds");
                }
                if end <= start {
                    return invalid("compare() end timestamp must be greater than start timestamp");
                }
            }
        }
        _ => {}
    }
    if f.by.len() > MAX_GROUP_BYS {
        return unsupported(format!("metrics group by {} values", f.by.len()));
    }
    Ok(())
}

fn pipeline(p: &Pipeline) -> R {
    if p.stages.is_empty() {
        return invalid("empty pipeline");
    }
    if matches!(p.stages.first(), Some(Stage::Coalesce)) {
        return invalid("a pipeline cannot start with coalesce()");
    }
    for s in &p.stages {
        stage(s)?;
    }
    Ok(())
}

fn stage(s: &Stage) -> R {
    match s {
        Stage::Spanset(e) => spanset(e),
        Stage::ScalarFilter(f) => scalar_filter(f),
        Stage::By(e) => {
            if !e.references_span() {
                return invalid(format!("grouping field expressions must reference the span: by({e})"));
            }
            field_expr(e)
        }
        Stage::Select(fields) => {
            if fields.is_empty() {
                return invalid("select() needs at least one field");
            }
            fields.iter().try_for_each(field)
        }
        Stage::Coalesce => Ok(()),
    }
}

fn spanset(e: &SpansetExpr) -> R {
    match e {
        SpansetExpr::Filter(f) => spanset_filter(f),
        SpansetExpr::Op { lhs, rhs, .. } => {
            spanset(lhs)?;
            spanset(rhs)
        }
        SpansetExpr::Pipeline(p) => pipeline(p),
    }
}

fn spanset_filter(f: &SpansetFilter) -> R {
    let Some(e) = &f.expr else { return Ok(()) };
    field_expr(e)?;
    let t = e.static_type();
    if t != Type::Bool && t != Type::Attribute {
        return invalid(format!("span filter field expressions must resolve to a boolean: {{ {e} }} is a {t}"));
    }
    Ok(())
}

fn scalar_filter(f: &ScalarFilter) -> R {
    scalar(&f.lhs)?;
    scalar(&f.rhs)?;
    let (lt, rt) = (f.lhs.static_type(), f.rhs.static_type());
    if !lt.matches(rt) {
        return invalid(format!(
            "binary operations must operate on the same type: {} {} {}",
            f.lhs,
            f.op.as_str(),
            f.rhs
        ));
    }
    if !binary_type_ok(f.op.to_binary(), lt) || !binary_type_ok(f.op.to_binary(), rt) {
        return invalid(format!("illegal operation for the given types: {} {} {}", f.lhs, f.op.as_str(), f.rhs));
    }
    if !matches!(f.lhs, ScalarExpr::Aggregate(_)) {
        return unsupported(format!("scalar filter with left-hand side {}", f.lhs));
    }
    if !matches!(f.rhs, ScalarExpr::Literal(_)) {
        return unsupported(format!("scalar filter with right-hand side {}", f.rhs));
    }
    Ok(())
}

fn scalar(e: &ScalarExpr) -> R {
    match e {
        ScalarExpr::Aggregate(a) => aggregate(a),
        ScalarExpr::Literal(l) => {
            if l.as_f64().is_none() {
                return invalid(format!("scalar expressions must be numbers, found {l}"));
            }
            Ok(())
        }
        ScalarExpr::Binary { op, lhs, rhs } => {
            scalar(lhs)?;
            scalar(rhs)?;
            let (lt, rt) = (lhs.static_type(), rhs.static_type());
            if !lt.matches(rt) || !binary_type_ok(op.to_binary(), lt) || !binary_type_ok(op.to_binary(), rt) {
                return invalid(format!("illegal operation for the given types: {e}"));
            }
            Ok(())
        }
        ScalarExpr::Pipeline(p) => {
            pipeline(&p.pipeline)?;
            aggregate(&p.aggregate)
        }
    }
}

fn aggregate(a: &Aggregate) -> R {
    let Some(e) = &a.expr else {
        if a.op == AggregateOp::Count {
            return Ok(());
        }
        return invalid(format!("{}() needs a field expression", a.op.as_str()));
    };
    if a.op == AggregateOp::Count {
        return invalid("count() takes no arguments");
    }
    field_expr(e)?;
    let t = e.static_type();
    if t != Type::Attribute && !t.is_numeric() {
        return invalid(format!("aggregate field expressions must resolve to a number type: {}({e})", a.op.as_str()));
    }
    if !e.references_span() {
        return invalid(format!("aggregate field expressions must reference the span: {}({e})", a.op.as_str()));
    }
    Ok(())
}

fn field(f: &Field) -> R {
    match f {
        Field::Attribute(a) if a.parent => unsupported("parent"),
        Field::Intrinsic(Intrinsic::Parent) => unsupported("intrinsic (parent)"),
        _ => Ok(()),
    }
}

/// Tempo's operator/type table.
fn binary_type_ok(op: BinaryOp, t: Type) -> bool {
    use BinaryOp::*;
    match t {
        Type::Attribute => true,
        Type::Bool => matches!(op, And | Or | Eq | Neq),
        Type::Int | Type::Float | Type::Duration | Type::Scalar => {
            matches!(op, Add | Sub | Mul | Div | Mod | Pow | Eq | Neq | Lt | Lte | Gt | Gte)
        }
        Type::String => matches!(op, Eq | Neq | Regex | NotRegex | Lt | Lte | Gt | Gte),
        Type::Nil | Type::Status | Type::Kind => matches!(op, Eq | Neq),
        Type::Spanset | Type::Series => false,
    }
}

fn field_expr(e: &FieldExpr) -> R {
    match e {
        FieldExpr::Literal(_) => Ok(()),
        FieldExpr::Field(f) => field(f),
        FieldExpr::Unary { op, expr } => {
            field_expr(expr)?;
            let t = expr.static_type();
            let ok = match op {
                UnaryOp::Neg => t == Type::Attribute || t.is_numeric(),
                UnaryOp::Not => t == Type::Attribute || t == Type::Bool,
            };
            if !ok {
                return invalid(format!("illegal operation for the given type: {e}"));
            }
            Ok(())
        }
        FieldExpr::Binary { op, lhs, rhs } => {
            field_expr(lhs)?;
            field_expr(rhs)?;
            let lhs_nil = **lhs == FieldExpr::Literal(Literal::Nil);
            let rhs_nil = **rhs == FieldExpr::Literal(Literal::Nil);
            if lhs_nil || rhs_nil {
                if !matches!(op, BinaryOp::Eq | BinaryOp::Neq) {
                    return invalid(format!("nil can only be compared with = or !=: {e}"));
                }
                let other = if lhs_nil { rhs } else { lhs };
                if *op == BinaryOp::Eq {
                    match &**other {
                        FieldExpr::Field(Field::Intrinsic(i)) => {
                            return invalid(format!(
                                "{}=nil is not valid because intrinsics cannot be nil",
                                i.canonical_name()
                            ));
                        }
                        FieldExpr::Field(Field::Attribute(a))
                            if a.scope == Scope::Resource && !a.parent && a.name == "service.name" =>
                        {
                            return invalid(
                                "resource.service.name=nil is not valid because resource.service.name cannot be nil",
                            );
                        }
                        _ => {}
                    }
                }
                return Ok(());
            }
            let (lt, rt) = (lhs.static_type(), rhs.static_type());
            if !lt.matches(rt) {
                return invalid(format!("binary operations must operate on the same type: {e}"));
            }
            if !binary_type_ok(*op, lt) || !binary_type_ok(*op, rt) {
                return invalid(format!("illegal operation for the given types: {e}"));
            }
            if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
                let FieldExpr::Literal(Literal::String(pattern)) = &**rhs else {
                    return invalid(format!("the right-hand side of {} must be a string literal: {e}", op.as_str()));
                };
                if let Err(err) = regex_syntax::Parser::new().parse(pattern) {
                    let first = err.to_string().lines().last().unwrap_or("").to_string();
                    return invalid(format!("invalid regex {pattern:?}: {first}"));
                }
            }
            Ok(())
        }
    }
}
