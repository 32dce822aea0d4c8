//! `traceql '<query>'` (or the query on stdin): prints the canonical form and the validation
//! verdict, or the parse error with its position.
//!
//! Exit codes: 0 valid, 1 parse error, 2 invalid, 3 unsupported, 64 usage error.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let query = match args.as_slice() {
        [] => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("error: cannot read stdin: {e}");
                return ExitCode::from(64);
            }
            s
        }
        [flag] if flag == "-h" || flag == "--help" => {
            println!("usage: traceql '<query>'   (or pipe the query on stdin)");
            println!("exit codes: 0 valid, 1 parse error, 2 invalid, 3 unsupported");
            return ExitCode::SUCCESS;
        }
        [q] => q.clone(),
        _ => {
            eprintln!("usage: traceql '<query>'   (quote the query as one argument)");
            return ExitCode::from(64);
        }
    };
    let query = query.trim_end_matches(['\n', '\r']);
    match query_lang::parse(query) {
        Err(e) => {
            println!("parse error: {}", e.render(query));
            ExitCode::from(1)
        }
        Ok(q) => {
            println!("{q}");
            match query_lang::validate(&q) {
                Ok(()) => {
                    println!("valid ({})", q.static_type());
                    ExitCode::SUCCESS
                }
                Err(e @ query_lang::ValidationError::Invalid(_)) => {
                    println!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    println!("unsupported: {e}");
                    ExitCode::from(3)
                }
            }
        }
    }
}
