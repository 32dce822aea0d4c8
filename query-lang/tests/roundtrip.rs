//! Property: printing any parser-shaped AST and parsing the text gives the same AST.
//!
//! The generators produce only trees the parser can produce (the canonical shapes documented
//! on the AST types): no `nil` outside `=`/`!=`, no unary minus over a number literal (the
//! parser folds it into a negative literal), no constant-only arithmetic outside braces, no
//! parenthesised sub-pipeline directly as a stage (it is spliced), and so on.

use proptest::prelude::*;
use query_lang::*;

fn scope() -> impl Strategy<Value = Scope> + Clone {
    prop::sample::select(Scope::ALL.to_vec())
}

fn attr_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_.:/-]{0,10}",
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => "[0-9][a-z]{0,3}",
        1 => Just("span.x".to_string()),
        1 => "[ \"\\\\a-z=(){}]{1,6}",
    ]
    .boxed()
}

fn attribute() -> impl Strategy<Value = Attribute> + Clone {
    (scope(), any::<bool>(), attr_name()).prop_map(|(scope, parent, name)| {
        // `parent.` only combines with unscoped, span and resource attributes.
        let parent = parent && matches!(scope, Scope::Unscoped | Scope::Span | Scope::Resource);
        Attribute { scope, parent, name }
    })
}

fn field() -> impl Strategy<Value = Field> + Clone {
    prop_oneof![
        attribute().prop_map(Field::Attribute),
        prop::sample::select(Intrinsic::ALL.to_vec()).prop_map(Field::Intrinsic),
    ]
}

fn finite_f64() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()), -1e3f64..1e3, Just(0.5), Just(-0.0)]
}

fn number(negative: bool) -> BoxedStrategy<Literal> {
    let lits = prop_oneof![
        any::<i64>().prop_map(Literal::Int),
        finite_f64().prop_map(Literal::Float),
        (i64::MIN + 1..i64::MAX).prop_map(Literal::Duration),
        prop::sample::select(vec![0i64, 1_000, 1_000_000, 60_000_000_000, 5_400_000_000_000])
            .prop_map(Literal::Duration),
    ];
    if negative {
        lits.boxed()
    } else {
        lits.prop_map(|l| match l {
            Literal::Int(i) => Literal::Int(i.saturating_abs()),
            Literal::Float(f) => Literal::Float(f.abs()),
            Literal::Duration(d) => Literal::Duration(d.saturating_abs()),
            other => other,
        })
        .boxed()
    }
}

fn plain_literal() -> impl Strategy<Value = Literal> + Clone {
    prop_oneof![
        3 => number(true),
        2 => any::<String>().prop_map(Literal::String),
        1 => any::<bool>().prop_map(Literal::Bool),
        1 => prop::sample::select(vec![Status::Ok, Status::Error, Status::Unset]).prop_map(Literal::Status),
        1 => prop::sample::select(vec![Kind::Unspecified, Kind::Internal, Kind::Server, Kind::Client, Kind::Producer, Kind::Consumer])
            .prop_map(Literal::Kind),
    ]
}

fn is_number(e: &FieldExpr) -> bool {
    matches!(e, FieldExpr::Literal(Literal::Int(_) | Literal::Float(_) | Literal::Duration(_)))
}

fn field_expr() -> BoxedStrategy<FieldExpr> {
    let leaf = prop_oneof![plain_literal().prop_map(FieldExpr::Literal), field().prop_map(FieldExpr::Field)];
    leaf.prop_recursive(5, 40, 2, |inner| {
        let nil = Just(FieldExpr::Literal(Literal::Nil));
        prop_oneof![
            4 => (prop::sample::select(BinaryOp::ALL.to_vec()), inner.clone(), inner.clone())
                .prop_map(|(op, l, r)| FieldExpr::Binary { op, lhs: Box::new(l), rhs: Box::new(r) }),
            1 => (any::<bool>(), inner.clone()).prop_map(|(not, e)| {
                // the parser folds `-<number>` into a literal, so only `!` may wrap a number
                let op = if not || is_number(&e) { UnaryOp::Not } else { UnaryOp::Neg };
                FieldExpr::Unary { op, expr: Box::new(e) }
            }),
            1 => (any::<bool>(), any::<u8>(), inner.clone(), nil).prop_map(|(eq, side, e, nil)| {
                let op = if eq { BinaryOp::Eq } else { BinaryOp::Neq };
                let (lhs, rhs) = match side % 3 {
                    0 => (e, nil),
                    1 => (nil, e),
                    _ => (nil.clone(), nil),
                };
                FieldExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }
            }),
        ]
    })
    .boxed()
}

fn arith_op() -> impl Strategy<Value = ArithOp> + Clone {
    prop::sample::select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Mod, ArithOp::Pow])
}

fn cmp_op() -> impl Strategy<Value = CmpOp> + Clone {
    prop::sample::select(CmpOp::ALL.to_vec())
}

fn aggregate() -> impl Strategy<Value = Aggregate> + Clone {
    prop_oneof![
        Just(Aggregate { op: AggregateOp::Count, expr: None }),
        (
            prop::sample::select(vec![AggregateOp::Avg, AggregateOp::Min, AggregateOp::Max, AggregateOp::Sum]),
            field_expr()
        )
            .prop_map(|(op, e)| Aggregate { op, expr: Some(e) }),
    ]
}

/// Aggregate-containing arithmetic (`count() + 1`, `2 * avg(.a)`).
fn agg_expr() -> BoxedStrategy<ScalarExpr> {
    aggregate()
        .prop_map(ScalarExpr::Aggregate)
        .prop_recursive(3, 8, 2, |inner| {
            let lit = number(true).prop_map(ScalarExpr::Literal);
            prop_oneof![
                (arith_op(), inner.clone(), inner.clone()),
                (arith_op(), inner.clone(), lit.clone()),
                (arith_op(), lit, inner),
            ]
            .prop_map(|(op, l, r)| ScalarExpr::Binary { op, lhs: Box::new(l), rhs: Box::new(r) })
        })
        .boxed()
}

fn scalar_filter(pipeline: BoxedStrategy<Pipeline>) -> BoxedStrategy<ScalarFilter> {
    let lit = number(true).prop_map(ScalarExpr::Literal);
    let wsp = (pipeline, aggregate())
        .prop_map(|(pipeline, aggregate)| ScalarExpr::Pipeline(Box::new(ScalarPipeline { pipeline, aggregate })))
        .prop_recursive(2, 4, 2, |inner| {
            (arith_op(), inner.clone(), inner).prop_map(|(op, l, r)| ScalarExpr::Binary {
                op,
                lhs: Box::new(l),
                rhs: Box::new(r),
            })
        });
    prop_oneof![
        3 => (cmp_op(), agg_expr(), prop_oneof![agg_expr(), lit.clone()]),
        1 => (cmp_op(), lit.clone(), agg_expr()),
        1 => (cmp_op(), wsp.clone(), prop_oneof![wsp.boxed(), lit.boxed()]),
    ]
    .prop_map(|(op, lhs, rhs)| ScalarFilter { op, lhs, rhs })
    .boxed()
}

fn filter() -> impl Strategy<Value = SpansetFilter> + Clone {
    prop::option::weighted(0.85, field_expr()).prop_map(|expr| SpansetFilter { expr })
}

/// Spanset pipelines, with parenthesised sub-pipelines as spanset operands.
fn pipeline() -> BoxedStrategy<Pipeline> {
    let base = filter().prop_map(|f| Pipeline { stages: vec![Stage::Spanset(SpansetExpr::Filter(f))] });
    base.prop_recursive(3, 16, 4, |inner| {
        // Spanset expressions usable as a stage: filters and operator trees whose leaves may be
        // parenthesised sub-pipelines.
        let operand = prop_oneof![
            3 => filter().prop_map(SpansetExpr::Filter),
            1 => inner.clone().prop_map(|p| match &p.stages[..] {
                // a one-stage spanset pipeline is just that spanset expression
                [Stage::Spanset(e)] => e.clone(),
                _ => SpansetExpr::Pipeline(p),
            }),
        ];
        let spanset = operand.prop_recursive(2, 6, 2, |e| {
            (prop::sample::select(SpansetOp::ALL.to_vec()), e.clone(), e).prop_map(|(op, l, r)| SpansetExpr::Op {
                op,
                lhs: Box::new(l),
                rhs: Box::new(r),
            })
        });
        let stage = prop_oneof![
            4 => spanset.prop_map(|e| match e {
                // stage-level sub-pipelines are spliced by the parser; use their first stage
                SpansetExpr::Pipeline(p) => p.stages[0].clone(),
                e => Stage::Spanset(e),
            }),
            2 => scalar_filter(inner.clone()).prop_map(Stage::ScalarFilter),
            1 => field_expr().prop_map(Stage::By),
            1 => prop::collection::vec(field(), 1..4).prop_map(Stage::Select),
            1 => Just(Stage::Coalesce),
        ];
        prop::collection::vec(stage, 1..4).prop_map(|mut stages| {
            if matches!(stages[0], Stage::Coalesce) {
                stages[0] = Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: None }));
            }
            Pipeline { stages }
        })
    })
    .boxed()
}

fn metrics_function() -> impl Strategy<Value = MetricsFunction> {
    let by = prop::collection::vec(field(), 0..3);
    let quantiles = prop::collection::vec(prop_oneof![0.0f64..1.0, Just(1.0), (0u32..1000).prop_map(f64::from)], 1..4);
    prop_oneof![
        (Just(MetricsOp::Rate), by.clone()),
        (Just(MetricsOp::CountOverTime), by.clone()),
        (field().prop_map(MetricsOp::MinOverTime), by.clone()),
        (field().prop_map(MetricsOp::MaxOverTime), by.clone()),
        (field().prop_map(MetricsOp::AvgOverTime), by.clone()),
        (field().prop_map(MetricsOp::SumOverTime), by.clone()),
        (field().prop_map(MetricsOp::HistogramOverTime), by.clone()),
        ((field(), quantiles).prop_map(|(f, q)| MetricsOp::QuantileOverTime(f, q)), by),
        (
            (filter(), 0i64..2000, prop_oneof![Just(0i64), 0..i64::MAX], prop_oneof![Just(0i64), 0..i64::MAX])
                .prop_map(|(filter, top_n, start, end)| MetricsOp::Compare { filter, top_n, start, end }),
            Just(Vec::new())
        ),
    ]
    .prop_map(|(op, by)| MetricsFunction { op, by })
}

fn second_stages(min: usize) -> impl Strategy<Value = Vec<SecondStage>> {
    let stage = prop_oneof![
        (0i64..100).prop_map(SecondStage::TopK),
        (0i64..100).prop_map(SecondStage::BottomK),
        (cmp_op(), number(true)).prop_map(|(op, value)| SecondStage::Filter { op, value }),
    ];
    prop::collection::vec(stage, min..3)
}

fn metrics() -> BoxedStrategy<MetricsExpr> {
    let leaf = (pipeline(), metrics_function(), second_stages(0)).prop_map(|(pipeline, function, stages)| {
        MetricsExpr::Pipeline(Box::new(MetricsPipeline { pipeline, function, stages }))
    });
    leaf.prop_recursive(3, 8, 2, |inner| {
        let op = prop::sample::select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div]);
        let scalar = prop_oneof![any::<i64>().prop_map(Literal::Int), finite_f64().prop_map(Literal::Float)]
            .prop_map(MetricsExpr::Scalar);
        let binary = prop_oneof![
            (op.clone(), inner.clone(), inner.clone()),
            (op.clone(), inner.clone(), scalar.clone()),
            (op, scalar, inner.clone()),
        ]
        .prop_map(|(op, l, r)| MetricsExpr::Binary { op, lhs: Box::new(l), rhs: Box::new(r) });
        prop_oneof![
            2 => binary.clone(),
            1 => (binary, second_stages(1)).prop_map(|(e, stages)| MetricsExpr::Staged { expr: Box::new(e), stages }),
        ]
    })
    .boxed()
}

fn hints() -> impl Strategy<Value = Vec<Hint>> {
    let value = prop_oneof![
        any::<String>().prop_map(Literal::String),
        number(false),
        any::<bool>().prop_map(Literal::Bool),
        Just(Literal::Int(i64::MIN)),
        Just(Literal::Status(Status::Error)),
    ];
    prop::collection::vec(("[a-z_][a-z0-9_]{0,8}", value).prop_map(|(name, value)| Hint { name, value }), 0..3)
}

fn query() -> impl Strategy<Value = Query> {
    let body = prop_oneof![pipeline().prop_map(Body::Spans), metrics().prop_map(Body::Metrics)];
    (body, hints()).prop_map(|(body, hints)| Query { body, hints })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_print_roundtrip(q in query()) {
        let text = print(&q);
        match parse(&text) {
            Ok(back) => prop_assert_eq!(&back, &q, "printed: {}", text),
            Err(e) => prop_assert!(false, "printed query does not parse: {}\n{}", e, e.render(&text)),
        }
        // validation must not panic either
        let _ = validate(&q);
        let _ = parse_lenient(&text);
    }

    #[test]
    fn parser_never_panics(s in "\\PC{0,64}") {
        if let Ok(q) = parse(&s) {
            let again = parse(&print(&q));
            prop_assert_eq!(again.as_ref(), Ok(&q));
            let _ = validate(&q);
        }
        let _ = parse_lenient(&s);
    }

    #[test]
    fn parser_never_panics_on_token_soup(parts in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "(", ")", "|", "&&", "||", ">", "<", ">>", "!~", "=", "!=", "-", "+", "*", "^", "!", "nil", "1", "1.5",
        "2s", "\"s\"", ".a", "span.b", "span:id", "count()", "avg(", "rate()", "by", "topk(", "with(", ",", "true",
        "status", "ok", "select(", "compare(", "quantile_over_time(", "minInt",
    ]), 0..24)) {
        let s = parts.join(" ");
        if let Ok(q) = parse(&s) {
            let again = parse(&print(&q));
            prop_assert_eq!(again.as_ref(), Ok(&q), "{}", s);
            let _ = validate(&q);
        }
        let _ = parse_lenient(&s);
    }
}

#[test]
#[ignore = "prints generated sample queries to eyeball the generator; checks nothing"]
fn show_samples() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::default();
    for _ in 0..12 {
        let q = query().new_tree(&mut runner).map(|t| t.current());
        if let Ok(q) = q {
            println!("{}\n", print(&q));
        }
    }
}
