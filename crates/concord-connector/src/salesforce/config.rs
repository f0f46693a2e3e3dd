//! Configuration of one Salesforce object as a system. Secrets come from environment variables
//! named here, never from the file.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Variable holding the instance URL (`https://…my.salesforce.com`, or the sandbox's).
    pub instance_url_env: String,
    /// Variable holding an access token (optional when client credentials are given).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Variables holding a connected app's client id and secret (client_credentials flow; used
    /// at start without a token, and to re-authenticate once after a 401).
    #[serde(default)]
    pub client_id_env: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Variable holding a refresh token (refresh_token grant, with `client_id_env` and, when the
    /// app requires it, `client_secret_env`).
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    /// Variable holding a PEM RSA private key for the JWT bearer grant (RS256), with
    /// `client_id_env` (the `iss`) and `username_env` (the `sub`).
    #[serde(default)]
    pub jwt_key_env: Option<String>,
    /// Variable holding the username the JWT bearer grant logs in as.
    #[serde(default)]
    pub username_env: Option<String>,
    /// The JWT `aud`: `https://login.salesforce.com`, or `https://test.salesforce.com` for
    /// Salesforce sandboxes.
    #[serde(default = "default_audience")]
    pub jwt_audience: String,
    /// Variable holding the URL whose `/services/oauth2/token` issues tokens (login.salesforce.com,
    /// a My Domain); default: the instance URL.
    #[serde(default)]
    pub login_url_env: Option<String>,
    /// A PEM file with an extra trusted certificate authority (`concord sandbox --tls` prints
    /// one; a TLS-intercepting proxy has one).
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    #[serde(default = "default_version")]
    pub api_version: String,
    /// The sObject (`Account`, `Property__c`).
    pub object: String,
    /// Fields to sync; default: every createable or updateable field from describe.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// An External ID field that stores concord's entity id: creates become upserts by it, so a
    /// retried create never makes a duplicate, and a record created before a crash is found again.
    #[serde(default)]
    pub entity_id_field: Option<String>,
    /// How far back each incremental read starts before the newest SystemModstamp seen (s).
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
    /// Query page size (`Sforce-Query-Options: batchSize`, 200–2000).
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// Stop (with an error) once this share of the daily API limit is used.
    #[serde(default = "default_share")]
    pub max_limit_share: f64,
    /// Retries of a call answered 503, UNABLE_TO_LOCK_ROW or timing out.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Writes of one kind (upserts by entity id, updates, deletes) in one batch at or above
    /// this count go through a Bulk API 2.0 ingest job instead of sObject Collections.
    #[serde(default = "default_bulk")]
    pub bulk_threshold: usize,
    /// A read whose query reports at least this many records continues as a Bulk API 2.0 query
    /// job after its first page.
    #[serde(default = "default_bulk")]
    pub bulk_read_threshold: usize,
    /// Seconds before an unanswered HTTP request counts as timed out (and is retried when that
    /// is safe).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Give up on a bulk job that has not finished after this many seconds.
    #[serde(default = "default_bulk_timeout")]
    pub bulk_timeout_secs: u64,
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
fn default_audience() -> String {
    "https://login.salesforce.com".into()
}

impl SalesforceConfig {
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
        }
    }
}
