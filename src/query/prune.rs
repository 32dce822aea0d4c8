//! TraceQL to a DataFusion span predicate that selects candidate traces.
//!
//! Every span a search returns matches one of the query's `{ }` filters, so a trace can only match if one of its
//! spans satisfies some filter. The predicate built here is a superset of "the span satisfies some filter": each
//! condition DataFusion can check on a span's own row (intrinsic columns, dedicated slot columns, the generic
//! attribute lists through `attr_may_match`) becomes a column predicate that Parquet statistics and the page index
//! can prune with; anything it cannot check (trace-level values, arithmetic, negation, events, links) becomes
//! "true". The per-trace evaluator then decides exactly. Dedicated slots differ per block, so the predicate is
//! built per source from that source's slot list.

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::regexp_like;
use datafusion::logical_expr::{Expr, col, lit, not};
use query_lang::{
    Attribute, BinaryOp, Field, FieldExpr, Intrinsic, Literal, Pipeline, Scope, SpansetExpr, Stage, Status,
};

use super::udf::attr_may_match;
use crate::block::DedicatedColumn;
use crate::block::schema::col as c;

/// Where a source keeps each dedicated attribute.
#[derive(Default)]
pub struct Slots {
    res_str: HashMap<String, String>,
    span_str: HashMap<String, String>,
    span_int: HashMap<String, String>,
    /// Dedicated keys none of whose values are in the generic list: (is resource, key). For them, the list
    /// need not be read.
    only_in_slots: std::collections::HashSet<(bool, String)>,
}

impl Slots {
    /// The string slot column holding resource (`resource = true`) or span attribute `key`, if any.
    pub fn string_slot(&self, resource: bool, key: &str) -> Option<&str> {
        if resource { self.res_str.get(key) } else { self.span_str.get(key) }.map(String::as_str)
    }

    /// The int slot column holding span attribute `key`, if any.
    pub fn int_slot(&self, key: &str) -> Option<&str> {
        self.span_int.get(key).map(String::as_str)
    }

    /// Every dedicated attribute: (is a resource attribute, key).
    pub fn keys(&self) -> impl Iterator<Item = (bool, &str)> {
        self.res_str
            .keys()
            .map(|k| (true, k.as_str()))
            .chain(self.span_str.keys().chain(self.span_int.keys()).map(|k| (false, k.as_str())))
    }

    /// The slots of a block; `service_name_in_list` is the block meta's flag of the same name.
    pub fn new(dedicated: &[DedicatedColumn], service_name_in_list: bool) -> Self {
        let mut s = Slots::default();
        if !service_name_in_list {
            s.only_in_slots.insert((true, "service.name".into()));
        }
        for d in dedicated {
            if !d.also_in_list {
                s.only_in_slots.insert((d.scope == "resource", d.name.clone()));
            }
            let map = match (d.scope.as_str(), d.value_type.as_str()) {
                ("resource", "string") => &mut s.res_str,
                ("span", "string") => &mut s.span_str,
                ("span", "int") => &mut s.span_int,
                _ => continue,
            };
            map.insert(d.name.clone(), d.column.clone());
        }
        s
    }
}

/// The candidate predicate for a search pipeline; `None` when every span is a candidate.
pub fn candidate_filter(p: &Pipeline, slots: &Slots) -> Option<Expr> {
    let mut leaves = Vec::new();
    collect_filters(p, &mut leaves);
    let mut out: Option<Expr> = None;
    for f in leaves {
        let e = f.and_then(|e| superset(e, slots))?;
        out = Some(match out {
            None => e,
            Some(prev) => prev.or(e),
        });
    }
    out
}

/// Predicates that some span of every matching trace passes, one per `{ }` the query cannot match without (both
/// sides of `&&` and of the structural and union-structural operators of its first stage; `||` and the negated
/// forms require neither side). A trace stored whole in one place that has no row passing one of them there
/// cannot match; a split trace can (the spans may sit in different places).
pub fn required_filters(p: &Pipeline, slots: &Slots) -> Vec<Expr> {
    fn required(e: &SpansetExpr, slots: &Slots, out: &mut Vec<Expr>) {
        match e {
            SpansetExpr::Filter(f) => out.extend(f.expr.as_ref().and_then(|x| superset(x, slots))),
            SpansetExpr::Op { op, lhs, rhs } => {
                use query_lang::SpansetOp as O;
                if !matches!(
                    op,
                    O::Union | O::NotChild | O::NotParent | O::NotDescendant | O::NotAncestor | O::NotSibling
                ) {
                    required(lhs, slots, out);
                    required(rhs, slots, out);
                }
            }
            SpansetExpr::Pipeline(p) => out.extend(required_filters(p, slots)),
        }
    }
    let mut out = Vec::new();
    if let Some(Stage::Spanset(e)) = p.stages.first() {
        required(e, slots, &mut out);
    }
    out
}

/// Every `{ }` of the pipeline: `None` for `{}`.
fn collect_filters<'a>(p: &'a Pipeline, out: &mut Vec<Option<&'a FieldExpr>>) {
    fn spanset<'a>(e: &'a SpansetExpr, out: &mut Vec<Option<&'a FieldExpr>>) {
        match e {
            SpansetExpr::Filter(f) => out.push(f.expr.as_ref()),
            SpansetExpr::Op { lhs, rhs, .. } => {
                spanset(lhs, out);
                spanset(rhs, out);
            }
            SpansetExpr::Pipeline(p) => collect_filters(p, out),
        }
    }
    for stage in &p.stages {
        if let Stage::Spanset(e) = stage {
            spanset(e, out);
        }
    }
}

/// A predicate true for every span on which `e` is true; `None` means "cannot narrow".
fn superset(e: &FieldExpr, slots: &Slots) -> Option<Expr> {
    match e {
        FieldExpr::Literal(Literal::Bool(false)) => Some(lit(false)),
        FieldExpr::Binary { op: BinaryOp::And, lhs, rhs } => match (superset(lhs, slots), superset(rhs, slots)) {
            (Some(a), Some(b)) => Some(a.and(b)),
            (a, b) => a.or(b),
        },
        FieldExpr::Binary { op: BinaryOp::Or, lhs, rhs } => Some(superset(lhs, slots)?.or(superset(rhs, slots)?)),
        FieldExpr::Binary { op, lhs, rhs } if op.is_comparison() => {
            let (field, op, value) = match (&**lhs, &**rhs) {
                (FieldExpr::Field(f), FieldExpr::Literal(l)) => (f, *op, l),
                (FieldExpr::Literal(l), FieldExpr::Field(f)) => (f, flip(*op)?, l),
                _ => return None,
            };
            if matches!(value, Literal::Nil) {
                return None;
            }
            match field {
                Field::Intrinsic(i) => intrinsic(*i, op, value),
                Field::Attribute(a) => attribute(a, op, value, slots),
            }
        }
        _ => None,
    }
}

/// A predicate true on exactly the spans on which `e` is true (a null reads as false), where one is known from
/// plain columns: comparisons of `name` (equality), `duration`, `status` and `kind`, and equality of a string or
/// int attribute that the source keeps only in its own column (`service.name`, dedicated slots not also in the
/// list), joined with `&&` and `||`. `None` for anything else. Unlike [`candidate_filter`] it never
/// over-approximates, so a row it rejects is a span the filter does not select (the aggregate gate relies on it).
pub fn exact_filter(e: &FieldExpr, slots: &Slots) -> Option<Expr> {
    match e {
        FieldExpr::Binary { op: BinaryOp::And, lhs, rhs } => {
            Some(exact_filter(lhs, slots)?.and(exact_filter(rhs, slots)?))
        }
        FieldExpr::Binary { op: BinaryOp::Or, lhs, rhs } => {
            Some(exact_filter(lhs, slots)?.or(exact_filter(rhs, slots)?))
        }
        FieldExpr::Binary { op, lhs, rhs } if op.is_comparison() => {
            let (field, op, value) = match (&**lhs, &**rhs) {
                (FieldExpr::Field(f), FieldExpr::Literal(l)) => (f, *op, l),
                (FieldExpr::Literal(l), FieldExpr::Field(f)) => (f, flip(*op)?, l),
                _ => return None,
            };
            match (field, value) {
                (Field::Intrinsic(Intrinsic::Name), Literal::String(_))
                    if matches!(op, BinaryOp::Eq | BinaryOp::Neq) =>
                {
                    intrinsic(Intrinsic::Name, op, value)
                }
                (Field::Intrinsic(i @ (Intrinsic::Duration | Intrinsic::Status | Intrinsic::Kind)), _) => {
                    intrinsic(*i, op, value)
                }
                (Field::Attribute(a), _) if op == BinaryOp::Eq => {
                    let resource = match a.scope {
                        Scope::Resource => true,
                        Scope::Span => false,
                        _ => return None,
                    };
                    if !slots.only_in_slots.contains(&(resource, a.name.clone())) {
                        return None;
                    }
                    let column = match value {
                        Literal::String(_) if resource && a.name == "service.name" => c::SERVICE_NAME.to_string(),
                        Literal::String(_) => slots.string_slot(resource, &a.name)?.to_string(),
                        Literal::Int(_) if !resource => slots.int_slot(&a.name)?.to_string(),
                        _ => return None,
                    };
                    let value = match value {
                        Literal::String(s) => lit(s.clone()),
                        Literal::Int(i) => lit(*i),
                        _ => return None,
                    };
                    Some(col(column.as_str()).eq(value))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The (key, string value) pairs `filter` looks for in attribute list column `list`, when every use of that
/// column is an `attr_may_match(list, key, value)` with a value: a row group holding none of the values as a
/// string, and no array of those keys, has no row on which any of those tests passes, so its list need not be
/// read. `None` otherwise.
pub fn list_values_tested(filter: &Expr, list: &str) -> Option<Vec<(String, String)>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut values = Vec::new();
    let mut usable = true;
    let _ = filter.apply(|e| {
        if let Expr::ScalarFunction(f) = e
            && f.func.name() == "attr_may_match"
        {
            return Ok(match f.args.as_slice() {
                [
                    Expr::Column(c),
                    Expr::Literal(ScalarValue::Utf8(Some(k)), _),
                    Expr::Literal(ScalarValue::Utf8(Some(v)), _),
                ] if c.name == list => {
                    values.push((k.clone(), v.clone()));
                    TreeNodeRecursion::Jump
                }
                [Expr::Column(c), ..] if c.name != list => TreeNodeRecursion::Jump,
                _ => {
                    usable = false;
                    TreeNodeRecursion::Stop
                }
            });
        }
        if let Expr::Column(c) = e
            && c.name == list
        {
            usable = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (usable && !values.is_empty()).then_some(values)
}

/// For each top-level conjunct of `filter` made only of `attr_may_match(list, key, value)` tests of one attribute
/// list joined by `AND`/`OR` (no negation): the list and the (key, value) pairs tested. A row whose list holds
/// none of those values (and no array of those keys) fails that conjunct, so it fails `filter`: a block whose
/// row groups' value filters rule out every pair has no row that passes.
pub fn required_list_values(filter: &Expr) -> Vec<(String, Vec<(String, String)>)> {
    fn only_tests(e: &Expr, list: &str) -> bool {
        match e {
            Expr::BinaryExpr(b)
                if matches!(b.op, datafusion::logical_expr::Operator::And | datafusion::logical_expr::Operator::Or) =>
            {
                only_tests(&b.left, list) && only_tests(&b.right, list)
            }
            Expr::ScalarFunction(f) if f.func.name() == "attr_may_match" => matches!(
                f.args.as_slice(),
                [Expr::Column(c), Expr::Literal(ScalarValue::Utf8(Some(_)), _), Expr::Literal(ScalarValue::Utf8(Some(_)), _)]
                    if c.name == list
            ),
            _ => false,
        }
    }
    let mut out = Vec::new();
    for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
        for list in [c::SPAN_ATTRS, c::RESOURCE_ATTRS] {
            if only_tests(conjunct, list)
                && let Some(tests) = list_values_tested(conjunct, list)
            {
                out.push((list.to_string(), tests));
            }
        }
    }
    out
}

/// The same comparison with its operands swapped.
fn flip(op: BinaryOp) -> Option<BinaryOp> {
    Some(match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Lte => BinaryOp::Gte,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Gte => BinaryOp::Lte,
        BinaryOp::Eq | BinaryOp::Neq => op,
        _ => return None,
    })
}

/// `column op value` for the plain comparison operators; `None` for regexes and the rest.
fn compare(column: Expr, op: BinaryOp, value: Expr) -> Option<Expr> {
    Some(match op {
        BinaryOp::Eq => column.eq(value),
        BinaryOp::Neq => column.not_eq(value),
        BinaryOp::Lt => column.lt(value),
        BinaryOp::Lte => column.lt_eq(value),
        BinaryOp::Gt => column.gt(value),
        BinaryOp::Gte => column.gt_eq(value),
        _ => return None,
    })
}

/// String conditions, regexes included (anchored, as TraceQL's are).
fn string_cond(column: Expr, op: BinaryOp, value: &str) -> Option<Expr> {
    let re = || regexp_like(column.clone(), lit(format!("^(?:{value})$")), None);
    match op {
        BinaryOp::Regex => Some(re()),
        BinaryOp::NotRegex => Some(column.clone().is_not_null().and(not(re()))),
        _ => compare(column, op, lit(value.to_string())),
    }
}

fn intrinsic(i: Intrinsic, op: BinaryOp, value: &Literal) -> Option<Expr> {
    match (i, value) {
        (Intrinsic::Name, Literal::String(s)) => string_cond(col(c::NAME), op, s),
        (Intrinsic::StatusMessage, Literal::String(s)) => {
            string_cond(datafusion::functions::expr_fn::coalesce(vec![col(c::STATUS_MESSAGE), lit("")]), op, s)
        }
        (Intrinsic::Duration, Literal::Duration(d)) => compare(col(c::DURATION), op, lit(*d)),
        (Intrinsic::Status, Literal::Status(s)) if matches!(op, BinaryOp::Eq | BinaryOp::Neq) => {
            let code: i8 = match s {
                Status::Unset => 0,
                Status::Ok => 1,
                Status::Error => 2,
            };
            // Codes outside 0..=2 read as unset.
            let unset = col(c::STATUS_CODE).not_eq(lit(1i8)).and(col(c::STATUS_CODE).not_eq(lit(2i8)));
            let is = if code == 0 { unset } else { col(c::STATUS_CODE).eq(lit(code)) };
            Some(if op == BinaryOp::Eq { is } else { not(is) })
        }
        (Intrinsic::Kind, Literal::Kind(k)) if matches!(op, BinaryOp::Eq | BinaryOp::Neq) => {
            let code: i8 = match k {
                query_lang::Kind::Unspecified => 0,
                query_lang::Kind::Internal => 1,
                query_lang::Kind::Server => 2,
                query_lang::Kind::Client => 3,
                query_lang::Kind::Producer => 4,
                query_lang::Kind::Consumer => 5,
            };
            if code == 0 {
                // Out-of-range kinds read as unspecified: leave those to the evaluator.
                return None;
            }
            compare(col(c::KIND), op, lit(code))
        }
        (Intrinsic::TraceId, Literal::String(s)) if op == BinaryOp::Eq => {
            Some(hex_bytes(s, 16).map_or(lit(false), |b| col(c::TRACE_ID).eq(b)))
        }
        (Intrinsic::SpanId, Literal::String(s)) if op == BinaryOp::Eq => {
            Some(hex_bytes(s, 8).map_or(lit(false), |b| col(c::SPAN_ID).eq(b)))
        }
        _ => None,
    }
}

/// The fixed-size binary literal for a lower-case hex ID, as the evaluator prints IDs; `None` if it cannot be one.
fn hex_bytes(s: &str, len: usize) -> Option<Expr> {
    if s.len() != len * 2 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    Some(lit(ScalarValue::FixedSizeBinary(len as i32, Some(bytes))))
}

fn attribute(a: &Attribute, op: BinaryOp, value: &Literal, slots: &Slots) -> Option<Expr> {
    let (list, str_slot, int_slot) = match a.scope {
        Scope::Span => (c::SPAN_ATTRS, slots.span_str.get(&a.name), slots.span_int.get(&a.name)),
        Scope::Resource => {
            let s = if a.name == "service.name" { Some(c::SERVICE_NAME.to_string()) } else { None };
            let slot = s.or_else(|| slots.res_str.get(&a.name).cloned());
            let list = (!slots.only_in_slots.contains(&(true, a.name.clone()))).then_some(c::RESOURCE_ATTRS);
            return Some(attribute_in(list, slot.as_ref(), None, &a.name, op, value));
        }
        _ => return None,
    };
    let list = (!slots.only_in_slots.contains(&(false, a.name.clone()))).then_some(list);
    Some(attribute_in(list, str_slot, int_slot, &a.name, op, value))
}

/// A condition on one attribute kept in a generic list and possibly in a string and/or an int slot.
fn attribute_in(
    list: Option<&str>,
    str_slot: Option<&String>,
    int_slot: Option<&String>,
    key: &str,
    op: BinaryOp,
    value: &Literal,
) -> Expr {
    let mut parts = Vec::new();
    // The generic list, unless the block says every value of the key sits in its slots.
    if let Some(list) = list {
        parts.push(match (value, op) {
            (Literal::String(s), BinaryOp::Eq) => attr_may_match(col(list), key, Some(s)),
            _ => attr_may_match(col(list), key, None),
        });
    }
    if let Some(slot) = str_slot {
        let slot_cond = match value {
            Literal::String(s) => string_cond(col(slot.as_str()), op, s),
            // Strings never equal numbers or other types: a string slot cannot hold a match.
            _ => None,
        };
        if let Some(e) = slot_cond {
            parts.push(e);
        }
    }
    if let Some(slot) = int_slot {
        let slot_cond = match value {
            Literal::Int(i) => compare(col(slot.as_str()), op, lit(*i)),
            Literal::Float(f) => compare(
                datafusion::logical_expr::cast(col(slot.as_str()), arrow::datatypes::DataType::Float64),
                op,
                lit(*f),
            ),
            _ => None,
        };
        if let Some(e) = slot_cond {
            parts.push(e);
        }
    }
    // No list and no usable slot: nothing in this source can match.
    parts.into_iter().reduce(Expr::or).unwrap_or_else(|| lit(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_values_tested_only_when_every_use_tests_a_value() {
        let list = c::SPAN_ATTRS;
        let a = attr_may_match(col(list), "user.id", Some("u-1"));
        let b = attr_may_match(col(list), "http.method", Some("GET"));
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(list_values_tested(&a, list), Some(vec![pair("user.id", "u-1")]));
        let both = a.clone().or(b.and(col(c::DURATION).gt(lit(5i64))));
        assert_eq!(list_values_tested(&both, list), Some(vec![pair("user.id", "u-1"), pair("http.method", "GET")]));
        // Another list's tests do not count; presence tests and other uses of the column rule it out.
        let other = attr_may_match(col(c::RESOURCE_ATTRS), "region", None);
        assert_eq!(list_values_tested(&a.clone().or(other.clone()), list), Some(vec![pair("user.id", "u-1")]));
        assert_eq!(list_values_tested(&other, list), None);
        let presence = attr_may_match(col(list), "user.id", None);
        assert_eq!(list_values_tested(&a.clone().or(presence), list), None);
        assert_eq!(list_values_tested(&a.or(col(list).is_null()), list), None);
        assert_eq!(list_values_tested(&col(c::NAME).eq(lit("x")), list), None);
    }

    #[test]
    fn required_list_values_only_from_conjuncts_of_value_tests() {
        let list = c::SPAN_ATTRS;
        let a = attr_may_match(col(list), "user.id", Some("u-1"));
        let b = attr_may_match(col(list), "user.id", Some("u-2"));
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let name = col(c::NAME).eq(lit("x"));
        // `a AND name`: a row without u-1 fails; `a OR b` needs one of the two.
        assert_eq!(
            required_list_values(&a.clone().and(name.clone())),
            vec![(list.to_string(), vec![pair("user.id", "u-1")])]
        );
        assert_eq!(
            required_list_values(&a.clone().or(b.clone())),
            vec![(list.to_string(), vec![pair("user.id", "u-1"), pair("user.id", "u-2")])]
        );
        // A row may pass without the list (`OR` with another column), or because the value is absent (`NOT`).
        assert!(required_list_values(&a.clone().or(name.clone())).is_empty());
        assert!(required_list_values(&not(a.clone())).is_empty());
        assert!(required_list_values(&attr_may_match(col(list), "user.id", None)).is_empty());
        assert!(required_list_values(&name).is_empty());
    }
}
