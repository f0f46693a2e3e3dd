//! Starting a sandbox: schema, persisted or seeded org, listener, optional TLS with a certificate
//! generated at start. `concord sandbox` and the demo both start it through [`launch`].

use super::org::Org;
use super::persist::{Persist, PersistError};
use super::schema::{self, SchemaFile};
use super::server::{self, Faults, Sandbox, Settings};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to start a sandbox.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Schema file with custom objects and fields.
    pub schema: Option<PathBuf>,
    /// SFDX data tree plans or files to load (only into an empty org).
    pub seed: Vec<PathBuf>,
    /// Keep the org in a sled store in this folder.
    pub data: Option<PathBuf>,
    /// Serve HTTPS with a certificate generated at start.
    pub tls: bool,
    /// Folder for the generated certificate (default: `data`, else a temporary folder).
    pub cert_dir: Option<PathBuf>,
    /// Faults injected from the start.
    pub faults: Faults,
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("schema {path}: {why}")]
    Schema {
        path: String,
        why: crate::InvalidInput,
    },
    #[error("seed {path}: {why}")]
    Seed {
        path: String,
        why: crate::InvalidInput,
    },
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS certificate file {path}: {source}")]
    CertificateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS set-up: {0}")]
    Tls(#[source] std::io::Error),
}

/// A started sandbox.
pub struct Launched {
    pub sandbox: Arc<Sandbox>,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// With TLS: the PEM file of the certificate authority that signed the server certificate
    /// (give it to clients as their trusted root).
    pub ca_path: Option<PathBuf>,
    /// Per seed file: (path, [(object, records loaded)]); empty when the org came from `data`.
    pub seeded: Vec<(PathBuf, Vec<(String, u64)>)>,
    /// Records restored from `data`.
    pub restored: Option<usize>,
    /// Serves until dropped or aborted.
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A CA and a server certificate for `localhost` / `127.0.0.1` signed by it: (CA PEM, server
/// certificate PEM, server key PEM).
pub fn self_signed() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "concord sandbox CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "concord sandbox");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

fn load_schema(path: Option<&Path>) -> Result<Vec<schema::ObjectDef>, LaunchError> {
    let file = match path {
        Some(p) => {
            let bad = |why: String| LaunchError::Schema {
                path: p.display().to_string(),
                why: why.into(),
            };
            let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
            toml::from_str::<SchemaFile>(&text).map_err(|e| bad(e.to_string()))?
        }
        None => SchemaFile::default(),
    };
    schema::build(&file).map_err(|why| LaunchError::Schema {
        path: path.map(|p| p.display().to_string()).unwrap_or_default(),
        why,
    })
}

/// Starts a sandbox with `settings` (its `base_url` is filled in here).
pub async fn launch(opts: &Options, mut settings: Settings) -> Result<Launched, LaunchError> {
    let objects = load_schema(opts.schema.as_deref())?;
    let (store, mut org, restored) = match &opts.data {
        Some(dir) => {
            let (p, org) = Persist::open(dir)?;
            match org {
                Some(mut org) => {
                    for o in objects {
                        org.extend_schema(o);
                    }
                    let n = org.record_count();
                    (Some(p), org, Some(n))
                }
                None => (Some(p), Org::new(objects), None),
            }
        }
        None => (None, Org::new(objects), None),
    };
    let mut seeded = Vec::new();
    if restored.is_none() {
        let mut refs = std::collections::BTreeMap::new();
        for path in &opts.seed {
            let report =
                super::seed::seed(&mut org, path, &mut refs).map_err(|why| LaunchError::Seed {
                    path: path.display().to_string(),
                    why,
                })?;
            seeded.push((path.clone(), report.records.into_iter().collect()));
        }
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", opts.port)).map_err(|source| {
        LaunchError::Bind {
            port: opts.port,
            source,
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| LaunchError::Bind {
            port: opts.port,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LaunchError::Bind {
        port: opts.port,
        source,
    })?;
    let scheme = if opts.tls { "https" } else { "http" };
    settings.base_url = format!("{scheme}://{addr}");
    let sb = Sandbox::new(org, settings.clone());
    sb.set_faults(opts.faults.clone());
    if let Some(p) = store {
        sb.attach_store(p)?;
    }
    let base_url = settings.base_url.clone();
    if !opts.tls {
        let l =
            tokio::net::TcpListener::from_std(listener).map_err(|source| LaunchError::Bind {
                port: opts.port,
                source,
            })?;
        let server = tokio::spawn(server::serve(sb.clone(), l));
        return Ok(Launched {
            sandbox: sb,
            base_url,
            ca_path: None,
            seeded,
            restored,
            server,
        });
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = self_signed()?;
    let dir = match opts.cert_dir.clone().or_else(|| opts.data.clone()) {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("concord-sandbox-{}", addr.port())),
    };
    let file = |path: &Path| {
        let path = path.display().to_string();
        move |source| LaunchError::CertificateFile { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(file(&dir))?;
    let ca_path = dir.join("sandbox-ca.pem");
    std::fs::write(&ca_path, &ca).map_err(file(&ca_path))?;
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
            .await
            .map_err(LaunchError::Tls)?;
    let app = tower::util::MapRequest::new(server::router(sb.clone()), server::trim_trailing_slash);
    let server = tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(tower::make::Shared::new(app))
            .await
    });
    Ok(Launched {
        sandbox: sb,
        base_url,
        ca_path: Some(ca_path),
        seeded,
        restored,
        server,
    })
}
