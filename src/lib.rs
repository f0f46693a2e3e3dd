//! concord: a change-tracking sync engine for business records.
//!
//! Layers (see `docs/design.md`):
//! - [`model`] and [`core`] are pure: values, records, canonical encoding, hashes, clocks, diff,
//!   merge, conflict policies and per-entity sync plans. No I/O, no async.
//! - [`store`]: a narrow key-value trait with sled, in-memory and fault-injecting implementations,
//!   and the typed, versioned layout on top.
//! - [`connector`]: one folder per kind of system.
//! - [`engine`]: the only place that joins store, core and connectors.

pub mod connector;
pub mod core;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod store;
