//! `concord sandbox`: a local Salesforce stand-in, a product of its own (docs/sandbox.md). It
//! speaks the REST API (OAuth 2.0 grants, sObjects, collections, composite, SOQL query and
//! queryMore, replication, limits, describe), Bulk API 2.0 ingest and query, fault injection
//! and an admin API, so standard clients (jsforce, simple-salesforce) and concord's connector
//! work against it unmodified.
//!
//! Parts: the SOQL subset ([`soql`]: lexer, parser, evaluator), record ids ([`ids`]), the org
//! schema and describe shapes ([`schema`]), the org's data with Salesforce's validation,
//! errors, soft delete and upsert by external id ([`org`]), persistence ([`persist`]), seed
//! data ([`seed`]), the HTTP server ([`server`], [`bulk`]) and start-up ([`launch`]). It
//! depends on concord's model only: no connector depends on it.

// describe_field's json! object has more keys than the default limit expands.
#![recursion_limit = "256"]

pub mod bulk;
pub mod ids;
pub mod launch;
pub mod org;
pub mod persist;
pub mod schema;
pub mod seed;
pub mod server;
pub mod soql;

/// A set-up input the sandbox cannot use — a schema file's object or field, a seed file's
/// record or reference; the message names the file, object, record and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl From<String> for InvalidInput {
    fn from(s: String) -> Self {
        InvalidInput(s)
    }
}
