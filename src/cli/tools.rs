//! Tools around the jobs: loading the Northwind ERP dump, verifying a store.

use anyhow::{Context, Result};
use concord::model::InstanceId;
use concord::store::{SledStore, StateStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// The shared fixtures' Northwind dump, as found at build time.
pub(crate) fn northwind_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/erp/northwind.sql")
}

pub(crate) async fn load_erp(url_env: &str, dump: Option<PathBuf>) -> Result<()> {
    let path = dump.unwrap_or_else(northwind_path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the dump {}", path.display()))?;
    let url = std::env::var(url_env)
        .ok()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("environment variable {url_env} is not set"))?;
    let pool = concord::connector::sql::Pool::connect(&url, "erp", "load").await?;
    let report = concord::connector::sql::dump::load(&pool, None, &text)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("loaded {}: {report:?}", path.display());
    Ok(())
}

pub(crate) fn verify(dir: PathBuf, instance: &str) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a store directory", dir.display());
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir)?);
    let state = StateStore::open(store, InstanceId::new(instance)?)
        .with_context(|| format!("opening store {}", dir.display()))?;
    let n = state.verify()?;
    println!("{}: {n} entries, all readable", dir.display());
    Ok(())
}
