//! `concord sandbox`: a local Salesforce-compatible REST server (issue 3, in progress).
//!
//! Built so far: the SOQL subset ([`soql`]) — lexer, parser, evaluator and the literal escaping
//! the Salesforce connector uses to build queries. The HTTP server comes next.

pub mod ids;
pub mod schema;
pub mod soql;
