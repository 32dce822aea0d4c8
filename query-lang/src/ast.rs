//! The typed TraceQL syntax tree.
//!
//! The tree is shaped for planning rather than for echoing the source text: parentheses
//! leave no node behind, constant arithmetic outside `{ }` is folded at parse time (as Tempo
//! does), and a negated number literal is stored as a negative literal so `{ .a > -5 }` is a
//! plain comparison the planner can push down. Every expression node can report its
//! [`Type`], which lets the planner recognise `attribute <op> literal` conditions without
//! re-deriving the typing rules.

use std::fmt;

/// Static type of an expression, known before any span is read.
///
/// `Attribute` means "the type of a span attribute, only known at run time"; it is compatible
/// with every other type in comparisons, as in Tempo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// A set of spans grouped per trace (the result of filters and pipelines).
    Spanset,
    /// Time series produced by a metrics query.
    Series,
    /// A number whose flavour (int, float, duration) is not known statically, e.g. `avg(.attr)`.
    Scalar,
    String,
    Int,
    Float,
    Bool,
    Duration,
    Status,
    Kind,
    Nil,
    /// An attribute whose type is only known at query time.
    Attribute,
}

impl Type {
    /// Int, float, duration or an unknown-flavour number.
    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Duration | Type::Scalar)
    }

    /// Whether two operand types may meet in one binary operation (Tempo's rule: equal types,
    /// two numbers, or anything against an attribute or `nil`).
    pub fn matches(self, other: Type) -> bool {
        self == other
            || self == Type::Attribute
            || other == Type::Attribute
            || self == Type::Nil
            || other == Type::Nil
            || (self.is_numeric() && other.is_numeric())
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Type::Spanset => "spanset",
            Type::Series => "series",
            Type::Scalar => "number",
            Type::String => "string",
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
            Type::Duration => "duration",
            Type::Status => "status",
            Type::Kind => "kind",
            Type::Nil => "nil",
            Type::Attribute => "attribute",
        };
        f.write_str(s)
    }
}

/// A whole query: a spanset pipeline or a metrics expression, plus optional `with(...)` hints.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub body: Body,
    /// Query hints in source order; empty when the query has no `with(...)`.
    pub hints: Vec<Hint>,
}

impl Query {
    /// [`Type::Spanset`] for search queries, [`Type::Series`] for metrics queries.
    pub fn static_type(&self) -> Type {
        match &self.body {
            Body::Spans(_) => Type::Spanset,
            Body::Metrics(_) => Type::Series,
        }
    }
}

/// What a query computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A search: spansets flowing through pipeline stages.
    Spans(Pipeline),
    /// A metrics query (`... | rate()`), possibly combined arithmetically with others.
    Metrics(MetricsExpr),
}

/// `name = value` inside `with(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub name: String,
    pub value: Literal,
}

/// Stages separated by `|`. Never empty; never starts with `coalesce()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Always [`Type::Spanset`].
    pub fn static_type(&self) -> Type {
        Type::Spanset
    }
}

/// One `|`-separated step of a spanset pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `{ ... }`, a spanset operation, or a parenthesised sub-pipeline.
    Spanset(SpansetExpr),
    /// `count() > 2`, `avg(duration) > 1s`: keeps spansets whose aggregate passes.
    ScalarFilter(ScalarFilter),
    /// `by(expr)`: regroups spans per value of the expression.
    By(FieldExpr),
    /// `select(a, b)`: returns extra attributes with each span.
    Select(Vec<Field>),
    /// `coalesce()`: merges all spansets of a trace into one.
    Coalesce,
}

/// Expressions whose value is a spanset.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }`; `None` for the match-all `{}`.
    Filter(SpansetFilter),
    /// `lhs op rhs` with a spanset operator (`&&`, `>>`, `!<`, `&~`, ...).
    Op { op: SpansetOp, lhs: Box<SpansetExpr>, rhs: Box<SpansetExpr> },
    /// A parenthesised pipeline used as an operand, e.g. `({ a } | count() > 1) && { b }`.
    /// Has at least two stages, or one stage that is not itself a spanset expression.
    Pipeline(Pipeline),
}

impl SpansetExpr {
    /// Always [`Type::Spanset`].
    pub fn static_type(&self) -> Type {
        Type::Spanset
    }
}

/// The braces of a spanset filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetFilter {
    /// `None` for `{}`, which matches every span.
    pub expr: Option<FieldExpr>,
}

/// Operators between spansets. `And`/`Union` bind loosest; the structural ones one level tighter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpansetOp {
    /// `&&`: both sides match in the trace.
    And,
    /// `||`: either side.
    Union,
    /// `>`: rhs spans that are direct children of lhs spans.
    Child,
    /// `<`: rhs spans that are parents of lhs spans.
    Parent,
    /// `>>`: rhs spans descending from lhs spans.
    Descendant,
    /// `<<`: rhs spans that are ancestors of lhs spans.
    Ancestor,
    /// `~`: rhs spans that are siblings of lhs spans.
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
}

impl SpansetOp {
    /// All operators, for table tests and generators.
    pub const ALL: [SpansetOp; 17] = [
        SpansetOp::And,
        SpansetOp::Union,
        SpansetOp::Child,
        SpansetOp::Parent,
        SpansetOp::Descendant,
        SpansetOp::Ancestor,
        SpansetOp::Sibling,
        SpansetOp::NotChild,
        SpansetOp::NotParent,
        SpansetOp::NotDescendant,
        SpansetOp::NotAncestor,
        SpansetOp::NotSibling,
        SpansetOp::UnionChild,
        SpansetOp::UnionParent,
        SpansetOp::UnionDescendant,
        SpansetOp::UnionAncestor,
        SpansetOp::UnionSibling,
    ];

    /// The operator's source text.
    pub fn as_str(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Union => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }

    /// True for `&&` and `||`, which bind looser than the structural operators.
    pub fn is_logical(self) -> bool {
        matches!(self, SpansetOp::And | SpansetOp::Union)
    }
}

/// `lhs op rhs` where at least one side holds an aggregate: a pipeline stage that keeps
/// spansets for which the comparison holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    pub op: CmpOp,
    pub lhs: ScalarExpr,
    pub rhs: ScalarExpr,
}

/// Numeric expressions computed once per spanset.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    Aggregate(Aggregate),
    /// A constant; arithmetic between constants is folded by the parser.
    Literal(Literal),
    Binary {
        op: ArithOp,
        lhs: Box<ScalarExpr>,
        rhs: Box<ScalarExpr>,
    },
    /// `(pipeline | aggregate)`: an aggregate over a sub-pipeline (parses, not yet executable).
    Pipeline(Box<ScalarPipeline>),
}

impl ScalarExpr {
    /// Numeric type of the value; see [`Aggregate::static_type`].
    pub fn static_type(&self) -> Type {
        match self {
            ScalarExpr::Aggregate(a) => a.static_type(),
            ScalarExpr::Literal(l) => l.static_type(),
            ScalarExpr::Binary { lhs, rhs, .. } => arith_type(lhs.static_type(), rhs.static_type()),
            ScalarExpr::Pipeline(p) => p.aggregate.static_type(),
        }
    }
}

/// A parenthesised pipeline ending in an aggregate: `({ a } | by(.x) | avg(duration))`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarPipeline {
    pub pipeline: Pipeline,
    pub aggregate: Aggregate,
}

/// `count()`, `avg(e)`, `min(e)`, `max(e)`, `sum(e)` over the spans of a spanset.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub op: AggregateOp,
    /// `None` only for `count()`.
    pub expr: Option<FieldExpr>,
}

impl Aggregate {
    /// `count()` is an int; the others take the type of their field, or [`Type::Scalar`]
    /// when the field is an attribute of unknown type.
    pub fn static_type(&self) -> Type {
        match (&self.op, &self.expr) {
            (AggregateOp::Count, _) | (_, None) => Type::Int,
            (AggregateOp::Avg, Some(e)) if e.static_type() == Type::Int => Type::Float,
            (_, Some(e)) => match e.static_type() {
                Type::Attribute => Type::Scalar,
                t => t,
            },
        }
    }
}

/// Aggregate functions usable in spanset pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateOp {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

impl AggregateOp {
    /// Function name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Count => "count",
            AggregateOp::Avg => "avg",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Sum => "sum",
        }
    }
}

/// Expressions evaluated per span inside `{ }`, `by()` and aggregates.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Literal(Literal),
    Field(Field),
    Binary { op: BinaryOp, lhs: Box<FieldExpr>, rhs: Box<FieldExpr> },
    Unary { op: UnaryOp, expr: Box<FieldExpr> },
}

impl FieldExpr {
    /// Static type following Tempo's rules: boolean operators give [`Type::Bool`], arithmetic
    /// takes the left operand's type unless that is an attribute, then the right one's.
    pub fn static_type(&self) -> Type {
        match self {
            FieldExpr::Literal(l) => l.static_type(),
            FieldExpr::Field(f) => f.static_type(),
            FieldExpr::Binary { op, lhs, rhs } => {
                if op.is_boolean() {
                    Type::Bool
                } else {
                    arith_type(lhs.static_type(), rhs.static_type())
                }
            }
            FieldExpr::Unary { op: UnaryOp::Not, .. } => Type::Bool,
            FieldExpr::Unary { op: UnaryOp::Neg, expr } => expr.static_type(),
        }
    }

    /// True if the expression reads anything from the span (an attribute or intrinsic).
    pub fn references_span(&self) -> bool {
        match self {
            FieldExpr::Literal(_) => false,
            FieldExpr::Field(_) => true,
            FieldExpr::Binary { lhs, rhs, .. } => lhs.references_span() || rhs.references_span(),
            FieldExpr::Unary { expr, .. } => expr.references_span(),
        }
    }
}

fn arith_type(l: Type, r: Type) -> Type {
    if l == Type::Attribute { r } else { l }
}

/// Binary operators inside field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    NotRegex,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    /// All operators, for table tests and generators.
    pub const ALL: [BinaryOp; 16] = [
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Eq,
        BinaryOp::Neq,
        BinaryOp::Lt,
        BinaryOp::Lte,
        BinaryOp::Gt,
        BinaryOp::Gte,
        BinaryOp::Regex,
        BinaryOp::NotRegex,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Mod,
        BinaryOp::Pow,
    ];

    /// The operator's source text.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
            BinaryOp::Eq => "=",
            BinaryOp::Neq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::Regex => "=~",
            BinaryOp::NotRegex => "!~",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }

    /// Operators that yield a boolean (logic, comparison, regex match).
    pub fn is_boolean(self) -> bool {
        !self.is_arithmetic()
    }

    /// `+ - * / % ^`.
    pub fn is_arithmetic(self) -> bool {
        matches!(self, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow)
    }

    /// Comparison and regex operators: the ones a pushed-down `field op literal` condition can use.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::Neq
                | BinaryOp::Lt
                | BinaryOp::Lte
                | BinaryOp::Gt
                | BinaryOp::Gte
                | BinaryOp::Regex
                | BinaryOp::NotRegex
        )
    }

    /// Precedence level, higher binds tighter (Tempo: `&& ||` < comparisons < `+ -` < `* / %` < `^`).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::And | BinaryOp::Or => 1,
            BinaryOp::Add | BinaryOp::Sub => 3,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
            BinaryOp::Pow => 6,
            // Everything else is a comparison (`is_comparison`).
            _ => 2,
        }
    }

    /// The comparison this operator is, if any.
    pub fn as_cmp(self) -> Option<CmpOp> {
        Some(match self {
            BinaryOp::Eq => CmpOp::Eq,
            BinaryOp::Neq => CmpOp::Neq,
            BinaryOp::Lt => CmpOp::Lt,
            BinaryOp::Lte => CmpOp::Lte,
            BinaryOp::Gt => CmpOp::Gt,
            BinaryOp::Gte => CmpOp::Gte,
            _ => return None,
        })
    }
}

/// `!` and unary `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Not,
    Neg,
}

impl UnaryOp {
    /// The operator's source text.
    pub fn as_str(self) -> &'static str {
        match self {
            UnaryOp::Not => "!",
            UnaryOp::Neg => "-",
        }
    }
}

/// Comparisons allowed between aggregates and on metrics results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    /// All comparisons.
    pub const ALL: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Neq, CmpOp::Lt, CmpOp::Lte, CmpOp::Gt, CmpOp::Gte];

    /// The operator's source text.
    pub fn as_str(self) -> &'static str {
        self.to_binary().as_str()
    }

    /// The equivalent field-expression operator.
    pub fn to_binary(self) -> BinaryOp {
        match self {
            CmpOp::Eq => BinaryOp::Eq,
            CmpOp::Neq => BinaryOp::Neq,
            CmpOp::Lt => BinaryOp::Lt,
            CmpOp::Lte => BinaryOp::Lte,
            CmpOp::Gt => BinaryOp::Gt,
            CmpOp::Gte => BinaryOp::Gte,
        }
    }
}

/// Arithmetic between scalars and between metrics queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl ArithOp {
    /// The operator's source text.
    pub fn as_str(self) -> &'static str {
        self.to_binary().as_str()
    }

    /// The equivalent field-expression operator (same precedence).
    pub fn to_binary(self) -> BinaryOp {
        match self {
            ArithOp::Add => BinaryOp::Add,
            ArithOp::Sub => BinaryOp::Sub,
            ArithOp::Mul => BinaryOp::Mul,
            ArithOp::Div => BinaryOp::Div,
            ArithOp::Mod => BinaryOp::Mod,
            ArithOp::Pow => BinaryOp::Pow,
        }
    }
}

/// A span field: a user attribute or an intrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Attribute(Attribute),
    Intrinsic(Intrinsic),
}

impl Field {
    /// Intrinsics have fixed types; attributes are [`Type::Attribute`].
    pub fn static_type(&self) -> Type {
        match self {
            Field::Attribute(_) => Type::Attribute,
            Field::Intrinsic(i) => i.static_type(),
        }
    }
}

/// A user attribute such as `span.http.method` or `.foo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub scope: Scope,
    /// `parent.` prefix: read the attribute from the parent span (parses; not yet executable).
    pub parent: bool,
    /// The name without scope, unescaped (may contain dots and any character).
    pub name: String,
}

impl Attribute {
    /// Convenience constructor for unparented attributes.
    pub fn new(scope: Scope, name: impl Into<String>) -> Self {
        Attribute { scope, parent: false, name: name.into() }
    }
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `.x`: span first, then resource, link, event.
    Unscoped,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

impl Scope {
    /// All scopes.
    pub const ALL: [Scope; 6] =
        [Scope::Unscoped, Scope::Span, Scope::Resource, Scope::Event, Scope::Link, Scope::Instrumentation];

    /// Source prefix including the dot.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Unscoped => ".",
            Scope::Span => "span.",
            Scope::Resource => "resource.",
            Scope::Event => "event.",
            Scope::Link => "link.",
            Scope::Instrumentation => "instrumentation.",
        }
    }
}

/// Built-in span, trace, event, link and instrumentation fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    Duration,
    Name,
    Status,
    StatusMessage,
    Kind,
    ChildCount,
    SpanId,
    ParentId,
    /// `parent` on its own (parses; not executable).
    Parent,
    TraceRootName,
    TraceRootService,
    TraceDuration,
    TraceId,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
}

impl Intrinsic {
    /// All intrinsics.
    pub const ALL: [Intrinsic; 22] = [
        Intrinsic::Duration,
        Intrinsic::Name,
        Intrinsic::Status,
        Intrinsic::StatusMessage,
        Intrinsic::Kind,
        Intrinsic::ChildCount,
        Intrinsic::SpanId,
        Intrinsic::ParentId,
        Intrinsic::Parent,
        Intrinsic::TraceRootName,
        Intrinsic::TraceRootService,
        Intrinsic::TraceDuration,
        Intrinsic::TraceId,
        Intrinsic::EventName,
        Intrinsic::EventTimeSinceStart,
        Intrinsic::LinkTraceId,
        Intrinsic::LinkSpanId,
        Intrinsic::InstrumentationName,
        Intrinsic::InstrumentationVersion,
        Intrinsic::NestedSetLeft,
        Intrinsic::NestedSetRight,
        Intrinsic::NestedSetParent,
    ];

    /// The pre-scope spelling (`duration`, `rootServiceName`, ...), if the intrinsic has one.
    pub fn legacy_name(self) -> Option<&'static str> {
        Some(match self {
            Intrinsic::Duration => "duration",
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Parent => "parent",
            Intrinsic::TraceRootName => "rootName",
            Intrinsic::TraceRootService => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
            _ => return None,
        })
    }

    /// The scoped spelling (`span:duration`, `trace:rootService`, ...), if the intrinsic has one.
    pub fn scoped_name(self) -> Option<&'static str> {
        Some(match self {
            Intrinsic::Duration => "span:duration",
            Intrinsic::Name => "span:name",
            Intrinsic::Status => "span:status",
            Intrinsic::StatusMessage => "span:statusMessage",
            Intrinsic::Kind => "span:kind",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::TraceRootName => "trace:rootName",
            Intrinsic::TraceRootService => "trace:rootService",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            _ => return None,
        })
    }

    /// Canonical spelling: the scoped one when it exists.
    pub fn canonical_name(self) -> &'static str {
        self.scoped_name().or(self.legacy_name()).unwrap_or("?")
    }

    /// Looks up a legacy (unscoped) spelling.
    pub fn from_legacy(s: &str) -> Option<Intrinsic> {
        Intrinsic::ALL.into_iter().find(|i| i.legacy_name() == Some(s))
    }

    /// Looks up a scoped spelling such as `span:id`.
    pub fn from_scoped(s: &str) -> Option<Intrinsic> {
        Intrinsic::ALL.into_iter().find(|i| i.scoped_name() == Some(s))
    }

    /// The value type of the intrinsic.
    pub fn static_type(self) -> Type {
        match self {
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => Type::Duration,
            Intrinsic::ChildCount
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => Type::Int,
            Intrinsic::Status => Type::Status,
            Intrinsic::Kind => Type::Kind,
            Intrinsic::Parent => Type::Nil,
            Intrinsic::Name
            | Intrinsic::StatusMessage
            | Intrinsic::SpanId
            | Intrinsic::ParentId
            | Intrinsic::TraceRootName
            | Intrinsic::TraceRootService
            | Intrinsic::TraceId
            | Intrinsic::EventName
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId
            | Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion => Type::String,
        }
    }
}

/// Constant values.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Int(i64),
    /// Always finite.
    Float(f64),
    /// Nanoseconds; negative only through unary minus.
    Duration(i64),
    Bool(bool),
    Nil,
    Status(Status),
    Kind(Kind),
}

impl Literal {
    /// The literal's type.
    pub fn static_type(&self) -> Type {
        match self {
            Literal::String(_) => Type::String,
            Literal::Int(_) => Type::Int,
            Literal::Float(_) => Type::Float,
            Literal::Duration(_) => Type::Duration,
            Literal::Bool(_) => Type::Bool,
            Literal::Nil => Type::Nil,
            Literal::Status(_) => Type::Status,
            Literal::Kind(_) => Type::Kind,
        }
    }

    /// The value as f64 for numeric literals (durations in seconds, as metrics use them).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Literal::Int(i) => Some(*i as f64),
            Literal::Float(f) => Some(*f),
            Literal::Duration(d) => Some(*d as f64 / 1e9),
            _ => None,
        }
    }

    /// True for numbers and durations below zero.
    pub fn is_negative(&self) -> bool {
        match self {
            Literal::Int(i) => *i < 0,
            Literal::Float(f) => f.is_sign_negative(),
            Literal::Duration(d) => *d < 0,
            _ => false,
        }
    }
}

/// Span status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    Error,
    Unset,
}

impl Status {
    /// Keyword spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Unset => "unset",
        }
    }
}

/// Span kind values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    /// Keyword spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
}

/// Metrics expressions: a metrics pipeline, arithmetic between them, or second stages applied
/// to such arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    /// `pipeline | fn() [by(...)] [| topk(n)] [> x]`.
    Pipeline(Box<MetricsPipeline>),
    /// A constant operand in metrics arithmetic (int or float; never both sides of a `Binary`).
    Scalar(Literal),
    /// `+ - * /` between metrics expressions (at least one side is not a constant).
    Binary { op: ArithOp, lhs: Box<MetricsExpr>, rhs: Box<MetricsExpr> },
    /// Second stages applied to arithmetic: `(a) + (b) | topk(5) > 10`. `expr` is a `Binary`.
    Staged { expr: Box<MetricsExpr>, stages: Vec<SecondStage> },
}

impl MetricsExpr {
    /// [`Type::Series`] except for constants.
    pub fn static_type(&self) -> Type {
        match self {
            MetricsExpr::Scalar(l) => l.static_type(),
            _ => Type::Series,
        }
    }
}

/// A spanset pipeline feeding a metrics function, then optional second stages.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsPipeline {
    pub pipeline: Pipeline,
    pub function: MetricsFunction,
    pub stages: Vec<SecondStage>,
}

/// A first-stage metrics function with its `by(...)` grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsFunction {
    pub op: MetricsOp,
    /// Grouping fields; always empty for `compare()`.
    pub by: Vec<Field>,
}

/// First-stage metrics functions.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsOp {
    Rate,
    CountOverTime,
    MinOverTime(Field),
    MaxOverTime(Field),
    AvgOverTime(Field),
    SumOverTime(Field),
    /// Field and the requested quantiles (at least one).
    QuantileOverTime(Field, Vec<f64>),
    HistogramOverTime(Field),
    /// `compare({filter}, topN, start, end)`; `topN` defaults to 10, start/end to 0 (= query range).
    Compare {
        filter: SpansetFilter,
        top_n: i64,
        start: i64,
        end: i64,
    },
}

impl MetricsOp {
    /// Function name as written.
    pub fn name(&self) -> &'static str {
        match self {
            MetricsOp::Rate => "rate",
            MetricsOp::CountOverTime => "count_over_time",
            MetricsOp::MinOverTime(_) => "min_over_time",
            MetricsOp::MaxOverTime(_) => "max_over_time",
            MetricsOp::AvgOverTime(_) => "avg_over_time",
            MetricsOp::SumOverTime(_) => "sum_over_time",
            MetricsOp::QuantileOverTime(..) => "quantile_over_time",
            MetricsOp::HistogramOverTime(_) => "histogram_over_time",
            MetricsOp::Compare { .. } => "compare",
        }
    }

    /// The field the function reads, if any.
    pub fn field(&self) -> Option<&Field> {
        match self {
            MetricsOp::MinOverTime(f)
            | MetricsOp::MaxOverTime(f)
            | MetricsOp::AvgOverTime(f)
            | MetricsOp::SumOverTime(f)
            | MetricsOp::QuantileOverTime(f, _)
            | MetricsOp::HistogramOverTime(f) => Some(f),
            _ => None,
        }
    }
}

/// Steps applied to the series a metrics function produced.
#[derive(Debug, Clone, PartialEq)]
pub enum SecondStage {
    /// `| topk(n)`.
    TopK(i64),
    /// `| bottomk(n)`.
    BottomK(i64),
    /// `> 10`: drops points that fail the comparison. The value is an int, float or duration.
    Filter { op: CmpOp, value: Literal },
}
