//! Recursive-descent parser with precedence climbing.
//!
//! Two expression grammars share the operator tokens:
//! - inside `{ }`, `by()` and aggregates: field expressions, with Tempo's precedence
//!   (`&& ||` < comparisons < `+ -` < `!` < `* / %` < `^` (right) < unary `-`);
//! - outside: spansets, aggregates, constants and metrics queries. Here one precedence climber
//!   builds typed operands ([`Item`]) and every operator checks which operand kinds it may
//!   join (`{a} > {b}` is structural, `count() > 2` a scalar filter, `({..} | rate()) > 2` a
//!   metrics filter). `|` binds loosest and separates pipeline stages.
//!
//! Constant arithmetic outside braces is folded as Tempo folds it (integer division truncates;
//! durations may not take part).

use crate::ast::*;
use crate::error::ParseError;
use crate::lexer::{Tok, Token, tokenize};

/// Deepest nesting of parentheses / unary operators / right-associative chains.
const MAX_NESTING: usize = 100;
/// Deepest syntax tree, so later recursive passes stay far from the stack limit.
const MAX_TREE_DEPTH: u32 = 500;

/// Parses a complete query.
pub fn parse(src: &str) -> Result<Query, ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser { src, toks, pos: 0, nesting: 0 };
    p.query()
}

/// Parses one field expression (the inside of `{ }`); used by the lenient parser.
pub(crate) fn parse_field_tokens(src: &str, mut toks: Vec<Token>) -> Option<FieldExpr> {
    let end = toks.last().map_or(0, |t| t.end);
    toks.push(Token { tok: Tok::Eof, start: end, end });
    let mut p = Parser { src, toks, pos: 0, nesting: 0 };
    let (e, _) = p.field_expr(0).ok()?;
    (p.peek() == &Tok::Eof).then_some(e)
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    nesting: usize,
}

/// An operand of the outer grammar, tagged by what it can combine with.
#[derive(Debug)]
enum Item {
    Spanset(SpansetExpr),
    /// `by()`, `select()`, `coalesce()`.
    Stage(Stage),
    Filter(ScalarFilter),
    /// Aggregate-containing arithmetic such as `count() + 1`.
    Agg(ScalarExpr),
    /// Arithmetic over `(pipeline | aggregate)` operands.
    Wsp(ScalarExpr),
    /// A folded constant; `simple` when written as one (optionally negated) literal.
    Lit(Literal, bool),
    /// An unwrapped `rate() by (x) > 3`; only valid as the metrics stage of a pipeline.
    MetricsFn(MetricsFunction, Vec<SecondStage>),
    /// `topk(n)` / `bottomk(n)` with any trailing comparisons.
    Second(Vec<SecondStage>),
    Metrics(MetricsExpr),
}

impl Item {
    fn describe(&self) -> &'static str {
        match self {
            Item::Spanset(_) => "a spanset",
            Item::Stage(Stage::By(_)) => "by()",
            Item::Stage(Stage::Select(_)) => "select()",
            Item::Stage(_) => "coalesce()",
            Item::Filter(_) => "a scalar filter",
            Item::Agg(_) => "an aggregate",
            Item::Wsp(_) => "an aggregated sub-pipeline",
            Item::Lit(..) => "a constant",
            Item::MetricsFn(..) => "a metrics function",
            Item::Second(_) => "topk()/bottomk()",
            Item::Metrics(_) => "a metrics query",
        }
    }
}

/// An operand with its source position and tree depth.
#[derive(Debug)]
struct It {
    item: Item,
    start: usize,
    depth: u32,
}

fn spanset_op(t: &Tok) -> Option<SpansetOp> {
    Some(match t {
        Tok::And => SpansetOp::And,
        Tok::Or => SpansetOp::Union,
        Tok::Gt => SpansetOp::Child,
        Tok::Lt => SpansetOp::Parent,
        Tok::Desc => SpansetOp::Descendant,
        Tok::Ance => SpansetOp::Ancestor,
        Tok::Tilde => SpansetOp::Sibling,
        Tok::NotChild => SpansetOp::NotChild,
        Tok::NotParent => SpansetOp::NotParent,
        Tok::NotDesc => SpansetOp::NotDescendant,
        Tok::NotAnce => SpansetOp::NotAncestor,
        Tok::NRe => SpansetOp::NotSibling,
        Tok::UnionChild => SpansetOp::UnionChild,
        Tok::UnionParent => SpansetOp::UnionParent,
        Tok::UnionDesc => SpansetOp::UnionDescendant,
        Tok::UnionAnce => SpansetOp::UnionAncestor,
        Tok::UnionSibl => SpansetOp::UnionSibling,
        _ => return None,
    })
}

fn cmp_op(t: &Tok) -> Option<CmpOp> {
    Some(match t {
        Tok::Eq => CmpOp::Eq,
        Tok::Neq => CmpOp::Neq,
        Tok::Lt => CmpOp::Lt,
        Tok::Lte => CmpOp::Lte,
        Tok::Gt => CmpOp::Gt,
        Tok::Gte => CmpOp::Gte,
        _ => return None,
    })
}

fn arith_op(t: &Tok) -> Option<ArithOp> {
    Some(match t {
        Tok::Add => ArithOp::Add,
        Tok::Sub => ArithOp::Sub,
        Tok::Mul => ArithOp::Mul,
        Tok::Div => ArithOp::Div,
        Tok::Mod => ArithOp::Mod,
        Tok::Pow => ArithOp::Pow,
        _ => return None,
    })
}

fn field_op(t: &Tok) -> Option<BinaryOp> {
    Some(match t {
        Tok::And => BinaryOp::And,
        Tok::Or => BinaryOp::Or,
        Tok::Eq => BinaryOp::Eq,
        Tok::Neq => BinaryOp::Neq,
        Tok::Lt => BinaryOp::Lt,
        Tok::Lte => BinaryOp::Lte,
        Tok::Gt => BinaryOp::Gt,
        Tok::Gte => BinaryOp::Gte,
        Tok::Re => BinaryOp::Regex,
        Tok::NRe => BinaryOp::NotRegex,
        Tok::Add => BinaryOp::Add,
        Tok::Sub => BinaryOp::Sub,
        Tok::Mul => BinaryOp::Mul,
        Tok::Div => BinaryOp::Div,
        Tok::Mod => BinaryOp::Mod,
        Tok::Pow => BinaryOp::Pow,
        _ => return None,
    })
}

/// (left, right) binding power from a precedence level; `^` is the only right-associative one.
fn binding_power(level: u8, right_assoc: bool) -> (u8, u8) {
    if right_assoc { (level * 2 + 1, level * 2) } else { (level * 2, level * 2 + 1) }
}

/// Binding power of unary operators' operands: they take `* / % ^` but not `+ -`.
const UNARY_BP: u8 = 8;

/// Outer-grammar binding powers: `&& ||` < comparisons and structural < `+ -` < `* / %` < `^`.
fn outer_bp(t: &Tok) -> Option<(u8, u8)> {
    let level = match t {
        Tok::And | Tok::Or => 1,
        Tok::Eq
        | Tok::Neq
        | Tok::Lt
        | Tok::Lte
        | Tok::Gt
        | Tok::Gte
        | Tok::Re
        | Tok::NRe
        | Tok::Desc
        | Tok::Ance
        | Tok::Tilde
        | Tok::NotChild
        | Tok::NotParent
        | Tok::NotDesc
        | Tok::NotAnce
        | Tok::UnionChild
        | Tok::UnionParent
        | Tok::UnionDesc
        | Tok::UnionAnce
        | Tok::UnionSibl => 2,
        Tok::Add | Tok::Sub => 3,
        Tok::Mul | Tok::Div | Tok::Mod => 4,
        Tok::Pow => 5,
        _ => return None,
    };
    Some(binding_power(level, *t == Tok::Pow))
}

fn literal_keyword(word: &str) -> Option<Literal> {
    Some(match word {
        "true" => Literal::Bool(true),
        "false" => Literal::Bool(false),
        "ok" => Literal::Status(Status::Ok),
        "error" => Literal::Status(Status::Error),
        "unset" => Literal::Status(Status::Unset),
        "unspecified" => Literal::Kind(Kind::Unspecified),
        "internal" => Literal::Kind(Kind::Internal),
        "server" => Literal::Kind(Kind::Server),
        "client" => Literal::Kind(Kind::Client),
        "producer" => Literal::Kind(Kind::Producer),
        "consumer" => Literal::Kind(Kind::Consumer),
        "minInt" => Literal::Int(i64::MIN),
        "maxInt" => Literal::Int(i64::MAX),
        _ => return None,
    })
}

/// Folds `lhs op rhs` for constants the way Tempo does (ints stay ints, durations refused).
fn fold(op: ArithOp, lhs: &Literal, rhs: &Literal) -> Result<Literal, String> {
    use Literal::*;
    match (lhs, rhs) {
        (Duration(_), _) | (_, Duration(_)) => Err("durations cannot be used in constant arithmetic".into()),
        (Int(a), Int(b)) => {
            let r = match op {
                ArithOp::Add => a.checked_add(*b),
                ArithOp::Sub => a.checked_sub(*b),
                ArithOp::Mul => a.checked_mul(*b),
                ArithOp::Div if *b == 0 => return Err("division by zero".into()),
                ArithOp::Div => a.checked_div(*b),
                _ => return Err(format!("'{}' is not supported between constants", op.as_str())),
            };
            r.map(Int).ok_or_else(|| "integer overflow in constant arithmetic".into())
        }
        (a, b) => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Err("arithmetic needs numbers".into());
            };
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                _ => return Err(format!("'{}' is not supported between constants", op.as_str())),
            };
            if r.is_finite() { Ok(Float(r)) } else { Err("constant arithmetic result is not a finite number".into()) }
        }
    }
}

/// Negates a numeric literal; `None` when it cannot be (not a number, or overflow).
pub(crate) fn negate(l: &Literal) -> Option<Literal> {
    match l {
        Literal::Int(i) => i.checked_neg().map(Literal::Int),
        Literal::Float(f) => Some(Literal::Float(-f)),
        Literal::Duration(d) => d.checked_neg().map(Literal::Duration),
        _ => None,
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.toks.get(self.pos + n).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.src.len(), |t| t.start)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err_at(&self, offset: usize, msg: impl Into<String>) -> ParseError {
        let found =
            self.toks.iter().find(|t| t.start >= offset).map_or("end of query".to_string(), |t| t.tok.describe());
        ParseError::new(self.src, offset, msg, found)
    }

    fn err_here(&self, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.src, self.offset(), msg, self.peek().describe())
    }

    fn expect(&mut self, t: Tok, msg: &str) -> Result<(), ParseError> {
        if *self.peek() == t {
            self.bump();
            Ok(())
        } else {
            Err(self.err_here(msg))
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.err_here(format!("query nested too deeply (more than {MAX_NESTING} levels)")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    fn check_depth(&self, depth: u32, at: usize) -> Result<u32, ParseError> {
        if depth > MAX_TREE_DEPTH {
            return Err(self.err_at(at, format!("expression too deep (more than {MAX_TREE_DEPTH} nested operations)")));
        }
        Ok(depth)
    }

    // ---------------------------------------------------------------- query level

    fn query(&mut self) -> Result<Query, ParseError> {
        if *self.peek() == Tok::Eof {
            return Err(self.err_here("expected a query such as '{ }'"));
        }
        let items = self.pipeline()?;
        let it = self.assemble(items, false)?;
        let body = match it.item {
            Item::Spanset(SpansetExpr::Pipeline(p)) => Body::Spans(p),
            Item::Spanset(e) => Body::Spans(Pipeline { stages: vec![Stage::Spanset(e)] }),
            Item::Stage(Stage::Coalesce) => {
                return Err(self.err_at(it.start, "a pipeline cannot start with coalesce()"));
            }
            Item::Stage(s) => Body::Spans(Pipeline { stages: vec![s] }),
            Item::Filter(f) => Body::Spans(Pipeline { stages: vec![Stage::ScalarFilter(f)] }),
            Item::Metrics(m) => Body::Metrics(m),
            Item::Agg(_) => {
                return Err(
                    self.err_at(it.start, "an aggregate must be compared to become a filter, e.g. '{ } | count() > 2'")
                );
            }
            Item::Lit(..) => {
                return Err(
                    self.err_at(it.start, "a query cannot be a constant; start with a spanset filter '{ ... }'")
                );
            }
            Item::Wsp(_) => {
                return Err(self.err_at(it.start, "an aggregated sub-pipeline must be compared, e.g. '(...) > 2'"));
            }
            Item::MetricsFn(..) | Item::Second(_) => {
                return Err(self.err_at(it.start, "a metrics function needs a pipeline before it, e.g. '{ } | rate()'"));
            }
        };
        let hints = if self.is_word("with") { self.hints()? } else { Vec::new() };
        if *self.peek() != Tok::Eof {
            let msg = if hints.is_empty() {
                "expected an operator, '|', 'with(...)' or end of query"
            } else {
                "expected end of query after 'with(...)'"
            };
            return Err(self.err_here(msg));
        }
        Ok(Query { body, hints })
    }

    fn hints(&mut self) -> Result<Vec<Hint>, ParseError> {
        self.bump();
        self.expect(Tok::LParen, "expected '(' after 'with'")?;
        let mut hints = Vec::new();
        loop {
            let name = match self.bump() {
                Tok::Ident(s) => s,
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.err_here("expected a hint name such as 'sample'"));
                }
            };
            self.expect(Tok::Eq, "expected '=' after hint name")?;
            let value = match self.peek().clone() {
                Tok::Str(s) => Literal::String(s),
                Tok::Int(i) => Literal::Int(i),
                Tok::Float(f) => Literal::Float(f),
                Tok::Duration(d) => Literal::Duration(d),
                Tok::Ident(w) if literal_keyword(&w).is_some() => literal_keyword(&w).unwrap_or(Literal::Nil),
                _ => return Err(self.err_here("expected a hint value (string, number, duration or boolean)")),
            };
            self.bump();
            hints.push(Hint { name, value });
            match self.bump() {
                Tok::Comma => continue,
                Tok::RParen => return Ok(hints),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.err_here("expected ',' or ')' in 'with(...)'"));
                }
            }
        }
    }

    fn pipeline(&mut self) -> Result<Vec<It>, ParseError> {
        let mut items = vec![self.outer(0)?];
        while *self.peek() == Tok::Pipe {
            self.bump();
            items.push(self.outer(0)?);
        }
        Ok(items)
    }

    /// Turns `|`-separated operands into one operand. `paren` is true inside `( )`, where a
    /// pipeline may end in a bare aggregate.
    fn assemble(&self, mut items: Vec<It>, paren: bool) -> Result<It, ParseError> {
        let start = items.first().map_or(0, |i| i.start);
        let depth = items.iter().map(|i| i.depth).max().unwrap_or(0) + 1;
        if let Some(idx) = items.iter().position(|i| matches!(i.item, Item::MetricsFn(..))) {
            if idx == 0 {
                return Err(self.err_at(start, "a metrics function needs a pipeline before it, e.g. '{ } | rate()'"));
            }
            let rest = items.split_off(idx + 1);
            let Some(It { item: Item::MetricsFn(function, mut stages), .. }) = items.pop() else {
                return Err(self.err_at(start, "internal error: metrics function expected"));
            };
            for it in rest {
                match it.item {
                    Item::Second(s) => stages.extend(s),
                    _ => {
                        return Err(self.err_at(
                            it.start,
                            format!(
                                "expected topk(), bottomk() or a comparison after the metrics function, found {}",
                                it.item.describe()
                            ),
                        ));
                    }
                }
            }
            let pipeline = self.stages(items)?;
            let m = MetricsExpr::Pipeline(Box::new(MetricsPipeline { pipeline, function, stages }));
            return Ok(It { item: Item::Metrics(m), start, depth });
        }
        if items.len() > 1 && matches!(items[0].item, Item::Metrics(_)) {
            let rest = items.split_off(1);
            let Some(It { item: Item::Metrics(mut m), .. }) = items.pop() else {
                return Err(self.err_at(start, "internal error: metrics expected"));
            };
            for it in rest {
                match it.item {
                    Item::Second(s) => m = add_stages(m, s),
                    _ => {
                        return Err(self.err_at(
                            it.start,
                            format!("expected topk() or bottomk() after a metrics query, found {}", it.item.describe()),
                        ));
                    }
                }
            }
            return Ok(It { item: Item::Metrics(m), start, depth });
        }
        if items.len() == 1 {
            let Some(mut it) = items.pop() else { return Err(self.err_at(start, "empty pipeline")) };
            return match it.item {
                Item::Lit(l, _) => Ok(It { item: Item::Lit(l, false), ..it }),
                Item::Stage(Stage::Coalesce) => Err(self.err_at(it.start, "a pipeline cannot start with coalesce()")),
                Item::Stage(s) if paren => {
                    it.item = Item::Spanset(SpansetExpr::Pipeline(Pipeline { stages: vec![s] }));
                    Ok(it)
                }
                Item::Filter(f) if paren => {
                    it.item = Item::Spanset(SpansetExpr::Pipeline(Pipeline { stages: vec![Stage::ScalarFilter(f)] }));
                    Ok(it)
                }
                Item::Second(_) => Err(self.err_at(it.start, "topk()/bottomk() must follow a metrics function")),
                _ => Ok(it),
            };
        }
        if paren && matches!(items.last().map(|i| &i.item), Some(Item::Agg(ScalarExpr::Aggregate(_)))) {
            let Some(It { item: Item::Agg(ScalarExpr::Aggregate(aggregate)), .. }) = items.pop() else {
                return Err(self.err_at(start, "internal error: aggregate expected"));
            };
            let pipeline = self.stages(items)?;
            let wsp = ScalarExpr::Pipeline(Box::new(ScalarPipeline { pipeline, aggregate }));
            return Ok(It { item: Item::Wsp(wsp), start, depth });
        }
        let pipeline = self.stages(items)?;
        let item = if pipeline.stages.len() == 1 && matches!(pipeline.stages[0], Stage::Spanset(_)) {
            match pipeline.stages.into_iter().next() {
                Some(Stage::Spanset(e)) => Item::Spanset(e),
                _ => return Err(self.err_at(start, "internal error: spanset stage expected")),
            }
        } else {
            Item::Spanset(SpansetExpr::Pipeline(pipeline))
        };
        Ok(It { item, start, depth })
    }

    /// Converts operands into spanset pipeline stages, splicing parenthesised sub-pipelines.
    fn stages(&self, items: Vec<It>) -> Result<Pipeline, ParseError> {
        let mut stages = Vec::with_capacity(items.len());
        for it in items {
            match it.item {
                Item::Spanset(SpansetExpr::Pipeline(p)) => stages.extend(p.stages),
                Item::Spanset(e) => stages.push(Stage::Spanset(e)),
                Item::Stage(s) => stages.push(s),
                Item::Filter(f) => stages.push(Stage::ScalarFilter(f)),
                Item::Agg(_) => {
                    return Err(self
                        .err_at(it.start, "an aggregate must be compared to be a pipeline stage, e.g. 'count() > 2'"));
                }
                Item::Second(_) => {
                    return Err(self.err_at(it.start, "topk()/bottomk() must follow a metrics function"));
                }
                other => {
                    return Err(self.err_at(it.start, format!("{} cannot be a pipeline stage", other.describe())));
                }
            }
            if matches!(stages.first(), Some(Stage::Coalesce)) {
                return Err(self.err_at(it.start, "a pipeline cannot start with coalesce()"));
            }
        }
        Ok(Pipeline { stages })
    }

    /// Precedence climbing over outer operands.
    fn outer(&mut self, min_bp: u8) -> Result<It, ParseError> {
        self.enter()?;
        let mut lhs = self.outer_prefix()?;
        while let Some((l_bp, r_bp)) = outer_bp(self.peek()) {
            if l_bp < min_bp {
                break;
            }
            let op_at = self.offset();
            let op = self.bump();
            let rhs = self.outer(r_bp)?;
            lhs = self.combine(lhs, op, op_at, rhs)?;
        }
        self.leave();
        Ok(lhs)
    }

    fn combine(&self, lhs: It, op: Tok, op_at: usize, rhs: It) -> Result<It, ParseError> {
        let start = lhs.start;
        let depth = self.check_depth(lhs.depth.max(rhs.depth) + 1, op_at)?;
        let mk = |item| Ok(It { item, start, depth });
        let sym = op.symbol();
        let structural = matches!(op, Tok::And | Tok::Or)
            || (matches!(lhs.item, Item::Spanset(_)) && matches!(op, Tok::Gt | Tok::Lt | Tok::NRe))
            || (cmp_op(&op).is_none() && arith_op(&op).is_none() && !matches!(op, Tok::Re | Tok::NRe));
        if structural {
            let Some(sop) = spanset_op(&op) else {
                return Err(self.err_at(op_at, format!("'{sym}' is not an operator here")));
            };
            return match (lhs.item, rhs.item) {
                (Item::Spanset(l), Item::Spanset(r)) => {
                    mk(Item::Spanset(SpansetExpr::Op { op: sop, lhs: Box::new(l), rhs: Box::new(r) }))
                }
                (Item::Filter(_), _) | (_, Item::Filter(_)) => Err(self.err_at(
                    op_at,
                    format!("'{sym}' joins spansets, not scalar filters; make the filter a pipeline stage: '{{ ... }} | count() > 1'"),
                )),
                (l, r) => Err(self.err_at(
                    op_at,
                    format!("'{sym}' joins two spansets, found {} and {}", l.describe(), r.describe()),
                )),
            };
        }
        if matches!(op, Tok::Re | Tok::NRe) {
            return Err(self.err_at(op_at, format!("'{sym}' matches regular expressions only inside '{{ }}'")));
        }
        if let Some(cmp) = cmp_op(&op) {
            return match (lhs.item, rhs.item) {
                (Item::Agg(l), Item::Agg(r)) => mk(Item::Filter(ScalarFilter { op: cmp, lhs: l, rhs: r })),
                (Item::Agg(l), Item::Lit(v, _)) => {
                    mk(Item::Filter(ScalarFilter { op: cmp, lhs: l, rhs: ScalarExpr::Literal(v) }))
                }
                (Item::Lit(v, _), Item::Agg(r)) => {
                    mk(Item::Filter(ScalarFilter { op: cmp, lhs: ScalarExpr::Literal(v), rhs: r }))
                }
                (Item::Wsp(l), Item::Wsp(r)) => mk(Item::Filter(ScalarFilter { op: cmp, lhs: l, rhs: r })),
                (Item::Wsp(l), Item::Lit(v, true)) => {
                    mk(Item::Filter(ScalarFilter { op: cmp, lhs: l, rhs: ScalarExpr::Literal(v) }))
                }
                (Item::Wsp(_), Item::Lit(_, false)) => Err(self.err_at(
                    rhs.start,
                    "compare an aggregated sub-pipeline with a single number, not an expression",
                )),
                (Item::MetricsFn(f, mut stages), Item::Lit(v, _)) => {
                    stages.push(SecondStage::Filter { op: cmp, value: v });
                    mk(Item::MetricsFn(f, stages))
                }
                (Item::Second(mut stages), Item::Lit(v, _)) => {
                    stages.push(SecondStage::Filter { op: cmp, value: v });
                    mk(Item::Second(stages))
                }
                (Item::Metrics(m), Item::Lit(v, _)) => {
                    mk(Item::Metrics(add_stages(m, vec![SecondStage::Filter { op: cmp, value: v }])))
                }
                (Item::Lit(..), Item::Lit(..)) => Err(self.err_at(
                    op_at,
                    "comparing two constants; a scalar filter needs an aggregate such as count() or avg(duration)",
                )),
                (Item::Lit(..), _) => {
                    Err(self.err_at(start, "put the constant on the right-hand side of the comparison"))
                }
                (Item::Spanset(_), _) => Err(self.err_at(
                    op_at,
                    format!(
                        "'{sym}' does not apply to spansets; spanset operators are && || > < >> << ~ and their ! and & forms"
                    ),
                )),
                (Item::MetricsFn(..) | Item::Second(_) | Item::Metrics(_), _) => {
                    Err(self.err_at(rhs.start, format!("expected a number after '{sym}'")))
                }
                (l, r) => {
                    Err(self.err_at(op_at, format!("cannot compare {} with {}", l.describe(), r.describe())))
                }
            };
        }
        let Some(aop) = arith_op(&op) else {
            return Err(self.err_at(op_at, format!("'{sym}' is not an operator here")));
        };
        let metrics_op = matches!(aop, ArithOp::Add | ArithOp::Sub | ArithOp::Mul | ArithOp::Div);
        let scalar_bin = |l, r| ScalarExpr::Binary { op: aop, lhs: Box::new(l), rhs: Box::new(r) };
        let metrics_bin = |l, r| MetricsExpr::Binary { op: aop, lhs: Box::new(l), rhs: Box::new(r) };
        let metrics_scalar = |v: Literal, at: usize| match v {
            Literal::Duration(_) => {
                Err(self.err_at(at, "a duration cannot be used as a scalar operand in metrics arithmetic"))
            }
            v => Ok(MetricsExpr::Scalar(v)),
        };
        match (lhs.item, rhs.item) {
            (Item::Lit(a, _), Item::Lit(b, _)) => match fold(aop, &a, &b) {
                Ok(v) => mk(Item::Lit(v, false)),
                Err(e) => Err(self.err_at(op_at, e)),
            },
            (Item::Agg(l), Item::Agg(r)) => mk(Item::Agg(scalar_bin(l, r))),
            (Item::Agg(l), Item::Lit(v, _)) => mk(Item::Agg(scalar_bin(l, ScalarExpr::Literal(v)))),
            (Item::Lit(v, _), Item::Agg(r)) => mk(Item::Agg(scalar_bin(ScalarExpr::Literal(v), r))),
            (Item::Wsp(l), Item::Wsp(r)) => mk(Item::Wsp(scalar_bin(l, r))),
            (Item::Metrics(l), Item::Metrics(r)) if metrics_op => mk(Item::Metrics(metrics_bin(l, r))),
            (Item::Metrics(l), Item::Lit(v, _)) if metrics_op => {
                mk(Item::Metrics(metrics_bin(l, metrics_scalar(v, rhs.start)?)))
            }
            (Item::Lit(v, _), Item::Metrics(r)) if metrics_op => {
                mk(Item::Metrics(metrics_bin(metrics_scalar(v, start)?, r)))
            }
            (Item::Metrics(_), _) | (_, Item::Metrics(_)) if !metrics_op => {
                Err(self.err_at(op_at, format!("'{sym}' cannot combine metrics queries; use + - * /")))
            }
            (Item::MetricsFn(..) | Item::Second(_), _) | (_, Item::MetricsFn(..)) => Err(self.err_at(
                op_at,
                format!("wrap a metrics pipeline in parentheses to use it in arithmetic: '({{ }} | rate()) {sym} ...'"),
            )),
            (Item::Wsp(_), Item::Lit(..)) | (Item::Lit(..), Item::Wsp(_)) => {
                Err(self.err_at(op_at, "constants cannot be combined with an aggregated sub-pipeline"))
            }
            (l, r) => Err(self.err_at(op_at, format!("'{sym}' cannot combine {} and {}", l.describe(), r.describe()))),
        }
    }

    fn outer_prefix(&mut self) -> Result<It, ParseError> {
        let start = self.offset();
        let lit = |l| Ok(It { item: Item::Lit(l, true), start, depth: 1 });
        match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                lit(Literal::Int(i))
            }
            Tok::Float(f) => {
                self.bump();
                lit(Literal::Float(f))
            }
            Tok::Duration(d) => {
                self.bump();
                lit(Literal::Duration(d))
            }
            Tok::Sub => {
                self.bump();
                self.enter()?;
                let operand = self.outer_prefix()?;
                self.leave();
                match operand.item {
                    Item::Lit(l, simple) => match negate(&l) {
                        Some(n) => Ok(It { item: Item::Lit(n, simple), start, depth: operand.depth }),
                        None => Err(self.err_at(start, "number out of range after negation")),
                    },
                    _ => Err(self.err_at(start, "unary '-' applies only to numbers outside '{ }'")),
                }
            }
            Tok::LBrace => {
                let (f, depth) = self.spanset_filter()?;
                Ok(It { item: Item::Spanset(SpansetExpr::Filter(f)), start, depth })
            }
            Tok::LParen => {
                self.bump();
                let items = self.pipeline()?;
                self.expect(Tok::RParen, "expected ')' to close '('")?;
                self.assemble(items, true)
            }
            Tok::Ident(w) => self.function(&w, start),
            Tok::Attr { .. } | Tok::ScopedIntrinsic(_) | Tok::Str(_) => {
                Err(self.err_here("expected a spanset filter; field expressions belong inside '{ }'"))
            }
            _ => Err(self.err_here("expected a spanset filter '{ ... }', '(' or a pipeline function")),
        }
    }

    fn function(&mut self, w: &str, start: usize) -> Result<It, ParseError> {
        let open = |p: &mut Self| p.expect(Tok::LParen, &format!("expected '(' after '{w}'"));
        let close = |p: &mut Self| p.expect(Tok::RParen, &format!("expected ')' to close '{w}('"));
        let agg =
            |op, expr, depth| Ok(It { item: Item::Agg(ScalarExpr::Aggregate(Aggregate { op, expr })), start, depth });
        match w {
            "minInt" | "maxInt" => {
                self.bump();
                let v = if w == "minInt" { i64::MIN } else { i64::MAX };
                Ok(It { item: Item::Lit(Literal::Int(v), true), start, depth: 1 })
            }
            "count" => {
                self.bump();
                open(self)?;
                close(self)?;
                agg(AggregateOp::Count, None, 1)
            }
            "avg" | "min" | "max" | "sum" => {
                self.bump();
                let op = match w {
                    "avg" => AggregateOp::Avg,
                    "min" => AggregateOp::Min,
                    "max" => AggregateOp::Max,
                    _ => AggregateOp::Sum,
                };
                open(self)?;
                if *self.peek() == Tok::RParen {
                    return Err(self.err_here(format!("expected a field expression in '{w}()'")));
                }
                let (e, d) = self.field_expr(0)?;
                close(self)?;
                agg(op, Some(e), d + 1)
            }
            "by" => {
                self.bump();
                open(self)?;
                if *self.peek() == Tok::RParen {
                    return Err(self.err_here("expected a field expression in 'by()'"));
                }
                let (e, d) = self.field_expr(0)?;
                if *self.peek() == Tok::Comma {
                    return Err(self.err_here("by() takes a single field expression"));
                }
                close(self)?;
                Ok(It { item: Item::Stage(Stage::By(e)), start, depth: d + 1 })
            }
            "select" => {
                self.bump();
                open(self)?;
                let fields = self.field_list("select")?;
                Ok(It { item: Item::Stage(Stage::Select(fields)), start, depth: 1 })
            }
            "coalesce" => {
                self.bump();
                open(self)?;
                close(self)?;
                Ok(It { item: Item::Stage(Stage::Coalesce), start, depth: 1 })
            }
            "rate" | "count_over_time" => {
                self.bump();
                open(self)?;
                close(self)?;
                let op = if w == "rate" { MetricsOp::Rate } else { MetricsOp::CountOverTime };
                self.metrics_by(op, start)
            }
            "min_over_time" | "max_over_time" | "avg_over_time" | "sum_over_time" | "histogram_over_time" => {
                self.bump();
                open(self)?;
                let f = self.field(&format!("expected an attribute or intrinsic in '{w}()'"))?;
                close(self)?;
                let op = match w {
                    "min_over_time" => MetricsOp::MinOverTime(f),
                    "max_over_time" => MetricsOp::MaxOverTime(f),
                    "avg_over_time" => MetricsOp::AvgOverTime(f),
                    "sum_over_time" => MetricsOp::SumOverTime(f),
                    _ => MetricsOp::HistogramOverTime(f),
                };
                self.metrics_by(op, start)
            }
            "quantile_over_time" => {
                self.bump();
                open(self)?;
                let f = self.field("expected an attribute or intrinsic in 'quantile_over_time()'")?;
                let mut qs = Vec::new();
                self.expect(Tok::Comma, "expected ',' and at least one quantile after the field")?;
                loop {
                    match self.peek().clone() {
                        Tok::Int(i) => qs.push(i as f64),
                        Tok::Float(f) => qs.push(f),
                        _ => return Err(self.err_here("expected a quantile such as 0.99")),
                    }
                    self.bump();
                    if *self.peek() == Tok::Comma {
                        self.bump();
                    } else {
                        break;
                    }
                }
                close(self)?;
                self.metrics_by(MetricsOp::QuantileOverTime(f, qs), start)
            }
            "compare" => {
                self.bump();
                open(self)?;
                if *self.peek() != Tok::LBrace {
                    return Err(self.err_here("expected a spanset filter '{ ... }' in 'compare()'"));
                }
                let (filter, _) = self.spanset_filter()?;
                let mut nums = Vec::new();
                while *self.peek() == Tok::Comma {
                    self.bump();
                    match self.peek() {
                        Tok::Int(i) => nums.push(*i),
                        _ => return Err(self.err_here("expected an integer argument in 'compare()'")),
                    }
                    self.bump();
                }
                let (top_n, s, e) = match nums[..] {
                    [] => (10, 0, 0),
                    [n] => (n, 0, 0),
                    [n, s, e] => (n, s, e),
                    _ => {
                        return Err(
                            self.err_here("compare() takes a filter, then optionally topN, or topN, start and end")
                        );
                    }
                };
                close(self)?;
                if self.is_word("by") {
                    return Err(self.err_here("compare() does not take by()"));
                }
                let op = MetricsOp::Compare { filter, top_n, start: s, end: e };
                Ok(It { item: Item::MetricsFn(MetricsFunction { op, by: Vec::new() }, Vec::new()), start, depth: 2 })
            }
            "topk" | "bottomk" => {
                self.bump();
                open(self)?;
                let n = match self.peek() {
                    Tok::Int(i) => *i,
                    _ => return Err(self.err_here(format!("expected a positive integer in '{w}()'"))),
                };
                self.bump();
                close(self)?;
                let s = if w == "topk" { SecondStage::TopK(n) } else { SecondStage::BottomK(n) };
                Ok(It { item: Item::Second(vec![s]), start, depth: 1 })
            }
            _ => {
                let msg = if literal_keyword(w).is_some() || w == "nil" || Intrinsic::from_legacy(w).is_some() {
                    format!("'{w}' must be inside a spanset filter, e.g. '{{ {w} ... }}'")
                } else {
                    "expected a spanset filter '{ ... }', '(' or a pipeline function".to_string()
                };
                Err(self.err_here(msg))
            }
        }
    }

    fn metrics_by(&mut self, op: MetricsOp, start: usize) -> Result<It, ParseError> {
        let by = if self.is_word("by") {
            self.bump();
            self.expect(Tok::LParen, "expected '(' after 'by'")?;
            self.field_list("by")?
        } else {
            Vec::new()
        };
        Ok(It { item: Item::MetricsFn(MetricsFunction { op, by }, Vec::new()), start, depth: 2 })
    }

    /// `a, b, c)` — at least one field, consumes the closing parenthesis.
    fn field_list(&mut self, what: &str) -> Result<Vec<Field>, ParseError> {
        let mut out = vec![self.field(&format!("expected an attribute or intrinsic in '{what}()'"))?];
        loop {
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                    out.push(self.field("expected an attribute or intrinsic after ','")?);
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(out);
                }
                _ => return Err(self.err_here(format!("expected ',' or ')' in '{what}(...)'"))),
            }
        }
    }

    fn field(&mut self, msg: &str) -> Result<Field, ParseError> {
        let f = match self.peek().clone() {
            Tok::Attr { scope, parent, name } => Field::Attribute(Attribute { scope, parent, name }),
            Tok::ScopedIntrinsic(s) => Field::Intrinsic(self.scoped_intrinsic(&s)?),
            Tok::Ident(w) if Intrinsic::from_legacy(&w).is_some() => {
                Field::Intrinsic(Intrinsic::from_legacy(&w).unwrap_or(Intrinsic::Duration))
            }
            _ => return Err(self.err_here(msg)),
        };
        self.bump();
        Ok(f)
    }

    fn scoped_intrinsic(&self, s: &str) -> Result<Intrinsic, ParseError> {
        Intrinsic::from_scoped(s).ok_or_else(|| {
            let scope = s.split(':').next().unwrap_or("");
            let known: Vec<&str> =
                Intrinsic::ALL.iter().filter_map(|i| i.scoped_name()).filter(|n| n.starts_with(scope)).collect();
            self.err_here(format!("unknown intrinsic '{s}'; known '{scope}:' intrinsics: {}", known.join(", ")))
        })
    }

    fn spanset_filter(&mut self) -> Result<(SpansetFilter, u32), ParseError> {
        self.expect(Tok::LBrace, "expected '{'")?;
        if *self.peek() == Tok::RBrace {
            self.bump();
            return Ok((SpansetFilter { expr: None }, 1));
        }
        let (e, d) = self.field_expr(0)?;
        self.expect(Tok::RBrace, "expected '}' after field expression")?;
        Ok((SpansetFilter { expr: Some(e) }, d + 1))
    }

    // ---------------------------------------------------------------- field expressions

    pub(crate) fn field_expr(&mut self, min_bp: u8) -> Result<(FieldExpr, u32), ParseError> {
        self.enter()?;
        let (mut lhs, mut depth) = self.field_prefix(min_bp)?;
        while let Some(op) = field_op(self.peek()) {
            let (l_bp, r_bp) = binding_power(op.precedence(), op == BinaryOp::Pow);
            if l_bp < min_bp {
                break;
            }
            let op_at = self.offset();
            self.bump();
            let (rhs, rd) = if matches!(op, BinaryOp::Eq | BinaryOp::Neq) && self.is_word("nil") {
                self.bump();
                (FieldExpr::Literal(Literal::Nil), 1)
            } else {
                self.field_expr(r_bp)?
            };
            depth = self.check_depth(depth.max(rd) + 1, op_at)?;
            lhs = FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        self.leave();
        Ok((lhs, depth))
    }

    fn field_prefix(&mut self, min_bp: u8) -> Result<(FieldExpr, u32), ParseError> {
        let tok = self.peek().clone();
        let leaf = |e| Ok((e, 1));
        match tok {
            Tok::Sub | Tok::Not => {
                self.bump();
                if self.is_word("nil") {
                    return Err(self.err_here("nil can only be compared with '=' or '!='"));
                }
                let (e, d) = self.field_expr(UNARY_BP)?;
                if tok == Tok::Sub
                    && let FieldExpr::Literal(l) = &e
                    && let Some(n) = negate(l)
                {
                    return Ok((FieldExpr::Literal(n), d));
                }
                let op = if tok == Tok::Sub { UnaryOp::Neg } else { UnaryOp::Not };
                Ok((FieldExpr::Unary { op, expr: Box::new(e) }, d + 1))
            }
            Tok::LParen => {
                self.bump();
                let r = self.field_expr(0)?;
                self.expect(Tok::RParen, "expected ')' to close '(' in field expression")?;
                Ok(r)
            }
            Tok::Str(s) => {
                self.bump();
                leaf(FieldExpr::Literal(Literal::String(s)))
            }
            Tok::Int(i) => {
                self.bump();
                leaf(FieldExpr::Literal(Literal::Int(i)))
            }
            Tok::Float(f) => {
                self.bump();
                leaf(FieldExpr::Literal(Literal::Float(f)))
            }
            Tok::Duration(d) => {
                self.bump();
                leaf(FieldExpr::Literal(Literal::Duration(d)))
            }
            Tok::Attr { scope, parent, name } => {
                self.bump();
                leaf(FieldExpr::Field(Field::Attribute(Attribute { scope, parent, name })))
            }
            Tok::ScopedIntrinsic(s) => {
                let i = self.scoped_intrinsic(&s)?;
                self.bump();
                leaf(FieldExpr::Field(Field::Intrinsic(i)))
            }
            Tok::Ident(w) => {
                if w == "nil" {
                    let (_, cmp_r) = binding_power(BinaryOp::Eq.precedence(), false);
                    if min_bp > cmp_r || !matches!(self.peek_at(1), Tok::Eq | Tok::Neq) {
                        return Err(self.err_here("nil can only be compared with '=' or '!='"));
                    }
                    self.bump();
                    return leaf(FieldExpr::Literal(Literal::Nil));
                }
                if let Some(l) = literal_keyword(&w) {
                    self.bump();
                    return leaf(FieldExpr::Literal(l));
                }
                if let Some(i) = Intrinsic::from_legacy(&w) {
                    self.bump();
                    return leaf(FieldExpr::Field(Field::Intrinsic(i)));
                }
                Err(self
                    .err_here(format!("unknown identifier '{w}'; attributes need a scope, e.g. '.{w}' or 'span.{w}'")))
            }
            Tok::Eof | Tok::RBrace | Tok::RParen => Err(self.err_here("expected a field expression")),
            _ => Err(self.err_here("expected a field expression (attribute, intrinsic or literal)")),
        }
    }
}

/// Appends second stages to a metrics expression, keeping one canonical shape.
fn add_stages(m: MetricsExpr, more: Vec<SecondStage>) -> MetricsExpr {
    match m {
        MetricsExpr::Pipeline(mut p) => {
            p.stages.extend(more);
            MetricsExpr::Pipeline(p)
        }
        MetricsExpr::Staged { expr, mut stages } => {
            stages.extend(more);
            MetricsExpr::Staged { expr, stages }
        }
        other => MetricsExpr::Staged { expr: Box::new(other), stages: more },
    }
}
