//! Records: a native key plus normalised fields; versions as the store and merge see them.

use super::canonical::{self, ContentHash};
use super::clock::VectorClock;
use super::ids::SystemId;
use super::value::{Timestamp, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A record's key in its own system (Salesforce Id, SQL primary key, file row key).
///
/// Composite keys are joined by [`Key::composite`] with an escaped unit separator, so that
/// distinct part lists always give distinct keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

const SEP: char = '\u{1f}';
const ESC: char = '\u{1b}';

impl Key {
    pub fn new(k: impl Into<String>) -> Self {
        Key(k.into())
    }
    /// A key made of several parts (composite primary keys).
    pub fn composite<S: AsRef<str>>(parts: &[S]) -> Self {
        let mut out = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push(SEP);
            }
            for c in p.as_ref().chars() {
                if c == SEP || c == ESC {
                    out.push(ESC);
                }
                out.push(c);
            }
        }
        Key(out)
    }
    /// The parts of a composite key (one part for a simple key).
    pub fn parts(&self) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut esc = false;
        for c in self.0.chars() {
            if esc {
                parts.last_mut().expect("non-empty").push(c);
                esc = false;
            } else if c == ESC {
                esc = true;
            } else if c == SEP {
                parts.push(String::new());
            } else {
                parts.last_mut().expect("non-empty").push(c);
            }
        }
        parts
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        if parts.len() == 1 {
            f.write_str(&parts[0])
        } else {
            write!(f, "({})", parts.join(", "))
        }
    }
}

/// Options for the normalisation that depends on the job rather than on the value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Treat `""` as null (Salesforce returns null for an empty text field where SQL keeps `''`).
    /// Default: true.
    pub empty_text_is_null: bool,
    /// Trim leading and trailing white space from text. Default: false.
    pub trim_text: bool,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            empty_text_is_null: true,
            trim_text: false,
        }
    }
}

/// A record's content: field name → value, every value normalised, no null values (a null field
/// and an absent field are the same thing). Iteration is in byte order of the field names, the
/// order of the canonical encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(BTreeMap<Arc<str>, Value>);

impl Fields {
    pub fn new() -> Self {
        Fields(BTreeMap::new())
    }

    /// Sets a field (normalising the value); setting null removes it.
    pub fn set(&mut self, name: impl Into<Arc<str>>, value: impl Into<Value>) {
        let name = name.into();
        match value.into().normalize() {
            Value::Null => {
                self.0.remove(&*name);
            }
            v => {
                self.0.insert(name, v);
            }
        }
    }

    /// Builder form of [`Fields::set`].
    pub fn with(mut self, name: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        self.0.iter()
    }
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.keys()
    }

    /// Applies the job-level options (empty text, trimming).
    pub fn apply_options(&mut self, opts: &NormalizeOptions) {
        if !opts.empty_text_is_null && !opts.trim_text {
            return;
        }
        self.0.retain(|_, v| {
            if let Value::Text(s) = v {
                if opts.trim_text {
                    let t = s.trim();
                    if t.len() != s.len() {
                        *s = t.to_string();
                    }
                }
                if opts.empty_text_is_null && s.is_empty() {
                    return false;
                }
            }
            true
        });
    }

    /// The canonical encoding (see `docs/design.md`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.0.len() * 24);
        canonical::encode_into(self, &mut out);
        out
    }

    /// blake3 of the canonical encoding.
    pub fn content_hash(&self) -> ContentHash {
        let mut buf = Vec::with_capacity(64 + self.0.len() * 24);
        canonical::hash_with(self, &mut buf)
    }

    /// Inserts a value known to be normalised and non-null (decoder use).
    /// Builds from pairs in strictly increasing name order, normalised, non-null (decoder use).
    pub(crate) fn from_sorted_unique(pairs: Vec<(Arc<str>, Value)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Fields(pairs.into_iter().collect())
    }

    /// Sets (an already normalised value) or removes a field, reusing the name's allocation.
    pub fn patch(&mut self, name: &Arc<str>, value: Option<Value>) {
        match value {
            Some(v) if !v.is_null() => {
                self.0.insert(name.clone(), v);
            }
            _ => {
                self.0.remove(&**name);
            }
        }
    }

    pub(crate) fn map(&self) -> &BTreeMap<Arc<str>, Value> {
        &self.0
    }
}

impl<N: Into<Arc<str>>, V: Into<Value>> FromIterator<(N, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut f = Fields::new();
        for (n, v) in iter {
            f.set(n, v);
        }
        f
    }
}

/// A record as read from or written to one system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub fields: Fields,
}

impl Record {
    pub fn new(key: Key, fields: Fields) -> Self {
        Record { key, fields }
    }
}

/// A version of one entity: its content (or a tombstone), the content hash, the vector clock
/// that orders it against other versions, and the source's own modification time (used only to
/// break ties between concurrent versions under the `newest` policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `None` is a tombstone: the entity was deleted.
    pub content: Option<Fields>,
    /// Hash of `content`; `None` for a tombstone.
    pub hash: Option<ContentHash>,
    pub clock: VectorClock,
    pub modstamp: Option<Timestamp>,
    /// The system whose change produced this version (for a merge: the last one folded in).
    pub origin: Option<SystemId>,
    /// Per field, the system whose edit set the field's current value (or removed it), where
    /// that is not `origin`: a merged version knows exactly where each value came from, so a
    /// later conflict on a field is decided between the systems that actually hold the
    /// competing values (`prefer`, `priority`), and aggregate provenance is exact.
    pub field_origins: FieldOrigins,
}

/// Field name → the system that set its value (see [`Version::field_origins`]).
pub type FieldOrigins = std::collections::BTreeMap<Arc<str>, SystemId>;

impl Version {
    /// A version with its hash computed from `content`.
    pub fn new(
        content: Option<Fields>,
        clock: VectorClock,
        modstamp: Option<Timestamp>,
        origin: Option<SystemId>,
    ) -> Self {
        let hash = content.as_ref().map(Fields::content_hash);
        Version {
            content,
            hash,
            clock,
            modstamp,
            origin,
            field_origins: FieldOrigins::new(),
        }
    }

    /// With these per-field origins (entries equal to `origin` are dropped: the map holds the
    /// exceptions only, so a version from one system carries none).
    pub fn with_field_origins(mut self, mut origins: FieldOrigins) -> Self {
        if let Some(o) = &self.origin {
            origins.retain(|_, s| s != o);
        }
        self.field_origins = origins;
        self
    }

    /// The system that set `field`'s current value (or removed it).
    pub fn origin_of(&self, field: &str) -> Option<&SystemId> {
        self.field_origins.get(field).or(self.origin.as_ref())
    }

    pub fn is_tombstone(&self) -> bool {
        self.content.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_round_trip_and_stay_distinct() {
        let a = Key::composite(&["a\u{1f}b", "c"]);
        let b = Key::composite(&["a", "b\u{1f}c"]);
        assert_ne!(a, b);
        assert_eq!(a.parts(), vec!["a\u{1f}b".to_string(), "c".to_string()]);
        assert_eq!(
            Key::composite(&["x", "\u{1b}"]).parts(),
            vec!["x", "\u{1b}"]
        );
        assert_eq!(Key::new("001").to_string(), "001");
        assert_eq!(Key::composite(&["10248", "11"]).to_string(), "(10248, 11)");
    }

    #[test]
    fn null_is_absent_and_options_apply() {
        let mut f = Fields::new()
            .with("a", "x")
            .with("b", Value::Null)
            .with("c", "");
        assert_eq!(f.len(), 2);
        assert!(f.get("b").is_none());
        f.apply_options(&NormalizeOptions::default());
        assert_eq!(f.len(), 1);
        let mut g = Fields::new().with("a", "  x ");
        g.apply_options(&NormalizeOptions {
            empty_text_is_null: true,
            trim_text: true,
        });
        assert_eq!(g.get("a"), Some(&Value::text("x")));
        let mut h = Fields::new().with("c", "");
        h.apply_options(&NormalizeOptions {
            empty_text_is_null: false,
            trim_text: false,
        });
        assert_eq!(h.len(), 1);
    }
}
