//! Set-up every area of the tests shares: an engine over a fresh memory store, the plain
//! two-way job most scenarios run, an RSA key pair for the JWT grants.

use concord::connector::Connector;
use concord::core::{DeleteRule, FieldPolicy, Policy};
use concord::engine::{Engine, SyncJob};
use concord::model::{InstanceId, NormalizeOptions};
use concord::store::{MemoryStore, StateStore};
use std::path::Path;
use std::sync::Arc;

/// An engine over a fresh in-memory store, as instance `instance`.
pub fn memory_engine(instance: &str) -> Engine {
    Engine::new(
        StateStore::open(
            Arc::new(MemoryStore::new()),
            InstanceId::new(instance).unwrap(),
        )
        .unwrap(),
    )
}

/// A bidirectional job over `systems` with the default policy (newest wins, deletes win), the
/// default normalisation and `batch_size`.
pub fn two_way_job(name: &str, systems: Vec<Arc<dyn Connector>>, batch_size: usize) -> SyncJob {
    SyncJob {
        name: name.into(),
        systems,
        policy: Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        normalize: NormalizeOptions::default(),
        batch_size,
        options: Default::default(),
    }
}

/// A 2048-bit RSA key pair made by openssl in `dir`: (private key PEM, public key PEM).
pub fn rsa_pair(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl is installed")
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl made the key pair");
    (std::fs::read(key).unwrap(), std::fs::read(public).unwrap())
}

/// Called before each read of a key; an error fails the read.
pub type OnGet = Box<dyn Fn(&[u8]) -> Result<(), concord::store::StoreError> + Send + Sync>;

/// A store in front of another that lets a test fail reads and look at batches.
pub struct Intercepted {
    pub inner: Arc<dyn concord::store::Store>,
    pub on_get: OnGet,
    /// Called with each batch before it is applied.
    pub on_apply: Box<dyn Fn(&concord::store::Batch) + Send + Sync>,
}

impl concord::store::Store for Intercepted {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, concord::store::StoreError> {
        (self.on_get)(key)?;
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), concord::store::StoreError> {
        self.inner.scan(start, end, f)
    }
    fn apply(&self, batch: concord::store::Batch) -> Result<(), concord::store::StoreError> {
        (self.on_apply)(&batch);
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), concord::store::StoreError> {
        self.inner.flush()
    }
}

/// A test that needs a server which is unreachable: skips with the reason printed, or fails
/// under CONCORD_REQUIRE_SERVICES=1.
pub fn skip_unreachable(what: &str, e: impl std::fmt::Display) {
    assert!(
        std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{what} unreachable: {e}"
    );
    eprintln!("skipped: {what} unreachable ({e})");
}
