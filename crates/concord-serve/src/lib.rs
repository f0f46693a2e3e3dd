//! Service mode: `concord serve`. One long-running process per store runs the configured jobs
//! on their schedule (interval or cron), on request over an HTTP API and on push; stops
//! gracefully (the running chunk finishes its checkpoint); serves `/metrics` (Prometheus),
//! `/healthz` and `/readyz`. docs/api.md lists every route.
//!
//! Files: `ops` (what the CLI prints and the API answers: run reports, verification, status,
//! conflicts, reconcile), `lock` (one service per store), `schedule`, `runs` (the run
//! registry), `metrics`, `service` (workers, triggers, shutdown), `api` (routes and auth),
//! `console` (the web console: HTML templates in `console/`).

pub mod api;
pub mod console;
pub mod lock;
pub mod metrics;
pub mod ops;
pub mod runs;
pub mod schedule;
pub mod service;

pub use service::{start, ServeOptions, Service, Started};

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] concord_store::StoreError),
    #[error(transparent)]
    Engine(#[from] concord_engine::engine::EngineError),
    #[error(transparent)]
    Build(#[from] concord_engine::engine::build::BuildError),
    #[error(transparent)]
    Connector(#[from] concord_connector::ConnectorError),
    #[error(transparent)]
    Name(#[from] concord_model::model::NameError),
    /// Nothing by that name (job, run, conflict).
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out as sent.
    #[error("{0}")]
    Request(String),
    /// The configuration does not suit the service (a bad schedule, no API token).
    #[error("{0}")]
    Setup(String),
    /// A system the answer needs could not be read.
    #[error("{0}")]
    Upstream(String),
    /// The store is served by another process.
    #[error("{0}")]
    Busy(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}
