//! Runs the shared TraceQL corpus (Tempo's test_examples.yaml) through parse and validate.
//!
//! The corpus lives outside the repository; `TRACEQL_CORPUS` names it (CI sets it to
//! `../shared/traceql/test_examples.yaml`). Unset: the test prints that it skipped. Set but
//! missing: the test fails, so CI cannot silently stop checking.

use query_lang::{ValidationError, parse, print, validate};

#[derive(Debug, PartialEq)]
enum Outcome {
    Valid,
    ParseFails,
    ValidateFails,
    Unsupported,
}

fn outcome(q: &str) -> (Outcome, String) {
    match parse(q) {
        Err(e) => (Outcome::ParseFails, e.to_string()),
        Ok(ast) => {
            // Every parsed query must also survive the canonical printer.
            let printed = print(&ast);
            match parse(&printed) {
                Ok(again) => assert_eq!(again, ast, "round trip changed {q:?} (printed {printed:?})"),
                Err(e) => panic!("printed form of {q:?} does not parse: {printed:?}: {e}"),
            }
            match validate(&ast) {
                Ok(()) => (Outcome::Valid, printed),
                Err(e @ ValidationError::Unsupported(_)) => (Outcome::Unsupported, e.to_string()),
                Err(e) => (Outcome::ValidateFails, e.to_string()),
            }
        }
    }
}

#[test]
fn corpus() {
    let Ok(path) = std::env::var("TRACEQL_CORPUS") else {
        println!("TRACEQL_CORPUS not set: skipped the TraceQL corpus test");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("TRACEQL_CORPUS={path}: {e}"));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: bad YAML: {e}"));
    let sections = [
        ("valid", Outcome::Valid),
        ("parse_fails", Outcome::ParseFails),
        ("validate_fails", Outcome::ValidateFails),
        ("unsupported", Outcome::Unsupported),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, want) in sections {
        let queries =
            doc.get(name).and_then(|v| v.as_sequence()).unwrap_or_else(|| panic!("{path}: no section {name}"));
        assert!(!queries.is_empty(), "section {name} is empty");
        for q in queries {
            let q = q.as_str().unwrap_or_else(|| panic!("{name}: non-string entry {q:?}"));
            total += 1;
            let (got, detail) = outcome(q);
            if got != want {
                failures.push(format!("[{name}] {q:?}: got {got:?}: {detail}"));
            }
        }
    }
    println!("corpus: {total} queries checked, {} misplaced", failures.len());
    assert!(failures.is_empty(), "{} of {total} corpus queries misplaced:\n{}", failures.len(), failures.join("\n"));
}
