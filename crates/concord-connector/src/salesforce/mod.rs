//! Salesforce objects as systems, over the REST API and Bulk API 2.0 (docs/connectors/
//! salesforce.md): describe-driven field lists; reads by a (SystemModstamp, Id)-ordered query
//! with an overlap window, continued as a Bulk query job for large reads, deletes from
//! getDeleted (queryAll beyond its window); writes through sObject Collections (200 a call,
//! per-record results) or Bulk ingest jobs at `bulk_threshold`, single-record updates
//! conditional on `If-Unmodified-Since`; creates idempotent through an External ID field holding
//! concord's entity id; OAuth client_credentials, refresh_token and JWT bearer; retries that
//! cannot duplicate; a daily-limit guard; child records read with their parent through
//! parent-to-child subqueries (`children`); a change feed from Change Data Capture over the
//! Streaming API (`stream`) for a service that runs passes on push.
//!
//! Files: `config` (the file schema and the runtime config), `client` (HTTP, auth, retries,
//! limits), `read`, `write`, `stream` (CometD), `soql` (literal escaping).

pub mod client;
pub mod config;
pub mod read;
pub mod soql;
pub mod stream;
pub mod write;

pub use config::{SalesforceChild, SalesforceConfig, SalesforceSide, SalesforceSystem};

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

/// A child relationship read with each record: its name (the native field), the child
/// sObject, the child's lookup to the parent and the child fields carried.
#[derive(Debug, Clone)]
pub struct ChildRel {
    pub name: String,
    pub object: String,
    pub parent_field: String,
    pub fields: Vec<SfField>,
}

/// One sObject.
pub struct SalesforceConnector {
    system: SystemId,
    cfg: SalesforceConfig,
    /// Shared with the change feed's task (`stream`).
    client: std::sync::Arc<client::Client>,
    fields: Vec<SfField>,
    children: Vec<ChildRel>,
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
        let client =
            std::sync::Arc::new(client::Client::connect(system.as_str(), cfg.clone()).await?);
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
        let refuse = |message: String| ConnectorError {
            system: system.to_string(),
            object: cfg.object.clone(),
            message,
            retryable: false,
        };
        let pick = |all: &[SfField], names: &[String], object: &str| {
            names
                .iter()
                .map(|n| {
                    all.iter()
                        .find(|f| f.name.eq_ignore_ascii_case(n))
                        .cloned()
                        .ok_or_else(|| {
                            refuse(format!("field {n} not found in describe of {object}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut children = Vec::new();
        for ch in &cfg.children {
            let rel = d
                .body
                .get("childRelationships")
                .and_then(J::as_array)
                .into_iter()
                .flatten()
                .find(|r| {
                    r.get("relationshipName")
                        .and_then(J::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&ch.relationship))
                })
                .ok_or_else(|| {
                    refuse(format!(
                        "child relationship {} not found in describe of {} (childRelationships)",
                        ch.relationship, cfg.object
                    ))
                })?;
            let text = |k: &str| rel.get(k).and_then(J::as_str).unwrap_or("").to_string();
            let object = text("childSObject");
            let cd = client
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "/services/data/v{}/sobjects/{object}/describe",
                        cfg.api_version
                    ),
                    None,
                    None,
                )
                .await?;
            let wanted: Vec<String> = ch
                .fields
                .iter()
                .filter(|f| !f.eq_ignore_ascii_case("Id"))
                .cloned()
                .collect();
            children.push(ChildRel {
                name: text("relationshipName"),
                fields: pick(&parse_describe(&cd.body), &wanted, &object)?,
                object,
                parent_field: text("field"),
            });
        }
        let fields = match &cfg.fields {
            Some(names) => pick(&all, names, &cfg.object)?,
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
            children,
        })
    }

    pub fn fields(&self) -> &[SfField] {
        &self.fields
    }

    /// The child relationships each record is read with.
    pub fn children(&self) -> &[ChildRel] {
        &self.children
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

    /// `in_flight_secs`: the REST API's time limit by default.
    fn in_flight_limit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cfg.in_flight_secs)
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

    fn api_usage(&self) -> Option<(u64, u64)> {
        *self.client.usage.lock().expect("usage")
    }

    /// Change Data Capture over the Streaming API (the object's channel and its children's).
    async fn subscribe(
        &self,
        from: Option<&[u8]>,
    ) -> Result<Option<crate::ChangeFeed>, ConnectorError> {
        stream::subscribe(self, from).await.map(Some)
    }
}
