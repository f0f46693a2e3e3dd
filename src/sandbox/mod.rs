//! `concord sandbox`: a local Salesforce-compatible REST server (issue 3, in progress).
//!
//! Built so far, all without HTTP: the SOQL subset ([`soql`]: lexer, parser, evaluator, literal
//! escaping for the connector), record ids ([`ids`]), the org schema and describe shapes
//! ([`schema`]), and the org's data with Salesforce's validation, errors, soft delete, upsert by
//! external id and SOQL execution with parent paths ([`org`]). Next: the HTTP server (REST,
//! OAuth, limits, composite, Bulk 2.0, fault injection) and the connector.

pub mod bulk;
pub mod ids;
pub mod launch;
pub mod org;
pub mod persist;
pub mod schema;
pub mod seed;
pub mod server;
pub mod soql;
