//! TraceQL language: lexer, parser, typed AST, validation, canonical printer and a lenient
//! condition extractor for autocompletion.
//!
//! The crate is pure (no I/O) and never panics on input; every failure is a typed error.
//!
//! ```
//! use query_lang::{parse, print, validate, ValidationError};
//!
//! let q = parse(r#"{ resource.service.name = "api" && duration > 100ms } | count() > 2"#).unwrap();
//! assert!(validate(&q).is_ok());
//! assert_eq!(parse(&print(&q)).unwrap(), q); // printing is canonical and lossless
//!
//! let q = parse("{ parent.a = 1 }").unwrap();
//! assert!(matches!(validate(&q), Err(ValidationError::Unsupported(_))));
//!
//! let err = parse("{ .a < 3").unwrap_err();
//! assert_eq!(err.to_string(), "expected '}' after field expression at 1:9, found end of query");
//! ```
//!
//! Stable API for the server:
//! - [`parse`] — text to [`Query`], or a [`ParseError`] with position and expectation;
//! - [`validate`] — semantic checks; [`ValidationError::Invalid`] vs [`ValidationError::Unsupported`];
//! - [`print`] (also `Display` on [`Query`]) — canonical text, `parse(print(q)) == q`;
//! - [`parse_lenient`] — [`Condition`]s recovered from an unfinished query (tag-value `q`);
//! - the AST in [`ast`], whose expression nodes report their [`Type`] via `static_type()`.

pub mod ast;
mod error;
mod lenient;
mod lexer;
mod parser;
mod printer;
mod validate;

pub use ast::*;
pub use error::{ParseError, ValidationError};
pub use lenient::{Condition, parse_lenient};
pub use lexer::parse_duration;
pub use printer::{print, quote_attribute, quote_string};
pub use validate::{MAX_COMPARE_TOP_N, MAX_GROUP_BYS, validate};

/// Parses a TraceQL query. Pure syntax: run [`validate`] before planning.
pub fn parse(query: &str) -> Result<Query, ParseError> {
    parser::parse(query)
}
