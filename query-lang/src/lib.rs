//! TraceQL language: lexer, parser, AST, validation, errors.
