//! The pure record model: values, records, the canonical encoding and its hash, vector clocks.
//!
//! Nothing in here performs I/O, spawns tasks or knows about a store or a connector. The byte
//! layouts are specified in `docs/design.md`; changing one is a format change.

pub mod canonical;
pub mod clock;
pub mod ids;
pub mod record;
pub mod value;
pub mod varint;

pub use canonical::{ContentHash, DecodeError};
pub use clock::{Actor, ActorId, ClockOrdering, VectorClock};
pub use ids::{EntityId, InstanceId, NameError, SystemId};
pub use record::{FieldOrigins, Fields, Key, NormalizeOptions, Record, Version};
pub use value::{Timestamp, Value, ValueError};
