//! Match keys: how records of different systems are recognised as the same entity (correlate and
//! aggregate). A match key is one or more canonical fields, each normalised, hashed with blake3 —
//! keyed when a privacy key is configured, so the hash reveals nothing without the key.

use crate::model::{Fields, Value};

/// How a match field's value is normalised before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// The canonical value as it is.
    Exact,
    /// Case-insensitive (Unicode lowercase).
    Case,
    /// Surrounding whitespace removed, inner runs collapsed to one space, case-insensitive.
    Whitespace,
    /// An e-mail address: trimmed and lowercased.
    Email,
    /// A phone number: digits only (a leading `+` kept), so `+1 (555) 010-0` = `+15550100`.
    Phone,
}

/// One field of a match key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchField {
    pub field: String,
    pub normalize: Normalize,
}

/// A (single or composite) match key and the optional privacy key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchSpec {
    pub fields: Vec<MatchField>,
    /// 32-byte key: hashes are keyed blake3 (privacy mode).
    pub key: Option<[u8; 32]>,
}

/// The normalised text of one value, or `None` when it is empty (a record with an empty match
/// field has no match key).
pub fn normalize(v: &Value, how: Normalize) -> Option<String> {
    let text = match v {
        Value::Null => return None,
        Value::Text(s) => s.clone(),
        other => other.plain_text(),
    };
    let out = match how {
        Normalize::Exact => text,
        Normalize::Case => text.to_lowercase(),
        Normalize::Whitespace => text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        Normalize::Email => text.trim().to_lowercase(),
        Normalize::Phone => {
            let t = text.trim();
            let mut s: String = t.chars().filter(char::is_ascii_digit).collect();
            if t.starts_with('+') {
                s.insert(0, '+');
            }
            s
        }
    };
    if out.trim().is_empty() {
        None
    } else {
        Some(out)
    }
}

impl MatchSpec {
    /// The record's match hash; `None` when a match field is missing or empty.
    pub fn hash(&self, f: &Fields) -> Option<[u8; 32]> {
        let mut h = match &self.key {
            Some(k) => blake3::Hasher::new_keyed(k),
            None => blake3::Hasher::new(),
        };
        h.update(b"concord.match.v1");
        for m in &self.fields {
            let v = normalize(f.get(&m.field)?, m.normalize)?;
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        }
        Some(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fields: &[(&str, Normalize)], key: Option<[u8; 32]>) -> MatchSpec {
        MatchSpec {
            fields: fields
                .iter()
                .map(|(f, n)| MatchField {
                    field: f.to_string(),
                    normalize: *n,
                })
                .collect(),
            key,
        }
    }

    #[test]
    fn normalisers() {
        let t = |s: &str, n| normalize(&Value::text(s), n);
        assert_eq!(
            t(" Ada@Example.COM ", Normalize::Email).as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(
            t("+1 (555) 010-0", Normalize::Phone).as_deref(),
            Some("+15550100")
        );
        assert_eq!(t("555.0100", Normalize::Phone).as_deref(), Some("5550100"));
        assert_eq!(
            t("  Acme   Corp ", Normalize::Whitespace).as_deref(),
            Some("acme corp")
        );
        assert_eq!(t("ACME", Normalize::Case).as_deref(), Some("acme"));
        assert_eq!(t("ACME", Normalize::Exact).as_deref(), Some("ACME"));
        assert_eq!(t("   ", Normalize::Whitespace), None);
        assert_eq!(normalize(&Value::Null, Normalize::Exact), None);
    }

    #[test]
    fn composite_keyed_hashes() {
        let s = spec(
            &[("email", Normalize::Email), ("country", Normalize::Case)],
            None,
        );
        let a = Fields::new()
            .with("email", "Ada@x.org")
            .with("country", "UK");
        let b = Fields::new()
            .with("email", "ada@x.org ")
            .with("country", "uk")
            .with("other", 1i64);
        assert_eq!(s.hash(&a), s.hash(&b));
        assert!(
            s.hash(&Fields::new().with("email", "ada@x.org")).is_none(),
            "missing part"
        );
        // Field boundaries matter: ("ab","c") differs from ("a","bc").
        let s2 = spec(&[("x", Normalize::Exact), ("y", Normalize::Exact)], None);
        assert_ne!(
            s2.hash(&Fields::new().with("x", "ab").with("y", "c")),
            s2.hash(&Fields::new().with("x", "a").with("y", "bc"))
        );
        // A privacy key changes every hash.
        let k = spec(
            &[("email", Normalize::Email), ("country", Normalize::Case)],
            Some([7; 32]),
        );
        assert_ne!(s.hash(&a), k.hash(&a));
        assert_eq!(k.hash(&a), k.hash(&b));
    }
}
