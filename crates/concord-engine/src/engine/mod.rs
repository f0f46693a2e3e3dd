//! The engine: the only place that joins the store, the core and the connectors.

pub mod build;
pub mod bundle;
pub mod conflicts;
pub mod drift;
pub mod mapped;
mod pass;
mod repair;

pub use pass::{
    DeleteGuard, Engine, HeldDeletes, JobOptions, Lag, Planned, Role, SyncJob, SyncReport,
    DEFAULT_CHUNK,
};

use concord_connector::ConnectorError;
use concord_store::StoreError;

/// Why a sync pass stopped. Everything committed before the error stays; the next pass resumes
/// from the last checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("job '{job}': {message}")]
    Config { job: String, message: String },
    /// The caller asked the pass to stop ([`JobOptions::stop`]); it stopped after a checkpoint.
    #[error(
        "job '{job}': stopped on request after a checkpoint; the next pass goes on from there"
    )]
    Stopped { job: String },
}
