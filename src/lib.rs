//! concord: a change-tracking sync engine for business records.
//!
//! Layers (see `docs/design.md`):
//! - [`model`] and [`core`] are pure: values, records, canonical encoding, hashes, clocks, diff,
//!   merge, conflict policies and per-entity sync plans. No I/O, no async.
//! - [`store`]: a narrow key-value trait with sled, in-memory and fault-injecting implementations,
//!   and the typed, versioned layout on top.
//! - [`connector`]: one folder per kind of system.
//! - [`engine`]: the only place that joins store, core and connectors.
//! - [`serve`]: service mode over the engine (schedules, HTTP API, metrics).
//!
//! ```
//! use concord::core::{merge, DeleteRule, FieldPolicy, Policy, Side};
//! use concord::model::{Fields, SystemId, Value};
//!
//! // The same business value read from two systems hashes the same.
//! let sf = Fields::new().with("Amount", Value::from_f64(12.5).unwrap());
//! let erp = Fields::new().with("Amount", Value::decimal_str("12.50").unwrap());
//! assert_eq!(sf.content_hash(), erp.content_hash());
//!
//! // Concurrent edits of different fields merge; a field both changed goes to the policy.
//! let (a, b) = (SystemId::new("sf").unwrap(), SystemId::new("erp").unwrap());
//! let base = Fields::new().with("Phone", "1").with("City", "Paris");
//! let ours = Fields::new().with("Phone", "2").with("City", "Paris");
//! let theirs = Fields::new().with("Phone", "1").with("City", "Lyon");
//! let policy = Policy::new(FieldPolicy::Prefer(b.clone()), DeleteRule::DeleteWins);
//! let out = merge(Some(&base), Side::new(&a, Some(&ours), None), Side::new(&b, Some(&theirs), None), &policy);
//! let merged = out.content.unwrap();
//! assert_eq!(merged.get("Phone"), Some(&Value::text("2")));
//! assert_eq!(merged.get("City"), Some(&Value::text("Lyon")));
//! assert!(out.conflicts.is_empty());
//! ```

#[doc(hidden)]
pub mod fuzzing;
// The lower layers are crates of their own (the compiler enforces the layering); their
// modules keep their paths here.
pub use concord_connector as connector;
pub use concord_engine::{bundle, config, engine, exchange};
pub use concord_model::{core, model};
/// The Salesforce stand-in, re-exported for the binary and the tests (no connector uses it).
pub use concord_sandbox as sandbox;
/// Service mode (`concord serve`): scheduler, HTTP API, metrics.
pub use concord_serve as serve;
pub use concord_store as store;
