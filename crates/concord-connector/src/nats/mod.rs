//! NATS JetStream as a destination: each write publishes one canonical change event on the
//! side's subject, acknowledged by JetStream before it counts as written. Any number of
//! downstream consumers subscribe to the subject; none of them is concord's concern.
//!
//! Event (JSON): `{"entity": "<32 hex>", "op": "upsert" | "delete", "hash": "<64 hex>",
//! "fields": {…}}` — text, booleans and integers as JSON values, decimals as strings (exact),
//! dates `YYYY-MM-DD`, datetimes RFC 3339 UTC, bytes hex, JSON as is. The header `Nats-Msg-Id`
//! is `<entity>:<hash>`, so a retried publish inside the stream's duplicate window is stored
//! once. The connector is write-only: reading a NATS side is an error.

pub mod config;
pub mod write;

pub use write::event;

pub use config::{NatsSide, NatsSystem};

use crate::{Binding, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use async_trait::async_trait;
use concord_model::model::SystemId;

/// Publishes change events on one subject.
pub struct NatsConnector {
    system: SystemId,
    subject: String,
    js: async_nats::jetstream::Context,
}

impl NatsConnector {
    /// The connector of a job's side on a `[systems.NAME]` of type `nats`.
    pub async fn from_config(
        system: &NatsSystem,
        side: &NatsSide,
        binding: Binding<'_>,
    ) -> Result<Self, ConnectorError> {
        let NatsSystem { url_env, stream } = system;
        let NatsSide { subject } = side;
        Self::connect(binding.system, url_env, stream, subject).await
    }

    /// Connects to the server in `url_env` and makes sure stream `stream` captures `subject`.
    pub async fn connect(
        system: SystemId,
        url_env: &str,
        stream: &str,
        subject: &str,
    ) -> Result<Self, ConnectorError> {
        let fail = |m: String, retryable: bool| ConnectorError {
            system: system.to_string(),
            object: subject.to_string(),
            message: m,
            retryable,
        };
        let url = std::env::var(url_env)
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                fail(
                    format!("environment variable {url_env} is not set (the NATS URL)"),
                    false,
                )
            })?;
        let client = async_nats::connect(url.as_str())
            .await
            .map_err(|e| fail(format!("cannot reach the NATS server: {e}"), true))?;
        let js = async_nats::jetstream::new(client);
        match js.get_stream(stream).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| fail(format!("stream {stream}: {e}"), true))?;
                let covered = info
                    .config
                    .subjects
                    .iter()
                    .any(|p| subject_matches(p, subject));
                if !covered {
                    let mut cfg = info.config.clone();
                    cfg.subjects.push(subject.to_string());
                    js.update_stream(cfg).await.map_err(|e| {
                        fail(format!("adding {subject} to stream {stream}: {e}"), false)
                    })?;
                }
            }
            Err(_) => {
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: stream.to_string(),
                    subjects: vec![subject.to_string()],
                    ..Default::default()
                })
                .await
                .map_err(|e| fail(format!("creating stream {stream}: {e}"), true))?;
            }
        }
        Ok(NatsConnector {
            system,
            subject: subject.to_string(),
            js,
        })
    }

    fn err(&self, m: String, retryable: bool) -> ConnectorError {
        ConnectorError {
            system: self.system.to_string(),
            object: self.subject.clone(),
            message: m,
            retryable,
        }
    }
}

/// Whether a stream subject pattern (`a.*.c`, `a.>`) covers `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, part) in p.iter().enumerate() {
        match *part {
            ">" => return s.len() > i,
            "*" => {
                if i >= s.len() {
                    return false;
                }
            }
            lit => {
                if s.get(i) != Some(&lit) {
                    return false;
                }
            }
        }
    }
    p.len() == s.len()
}

#[async_trait]
impl Connector for NatsConnector {
    fn system(&self) -> &SystemId {
        &self.system
    }

    async fn read(&self, _cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        Err(self.err(
            "a NATS side is a destination only; it cannot be read".into(),
            false,
        ))
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        write::publish(self, ops).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_model::model::{Fields, Value};

    #[test]
    fn subjects_and_events() {
        assert!(subject_matches("concord.>", "concord.accounts"));
        assert!(subject_matches("concord.*", "concord.accounts"));
        assert!(!subject_matches("concord.*", "concord.a.b"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
        let e =
            concord_model::model::EntityId::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let f = Fields::new()
            .with("n", Value::decimal_str("12.50").unwrap())
            .with("d", Value::date_str("2024-01-31").unwrap());
        let (id, j) = event(&WriteOp::Upsert {
            entity: e,
            key: None,
            fields: f.clone(),
        });
        assert_eq!(id, format!("{}:{}", e.to_hex(), f.content_hash().to_hex()));
        assert_eq!(j["fields"]["n"], "12.5");
        assert_eq!(j["fields"]["d"], "2024-01-31");
        assert_eq!(j["op"], "upsert");
    }
}
