//! What the CLI prints and the service answers, built once: a run's report, a migrate's
//! verification, each job's status, the open conflicts, resolving one, a reconcile. JSON
//! values (the CLI renders them for people too).

use crate::Error;
use concord_engine::config::Config;
use concord_engine::engine::build::{build_job, side_system};
use concord_engine::engine::conflicts::{conflict_id, side_value, Choice};
use concord_engine::engine::{Engine, SyncJob, SyncReport};
use concord_model::model::{ContentHash, EntityId, Value};
use concord_store::StateStore;
use serde_json::{json, Value as J};
use std::collections::BTreeMap;

/// A pass's report as JSON (`concord run --json`, `GET /runs/{id}`).
pub fn report_json(job: &str, r: &SyncReport, secs: f64) -> J {
    json!({
        "job": job,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "read": r.read,
        "written": r.written,
        "changed": r.changed,
        "echoes": r.echoes,
        "conflicts_resolved": r.conflicts_resolved,
        "conflicts_parked": r.conflicts_parked,
        "failed_writes": r.failed,
        "duplicates_ignored": r.duplicates_ignored,
        "matched": r.matched,
        "unmatched": r.unmatched,
        "golden_created": r.golden_created,
        "system_errors": r.errors,
        "in_flight": r.in_flight,
        "in_flight_due_ms": r.in_flight_due.map(|t| t.millis()),
        "held_deletes": r.held_deletes.iter().map(|(s, h)| (s.clone(), json!({"deletes": h.deletes, "synced": h.synced}))).collect::<BTreeMap<_, _>>(),
        "planned": r.planned.iter().map(|(s, p)| (s.clone(), json!({"creates": p.creates, "updates": p.updates, "deletes": p.deletes, "queued": p.queued}))).collect::<BTreeMap<_, _>>(),
        "lag": r.lag.iter().map(|(s, l)| (s.clone(), json!({"writes": l.count, "mean_ms": l.sum_ms.checked_div(l.count), "max_ms": l.max_ms}))).collect::<BTreeMap<_, _>>(),
    })
}

/// After a migrate: every source record compared with each target by content hash. Whether
/// all matched, and per target the counts.
pub async fn verify(job: &SyncJob, state: &StateStore) -> Result<(bool, J), Error> {
    let mut sides: Vec<(String, BTreeMap<EntityId, ContentHash>)> = Vec::new();
    for c in &job.systems {
        let mut hashes = BTreeMap::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let p = c.read(cursor.as_deref()).await?;
            for ch in p.changes {
                let (Some(mut f), Some(e)) = (ch.fields, state.entity_for(c.system(), &ch.key)?)
                else {
                    continue;
                };
                f.apply_options(&job.normalize);
                hashes.insert(e, f.content_hash());
            }
            if !p.more {
                break;
            }
            cursor = p.cursor;
        }
        sides.push((c.system().to_string(), hashes));
    }
    let (src_name, src) = &sides[0];
    let mut ok = true;
    let mut out = Vec::new();
    for (name, t) in &sides[1..] {
        let missing = src.keys().filter(|e| !t.contains_key(e)).count();
        let different = src
            .iter()
            .filter(|(e, h)| t.get(e).is_some_and(|x| x != *h))
            .count();
        let extra = t.keys().filter(|e| !src.contains_key(e)).count();
        ok &= missing == 0 && different == 0;
        out.push(json!({"source": src_name, "target": name, "source_records": src.len(), "target_records": t.len(), "missing": missing, "different": different, "not_from_source": extra}));
    }
    Ok((ok, J::Array(out)))
}

/// Every job of the configuration: pattern, each system's cursor, outbox and waiting
/// records, runs, the last run, open conflicts (`concord status --json`, `GET /status`).
pub fn status_json(cfg: &Config, state: &StateStore) -> Result<Vec<J>, Error> {
    let runs = state.run_log()?;
    let conflicts = state.conflicts()?;
    let mut out = Vec::new();
    for (name, j) in &cfg.jobs {
        let mut sides = Vec::new();
        for s in &j.systems {
            let id = side_system(s, &j.sides[s])?;
            sides.push(json!({
                "system": s,
                "id": id.as_str(),
                "cursor": state.cursor(name, &id)?.is_some(),
                "outbox": state.outbox_len(&id)?,
                "waiting": state.waiting(name, &id)?.len(),
            }));
        }
        let last = runs
            .iter()
            .filter(|r| r.job == *name)
            .max_by_key(|r| r.started_ms);
        out.push(json!({
            "job": name,
            "pattern": format!("{:?}", j.pattern).to_lowercase(),
            "systems": sides,
            "runs": runs.iter().filter(|r| r.job == *name).count(),
            "last_run": last.map(|r| json!({"started_ms": r.started_ms, "finished_ms": r.finished_ms, "status": r.status, "message": r.message, "counts": r.counts.iter().cloned().collect::<BTreeMap<_, _>>()})),
            "open_conflicts": conflicts.iter().filter(|c| c.job == *name).count(),
        }));
    }
    Ok(out)
}

fn show_value(
    v: Option<Result<Option<Value>, concord_model::model::canonical::DecodeError>>,
) -> String {
    match v {
        None => "-".into(),
        Some(Ok(None)) => "(none)".into(),
        Some(Ok(Some(v))) => v.to_string(),
        Some(Err(e)) => format!("<unreadable: {e}>"),
    }
}

/// The open conflicts, of one job or all, or the one with `id` (`entity` or `entity/field`):
/// base and each side's value (`concord conflicts list --json`, `GET /conflicts`).
pub fn conflicts_json(
    state: &StateStore,
    job: Option<&str>,
    id: Option<&str>,
) -> Result<Vec<J>, Error> {
    Ok(state
        .conflicts()?
        .into_iter()
        .filter(|c| job.is_none_or(|j| c.job == j))
        .filter(|c| id.is_none_or(|i| conflict_id(&EntityId(c.entity), c.field.as_deref()) == i))
        .map(|c| {
            let e = EntityId(c.entity);
            let base = if c.base.is_empty() {
                "(none)".to_string()
            } else {
                concord_model::model::canonical::value_from_bytes(&c.base)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|e| format!("<{e}>"))
            };
            json!({
                "id": conflict_id(&e, c.field.as_deref()),
                "job": c.job,
                "entity": e.to_hex(),
                "field": c.field,
                "base": base,
                "sides": c.sides.iter().map(|s| json!({"system": s.system, "value": show_value(side_value(&c, &s.system)), "modstamp": s.modstamp})).collect::<Vec<_>>(),
                "detected_ms": c.detected_ms,
            })
        })
        .collect())
}

/// A value typed by hand: JSON when it parses (`42`, `true`, `"x"`, `{…}`), else text.
pub fn typed_value(v: &str) -> Result<Value, Error> {
    let j: J = serde_json::from_str(v).unwrap_or(J::String(v.to_string()));
    Ok(match j {
        J::String(s) => Value::text(s),
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::decimal_str(&n.to_string())
                .map_err(|e| Error::Request(format!("value {v}: {e}")))?,
        },
        J::Null => Value::Null,
        other => Value::Json(other),
    })
}

/// Resolves the open conflict `id` by `choice` (the next pass writes it everywhere); its job.
pub async fn resolve(
    cfg: &Config,
    state: &StateStore,
    id: &str,
    choice: &Choice,
) -> Result<String, Error> {
    let c = state
        .conflicts()?
        .into_iter()
        .find(|c| conflict_id(&EntityId(c.entity), c.field.as_deref()) == id)
        .ok_or_else(|| Error::NotFound(format!("no open conflict {id}")))?;
    let job = build_job(cfg, &c.job, state, false).await?;
    Engine::new(state.clone()).resolve_conflict(
        &job,
        &EntityId(c.entity),
        c.field.as_deref(),
        choice,
    )?;
    Ok(c.job)
}

/// What a reconcile found and did.
pub struct Reconciled {
    /// `{job, checks, unchecked, drift, [requeued, repair, drift_after_repair]}`.
    pub report: J,
    /// Deletes the delete guard held in the repair.
    pub held: BTreeMap<String, concord_engine::engine::HeldDeletes>,
    /// Differences left (after the repair when there was one).
    pub left: usize,
    /// The first check, before any repair.
    pub before: concord_engine::engine::drift::DriftReport,
}

/// Compares each system of the job with the store (and with `repair` turns the drift into
/// ordinary changes, then checks again).
pub async fn reconcile(
    engine: &Engine,
    job: &mut SyncJob,
    repair: bool,
) -> Result<Reconciled, Error> {
    let before = engine.drift(job).await?;
    let mut held = BTreeMap::new();
    let mut out = json!({"job": job.name, "checks": before.checks, "unchecked": before.unchecked,
        "drift": before.drift});
    if repair && !before.drift.is_empty() {
        // Targets the job never reads get the head queued again; the pass below sends it.
        let requeued = engine.requeue_unread_targets(job, &before.drift)?;
        out["requeued"] = json!(requeued);
        // The drift found, and nothing else, goes through the job as ordinary changes.
        let repair = engine.repair_job(job, &before.drift);
        let t = std::time::Instant::now();
        let r = engine.sync(&repair, None).await?;
        out["repair"] = report_json(&job.name, &r, t.elapsed().as_secs_f64());
        held = r.held_deletes.clone();
        job.options.full_read = false;
        let after = engine.drift(job).await?;
        out["drift_after_repair"] = json!(after.drift);
    }
    let left = match out.get("drift_after_repair") {
        Some(d) => d.as_array().map_or(0, Vec::len),
        None => before.drift.len(),
    };
    Ok(Reconciled {
        report: out,
        held,
        left,
        before,
    })
}

/// A value as JSON for the API: text, booleans and integers as themselves, a decimal as a number
/// when a JSON number holds it exactly (else its text), dates and times as ISO text, nested
/// data as it is, bytes as hex.
pub fn value_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Decimal(d) => {
            let text = d.to_string();
            match text
                .parse::<f64>()
                .ok()
                .and_then(|f| Value::from_f64(f).ok().map(|b| (f, b)))
            {
                Some((f, back)) if back == *v => json!(f),
                _ => J::String(text),
            }
        }
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        other => J::String(other.plain_text()),
    }
}

/// An aggregate job's golden record for a match key (`values`: one per match field, in the
/// job's order), as the store holds it after the last pass: the fields and, per field, the
/// system its value came from. `None`: no golden record has that key.
pub fn golden_record(
    job: &SyncJob,
    state: &StateStore,
    values: &[&str],
) -> Result<Option<J>, Error> {
    let spec = job
        .options
        .matching
        .as_ref()
        .filter(|_| job.is_aggregate())
        .ok_or_else(|| Error::Request(format!("job `{}` is not an aggregate job", job.name)))?;
    if values.len() != spec.fields.len() {
        return Err(Error::Request(format!(
            "job `{}` matches on {} field(s) ({}): give one value each, separated by `|`",
            job.name,
            spec.fields.len(),
            spec.fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut key = concord_model::model::Fields::new();
    for (f, v) in spec.fields.iter().zip(values) {
        key.set(f.field.as_str(), Value::text(*v));
    }
    let Some(hash) = spec.hash(&key) else {
        return Err(Error::Request("an empty match key matches nothing".into()));
    };
    let Some(entity) = state.match_entry(&job.name, &hash)?.and_then(|m| m.entity) else {
        return Ok(None);
    };
    let entity = EntityId(entity);
    let Some(head) = state.head(&entity)? else {
        return Ok(None);
    };
    let Some(content) = head.content.as_ref() else {
        return Ok(None); // deleted: no source holds it any more
    };
    let mut record = serde_json::Map::new();
    let mut provenance = serde_json::Map::new();
    for (name, v) in content.iter() {
        record.insert(name.to_string(), value_json(v));
        if let Some(s) = head.origin_of(name) {
            provenance.insert(name.to_string(), J::String(s.to_string()));
        }
    }
    Ok(Some(json!({
        "job": job.name,
        "match_key": values,
        "entity": entity.to_hex(),
        "record": record,
        "provenance": provenance,
        "modified_ms": head.modstamp.map(|t| t.millis()),
    })))
}
