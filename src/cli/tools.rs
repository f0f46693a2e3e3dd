//! Tools around the jobs: loading the Northwind ERP dump, verifying a store.

use anyhow::{Context, Result};
use concord::model::InstanceId;
use concord::store::{SledStore, StateStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// The Northwind dump: `--dump FILE`, else `$CONCORD_FIXTURES/erp/northwind.sql`, else the
/// shared fixtures next to the working folder (`../shared/fixtures/erp/northwind.sql`, where a
/// checkout of concord sits beside them). Found at run time: no build machine's path is kept in
/// the binary.
pub(crate) fn northwind_path(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let fixtures = match std::env::var_os("CONCORD_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("../shared/fixtures"),
    };
    let p = fixtures.join("erp/northwind.sql");
    if !p.is_file() {
        anyhow::bail!(
            "the Northwind dump is not at {} (give --dump FILE, or set CONCORD_FIXTURES to the fixtures folder)",
            p.display()
        );
    }
    Ok(p)
}

pub(crate) async fn load_erp(url_env: &str, dump: Option<PathBuf>) -> Result<()> {
    let path = northwind_path(dump)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the dump {}", path.display()))?;
    let url = std::env::var(url_env)
        .ok()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("environment variable {url_env} is not set"))?;
    let pool = concord::connector::sql::Pool::connect(&url, "erp", "load").await?;
    let report = concord::connector::sql::dump::load(&pool, None, &text).await?;
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
