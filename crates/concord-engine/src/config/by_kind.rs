//! Systems and a job's sides are parsed by their system's kind: `[systems.crm]` with `type =
//! "salesforce"` takes the Salesforce connector's system type, `[jobs.J.sides.crm]` its side
//! type, and nothing else — an option of another kind is an unknown key, named with its path and
//! line.
//!
//! How: the systems' kinds are read first ([`Kinds::of`], kept for the parse on this thread);
//! then each table is one pass over its keys, where the keys that are not the connector's
//! (`type` of a system; `fields` and `filter` of a side) are taken aside and every other key goes
//! to the connector's own type (derived, `deny_unknown_fields`). The TOML deserializer stays
//! underneath, so every error keeps its line and column, and `serde_path_to_error` its key path
//! (serde's internally tagged enums buffer the table and lose both).

use super::{FieldSpec, FilterConfig, SideConfig, SideOptions, SystemConfig};
use concord_connector::files::{CsvSystem, FileSide, JsonlSystem};
use concord_connector::nats::{NatsSide, NatsSystem};
use concord_connector::salesforce::{SalesforceSide, SalesforceSystem};
use concord_connector::sql::{SqlSide, SqlSystem};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static KINDS: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
}

/// The kinds (`type`) of the systems of the document being parsed on this thread, for as long
/// as this lives.
pub(super) struct Kinds(());

impl Kinds {
    pub(super) fn of(text: &str) -> Kinds {
        // Each system read as any TOML value, so one malformed system does not hide the
        // kinds of the others.
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            systems: BTreeMap<String, toml::Value>,
        }
        let kinds = toml::from_str::<Doc>(text)
            .map(|d| {
                d.systems
                    .into_iter()
                    .filter_map(|(n, v)| Some((n, v.get("type")?.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        KINDS.with(|k| *k.borrow_mut() = kinds);
        Kinds(())
    }
}

impl Drop for Kinds {
    fn drop(&mut self) {
        KINDS.with(|k| k.borrow_mut().clear());
    }
}

/// The kinds a system's `type` names.
const TYPES: &[&str] = &[
    "salesforce",
    "postgres",
    "mysql",
    "sqlite",
    "csv",
    "jsonl",
    "nats",
];

/// `[systems]`: each system by its `type`.
pub(super) fn systems<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SystemConfig>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, SystemConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of systems")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = m.next_key::<String>()? {
                let kind = KINDS.with(|k| k.borrow().get(&name).cloned());
                let system = m.next_value_seed(System { kind })?;
                out.insert(name, system);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// One system, of the kind its `type` names.
struct System {
    kind: Option<String>,
}

impl<'de> DeserializeSeed<'de> for System {
    type Value = SystemConfig;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SystemConfig, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for System {
    type Value = SystemConfig;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a system: its `type` and the keys of that kind")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<SystemConfig, A::Error> {
        let mut aside = Aside::default();
        let rest = de::value::MapAccessDeserializer::new(Split {
            inner: m,
            aside: &mut aside,
            keys: &["type"],
        });
        let Some(kind) = self.kind else {
            // No text `type` was found first: reading the table says why, with its place (a
            // `type` that is not text), or it is missing.
            de::IgnoredAny::deserialize(rest)?;
            return Err(de::Error::missing_field("type"));
        };
        if !TYPES.contains(&kind.as_str()) {
            return Err(de::Error::unknown_variant(&kind, TYPES));
        }
        Ok(match kind.as_str() {
            "salesforce" => {
                SystemConfig::Salesforce(Box::new(SalesforceSystem::deserialize(rest)?))
            }
            "postgres" => SystemConfig::Postgres(SqlSystem::deserialize(rest)?),
            "mysql" => SystemConfig::Mysql(SqlSystem::deserialize(rest)?),
            "sqlite" => SystemConfig::Sqlite(SqlSystem::deserialize(rest)?),
            "csv" => SystemConfig::Csv(CsvSystem::deserialize(rest)?),
            "jsonl" => SystemConfig::Jsonl(JsonlSystem::deserialize(rest)?),
            _ => SystemConfig::Nats(NatsSystem::deserialize(rest)?),
        })
    }
}

/// `sides = { NAME = { … } }`, each side by its system's kind.
pub(super) fn sides<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SideConfig>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, SideConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of sides, one per system of the job")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = m.next_key::<String>()? {
                let kind = KINDS.with(|k| k.borrow().get(&name).cloned());
                let side = m.next_value_seed(Side { kind })?;
                out.insert(name, side);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// One side, of a system of kind `kind` (`None`: no such system; the checks after parsing say
/// so).
struct Side {
    kind: Option<String>,
}

impl<'de> DeserializeSeed<'de> for Side {
    type Value = SideConfig;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SideConfig, D::Error> {
        d.deserialize_map(self)
    }
}

/// The keys taken aside: what every kind of side has, and a system's `type`.
#[derive(Default)]
struct Aside {
    fields: Option<BTreeMap<String, FieldSpec>>,
    filter: Option<Vec<FilterConfig>>,
    /// Read only to check it is text (its value came from `Kinds::of`).
    kind: Option<String>,
}

impl<'de> Visitor<'de> for Side {
    type Value = SideConfig;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a side: the system's object, key and options, `fields` and `filter`")
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<SideConfig, A::Error> {
        let mut shared = Aside::default();
        let split = Split {
            inner: m,
            aside: &mut shared,
            keys: &["fields", "filter"],
        };
        let rest = de::value::MapAccessDeserializer::new(split);
        fn checked<T, E: de::Error>(
            t: T,
            check: impl FnOnce(&T) -> Result<(), (&'static str, String)>,
        ) -> Result<T, E> {
            check(&t).map_err(|(key, m)| E::custom(format!("`{key}`: {m}")))?;
            Ok(t)
        }
        let options = match self.kind.as_deref() {
            Some("salesforce") => SideOptions::Salesforce(SalesforceSide::deserialize(rest)?),
            Some("postgres" | "mysql" | "sqlite") => {
                SideOptions::Sql(checked(SqlSide::deserialize(rest)?, SqlSide::check)?)
            }
            Some("csv" | "jsonl") => {
                SideOptions::Files(checked(FileSide::deserialize(rest)?, FileSide::check)?)
            }
            Some("nats") => {
                SideOptions::Nats(checked(NatsSide::deserialize(rest)?, NatsSide::check)?)
            }
            _ => {
                de::IgnoredAny::deserialize(rest)?;
                SideOptions::Unknown
            }
        };
        Ok(SideConfig {
            fields: shared
                .fields
                .ok_or_else(|| de::Error::missing_field("fields"))?,
            filter: shared.filter.unwrap_or_default(),
            options,
        })
    }
}

/// A table's keys minus `keys`, whose values it stores in `aside` as it meets them.
struct Split<'s, A> {
    inner: A,
    aside: &'s mut Aside,
    keys: &'static [&'static str],
}

enum Routed<T> {
    Shared(&'static str),
    Other(T),
}

/// Reads one key: one of `keys` is recognised, any other is handed to the kind's seed (inside
/// the TOML deserializer's key, so an unknown key's error has its place).
struct Route<'a, K> {
    seed: &'a mut Option<K>,
    keys: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Route<'_, K> {
    type Value = Routed<K::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = String::deserialize(d)?;
        if let Some(s) = self.keys.iter().find(|s| **s == key) {
            return Ok(Routed::Shared(s));
        }
        let seed = self.seed.take().expect("a key seed is used once");
        seed.deserialize(de::value::StringDeserializer::<D::Error>::new(key))
            .map(Routed::Other)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Split<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let route = Route {
                seed: &mut seed,
                keys: self.keys,
            };
            match self.inner.next_key_seed(route)? {
                None => return Ok(None),
                Some(Routed::Other(k)) => return Ok(Some(k)),
                Some(Routed::Shared("fields")) => {
                    self.aside.fields = Some(self.inner.next_value()?)
                }
                Some(Routed::Shared("filter")) => {
                    self.aside.filter = Some(self.inner.next_value()?)
                }
                // `type`: its value was read by `Kinds::of` already.
                Some(Routed::Shared(_)) => self.aside.kind = Some(self.inner.next_value()?),
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}
