//! concord's pure layer: values, records, canonical encoding and hashes, vector clocks and field
//! dots ([`model`]); diff, merge, conflict policies, mappings, matching, digest trees and
//! per-entity sync plans ([`core`]). No I/O, no async, no storage: the compiler holds this
//! crate to it (it depends on none of tokio, sled, sqlx, reqwest). See `docs/design.md` §1.

pub mod core;
pub mod model;
