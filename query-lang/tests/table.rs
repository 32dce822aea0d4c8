//! Table tests: precedence, associativity, intrinsics, scopes, literals and error messages.

use query_lang::*;

fn p(q: &str) -> Query {
    parse(q).unwrap_or_else(|e| panic!("{q:?} should parse: {e}"))
}

/// The field expression inside the first `{ }` of a query.
fn fe(q: &str) -> FieldExpr {
    match p(q).body {
        Body::Spans(pl) => match pl.stages.into_iter().next() {
            Some(Stage::Spanset(SpansetExpr::Filter(SpansetFilter { expr: Some(e) }))) => e,
            other => panic!("{q:?}: not a single filter: {other:?}"),
        },
        other => panic!("{q:?}: not a search: {other:?}"),
    }
}

fn same(a: &str, b: &str) {
    assert_eq!(p(a), p(b), "{a:?} should mean {b:?}");
}

#[test]
fn field_precedence_and_associativity() {
    let cases = [
        // && and || share one level and associate left (Tempo), unlike most languages.
        ("{ .a || .b && .c }", "{ (.a || .b) && .c }"),
        ("{ .a && .b || .c }", "{ (.a && .b) || .c }"),
        ("{ .a = 1 && .b = 2 }", "{ (.a = 1) && (.b = 2) }"),
        ("{ .a + 1 = 2 }", "{ (.a + 1) = 2 }"),
        ("{ .a + .b * .c = 1 }", "{ .a + (.b * .c) = 1 }"),
        ("{ .a - .b - .c = 1 }", "{ (.a - .b) - .c = 1 }"),
        ("{ .a / .b / .c = 1 }", "{ (.a / .b) / .c = 1 }"),
        ("{ .a % .b * .c = 1 }", "{ (.a % .b) * .c = 1 }"),
        ("{ .a ^ .b ^ .c = 1 }", "{ .a ^ (.b ^ .c) = 1 }"),
        ("{ .a * .b ^ .c = 1 }", "{ .a * (.b ^ .c) = 1 }"),
        ("{ .a = .b = .c }", "{ (.a = .b) = .c }"),
        ("{ .a < .b > .c }", "{ (.a < .b) > .c }"),
        // unary operators take `* / % ^` but not `+ -` (Tempo's yacc precedences)
        ("{ -.a * .b = 1 }", "{ -(.a * .b) = 1 }"),
        ("{ -.a + .b = 1 }", "{ (-.a) + .b = 1 }"),
        ("{ !.a && .b }", "{ (!.a) && .b }"),
        ("{ !.a = .b }", "{ (!.a) = .b }"),
        ("{ !.a * .b }", "{ !(.a * .b) }"),
        ("{ .a =~ \"x\" || .b !~ \"y\" }", "{ (.a =~ \"x\") || (.b !~ \"y\") }"),
        ("{ .a = nil && .b != nil }", "{ (.a = nil) && (.b != nil) }"),
        ("{ nil = .a + 1 }", "{ nil = (.a + 1) }"),
    ];
    for (a, b) in cases {
        same(a, b);
    }
    // The shape itself, not just equivalence.
    match fe("{ .a || .b && .c }") {
        FieldExpr::Binary { op: BinaryOp::And, lhs, .. } => {
            assert!(matches!(*lhs, FieldExpr::Binary { op: BinaryOp::Or, .. }))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spanset_and_pipeline_precedence() {
    let cases = [
        ("{ .a } && { .b } > { .c }", "{ .a } && ({ .b } > { .c })"),
        ("{ .a } > { .b } >> { .c }", "({ .a } > { .b }) >> { .c }"),
        ("{ .a } || { .b } && { .c }", "({ .a } || { .b }) && { .c }"),
        ("{ .a } | { .b } && { .c }", "{ .a } | ({ .b } && { .c })"),
        ("({ .a } | { .b }) | { .c }", "{ .a } | { .b } | { .c }"),
        ("(({ .a }))", "{ .a }"),
        ("({} | rate()) + ({} | rate()) * 2", "({} | rate()) + (({} | rate()) * 2)"),
        ("({} | rate()) - 1 - 2", "(({} | rate()) - 1) - 2"),
        ("1 + 2 + ({} | rate())", "3 + ({} | rate())"),
        ("({} | rate()) > 10", "{} | rate() > 10"),
        ("({} | rate() | topk(2)) > 10", "{} | rate() | topk(2) > 10"),
        ("count() + 1 > 2 * 3", "count() + 1 > 6"),
        ("avg(.a) > 1 - 3", "avg(.a) > -2"),
    ];
    for (a, b) in cases {
        same(a, b);
    }
    // Structural operators are left-associative and return a spanset expression tree.
    match p("{ .a } > { .b } >> { .c }").body {
        Body::Spans(pl) => match &pl.stages[0] {
            Stage::Spanset(SpansetExpr::Op { op: SpansetOp::Descendant, lhs, .. }) => {
                assert!(matches!(**lhs, SpansetExpr::Op { op: SpansetOp::Child, .. }))
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_spanset_operator() {
    for op in SpansetOp::ALL {
        let q = format!("{{ .a }} {} {{ .b }}", op.as_str());
        match p(&q).body {
            Body::Spans(pl) => {
                assert!(matches!(&pl.stages[0], Stage::Spanset(SpansetExpr::Op { op: o, .. }) if *o == op), "{q}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(validate(&p(&q)), Ok(()), "{q}");
    }
}

#[test]
fn every_intrinsic_in_both_spellings() {
    for i in Intrinsic::ALL {
        for name in [i.legacy_name(), i.scoped_name()].into_iter().flatten() {
            let q = format!("{{ {name} != nil }}");
            match fe(&q) {
                FieldExpr::Binary { lhs, .. } => assert_eq!(*lhs, FieldExpr::Field(Field::Intrinsic(i)), "{q}"),
                other => panic!("{q}: {other:?}"),
            }
            assert_eq!(p(&format!("{{ }} | select({name})")), p(&format!("{{ }} | select({})", i.canonical_name())));
        }
    }
    assert_eq!(Intrinsic::Duration.static_type(), Type::Duration);
    assert_eq!(Intrinsic::ChildCount.static_type(), Type::Int);
    assert_eq!(Intrinsic::Status.static_type(), Type::Status);
    for bad in [
        "{ trace:status = error }",
        "{ span:rootName = \"a\" }",
        "{ trace:rootServiceName = \"a\" }",
        "{ span:foo = 1 }",
    ] {
        let e = parse(bad).expect_err(bad);
        assert!(e.message.starts_with("unknown intrinsic"), "{bad}: {e}");
    }
}

#[test]
fn every_scope_and_attribute_spelling() {
    let cases: &[(&str, Scope, bool, &str)] = &[
        (".a", Scope::Unscoped, false, "a"),
        (".http.status_code", Scope::Unscoped, false, "http.status_code"),
        ("span.http.method", Scope::Span, false, "http.method"),
        ("resource.service.name", Scope::Resource, false, "service.name"),
        ("event.exception.message", Scope::Event, false, "exception.message"),
        ("link.foo", Scope::Link, false, "foo"),
        ("instrumentation.lib-name", Scope::Instrumentation, false, "lib-name"),
        ("span.\"a b\"", Scope::Span, false, "a b"),
        (".\"a\\\"b\"", Scope::Unscoped, false, "a\"b"),
        (".\"a\\\\b\"", Scope::Unscoped, false, "a\\b"),
        ("span.foo.\"bar baz\"", Scope::Span, false, "foo.bar baz"),
        ("span.name", Scope::Span, false, "name"),
        (".duration", Scope::Unscoped, false, "duration"),
        ("parent.a", Scope::Unscoped, true, "a"),
        ("parent.span.a", Scope::Span, true, "a"),
        ("parent.resource.a", Scope::Resource, true, "a"),
        ("span.k8s:pod", Scope::Span, false, "k8s:pod"),
    ];
    for (text, scope, parent, name) in cases {
        let q = format!("{{ {text} = 1 }}");
        let want = Attribute { scope: *scope, parent: *parent, name: name.to_string() };
        match fe(&q) {
            FieldExpr::Binary { lhs, .. } => assert_eq!(*lhs, FieldExpr::Field(Field::Attribute(want)), "{q}"),
            other => panic!("{q}: {other:?}"),
        }
    }
}

#[test]
fn every_literal_form() {
    let lit = |q: &str| match fe(&format!("{{ .x = {q} }}")) {
        FieldExpr::Binary { rhs, .. } => match *rhs {
            FieldExpr::Literal(l) => l,
            other => panic!("{q}: {other:?}"),
        },
        other => panic!("{q}: {other:?}"),
    };
    let s = |v: &str| Literal::String(v.to_string());
    let ms = 1_000_000i64;
    let cases: Vec<(&str, Literal)> = vec![
        ("\"plain\"", s("plain")),
        ("\"esc \\\" \\\\ \\n \\t \\r \\x41 \\u00e9 \\101\"", s("esc \" \\ \n \t \r A é A")),
        ("`raw \\n \"q\"`", s("raw \\n \"q\"")),
        ("\"\"", s("")),
        ("42", Literal::Int(42)),
        ("-42", Literal::Int(-42)),
        ("0", Literal::Int(0)),
        ("1.5", Literal::Float(1.5)),
        ("-0.25", Literal::Float(-0.25)),
        ("1e3", Literal::Float(1000.0)),
        ("2.5e-3", Literal::Float(0.0025)),
        ("10ns", Literal::Duration(10)),
        ("10us", Literal::Duration(10_000)),
        ("10µs", Literal::Duration(10_000)),
        ("10ms", Literal::Duration(10 * ms)),
        ("1.5s", Literal::Duration(1500 * ms)),
        ("2m", Literal::Duration(120_000 * ms)),
        ("1h", Literal::Duration(3_600_000 * ms)),
        ("1h30m", Literal::Duration(5_400_000 * ms)),
        ("1d", Literal::Duration(86_400_000 * ms)),
        ("-5s", Literal::Duration(-5000 * ms)),
        ("true", Literal::Bool(true)),
        ("false", Literal::Bool(false)),
        ("nil", Literal::Nil),
        ("ok", Literal::Status(Status::Ok)),
        ("error", Literal::Status(Status::Error)),
        ("unset", Literal::Status(Status::Unset)),
        ("unspecified", Literal::Kind(Kind::Unspecified)),
        ("internal", Literal::Kind(Kind::Internal)),
        ("server", Literal::Kind(Kind::Server)),
        ("client", Literal::Kind(Kind::Client)),
        ("producer", Literal::Kind(Kind::Producer)),
        ("consumer", Literal::Kind(Kind::Consumer)),
        ("minInt", Literal::Int(i64::MIN)),
        ("maxInt", Literal::Int(i64::MAX)),
    ];
    for (text, want) in cases {
        assert_eq!(lit(text), want, "{text}");
        // and the printer writes something that reads back the same
        let printed = want.to_string();
        assert_eq!(lit(&printed), want, "{text} printed as {printed}");
    }
}

#[test]
fn static_types() {
    let t = |q: &str| fe(q).static_type();
    assert_eq!(t("{ .a }"), Type::Attribute);
    assert_eq!(t("{ .a = 1 }"), Type::Bool);
    assert_eq!(t("{ duration + 1s }"), Type::Duration);
    assert_eq!(t("{ .a + 1.5 }"), Type::Float);
    assert_eq!(t("{ \"x\" }"), Type::String);
    assert_eq!(t("{ kind }"), Type::Kind);
    assert_eq!(t("{ status }"), Type::Status);
    assert_eq!(p("{ } | rate()").static_type(), Type::Series);
    assert_eq!(p("{ .a }").static_type(), Type::Spanset);
    let agg = |q: &str| match p(q).body {
        Body::Spans(pl) => match &pl.stages[1] {
            Stage::ScalarFilter(f) => f.lhs.static_type(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(agg("{ } | count() > 1"), Type::Int);
    assert_eq!(agg("{ } | avg(duration) > 1s"), Type::Duration);
    assert_eq!(agg("{ } | max(.a) > 1"), Type::Scalar);
}

#[test]
fn metrics_forms() {
    for q in [
        "{ } | rate()",
        "{ } | count_over_time() by (name, resource.service.name)",
        "{ } | min_over_time(duration)",
        "{ } | max_over_time(span.size) by (.x)",
        "{ } | avg_over_time(duration)",
        "{ } | sum_over_time(span.bytes)",
        "{ } | quantile_over_time(duration, 0.5, 0.9, 0.99) by (span.http.route)",
        "{ } | histogram_over_time(duration)",
        "{ } | compare({ status = error })",
        "{ } | compare({ status = error }, 20)",
        "{ } | compare({ status = error }, 20, 1700000000000000000, 1700000001000000000)",
        "{ } | rate() by (span.x) | topk(5)",
        "{ } | rate() | bottomk(3) > 10",
        "({ .a } | rate()) / ({ } | rate()) * 100",
        "{ } | rate() with(exemplars=true, sample=0.1)",
    ] {
        let ast = p(q);
        assert_eq!(validate(&ast), Ok(()), "{q}");
        assert_eq!(p(&print(&ast)), ast, "{q}");
    }
    assert!(matches!(validate(&p("{ } | min_over_time(name)")), Err(ValidationError::Invalid(_))));
    assert!(matches!(validate(&p("{ } | rate() | topk(0)")), Err(ValidationError::Invalid(_))));
}

#[test]
fn error_messages_for_common_mistakes() {
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        ("{ .a < 3", "expected '}' after field expression", 1, 9, "end of query"),
        ("{ .a == 3 }", "'==' is not a TraceQL operator; use '=' for equality", 1, 6, "'=='"),
        ("{ attribute = 4 }", "unknown identifier 'attribute'", 1, 3, "'attribute'"),
        ("{ (.a < 3 }", "expected ')' to close '(' in field expression", 1, 11, "'}'"),
        ("{ .a = }", "expected a field expression", 1, 8, "'}'"),
        ("{ . }", "expected an attribute name after '.'", 1, 4, "' '"),
        ("{ span. }", "expected an attribute name after 'span.'", 1, 8, "' '"),
        ("{ .a = \"x }", "unterminated string literal", 1, 8, "end of query"),
        ("{ .a = 'x' }", "unexpected character; strings use double quotes", 1, 8, "'\\''"),
        ("true", "'true' must be inside a spanset filter", 1, 1, "'true'"),
        ("{ true } | count()", "an aggregate must be compared", 1, 12, "'count'"),
        ("{ true } | count = 1", "expected '(' after 'count'", 1, 18, "'='"),
        ("{} | rate() + 5", "wrap a metrics pipeline in parentheses", 1, 13, "'+'"),
        ("count() > 3 && { true }", "'&&' joins spansets, not scalar filters", 1, 13, "'&&'"),
        ("{ true } = { true }", "'=' does not apply to spansets", 1, 10, "'='"),
        ("{} | topk(10)", "topk()/bottomk() must follow a metrics function", 1, 6, "'topk'"),
        ("coalesce() | { true }", "a pipeline cannot start with coalesce()", 1, 1, "'coalesce'"),
        ("select(.a", "expected ',' or ')' in 'select(...)'", 1, 10, "end of query"),
        ("{ .a = 1 }\n| count() > 2 x", "expected an operator, '|', 'with(...)' or end of query", 2, 15, "'x'"),
        ("({} | rate()) * 10s", "a duration cannot be used as a scalar operand", 1, 17, "duration"),
        ("({} | rate()) > 99999999999999999999", "integer out of range", 1, 17, "99999999999999999999"),
        ("", "expected a query", 1, 1, "end of query"),
    ];
    for (q, msg, line, col, found) in cases {
        let e = parse(q).expect_err(q);
        assert!(e.message.starts_with(msg), "{q:?}: message {:?} should start with {msg:?}", e.message);
        assert_eq!((e.line, e.column), (*line, *col), "{q:?}: position of {e}");
        assert_eq!(e.found, *found, "{q:?}: {e}");
        assert!(e.offset <= q.len());
    }
    let e = parse("{ .a < 3").expect_err("unclosed");
    assert_eq!(e.to_string(), "expected '}' after field expression at 1:9, found end of query");
    assert_eq!(
        e.render("{ .a < 3"),
        "expected '}' after field expression at 1:9, found end of query\n  { .a < 3\n          ^"
    );
}

#[test]
fn validation_verdicts() {
    let invalid =
        ["{ 1 = \"a\" }", "{ status }", "{ .a =~ \"(\" }", "{ true } | by(1)", "{ } | max(name) > 1", "{ -true }"];
    for q in invalid {
        assert!(matches!(validate(&p(q)), Err(ValidationError::Invalid(_))), "{q}");
    }
    let unsupported = ["{ parent.a = 1 }", "{ parent }", "min(.a) < max(.b)", "({ } | count()) > 1"];
    for q in unsupported {
        assert!(matches!(validate(&p(q)), Err(ValidationError::Unsupported(_))), "{q}");
    }
}

#[test]
fn lenient_recovers_finished_conditions() {
    let c = |f: Field, op: BinaryOp, v: Literal| Condition { field: f, op, value: v };
    let attr = |s: Scope, n: &str| Field::Attribute(Attribute::new(s, n));
    let svc = c(attr(Scope::Resource, "service.name"), BinaryOp::Eq, Literal::String("a".into()));
    assert_eq!(parse_lenient(r#"{ resource.service.name = "a" && span.http."#), vec![svc.clone()]);
    assert_eq!(parse_lenient(r#"{ resource.service.name = "a" && span.http.method = "#), vec![svc.clone()]);
    assert_eq!(parse_lenient(r#"{ resource.service.name = "a" "#), vec![svc.clone()]);
    assert_eq!(parse_lenient(r#"{ resource.service.name = "a" }"#), vec![svc.clone()]);
    assert_eq!(parse_lenient(r#"{ resource.service.name = "a" } | rate()"#), vec![svc.clone()]);
    assert_eq!(
        parse_lenient(r#"{ (resource.service.name = "a" && 500 <= span.code && .x = "#),
        vec![svc.clone(), c(attr(Scope::Span, "code"), BinaryOp::Gte, Literal::Int(500))]
    );
    assert_eq!(
        parse_lenient(r#"{ .a = 1 || resource.service.name = "a" && duration > 1s && .b ="#),
        vec![svc.clone(), c(Field::Intrinsic(Intrinsic::Duration), BinaryOp::Gt, Literal::Duration(1_000_000_000))]
    );
    assert_eq!(parse_lenient(r#"{ .a = 1 || .b = 2 }"#), vec![]);
    assert_eq!(parse_lenient(r#"{ .a = 1 } && { .b = "#), vec![]);
    assert_eq!(parse_lenient(""), vec![]);
    assert_eq!(parse_lenient("{"), vec![]);
    assert_eq!(parse_lenient("{ .a != nil && "), vec![c(attr(Scope::Unscoped, "a"), BinaryOp::Neq, Literal::Nil)]);
}

#[test]
fn never_panics_on_odd_input() {
    let nasty = [
        "{",
        "}",
        "(",
        ")",
        "((((",
        "{ ( ( (",
        "\"",
        "`",
        "{ .\"",
        "{ .\"\\",
        "\u{0}",
        "µ",
        "1µ",
        "{ 1.5e }",
        "{ .a = \"\\x\" }",
        "{ .a = \"\\u12\" }",
        "{ .a = \"\\777\" }",
        "--5",
        "- - -",
        "{ - - -1 }",
        "/*",
        "//",
        "{ .a } | rate() | rate()",
        "with(",
        "{ } with(a=)",
        "{ } with(a=1",
        "{ } | compare(",
        "{ } | compare({}, 1, 2)",
        "{ } | quantile_over_time(duration)",
        "{ } | quantile_over_time(duration, )",
        "9223372036854775808",
        "-9223372036854775808",
        "{ .a = -9223372036854775808 }",
        "{ .a = 9223372036854775807ns }",
        "{ .a = 99999999999h }",
        "{ nil }",
        "{ -nil = 1 }",
        "{ .a + nil = 1 }",
        "{ (nil) = 1 }",
    ];
    for q in nasty {
        if let Ok(ast) = parse(q) {
            let _ = validate(&ast);
            assert_eq!(parse(&print(&ast)).as_ref(), Ok(&ast), "{q}");
        }
        let _ = parse_lenient(q);
    }
    let deep = "(".repeat(10_000);
    assert!(parse(&deep).is_err());
    let deep = format!("{{ {} }}", "-".repeat(10_000) + "1");
    assert!(parse(&deep).is_err());
    let long = format!("{{ {} }}", vec![".a = 1"; 5_000].join(" && "));
    assert!(parse(&long).is_err(), "a 5000-deep left chain is refused to protect later recursion");
    // The deepest accepted trees still validate, print and drop on a 2 MiB test thread.
    let ok = format!("{{ {} }}", vec![".a = 1"; 480].join(" && "));
    let q = parse(&ok).expect("480 conditions");
    assert_eq!(validate(&q), Ok(()));
    assert_eq!(parse(&print(&q)).as_ref(), Ok(&q));
    let _ = parse_lenient(&ok);
    let nested = format!("{{ {}.a = 1{} }}", "(".repeat(95), ")".repeat(95));
    assert!(parse(&nested).is_ok());
}
