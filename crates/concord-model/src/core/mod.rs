//! The pure diff/merge core: what changed, whether changes are concurrent, what the merged
//! record is, and the per-entity sync plan. No I/O, no async, no store, no connector.

pub mod diff;
pub mod dots;
pub mod mapping;
pub mod matching;
pub mod merge;
pub mod plan;
pub mod tree;

pub use diff::{apply, diff, diff_versions, Delta, FieldChange};
pub use matching::{MatchField, MatchSpec, Normalize};
pub use merge::{
    merge, Conflict, ConflictSide, DeleteRule, FieldPolicy, MergeOutcome, Policy, Resolution,
    Resolver, Side,
};
pub use plan::{
    attribute, compose, plan, plan_with, target_for, with_identity, EntityPlan, Fold, Observation,
    Parked, SystemState, NO_IDENTITY,
};
