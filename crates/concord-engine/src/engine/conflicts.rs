//! Resolving parked conflicts (`concord conflicts resolve`): the chosen value becomes a new head
//! version, every system the job writes is queued to receive it, and the entry leaves the queue.

use super::{EngineError, SyncJob};
use concord_model::model::{canonical, Actor, EntityId, SystemId, Timestamp, Value, Version};
use concord_store::{ConflictEntry, OutboxEntry};

/// How a conflict is decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The value (or, for a record-level conflict, the record) one system has.
    Take(String),
    /// A value given by hand (field conflicts only).
    Value(Value),
}

/// The decoded value of one side of a conflict (`None`: absent or deleted).
pub fn side_value(
    c: &ConflictEntry,
    system: &str,
) -> Option<Result<Option<Value>, canonical::DecodeError>> {
    let s = c.sides.iter().find(|s| s.system == system)?;
    if s.value.is_empty() {
        return Some(Ok(None));
    }
    Some(canonical::value_from_bytes(&s.value).map(Some))
}

/// A name that is not (or not exactly one) side of a conflict; the message lists the sides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a side of this conflict{}; the sides are: {}", if *.several { " (it names several)" } else { "" }, .sides.join(", "))]
pub struct NotASide {
    pub given: String,
    pub several: bool,
    pub sides: Vec<String>,
}

/// The side of `c` that `given` names: its system id (`crm.Account`), or the system's name
/// (`crm`) when one side only is of that system.
pub fn side_named(c: &ConflictEntry, given: &str) -> Result<String, NotASide> {
    if c.sides.iter().any(|s| s.system == given) {
        return Ok(given.to_string());
    }
    let prefix = format!("{given}.");
    let by_name: Vec<&str> = c
        .sides
        .iter()
        .map(|s| s.system.as_str())
        .filter(|s| s.starts_with(&prefix))
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(NotASide {
            given: given.to_string(),
            several: by_name.len() > 1,
            sides: c.sides.iter().map(|s| s.system.clone()).collect(),
        }),
    }
}

impl super::Engine {
    /// Resolves the conflict on `field` (`None`: the record-level one) of `entity` in `job`.
    pub fn resolve_conflict(
        &self,
        job: &SyncJob,
        entity: &EntityId,
        field: Option<&str>,
        choice: &Choice,
    ) -> Result<Version, EngineError> {
        let cfg_err = |m: String| EngineError::Config {
            job: job.name.clone(),
            message: m,
        };
        let state = self.state();
        let entry = state
            .conflicts_of(entity)?
            .into_iter()
            .find(|c| c.job == job.name && c.field.as_deref() == field)
            .ok_or_else(|| cfg_err(format!("no open conflict {}", conflict_id(entity, field))))?;
        let head = state.head(entity)?;
        let choice = match choice {
            Choice::Take(given) => {
                Choice::Take(side_named(&entry, given).map_err(|e| cfg_err(e.to_string()))?)
            }
            other => other.clone(),
        };
        let content = match (field, &choice) {
            (Some(f), Choice::Value(v)) => {
                let mut c = head
                    .as_ref()
                    .and_then(|h| h.content.clone())
                    .unwrap_or_default();
                c.set(f, v.clone());
                Some(c)
            }
            (Some(f), Choice::Take(sys)) => {
                let v = side_value(&entry, sys)
                    .ok_or_else(|| cfg_err(format!("`{sys}` is not a side of this conflict")))?
                    .map_err(|e| cfg_err(format!("stored value of {sys}: {e}")))?;
                let mut c = head
                    .as_ref()
                    .and_then(|h| h.content.clone())
                    .unwrap_or_default();
                match v {
                    Some(v) => c.set(f, v),
                    None => {
                        c.remove(f);
                    }
                }
                Some(c)
            }
            (None, Choice::Take(sys)) => {
                let id = SystemId::new(sys.as_str()).map_err(|e| cfg_err(e.to_string()))?;
                if !entry.sides.iter().any(|s| s.system == *sys) {
                    return Err(cfg_err(format!("`{sys}` is not a side of this conflict")));
                }
                state.snapshot(&id, entity)?.and_then(|v| v.content)
            }
            (None, Choice::Value(_)) => {
                return Err(cfg_err(
                    "a record-level conflict is resolved by taking one system's side".into(),
                ))
            }
        };
        let manual = SystemId::new("manual").expect("valid id");
        let mut clock = head.as_ref().map(|h| h.clock.clone()).unwrap_or_default();
        clock.increment(Actor::new(state.instance().clone(), manual.clone()).id());
        // Where the values now come from: the taken side (or a person, for a given value) for
        // the resolved field or record; the head's own origins for the rest.
        let decided = match &choice {
            Choice::Take(sys) => SystemId::new(sys.as_str()).map_err(|e| cfg_err(e.to_string()))?,
            Choice::Value(_) => manual.clone(),
        };
        let v = match (field, &head) {
            (Some(f), Some(h)) => {
                let mut origins = h.field_origins.clone();
                origins.insert(std::sync::Arc::from(f), decided);
                Version::new(content, clock, Some(Timestamp::now()), h.origin.clone())
                    .with_field_origins(origins)
            }
            _ => Version::new(content, clock, Some(Timestamp::now()), Some(decided)),
        };
        let mut cp = state.checkpoint();
        cp.put_head(entity, &v);
        cp.remove_conflict(entity, field);
        let now = Timestamp::now().millis();
        for c in &job.systems {
            if job.options.roles.get(c.system()).is_none_or(|r| r.write) {
                cp.outbox_put(
                    c.system(),
                    entity,
                    &OutboxEntry {
                        enqueued_ms: now,
                        attempts: 0,
                        last_error: None,
                    },
                );
            }
        }
        state.commit(cp)?;
        Ok(v)
    }
}

/// A conflict's id as the CLI shows it: the entity, and `/field` for a field conflict.
pub fn conflict_id(entity: &EntityId, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("{}/{f}", entity.to_hex()),
        None => entity.to_hex(),
    }
}
