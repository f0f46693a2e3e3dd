//! Identifiers: systems, engine instances and entities.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name is not a valid system or instance identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {name:?}: use 1 to 64 characters from A-Z a-z 0-9 _ - .")]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
}

fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_string(),
        })
    }
}

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name($what, &name)?;
                Ok(Self(name))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A system of record as named in the job configuration (`sf`, `erp`, …).
    SystemId,
    "system"
);
name_type!(
    /// One concord engine instance (one store). Instances exchange bundles with each other.
    InstanceId,
    "instance"
);

/// concord's own identity for one business entity, the same across all systems.
///
/// Derived deterministically from where the entity was first seen (system and native key), so a
/// crash between seeing a record and storing its cross-reference derives the same id again.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(pub [u8; 16]);

impl EntityId {
    /// The entity first seen in `system` under native key `key`.
    pub fn derive(system: &SystemId, key: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("concord entity id v1");
        h.update(&(system.as_str().len() as u64).to_le_bytes());
        h.update(system.as_str().as_bytes());
        h.update(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        EntityId(out)
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses the 32-character hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(EntityId(out))
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.to_hex())
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(SystemId::new("sf").is_ok());
        assert!(SystemId::new("erp_pg-1.main").is_ok());
        let e = SystemId::new("bad name").unwrap_err();
        assert!(e.to_string().contains("system"), "{e}");
        assert!(SystemId::new("").is_err());
        assert!(InstanceId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn entity_ids_are_deterministic_and_distinct() {
        let sf = SystemId::new("sf").unwrap();
        let erp = SystemId::new("erp").unwrap();
        assert_eq!(EntityId::derive(&sf, "001"), EntityId::derive(&sf, "001"));
        assert_ne!(EntityId::derive(&sf, "001"), EntityId::derive(&erp, "001"));
        assert_ne!(EntityId::derive(&sf, "001"), EntityId::derive(&sf, "002"));
        let id = EntityId::derive(&sf, "001");
        assert_eq!(EntityId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(EntityId::from_hex("zz"), None);
    }
}
