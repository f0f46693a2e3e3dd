//! Salesforce objects as systems, over the REST API and Bulk API 2.0 (docs/connectors/
//! salesforce.md): describe-driven field lists; reads by a (SystemModstamp, Id)-ordered query
//! with an overlap window, continued as a Bulk query job for large reads, deletes from
//! getDeleted (queryAll beyond its window); writes through sObject Collections (200 a call,
//! per-record results) or Bulk ingest jobs at `bulk_threshold`, single-record updates
//! conditional on `If-Unmodified-Since`; creates idempotent through an External ID field holding
//! concord's entity id; OAuth client_credentials, refresh_token and JWT bearer; retries that
//! cannot duplicate; a daily-limit guard.
//!
//! Files: `config` (the file schema and the runtime config), `client` (HTTP, auth, retries,
//! limits), `read`, `write`, `soql` (literal escaping).

pub mod client;
pub mod config;
pub mod read;
pub mod soql;
pub mod write;

pub use config::{SalesforceConfig, SalesforceSide, SalesforceSystem};

use crate::{Binding, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use async_trait::async_trait;
use concord_model::model::SystemId;
use serde_json::Value as J;

/// A described field.
#[derive(Debug, Clone)]
pub struct SfField {
    pub name: String,
    pub ty: String,
    pub createable: bool,
    pub updateable: bool,
}

/// One sObject.
pub struct SalesforceConnector {
    system: SystemId,
    cfg: SalesforceConfig,
    client: client::Client,
    fields: Vec<SfField>,
}

const SYSTEM_FIELDS: [&str; 7] = [
    "Id",
    "IsDeleted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
];

/// The fields of a describe response (`sobjects/{S}/describe`).
pub fn parse_describe(body: &J) -> Vec<SfField> {
    body.get("fields")
        .and_then(J::as_array)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    Some(SfField {
                        name: f.get("name")?.as_str()?.to_string(),
                        ty: f.get("type")?.as_str()?.to_string(),
                        createable: f.get("createable").and_then(J::as_bool).unwrap_or(false),
                        updateable: f.get("updateable").and_then(J::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The error code and message of a REST error body (`[{"errorCode", "message", …}]`, or the
/// OAuth form `{"error", "error_description"}`).
pub fn parse_error(body: &J) -> Option<(String, String)> {
    if let Some(e) = body.get(0) {
        return Some((
            e.get("errorCode")?.as_str()?.to_string(),
            e.get("message")
                .and_then(J::as_str)
                .unwrap_or("")
                .to_string(),
        ));
    }
    Some((
        body.get("error")?.as_str()?.to_string(),
        body.get("error_description")
            .and_then(J::as_str)
            .unwrap_or("")
            .to_string(),
    ))
}

impl SalesforceConnector {
    /// The connector of a job's side on a `[systems.NAME]` of type `salesforce`.
    pub async fn from_config(
        system: &SalesforceSystem,
        side: &SalesforceSide,
        binding: Binding<'_>,
    ) -> Result<Self, ConnectorError> {
        let cfg = SalesforceConfig::from_parts(system, side, binding.fields, binding.base_dir);
        Self::connect(binding.system, cfg).await
    }

    pub async fn connect(system: SystemId, cfg: SalesforceConfig) -> Result<Self, ConnectorError> {
        let client = client::Client::connect(system.as_str(), cfg.clone()).await?;
        let d = client
            .call(
                reqwest::Method::GET,
                &format!(
                    "/services/data/v{}/sobjects/{}/describe",
                    cfg.api_version, cfg.object
                ),
                None,
                None,
            )
            .await?;
        let all = parse_describe(&d.body);
        let fields = match &cfg.fields {
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    out.push(
                        all.iter()
                            .find(|f| f.name.eq_ignore_ascii_case(n))
                            .cloned()
                            .ok_or_else(|| ConnectorError {
                                system: system.to_string(),
                                object: cfg.object.clone(),
                                message: format!("field {n} not found in describe"),
                                retryable: false,
                            })?,
                    );
                }
                out
            }
            None => all
                .into_iter()
                .filter(|f| {
                    (f.createable || f.updateable) && !SYSTEM_FIELDS.contains(&f.name.as_str())
                })
                .collect(),
        };
        Ok(SalesforceConnector {
            system,
            cfg,
            client,
            fields,
        })
    }

    pub fn fields(&self) -> &[SfField] {
        &self.fields
    }

    /// HTTP calls made so far (retries and re-authentication included).
    pub fn calls(&self) -> u64 {
        self.client.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn system(&self) -> &SystemId {
        &self.system
    }

    /// Only with `entity_id_field` (creates are upserts by concord's entity id).
    fn creates_idempotent(&self) -> bool {
        self.cfg.entity_id_field.is_some()
    }

    async fn read(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        read::page(self, cursor).await
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        write::apply(self, ops).await
    }

    async fn fetch(
        &self,
        keys: &[concord_model::model::Key],
    ) -> Result<Vec<crate::Change>, ConnectorError> {
        read::fetch(self, keys).await
    }
}
