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

impl SalesforceConfig {
    pub fn new(instance_url_env: &str, token_env: &str, object: &str) -> Self {
        SalesforceConfig {
            instance_url_env: instance_url_env.into(),
            token_env: Some(token_env.into()),
            client_id_env: None,
            client_secret_env: None,
            api_version: default_version(),
            object: object.into(),
            fields: None,
            entity_id_field: None,
            overlap_secs: default_overlap(),
            page_size: default_page(),
            max_limit_share: default_share(),
            max_retries: default_retries(),
        }
    }
}
