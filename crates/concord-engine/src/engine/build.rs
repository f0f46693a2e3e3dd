//! From a job's configuration to a runnable [`SyncJob`]: one connector per side, connected and
//! wrapped in its field mapping, the pattern's roles, policy and match keys.

use super::mapped::MappedConnector;
use super::{JobOptions, Role, SyncJob};
use crate::config::{
    value_of, Config, DeleteConfig, FieldSpec, JobConfig, Pattern, SideConfig, SystemConfig,
};
use concord_connector::{Binding, Connector, ConnectorError};
use concord_model::core::mapping::{Cond, FieldMap, Mapping, Source, Transform};
use concord_model::core::{DeleteRule, MatchField, MatchSpec, Policy};
use concord_model::model::{NameError, NormalizeOptions, SystemId};
use concord_store::StateStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Why a job could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no job named `{0}` in the configuration")]
    NoSuchJob(String),
    #[error("job `{job}`: {message}")]
    Job { job: String, message: String },
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

/// The object a side names (its sObject, table, file or subject).
pub fn side_object(side: &SideConfig) -> &str {
    side.object()
}

/// The system id of a job side: `<system>.<object>` (keys of different objects never mix).
pub fn side_system(system: &str, side: &SideConfig) -> Result<SystemId, NameError> {
    let obj: String = side_object(side)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    SystemId::new(format!("{system}.{obj}"))
}

/// Why a side's mapping cannot be made (the checks after parsing rule these out; a program
/// building a [`Config`] by hand can still meet them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("no job `{0}` (a reference names it)")]
    NoJob(String),
    #[error("job `{job}` has no side for `{system}` (a reference needs one)")]
    NoSide { job: String, system: String },
    #[error(transparent)]
    Name(#[from] NameError),
}

/// The mapping of one side.
pub fn mapping_of(cfg: &Config, system: &str, side: &SideConfig) -> Result<Mapping, MappingError> {
    let mut fields = Vec::new();
    for (canonical, spec) in &side.fields {
        let fm = match spec {
            FieldSpec::Name(n) => FieldMap {
                canonical: canonical.clone(),
                source: Source::Field(n.clone()),
                transforms: Vec::new(),
                default: None,
            },
            FieldSpec::Spec(t) => {
                let source = if let Some(r) = &t.reference {
                    let parent_job = cfg
                        .jobs
                        .get(r)
                        .ok_or_else(|| MappingError::NoJob(r.clone()))?;
                    let parent_side =
                        parent_job
                            .sides
                            .get(system)
                            .ok_or_else(|| MappingError::NoSide {
                                job: r.clone(),
                                system: system.to_string(),
                            })?;
                    Source::Reference {
                        field: t.field.clone().unwrap_or_default(),
                        parent: side_system(system, parent_side)?,
                    }
                } else if let Some(c) = &t.concat {
                    Source::Concat {
                        fields: c.clone(),
                        sep: t.sep.clone().unwrap_or_else(|| " ".into()),
                    }
                } else if let Some(v) = &t.constant {
                    Source::Constant(value_of(v))
                } else {
                    Source::Field(t.field.clone().unwrap_or_default())
                };
                let mut transforms: Vec<Transform> = t
                    .transforms
                    .iter()
                    .map(|x| match x.as_str() {
                        "upper" => Transform::Upper,
                        "lower" => Transform::Lower,
                        _ => Transform::Trim,
                    })
                    .collect();
                if !t.map.is_empty() {
                    transforms.push(Transform::Map(t.map.clone()));
                }
                if let Some(f) = &t.date_format {
                    transforms.push(Transform::DateFormat(f.clone()));
                }
                FieldMap {
                    canonical: canonical.clone(),
                    source,
                    transforms,
                    default: t.default.as_ref().map(value_of),
                }
            }
        };
        fields.push(fm);
    }
    let filter = side
        .filter
        .iter()
        .map(|f| {
            if let Some(v) = &f.equals {
                Cond::Equals(f.field.clone(), value_of(v))
            } else if let Some(vs) = &f.in_ {
                Cond::In(f.field.clone(), vs.iter().map(value_of).collect())
            } else if let Some(vs) = &f.not_in {
                Cond::NotIn(f.field.clone(), vs.iter().map(value_of).collect())
            } else if f.is_null == Some(true) {
                Cond::IsNull(f.field.clone())
            } else {
                Cond::NotNull(f.field.clone())
            }
        })
        .collect();
    Ok(Mapping { fields, filter })
}

/// The canonical fields whose native source is one of `key`'s columns (alone, joined, or as a
/// reference).
pub fn identity_fields(mapping: &Mapping, key: &[String]) -> BTreeSet<String> {
    use concord_model::core::mapping::Source;
    mapping
        .fields
        .iter()
        .filter(|m| match &m.source {
            Source::Field(f) | Source::Reference { field: f, .. } => key.contains(f),
            Source::Concat { fields, .. } => fields.iter().any(|f| key.contains(f)),
            Source::Constant(_) => false,
        })
        .map(|m| m.canonical.clone())
        .collect()
}

/// Each system's role in a pattern (by position in the job's list).
pub fn roles_of(j: &JobConfig, ids: &[SystemId]) -> BTreeMap<SystemId, Role> {
    let n = ids.len();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let (read, write) = match j.pattern {
                Pattern::Migrate | Pattern::Broadcast => (i == 0, i > 0),
                Pattern::Aggregate => (i + 1 < n, i + 1 == n),
                Pattern::Bidirectional | Pattern::Correlate => (true, true),
            };
            (id.clone(), Role { read, write })
        })
        .collect()
}

fn job_err(job: &str, message: impl Into<String>) -> BuildError {
    BuildError::Job {
        job: job.to_string(),
        message: message.into(),
    }
}

/// The policy of a job, with system names translated to its sides' system ids.
pub fn policy_of(
    cfg: &Config,
    name: &str,
    j: &JobConfig,
    ids: &BTreeMap<String, SystemId>,
) -> Result<Policy, BuildError> {
    use concord_model::core::FieldPolicy;
    let translate = |p: FieldPolicy| -> FieldPolicy {
        let t = |s: &SystemId| ids.get(s.as_str()).cloned().unwrap_or_else(|| s.clone());
        match p {
            FieldPolicy::Prefer(s) => FieldPolicy::Prefer(t(&s)),
            FieldPolicy::Priority(l) => FieldPolicy::Priority(l.iter().map(t).collect()),
            other => other,
        }
    };
    let mut default = translate(
        cfg.policy_of(&j.conflict.default, j)
            .map_err(|m| job_err(name, m.to_string()))?,
    );
    if j.pattern == Pattern::Aggregate
        && matches!(default, FieldPolicy::Newest)
        && j.conflict.default == "newest"
    {
        // Unless told otherwise, an aggregate prefers its sources in the order listed.
        let sources = &j.systems[..j.systems.len() - 1];
        default =
            FieldPolicy::Priority(sources.iter().filter_map(|s| ids.get(s).cloned()).collect());
    }
    let delete = match j.delete {
        DeleteConfig::DeleteWins => DeleteRule::DeleteWins,
        DeleteConfig::UpdateWins => DeleteRule::UpdateWins,
        DeleteConfig::Manual => DeleteRule::Manual,
    };
    let mut p = Policy::new(default, delete);
    for (f, s) in &j.conflict.fields {
        p = p.with_field(
            f.clone(),
            translate(
                cfg.policy_of(s, j)
                    .map_err(|m| job_err(name, m.to_string()))?,
            ),
        );
    }
    Ok(p)
}

/// The connector of one side: its system's connector, built from its own config types.
async fn connect(
    cfg: &Config,
    job: &str,
    system: &str,
    id: SystemId,
    side: &SideConfig,
    mapping: &Mapping,
) -> Result<Arc<dyn Connector>, BuildError> {
    let sys = cfg
        .systems
        .get(system)
        .ok_or_else(|| job_err(job, format!("no system `{system}`")))?;
    let binding = Binding {
        system: id,
        fields: mapping.native_fields(),
        base_dir: &cfg.base_dir,
    };
    Ok(sys.connect(side, binding).await?)
}

/// Builds job `name`: connects every side (network and databases are reached here).
pub async fn build_job(
    cfg: &Config,
    name: &str,
    state: &StateStore,
    dry_run: bool,
) -> Result<SyncJob, BuildError> {
    let j = cfg
        .jobs
        .get(name)
        .ok_or_else(|| BuildError::NoSuchJob(name.to_string()))?;
    let normalize = NormalizeOptions {
        empty_text_is_null: j.empty_text_is_null.unwrap_or(true),
        trim_text: j.trim_text.unwrap_or(false),
    };
    let mut ids = BTreeMap::new();
    let mut systems: Vec<Arc<dyn Connector>> = Vec::new();
    let mut identity: BTreeMap<SystemId, BTreeSet<String>> = BTreeMap::new();
    for s in &j.systems {
        let side = &j.sides[s];
        let id = side_system(s, side).map_err(|m| job_err(name, m.to_string()))?;
        let mapping = mapping_of(cfg, s, side).map_err(|m| job_err(name, m.to_string()))?;
        // Jobs sharing a system share its records' state (snapshots, heads): with different
        // mappings they would undo each other's changes every run.
        for (other, oj) in &cfg.jobs {
            if other == name {
                continue;
            }
            for (os, oside) in &oj.sides {
                if side_system(os, oside).ok().as_ref() == Some(&id)
                    && mapping_of(cfg, os, oside).ok().as_ref() != Some(&mapping)
                {
                    return Err(job_err(
                        name,
                        format!(
                            "sides.{s}: job `{other}` syncs {id} too, with another mapping; concord keeps one state per record, so the two jobs would undo each other's changes: give both the same fields, transforms and filter for {id}"
                        ),
                    ));
                }
            }
        }
        // Canonical fields holding this side's key: its records' identity, never rewritten.
        let keyed = identity_fields(&mapping, side.key());
        for f in &keyed {
            if j.conflict.fields.contains_key(f) {
                return Err(job_err(
                    name,
                    format!(
                        "conflict.fields.{f}: `{f}` holds the key of side {s}; a record's key is its identity and concord never rewrites it (each system keeps its own value there), so no policy applies to it"
                    ),
                ));
            }
        }
        if !keyed.is_empty() {
            identity.insert(id.clone(), keyed);
        }
        let conn = match connect(cfg, name, s, id.clone(), side, &mapping).await {
            Ok(c) => c,
            // An unreachable system fails its part of each pass (isolated) instead of the job.
            Err(BuildError::Connector(e)) if e.retryable => {
                tracing::warn!(system = %id, error = %e, "system unreachable; the job runs without it");
                Arc::new(Unavailable {
                    system: id.clone(),
                    error: e,
                })
            }
            Err(e) => return Err(e),
        };
        let native = mapping.native_fields();
        let unmapped: Vec<&String> = side.key().iter().filter(|k| !native.contains(k)).collect();
        let entity_key = match unmapped.as_slice() {
            [] => None,
            [one] if side.key().len() == 1 => Some((*one).clone()),
            _ => {
                return Err(job_err(
                    name,
                    format!("sides.{s}: a composite key must be mapped (only a single key column can hold the entity id)"),
                ))
            }
        };
        systems.push(Arc::new(
            MappedConnector::new(conn, mapping, state.clone(), name, normalize)
                .with_entity_key(entity_key)
                .with_passthrough(j.provenance_field.clone()),
        ));
        ids.insert(s.clone(), id);
    }
    let id_list: Vec<SystemId> = j.systems.iter().map(|s| ids[s].clone()).collect();
    let matching = match &j.matching {
        None => None,
        Some(m) => {
            let key = match &m.privacy_key_env {
                None => None,
                Some(v) => {
                    let secret = std::env::var(v).ok().filter(|s| s.len() >= 32).ok_or_else(|| {
                        job_err(name, format!("environment variable {v} (the match privacy key) is not set or shorter than 32 characters"))
                    })?;
                    Some(blake3::derive_key(
                        "concord match privacy key v1",
                        secret.as_bytes(),
                    ))
                }
            };
            Some(MatchSpec {
                fields: m
                    .fields
                    .iter()
                    .map(|f| MatchField {
                        field: f.field.clone(),
                        normalize: f.normalize,
                    })
                    .collect(),
                key,
            })
        }
    };
    let roles = roles_of(j, &id_list);
    for s in &j.systems {
        let side = &j.sides[s];
        let creates = roles[&ids[s]].write && j.pattern != Pattern::Correlate;
        if creates
            && side.entity_id_field().is_none()
            && matches!(cfg.systems.get(s), Some(SystemConfig::Salesforce(_)))
        {
            tracing::warn!(
                job = name,
                system = %s,
                "this job creates {} records in Salesforce without entity_id_field: creates are not idempotent there, so one whose answer is lost (a crash, a dropped connection) is recognised only if the record still has the content sent when it is read back; set entity_id_field to an External ID field",
                side_object(side)
            );
        }
    }
    let options = JobOptions {
        roles: roles.clone(),
        matching,
        correlate: j.pattern == Pattern::Correlate,
        isolate_failures: true,
        provenance_field: j.provenance_field.clone(),
        dry_run,
        full_read: false,
        identity,
        delete_guard: Some(crate::engine::DeleteGuard {
            max_share: j.max_delete_share.unwrap_or(0.10),
            max_deletes: j.max_deletes.unwrap_or(1000),
        }),
        allow_deletes: false,
        chunk_size: Some(j.chunk_size),
        stop: None,
        feed_positions: BTreeMap::new(),
    };
    let policy = policy_of(cfg, name, j, &ids)?;
    let newest = std::iter::once(&policy.default)
        .chain(policy.fields.values())
        .any(|p| matches!(p, concord_model::core::FieldPolicy::Newest));
    if newest && !matches!(j.pattern, Pattern::Migrate | Pattern::Broadcast) {
        for s in &j.systems {
            let side = &j.sides[s];
            let timeless = match cfg.systems.get(s) {
                Some(
                    SystemConfig::Postgres(_) | SystemConfig::Mysql(_) | SystemConfig::Sqlite(_),
                ) => side.sql_mode() != Some(concord_connector::sql::CaptureMode::Column),
                Some(SystemConfig::Csv(_) | SystemConfig::Jsonl(_)) => true,
                _ => false,
            };
            if timeless && roles[&ids[s]].read {
                tracing::warn!(
                    job = name,
                    system = %s,
                    "the `newest` policy needs each side's modification time, and side {s} has none (SQL scan and trigger modes, files): its edits lose every conflict against a side that has one; use `mode = \"column\"` with `updated_column`, or `prefer:`/`priority:` for these fields"
                );
            }
        }
    }
    Ok(SyncJob {
        name: name.to_string(),
        systems,
        policy,
        normalize,
        batch_size: j.batch_size,
        options,
    })
}

/// A system that could not be reached when the job was built: every call fails with that error
/// (retryable), so the pass isolates it and the next run tries again.
struct Unavailable {
    system: SystemId,
    error: ConnectorError,
}

#[async_trait::async_trait]
impl Connector for Unavailable {
    fn system(&self) -> &SystemId {
        &self.system
    }
    async fn read(
        &self,
        _cursor: Option<&[u8]>,
    ) -> Result<concord_connector::ReadPage, ConnectorError> {
        Err(self.error.clone())
    }
    async fn write(
        &self,
        _ops: Vec<concord_connector::WriteOp>,
    ) -> Result<Vec<concord_connector::WriteResult>, ConnectorError> {
        Err(self.error.clone())
    }
}

/// The jobs in an order where every job comes after the jobs its references point to.
pub fn job_order(cfg: &Config) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    fn visit(cfg: &Config, n: &str, order: &mut Vec<String>, stack: &mut Vec<String>) {
        if order.iter().any(|o| o == n) || stack.iter().any(|s| s == n) {
            return;
        }
        stack.push(n.to_string());
        if let Some(j) = cfg.jobs.get(n) {
            for side in j.sides.values() {
                for spec in side.fields.values() {
                    if let FieldSpec::Spec(t) = spec {
                        if let Some(r) = &t.reference {
                            visit(cfg, r, order, stack);
                        }
                    }
                }
            }
        }
        stack.pop();
        order.push(n.to_string());
    }
    for n in cfg.jobs.keys() {
        visit(cfg, n, &mut order, &mut Vec::new());
    }
    order
}

/// Every job's systems (side ids) and policy, for bundle export and import; no connection is
/// made.
pub fn scopes(cfg: &Config) -> Result<Vec<super::bundle::Scope>, BuildError> {
    let mut out = Vec::new();
    for (name, j) in &cfg.jobs {
        let mut ids = BTreeMap::new();
        for s in &j.systems {
            let id = side_system(s, &j.sides[s]).map_err(|m| job_err(name, m.to_string()))?;
            ids.insert(s.clone(), id);
        }
        out.push(super::bundle::Scope {
            job: name.clone(),
            systems: j.systems.iter().map(|s| ids[s].clone()).collect(),
            policy: policy_of(cfg, name, j, &ids)?,
        });
    }
    Ok(out)
}
