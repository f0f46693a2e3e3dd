//! Field mapping: one system's record ↔ the job's canonical record. Pure: references to other
//! entities are resolved through the closures the engine passes in.
//!
//! Each canonical field comes from one source — a native field, several native fields joined
//! (`concat`, split again on write), a constant, or a reference to another job's entity — and
//! goes through transforms in order on read (in reverse on write): `trim`, `upper`, `lower`,
//! value maps, and date formats. A default fills a missing value on read. Records outside the
//! side's filter are out of scope.

use crate::model::{EntityId, Fields, Key, SystemId, Value};
use std::collections::BTreeMap;

/// Where a canonical field's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A native field.
    Field(String),
    /// Native fields joined with `sep` (empty ones skipped); on write the value is split back
    /// into as many parts (the last part takes the rest).
    Concat { fields: Vec<String>, sep: String },
    /// The same value for every record (read only: never written).
    Constant(Value),
    /// A native field holding the key of a record of `parent` (another job's side of this
    /// system); canonically the parent's entity id, so the reference follows its parent into
    /// every system.
    Reference { field: String, parent: SystemId },
}

/// A value transform, applied on read in order and on write in reverse order (maps and date
/// formats inverted; `trim`, `upper` and `lower` applied as they are: being idempotent, what is
/// written reads back the same).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Surrounding whitespace removed.
    Trim,
    /// Upper / lower case.
    Upper,
    Lower,
    /// Native → canonical values; writes map back (values without an entry pass unchanged).
    Map(BTreeMap<String, String>),
    /// Native text in this chrono format ↔ a canonical date (`%d.%m.%Y`) or datetime (when the
    /// format has a time).
    DateFormat(String),
}

/// One canonical field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap {
    pub canonical: String,
    pub source: Source,
    pub transforms: Vec<Transform>,
    /// Read: used when the native value is missing or null.
    pub default: Option<Value>,
}

/// A filter condition on a native field: the record is in scope when every condition holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Equals(String, Value),
    In(String, Vec<Value>),
    NotIn(String, Vec<Value>),
    IsNull(String),
    NotNull(String),
}

/// One side's mapping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    pub fields: Vec<FieldMap>,
    pub filter: Vec<Cond>,
}

/// Why a record could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The referenced parent is not known (yet) in this system.
    #[error("field {field}: the referenced {parent} record {key} is not synced yet")]
    Unresolved {
        field: String,
        parent: String,
        key: String,
    },
    #[error("field {field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> MapError {
    MapError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

fn text_of(v: &Value) -> String {
    v.plain_text()
}

fn has_time(fmt: &str) -> bool {
    ["%H", "%M", "%S", "%T", "%R", "%I", "%s"]
        .iter()
        .any(|t| fmt.contains(t))
}

fn read_transform(t: &Transform, v: Value, field: &str) -> Result<Value, MapError> {
    if v == Value::Null {
        return Ok(v);
    }
    Ok(match t {
        Transform::Trim => match v {
            Value::Text(s) => Value::text(s.trim()),
            other => other,
        },
        Transform::Upper => match v {
            Value::Text(s) => Value::text(s.to_uppercase()),
            other => other,
        },
        Transform::Lower => match v {
            Value::Text(s) => Value::text(s.to_lowercase()),
            other => other,
        },
        Transform::Map(m) => match m.get(&text_of(&v)) {
            Some(to) => Value::text(to.as_str()),
            None => v,
        },
        Transform::DateFormat(fmt) => match &v {
            Value::Text(s) => {
                let s = s.trim();
                if has_time(fmt) {
                    let dt = chrono::NaiveDateTime::parse_from_str(s, fmt).map_err(|e| {
                        invalid(
                            field,
                            format!("{s:?} does not match the format {fmt:?}: {e}"),
                        )
                    })?;
                    Value::DateTime(crate::model::Timestamp(dt.and_utc().timestamp_millis()))
                } else {
                    let d = chrono::NaiveDate::parse_from_str(s, fmt).map_err(|e| {
                        invalid(
                            field,
                            format!("{s:?} does not match the format {fmt:?}: {e}"),
                        )
                    })?;
                    Value::Date(d)
                }
            }
            _ => v,
        },
    })
}

fn write_transform(t: &Transform, v: Value) -> Value {
    if v == Value::Null {
        return v;
    }
    match t {
        Transform::Trim | Transform::Upper | Transform::Lower => {
            read_transform(t, v.clone(), "").unwrap_or(v)
        }
        Transform::Map(m) => {
            let s = text_of(&v);
            match m.iter().find(|(_, to)| **to == s) {
                Some((from, _)) => Value::text(from.as_str()),
                None => v,
            }
        }
        Transform::DateFormat(fmt) => match &v {
            Value::Date(d) => Value::text(d.format(fmt).to_string()),
            Value::DateTime(t) => match t.to_chrono() {
                Some(c) => Value::text(c.naive_utc().format(fmt).to_string()),
                None => v,
            },
            _ => v,
        },
    }
}

/// A parent key as the native value a child's reference field holds: an integer when it is one.
fn key_value(k: &Key) -> Value {
    let s = k.as_str();
    match s.parse::<i64>() {
        Ok(i) if i.to_string() == s => Value::Int(i),
        _ => Value::text(s),
    }
}

impl Mapping {
    /// Whether a native record is in this side's scope.
    pub fn in_scope(&self, native: &Fields) -> bool {
        let get = |f: &str| native.get(f).filter(|v| **v != Value::Null);
        let same = |a: &Value, b: &Value| a == b || text_of(a) == text_of(b);
        self.filter.iter().all(|c| match c {
            Cond::Equals(f, v) => get(f).is_some_and(|x| same(x, v)),
            Cond::In(f, vs) => get(f).is_some_and(|x| vs.iter().any(|v| same(x, v))),
            Cond::NotIn(f, vs) => get(f).is_none_or(|x| !vs.iter().any(|v| same(x, v))),
            Cond::IsNull(f) => get(f).is_none(),
            Cond::NotNull(f) => get(f).is_some(),
        })
    }

    /// The native fields this mapping reads (for connectors that select columns).
    pub fn native_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.fields {
            match &m.source {
                Source::Field(f) | Source::Reference { field: f, .. } => out.push(f.clone()),
                Source::Concat { fields, .. } => out.extend(fields.iter().cloned()),
                Source::Constant(_) => {}
            }
        }
        for c in &self.filter {
            let f = match c {
                Cond::Equals(f, _) | Cond::In(f, _) | Cond::NotIn(f, _) => f,
                Cond::IsNull(f) | Cond::NotNull(f) => f,
            };
            out.push(f.clone());
        }
        out.sort();
        out.dedup();
        out
    }

    /// Native → canonical. `entity_of(parent, key)` resolves a reference.
    pub fn to_canonical(
        &self,
        native: &Fields,
        entity_of: &dyn Fn(&SystemId, &Key) -> Option<EntityId>,
    ) -> Result<Fields, MapError> {
        let mut out = Fields::new();
        for m in &self.fields {
            let raw = match &m.source {
                Source::Field(f) => native.get(f).cloned().unwrap_or(Value::Null),
                Source::Constant(v) => v.clone(),
                Source::Concat { fields, sep } => {
                    let parts: Vec<String> = fields
                        .iter()
                        .filter_map(|f| native.get(f))
                        .filter(|v| **v != Value::Null)
                        .map(text_of)
                        .filter(|s| !s.is_empty())
                        .collect();
                    if parts.is_empty() {
                        Value::Null
                    } else {
                        Value::text(parts.join(sep))
                    }
                }
                Source::Reference { field, parent } => match native.get(field) {
                    None | Some(Value::Null) => Value::Null,
                    Some(v) => {
                        let key = Key::new(text_of(v));
                        match entity_of(parent, &key) {
                            Some(e) => Value::text(e.to_hex()),
                            None => {
                                return Err(MapError::Unresolved {
                                    field: m.canonical.clone(),
                                    parent: parent.to_string(),
                                    key: key.as_str().to_string(),
                                })
                            }
                        }
                    }
                },
            };
            let mut v = raw;
            for t in &m.transforms {
                v = read_transform(t, v, &m.canonical)?;
            }
            if v == Value::Null {
                if let Some(d) = &m.default {
                    v = d.clone();
                }
            }
            if v != Value::Null {
                out.set(m.canonical.as_str(), v);
            }
        }
        Ok(out)
    }

    /// Canonical → native. `key_of(entity, parent)` gives a referenced parent's native key;
    /// `None` there means the parent is not in this system yet (the write waits).
    pub fn to_native(
        &self,
        canon: &Fields,
        key_of: &dyn Fn(&EntityId, &SystemId) -> Option<Key>,
    ) -> Result<Fields, MapError> {
        let mut out = Fields::new();
        for m in &self.fields {
            let mut v = canon.get(&m.canonical).cloned().unwrap_or(Value::Null);
            for t in m.transforms.iter().rev() {
                v = write_transform(t, v);
            }
            match &m.source {
                Source::Constant(_) => {}
                Source::Field(f) => out.set(f.as_str(), v),
                Source::Concat { fields, sep } => {
                    if v == Value::Null {
                        for f in fields {
                            out.set(f.as_str(), Value::Null);
                        }
                    } else {
                        let s = text_of(&v);
                        let mut parts = s.splitn(fields.len(), sep.as_str());
                        for f in fields {
                            match parts.next() {
                                Some(p) if !p.is_empty() => out.set(f.as_str(), Value::text(p)),
                                _ => out.set(f.as_str(), Value::Null),
                            }
                        }
                    }
                }
                Source::Reference { field, parent } => {
                    if v == Value::Null {
                        out.set(field.as_str(), Value::Null);
                        continue;
                    }
                    let e = EntityId::from_hex(&text_of(&v)).ok_or_else(|| {
                        invalid(&m.canonical, "a reference must hold an entity id")
                    })?;
                    match key_of(&e, parent) {
                        Some(k) => out.set(field.as_str(), key_value(&k)),
                        None => {
                            return Err(MapError::Unresolved {
                                field: m.canonical.clone(),
                                parent: parent.to_string(),
                                key: e.to_hex(),
                            })
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm(c: &str, source: Source, transforms: Vec<Transform>) -> FieldMap {
        FieldMap {
            canonical: c.into(),
            source,
            transforms,
            default: None,
        }
    }

    fn mapping() -> Mapping {
        let parent = SystemId::new("erp.customers").unwrap();
        Mapping {
            fields: vec![
                fm(
                    "name",
                    Source::Field("company".into()),
                    vec![Transform::Trim],
                ),
                fm(
                    "contact",
                    Source::Concat {
                        fields: vec!["first".into(), "last".into()],
                        sep: " ".into(),
                    },
                    vec![],
                ),
                fm(
                    "tier",
                    Source::Field("lvl".into()),
                    vec![Transform::Map(
                        [("G".to_string(), "gold".to_string())].into(),
                    )],
                ),
                fm(
                    "since",
                    Source::Field("since".into()),
                    vec![Transform::DateFormat("%d.%m.%Y".into())],
                ),
                fm("source", Source::Constant(Value::text("erp")), vec![]),
                fm(
                    "account",
                    Source::Reference {
                        field: "customer_id".into(),
                        parent,
                    },
                    vec![],
                ),
                FieldMap {
                    default: Some(Value::text("EUR")),
                    ..fm("currency", Source::Field("cur".into()), vec![])
                },
            ],
            filter: vec![Cond::In(
                "country".into(),
                vec![Value::text("DE"), Value::text("FR")],
            )],
        }
    }

    #[test]
    fn round_trip_through_every_kind_of_source_and_transform() {
        let m = mapping();
        let e = EntityId::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let native = Fields::new()
            .with("company", "  Acme ")
            .with("first", "Ada")
            .with("last", "Lovelace King")
            .with("lvl", "G")
            .with("since", "31.01.2024")
            .with("customer_id", 7i64)
            .with("country", "DE");
        let c = m
            .to_canonical(&native, &|p, k| {
                (p.as_str() == "erp.customers" && k.as_str() == "7").then_some(e)
            })
            .unwrap();
        assert_eq!(c.get("name"), Some(&Value::text("Acme")));
        assert_eq!(c.get("contact"), Some(&Value::text("Ada Lovelace King")));
        assert_eq!(c.get("tier"), Some(&Value::text("gold")));
        assert_eq!(
            c.get("since"),
            Some(&Value::Date(
                chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap()
            ))
        );
        assert_eq!(c.get("source"), Some(&Value::text("erp")));
        assert_eq!(c.get("account"), Some(&Value::text(e.to_hex())));
        assert_eq!(c.get("currency"), Some(&Value::text("EUR")));
        let back = m
            .to_native(&c, &|ent, p| {
                (*ent == e && p.as_str() == "erp.customers").then(|| Key::new("7"))
            })
            .unwrap();
        assert_eq!(back.get("company"), Some(&Value::text("Acme")));
        assert_eq!(back.get("first"), Some(&Value::text("Ada")));
        assert_eq!(back.get("last"), Some(&Value::text("Lovelace King")));
        assert_eq!(back.get("lvl"), Some(&Value::text("G")));
        assert_eq!(back.get("since"), Some(&Value::text("31.01.2024")));
        assert_eq!(back.get("customer_id"), Some(&Value::Int(7)));
        assert!(back.get("source").is_none(), "constants are not written");
    }

    #[test]
    fn unresolved_references_filters_and_bad_dates() {
        let m = mapping();
        let native = Fields::new()
            .with("customer_id", 9i64)
            .with("country", "DE");
        match m.to_canonical(&native, &|_, _| None) {
            Err(MapError::Unresolved { field, key, .. }) => {
                assert_eq!((field.as_str(), key.as_str()), ("account", "9"))
            }
            other => panic!("{other:?}"),
        }
        let c = Fields::new().with("account", "000102030405060708090a0b0c0d0e0f");
        assert!(matches!(
            m.to_native(&c, &|_, _| None),
            Err(MapError::Unresolved { .. })
        ));
        assert!(m.in_scope(&Fields::new().with("country", "FR")));
        assert!(!m.in_scope(&Fields::new().with("country", "US")));
        assert!(!m.in_scope(&Fields::new()));
        let bad = Fields::new().with("since", "2024-01-31");
        let e = m.to_canonical(&bad, &|_, _| None).unwrap_err();
        assert!(e.to_string().contains("does not match the format"), "{e}");
    }
}
