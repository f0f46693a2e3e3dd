//! Configuration of one Salesforce object as a system. Secrets come from environment variables
//! named here, never from the file.
//!
//! Two layers: [`SalesforceSystem`] and [`SalesforceSide`] are what a job's configuration file
//! says (`[systems.NAME]` with `type = "salesforce"`, and each job's side on it), parsed with
//! unknown keys refused; [`SalesforceConfig`] is what the connector runs with, built from them by
//! [`SalesforceConfig::from_parts`] (or set field by field by a program).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[systems.NAME]`, `type = "salesforce"`: the org and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSystem {
    pub instance_url_env: String,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub client_id_env: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    #[serde(default)]
    pub jwt_key_env: Option<String>,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default = "default_audience")]
    pub jwt_audience: String,
    #[serde(default)]
    pub login_url_env: Option<String>,
    /// Relative to the configuration file's folder.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default = "default_version")]
    pub api_version: String,
    #[serde(default = "default_share")]
    pub max_limit_share: f64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_bulk_timeout")]
    pub bulk_timeout_secs: u64,
    #[serde(default = "default_in_flight")]
    pub in_flight_secs: u64,
}

/// A job's side on a Salesforce system: the sObject and how it is read and written. The fields
/// are the job's mapping's native fields (plus `entity_id_field`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSide {
    pub object: String,
    #[serde(default)]
    pub entity_id_field: Option<String>,
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
    #[serde(default = "default_page")]
    pub page_size: usize,
    #[serde(default = "default_bulk")]
    pub bulk_threshold: usize,
    #[serde(default = "default_bulk")]
    pub bulk_read_threshold: usize,
    /// Child records read with each record (parent-to-child subqueries): each is the native
    /// field named after its relationship (`Contacts`), a list. Read only.
    #[serde(default)]
    pub children: Vec<SalesforceChild>,
    /// `concord serve`: listen to the object's changes on this PushTopic (`/topic/{name}`)
    /// instead of its Change Data Capture channel — for an org where the object is not
    /// selected for CDC. Created (`SELECT Id FROM {object}`, NotifyForFields All) when the org
    /// has none of that name; one that exists is used as it is.
    #[serde(default)]
    pub push_topic: Option<String>,
}

/// `[[…children]]`: a child relationship of the object (describe's `childRelationships`
/// `relationshipName`, such as `Contacts` on Account) and the child fields each record carries
/// (its `Id` always). A record's value is the list of its children, ordered by Id, as JSON
/// objects (`[{"Id": …, "LastName": …}]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceChild {
    pub relationship: String,
    pub fields: Vec<String>,
}

/// How the connector of one sObject runs.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Variable holding the instance URL (`https://…my.salesforce.com`, or the sandbox's).
    pub instance_url_env: String,
    /// Variable holding an access token (optional when client credentials are given).
    pub token_env: Option<String>,
    /// Variables holding a connected app's client id and secret (client_credentials flow; used
    /// at start without a token, and to re-authenticate once after a 401).
    pub client_id_env: Option<String>,
    pub client_secret_env: Option<String>,
    /// Variable holding a refresh token (refresh_token grant, with `client_id_env` and, when the
    /// app requires it, `client_secret_env`).
    pub refresh_token_env: Option<String>,
    /// Variable holding a PEM RSA private key for the JWT bearer grant (RS256), with
    /// `client_id_env` (the `iss`) and `username_env` (the `sub`).
    pub jwt_key_env: Option<String>,
    /// Variable holding the username the JWT bearer grant logs in as.
    pub username_env: Option<String>,
    /// The JWT `aud`: `https://login.salesforce.com`, or `https://test.salesforce.com` for
    /// Salesforce sandboxes.
    pub jwt_audience: String,
    /// Variable holding the URL whose `/services/oauth2/token` issues tokens (login.salesforce.com,
    /// a My Domain); default: the instance URL.
    pub login_url_env: Option<String>,
    /// A PEM file with an extra trusted certificate authority (`concord sandbox --tls` prints
    /// one; a TLS-intercepting proxy has one).
    pub ca_cert: Option<std::path::PathBuf>,
    pub api_version: String,
    /// The sObject (`Account`, `Property__c`).
    pub object: String,
    /// Fields to sync; default: every createable or updateable field from describe.
    pub fields: Option<Vec<String>>,
    /// An External ID field that stores concord's entity id: creates become upserts by it, so a
    /// retried create never makes a duplicate, and a record created before a crash is found again.
    pub entity_id_field: Option<String>,
    /// How far back each incremental read starts before the newest SystemModstamp seen (s).
    pub overlap_secs: u64,
    /// Query page size (`Sforce-Query-Options: batchSize`, 200–2000).
    pub page_size: usize,
    /// Stop (with an error) once this share of the daily API limit is used.
    pub max_limit_share: f64,
    /// Retries of a call answered 503, UNABLE_TO_LOCK_ROW or timing out.
    pub max_retries: u32,
    /// Writes of one kind (upserts by entity id, updates, deletes) in one batch at or above
    /// this count go through a Bulk API 2.0 ingest job instead of sObject Collections.
    pub bulk_threshold: usize,
    /// A read whose query reports at least this many records continues as a Bulk API 2.0 query
    /// job after its first page.
    pub bulk_read_threshold: usize,
    /// Seconds before an unanswered HTTP request counts as timed out (and is retried when that
    /// is safe).
    pub request_timeout_secs: u64,
    /// Give up on a bulk job that has not finished after this many seconds.
    pub bulk_timeout_secs: u64,
    /// How long after it was sent a request can still take effect in the org: Salesforce
    /// finishes a request whose client went away, within its API timeout (10 minutes for REST
    /// calls). A create whose answer was lost is not sent again before this has passed.
    pub in_flight_secs: u64,
    /// Child relationships read with each record (see [`SalesforceChild`]).
    pub children: Vec<SalesforceChild>,
    /// The PushTopic the change feed listens to instead of Change Data Capture (see
    /// [`SalesforceSide::push_topic`]).
    pub push_topic: Option<String>,
}

fn default_version() -> String {
    "59.0".into()
}
fn default_overlap() -> u64 {
    300
}
fn default_page() -> usize {
    2000
}
fn default_share() -> f64 {
    0.9
}
fn default_retries() -> u32 {
    5
}
fn default_bulk() -> usize {
    10_000
}
fn default_timeout() -> u64 {
    120
}
fn default_bulk_timeout() -> u64 {
    1800
}
fn default_in_flight() -> u64 {
    600
}
fn default_audience() -> String {
    "https://login.salesforce.com".into()
}

impl SalesforceConfig {
    /// The connector of a job's side: `fields` are the mapping's native fields; paths are
    /// relative to `base_dir` (the configuration file's folder).
    pub fn from_parts(
        system: &SalesforceSystem,
        side: &SalesforceSide,
        fields: Vec<String>,
        base_dir: &Path,
    ) -> Self {
        // Destructured whole: an option added to the file schema and not used here does not
        // compile (unused variable).
        let SalesforceSystem {
            instance_url_env,
            token_env,
            client_id_env,
            client_secret_env,
            refresh_token_env,
            jwt_key_env,
            username_env,
            jwt_audience,
            login_url_env,
            ca_cert,
            api_version,
            max_limit_share,
            max_retries,
            request_timeout_secs,
            bulk_timeout_secs,
            in_flight_secs,
        } = system.clone();
        let SalesforceSide {
            object,
            entity_id_field,
            overlap_secs,
            page_size,
            bulk_threshold,
            bulk_read_threshold,
            children,
            push_topic,
        } = side.clone();
        let mut fields = fields;
        // A child relationship is a native field of the mapping, not a field of the object.
        fields.retain(|f| {
            !children
                .iter()
                .any(|c| c.relationship.eq_ignore_ascii_case(f))
        });
        if let Some(e) = &entity_id_field {
            if !fields.contains(e) {
                fields.push(e.clone());
            }
        }
        fields.retain(|f| f != "Id");
        SalesforceConfig {
            instance_url_env,
            token_env,
            client_id_env,
            client_secret_env,
            refresh_token_env,
            jwt_key_env,
            username_env,
            jwt_audience,
            login_url_env,
            ca_cert: ca_cert.map(|p| if p.is_absolute() { p } else { base_dir.join(p) }),
            api_version,
            object,
            fields: Some(fields),
            entity_id_field,
            overlap_secs,
            page_size,
            max_limit_share,
            max_retries,
            bulk_threshold,
            bulk_read_threshold,
            request_timeout_secs,
            bulk_timeout_secs,
            in_flight_secs,
            children,
            push_topic,
        }
    }

    pub fn new(instance_url_env: &str, token_env: &str, object: &str) -> Self {
        SalesforceConfig {
            instance_url_env: instance_url_env.into(),
            token_env: Some(token_env.into()),
            client_id_env: None,
            client_secret_env: None,
            refresh_token_env: None,
            jwt_key_env: None,
            username_env: None,
            jwt_audience: default_audience(),
            login_url_env: None,
            ca_cert: None,
            api_version: default_version(),
            object: object.into(),
            fields: None,
            entity_id_field: None,
            overlap_secs: default_overlap(),
            page_size: default_page(),
            max_limit_share: default_share(),
            max_retries: default_retries(),
            bulk_threshold: default_bulk(),
            bulk_read_threshold: default_bulk(),
            request_timeout_secs: default_timeout(),
            bulk_timeout_secs: default_bulk_timeout(),
            in_flight_secs: default_in_flight(),
            children: Vec::new(),
            push_topic: None,
        }
    }
}
