//! Runs the shared TraceQL corpus (Tempo's test_examples.yaml) through parse and validate.
//!
//! The corpus lives outside the repository, so the test is ignored by default and `tests/run.sh` runs it
//! explicitly where `../shared/traceql/test_examples.yaml` exists (`TRACEQL_CORPUS` names it). Run without
//! `TRACEQL_CORPUS`, or with a path that does not exist, it fails.

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
#[ignore = "needs Tempo's TraceQL corpus outside the repository (TRACEQL_CORPUS); tests/run.sh runs it"]
fn corpus() {
    let path = std::env::var("TRACEQL_CORPUS").expect("TRACEQL_CORPUS must name Tempo's test_examples.yaml");
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
