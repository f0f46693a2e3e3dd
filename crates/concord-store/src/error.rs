use super::layout::Tree;

/// Store failures. A corrupt or unknown entry is always reported with its tree and key; the
/// store is never rewritten to "repair" it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("corrupt entry in tree '{tree}' at key {key}: {reason}")]
    Corrupt {
        tree: Tree,
        key: String,
        reason: String,
    },
    #[error(
        "store format version {found} is not supported by this concord (it reads versions 1 to {supported}); \
         the store was left untouched"
    )]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("{0} is not a concord store: it has data but no format marker; it was left untouched")]
    NotAConcordStore(String),
    #[error("store belongs to instance '{found}', not '{expected}'")]
    WrongInstance { found: String, expected: String },
    #[error("injected store fault after {ops} operations")]
    Injected { ops: u64 },
    #[error("store crashed (simulated); restart it to continue")]
    Crashed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}
