//! Feeds arbitrary bytes to the parser. Checks: no panic, and any query that parses prints to
//! text that parses back to the same AST; validation and lenient extraction do not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(q) = query_lang::parse(text) {
        let printed = query_lang::print(&q);
        match query_lang::parse(&printed) {
            Ok(again) => assert_eq!(again, q, "round trip changed the AST; printed: {printed}"),
            Err(e) => panic!("printed form does not parse: {printed:?}: {e}"),
        }
        let _ = query_lang::validate(&q);
    }
    let _ = query_lang::parse_lenient(text);
});
