//! Connectors: one folder per kind of system, each implementing [`Connector`].
//!
//! A connector reads records (all of them, or the changes since a cursor it defines) and writes
//! batches of upserts and deletes. It knows nothing of the store or of merging: the engine owns
//! those. Errors name the system and the object they concern.

pub mod files;
pub mod memory;
pub mod nats;
pub mod salesforce;
pub mod sql;

use concord_model::model::{EntityId, Fields, Key, SystemId, Timestamp, Value};

/// What a job tells a connector it builds from the configuration file (each connector's
/// `from_config`, with its own `[systems.NAME]` and side types from its `config` module).
#[derive(Debug, Clone)]
pub struct Binding<'a> {
    /// The side's system id (`<system>.<object>`).
    pub system: SystemId,
    /// The native fields the job's mapping reads and writes.
    pub fields: Vec<String>,
    /// The folder relative paths in the configuration start from (the file's own).
    pub base_dir: &'a std::path::Path,
}

/// A record or value a connector cannot read or write as it is — a malformed cell or line, a
/// value of a type the column cannot hold, a missing key part; the message names what and
/// where. The connector wraps it in a [`ConnectorError`] (a read) or a rejected
/// [`WriteResult`] (a write).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidData(pub String);

impl From<String> for InvalidData {
    fn from(s: String) -> Self {
        InvalidData(s)
    }
}

impl From<&str> for InvalidData {
    fn from(s: &str) -> Self {
        InvalidData(s.to_string())
    }
}

impl From<InvalidData> for String {
    fn from(e: InvalidData) -> Self {
        e.0
    }
}

/// The plain text of a key value, as native keys are written (`42`, `ALFKI`, `2024-01-31`).
pub fn key_text(v: &Value) -> String {
    v.plain_text()
}

/// The native key made of the values of `columns` in `fields` (composite when several).
pub fn key_of(fields: &Fields, columns: &[&str]) -> Result<Key, crate::InvalidData> {
    let mut parts = Vec::with_capacity(columns.len());
    for c in columns {
        match fields.get(c) {
            Some(v) => parts.push(key_text(v)),
            None => return Err(format!("key column {c} is null").into()),
        }
    }
    Ok(if parts.len() == 1 {
        Key::new(parts.pop().expect("one part"))
    } else {
        Key::composite(&parts)
    })
}
use async_trait::async_trait;

/// One record as read: present (with content) or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Key,
    /// The concord entity id the record carries (an external-id field written by concord on
    /// create), if the system keeps one. Lets the engine re-link a record it created but whose
    /// cross-reference was lost in a crash, instead of creating it twice.
    pub entity_hint: Option<EntityId>,
    /// `None`: the record was deleted.
    pub fields: Option<Fields>,
    pub modstamp: Option<Timestamp>,
}

/// A page of a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPage {
    pub changes: Vec<Change>,
    /// Where the next read (or the next page) starts. Opaque to the engine; stored with the
    /// checkpoint that commits what this page produced.
    pub cursor: Option<Vec<u8>>,
    /// There are more pages: call `read` again with `cursor`.
    pub more: bool,
    /// The pages of this read together list every record the system holds (a scan): a stored
    /// record missing from them was deleted.
    pub complete: bool,
}

/// A write for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create or update. `key: None` creates, idempotently when the system keeps the entity id
    /// (an existing record carrying it is updated instead).
    Upsert {
        entity: EntityId,
        key: Option<Key>,
        fields: Fields,
    },
    /// A conditional, partial update of an existing record: only the fields where `fields`
    /// (the content the record should have) differs from `base.fields` (what concord last knew
    /// it to hold) are written — a field absent from `fields` is cleared — and only if the
    /// record still holds `base`'s values in those fields; otherwise nothing is written and the
    /// result is [`WriteErrorKind::Stale`]. Edits made to the record since concord read it are
    /// never overwritten: of other fields because they are not written, of the same fields
    /// because the write does not happen (the engine re-reads and merges). Systems that cannot
    /// check values compare `base.modstamp` with the record's modification time where they can
    /// (see each connector's docs for what is left).
    Update {
        entity: EntityId,
        key: Key,
        fields: Fields,
        base: WriteBase,
    },
    Delete {
        entity: EntityId,
        key: Key,
    },
}

/// What concord last knew a record to hold: the precondition of a [`WriteOp::Update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBase {
    pub fields: Fields,
    /// The record's modification time in that system when concord last saw it, if known.
    pub modstamp: Option<Timestamp>,
}

impl WriteBase {
    /// The names of the fields an update from this base to `target` writes (changed, added or
    /// cleared), in name order.
    pub fn changed<'a>(&'a self, target: &'a Fields) -> Vec<&'a std::sync::Arc<str>> {
        let mut names: Vec<&std::sync::Arc<str>> = target
            .iter()
            .filter(|(n, v)| self.fields.get(n) != Some(*v))
            .map(|(n, _)| n)
            .collect();
        names.extend(self.fields.names().filter(|n| target.get(n).is_none()));
        names.sort();
        names
    }

    /// Whether `current` (the record as it is now) still holds this base's value in each of
    /// `names`.
    pub fn holds(&self, current: &Fields, names: &[&std::sync::Arc<str>]) -> bool {
        names.iter().all(|n| current.get(n) == self.fields.get(n))
    }
}

impl WriteOp {
    pub fn entity(&self) -> EntityId {
        match self {
            WriteOp::Upsert { entity, .. }
            | WriteOp::Update { entity, .. }
            | WriteOp::Delete { entity, .. } => *entity,
        }
    }
}

/// Why one record's write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// Try again later (throttling, timeout, no acknowledgement); whether it was applied may
    /// be unknown.
    Retryable,
    /// The record is not there any more (deleted behind our back): the next read will say so.
    NotFound,
    /// The system refused the content (validation, duplicate, permissions).
    Rejected,
    /// A [`WriteOp::Update`] found the record changed since concord read it: nothing was
    /// written. The engine reads the record again, merges, and writes the merge.
    Stale,
    /// Certainly not applied, for a passing reason (waiting for a referenced record, left
    /// unprocessed by a bulk job, a row lock): nothing was written; tried again later. Unlike
    /// [`Self::Retryable`] (whose outcome may be unknown) a create is not looked for as
    /// possibly made.
    NotApplied,
}

/// The outcome of one op, in the order of the ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Done; the record's native key (new for a create).
    Ok { key: Key },
    Err {
        kind: WriteErrorKind,
        message: String,
    },
}

/// A failure of a whole call (connection, authentication, limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("system '{system}' ({object}): {message}")]
pub struct ConnectorError {
    pub system: String,
    pub object: String,
    pub message: String,
    pub retryable: bool,
}

/// One system (one object of it) as the engine reads and writes it.
///
/// **The contract** (every implementation passes `tests/connector_compliance.rs`, which checks
/// each point on a real system):
/// - `read(None)` and the pages after it return every record the system holds (or, from a
///   cursor, every change since it), each record once per read, its fields decoded to canonical
///   values; a read that cannot finish returns an error, never a shorter `complete` read.
///   `complete` is set only where the pages list every record (a scan), so a record missing
///   from them is deleted.
/// - A cursor is opaque, durable and resumable by a connector built again: no change made after
///   the page that produced it is skipped, and a record read again is unchanged unless the
///   system changed it. Deletes the system can see are reported as changes without fields.
/// - `write` answers one [`WriteResult`] per op, in order; a failure of one record
///   (`Rejected`, `NotFound`, `Stale`, `NotApplied`, `Retryable`) never fails the others; an
///   `Err` of the whole call means nothing is known to be written (the engine retries).
///   Creates answer the new key; where [`Connector::creates_idempotent`] is true, repeating a
///   create does not make a second record. Deletes of records already gone succeed.
/// - What a connector wrote reads back with the same canonical content (so the engine sees its
///   own writes as echoes, not changes).
/// - A connector never writes concord's store and keeps no state the engine needs across runs
///   but its cursors.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The system's name in the job.
    fn system(&self) -> &SystemId;

    /// Reads one page of records: from `cursor` (`None`: from the start).
    async fn read(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError>;

    /// Reads one page of a *complete* scan: every record the system holds, whatever its
    /// incremental mode, the last page marked `complete` (so a stored record not seen is gone).
    /// `cursor` is a previous page's (`None`: the start); scan cursors are not read cursors.
    /// Drift detection and repair (`concord reconcile`) use it. The default is `read`, for
    /// systems whose read from the start is such a scan.
    async fn scan(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        self.read(cursor).await
    }

    /// Hashing on the system's side, where the system can: hash-tree drift detection
    /// (`concord reconcile`) then moves bytes in proportion to the drift. `None` (the default):
    /// drift is found by a complete scan.
    fn digests(&self) -> Option<&dyn DigestSource> {
        None
    }

    /// Whether repeating a create cannot make a second record (the system keeps concord's entity
    /// id, or the key is the record's own). When it can (Salesforce without `entity_id_field`),
    /// a create whose answer was lost is resolved before it is sent again: the records read
    /// from the system are matched to it by content.
    fn creates_idempotent(&self) -> bool {
        true
    }

    /// How long after it was sent a write can still take effect in the system (a request the
    /// system received goes on when its client is gone, within the system's own time limit).
    /// Where creates are not idempotent, a create whose answer was lost and whose record a
    /// read did not find is sent again only once this long has passed since it was sent: until
    /// then its record may yet appear. Zero (the default): an answer lost means the system is
    /// done with the request.
    fn in_flight_limit(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Writes a batch; one result per op, in order.
    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError>;

    /// A feed of the system's own change announcements (PostgreSQL trigger mode's
    /// `NOTIFY`, Salesforce Change Data Capture), for a service that runs a pass when something
    /// changed instead of polling. `None`: the system announces nothing (poll it). A message is
    /// only a hint that a read would find something (never what changed: the read says); one
    /// also comes when the feed may have missed announcements (its connection was lost and
    /// made again). The feed ends when it can no longer listen: the caller falls back to
    /// polling and may subscribe again.
    ///
    /// A feed whose system keeps its announcements (Salesforce's replay ids) has a
    /// [`ChangeFeed::position`]: the caller stores it with the read cursor of a pass that
    /// started after it, and passes it back as `from` when it subscribes again (after a
    /// restart), so the announcements made meanwhile come again. A position the system no
    /// longer holds is answered by a hint (a pass looks) and the feed goes on from now.
    async fn subscribe(&self, from: Option<&[u8]>) -> Result<Option<ChangeFeed>, ConnectorError> {
        let _ = from;
        Ok(None)
    }

    /// The system's own API budget as it last reported it: (used, limit) — Salesforce's daily
    /// API requests (`Sforce-Limit-Info`). `None`: the system has no such limit, or has not
    /// said yet.
    fn api_usage(&self) -> Option<(u64, u64)> {
        None
    }

    /// The current content of the records with these keys (a point read, used when a record
    /// read earlier must be looked at again: correlate's late matches). One change per key, in
    /// order; a key without a record comes back as a delete.
    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Change>, ConnectorError> {
        let _ = keys;
        Err(ConnectorError {
            system: self.system().to_string(),
            object: String::new(),
            message: "this system cannot read single records".into(),
            retryable: false,
        })
    }
}

/// Where a change feed stands (see [`ChangeFeed::position`]), shared between the feed's task,
/// which sets it, and whoever reads it before a pass.
pub type FeedPosition = std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>;

/// Announcements of changes (see [`Connector::subscribe`]).
pub struct ChangeFeed {
    hints: tokio::sync::mpsc::Receiver<()>,
    position: Option<FeedPosition>,
}

impl ChangeFeed {
    /// A feed of hints without positions (announcements the system does not keep).
    pub fn new(hints: tokio::sync::mpsc::Receiver<()>) -> Self {
        ChangeFeed {
            hints,
            position: None,
        }
    }

    /// A feed whose task sets `position` (the newest announcement received) before it sends
    /// the hint for it.
    pub fn with_position(hints: tokio::sync::mpsc::Receiver<()>, position: FeedPosition) -> Self {
        ChangeFeed {
            hints,
            position: Some(position),
        }
    }

    /// The next hint; `None` when the feed ended.
    pub async fn recv(&mut self) -> Option<()> {
        self.hints.recv().await
    }

    /// Where the feed stands, kept up to date by its task (it outlives the receiver): every
    /// change announced up to the value read is committed in the system, so a read that
    /// starts after reading it finds the change. Inside, `None` until something was received.
    /// `None`: the system keeps no announcements.
    pub fn position(&self) -> Option<FeedPosition> {
        self.position.clone()
    }
}

pub use concord_model::core::tree::{bucket_of, BucketSum, RowDigest};

/// Hashing on the system's side for hash-tree drift detection (see `docs/offline.md`).
#[async_trait]
pub trait DigestSource: Send + Sync {
    /// The deepest bucket level the system can compare (the store's sums travel in one
    /// statement).
    fn max_bits(&self) -> u32 {
        24
    }

    /// What the digests depend on besides the records (columns, hash expressions, mapping):
    /// digests remembered under another fingerprint are learned again.
    fn fingerprint(&self) -> String;

    /// The buckets at depth `bits` whose count or XOR differ from `expected` (the store's view,
    /// every non-empty bucket), buckets only one side has included. Only the differing bucket
    /// numbers travel back.
    async fn differing_buckets(
        &self,
        bits: u32,
        expected: &[BucketSum],
    ) -> Result<Vec<i64>, ConnectorError>;

    /// Every record in these buckets: its key and digests (not its content).
    async fn leaves(
        &self,
        bits: u32,
        buckets: &[i64],
    ) -> Result<Vec<(Key, RowDigest)>, ConnectorError>;

    /// The current content of these records with their digests, computed in the same statement
    /// (so a digest always describes the content it comes with). A key without a record comes
    /// back without content; a record that cannot be compared yet (a reference not synced)
    /// without a digest.
    async fn fetch_digested(
        &self,
        keys: &[Key],
    ) -> Result<Vec<(Change, Option<RowDigest>)>, ConnectorError>;

    /// One page of a complete scan with each record's digests (first reconcile, or when most
    /// digests are unknown): `Connector::scan`'s pages and cursors; `None` as in
    /// `fetch_digested`.
    async fn scan_digested(
        &self,
        cursor: Option<&[u8]>,
    ) -> Result<(ReadPage, Vec<Option<RowDigest>>), ConnectorError>;
}
