//! concord's engine layer: the configuration of systems and jobs ([`config`]), the change
//! bundle format ([`bundle`]), the instance-to-instance protocol as request → reply functions
//! ([`exchange`]; the transport is the caller's) and the engine itself ([`engine`]: sync
//! passes, drift repair, reconciliation, bundle export/import, conflicts) — the only place
//! joining the store, the pure core and the connectors. See `docs/design.md` §1 and §10.

pub mod bundle;
pub mod config;
pub mod engine;
pub mod exchange;
