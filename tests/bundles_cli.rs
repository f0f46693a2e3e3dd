//! `concord bundle export|import` end to end: two instances with their own files, one bundle
//! each way through files on disk, the key from the environment; a damaged or foreign bundle is
//! refused with a clear message and leaves the store as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: &str = "a key both sites were given, 32+";
const EXPORT_A1: [&str; 6] = [
    "bundle",
    "export",
    "--peer",
    "site-b",
    "--out",
    "../a1.bundle",
];

fn config(instance: &str, erp: &str, report: &str) -> String {
    format!(
        r#"[store]
dir = "state"
instance = "{instance}"
[systems.{erp}]
type = "jsonl"
dir = "data"
[systems.{report}]
type = "csv"
dir = "data"
[jobs.accounts]
pattern = "bidirectional"
systems = ["{erp}", "{report}"]
[jobs.accounts.sides.{erp}]
file = "customers.jsonl"
key = ["id"]
[jobs.accounts.sides.{erp}.fields]
name = "name"
city = "city"
[jobs.accounts.sides.{report}]
file = "customers.csv"
key = ["id"]
[jobs.accounts.sides.{report}.fields]
name = "name"
city = "city"
"#
    )
}

fn site(root: &Path, instance: &str, erp: &str, report: &str) -> PathBuf {
    let d = root.join(instance);
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("concord.toml"), config(instance, erp, report)).unwrap();
    d
}

fn concord(dir: &Path, args: &[&str], key: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_concord"));
    c.current_dir(dir)
        .args(args)
        .env_remove("CONCORD_BUNDLE_KEY");
    if let Some(k) = key {
        c.env("CONCORD_BUNDLE_KEY", k);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn store_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("state")).unwrap().flatten() {
        if e.path().is_file() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// Sites A and B in a temporary folder; A's ERP holds two customers.
fn two_sites() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let a = site(root.path(), "site-a", "erp_a", "report_a");
    let b = site(root.path(), "site-b", "erp_b", "report_b");
    std::fs::write(
        a.join("data/customers.jsonl"),
        "{\"id\":\"1\",\"name\":\"Alfreds\",\"city\":\"Berlin\"}\n{\"id\":\"2\",\"name\":\"Ana Trujillo\",\"city\":\"México D.F.\"}\n",
    )
    .unwrap();
    (root, a, b)
}

#[test]
fn two_instances_exchange_bundles_through_files() {
    let (root, a, b) = two_sites();
    let (code, _, err) = concord(&a, &["run", "accounts"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&a.join("data/customers.csv")).len(), 3, "header + 2");

    // No key: refused, nothing written.
    let (code, _, err) = concord(&a, &EXPORT_A1, None);
    assert_ne!(code, 0);
    assert!(err.contains("CONCORD_BUNDLE_KEY"), "{err}");
    assert!(!root.path().join("a1.bundle").exists());

    let (code, out, err) = concord(&a, &EXPORT_A1, Some(KEY));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bundle 1 for site-b: 2 entities"), "{out}");
    assert!(
        !out.contains(KEY) && !err.contains(KEY),
        "the key is never printed"
    );
    let bundle = std::fs::read(root.path().join("a1.bundle")).unwrap();

    // B must run once to create its store; then a damaged bundle is refused and changes nothing.
    let (code, _, err) = concord(&b, &["run", "accounts"], None);
    assert_eq!(code, 0, "{err}");
    let before = store_bytes(&b);
    let mut bad = bundle.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(root.path().join("bad.bundle"), &bad).unwrap();
    let (code, _, err) = concord(&b, &["bundle", "import", "../bad.bundle"], Some(KEY));
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.bundle") && err.contains("tampered"),
        "{err}"
    );
    let (code, _, err) = concord(
        &b,
        &["bundle", "import", "../a1.bundle"],
        Some("another deployment's own key"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("foreign"), "{err}");
    std::fs::write(root.path().join("cut.bundle"), &bundle[..bundle.len() - 5]).unwrap();
    let (code, _, err) = concord(&b, &["bundle", "import", "../cut.bundle"], Some(KEY));
    assert_ne!(code, 0);
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(
        store_bytes(&b),
        before,
        "refused bundles leave the store as it was"
    );

    // The real one: queued, then written by B's next run to both of its systems.
    let (code, out, err) = concord(
        &b,
        &["bundle", "import", "../a1.bundle", "--json"],
        Some(KEY),
    );
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["fast_forwarded"].as_u64(), r["queued_writes"].as_u64()),
        (Some(2), Some(4)),
        "{r}"
    );
    let (code, _, err) = concord(&b, &["run", "accounts"], None);
    assert_eq!(code, 0, "{err}");
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = lines(p)
            .iter()
            .filter(|l| l.contains("Alfreds") || l.contains("Ana Trujillo"))
            .cloned()
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&b.join("data/customers.jsonl")).len(), 2);
    assert_eq!(names(&b.join("data/customers.csv")).len(), 2);

    // B edits a city; its bundle brings the edit to A; importing it twice changes nothing more.
    let erp_b = b.join("data/customers.jsonl");
    let edited = std::fs::read_to_string(&erp_b)
        .unwrap()
        .replace("Berlin", "Hamburg");
    std::fs::write(&erp_b, edited).unwrap();
    assert_eq!(concord(&b, &["run", "accounts"], None).0, 0);
    let (code, _, err) = concord(
        &b,
        &[
            "bundle",
            "export",
            "--peer",
            "site-a",
            "--out",
            "../b1.bundle",
        ],
        Some(KEY),
    );
    assert_eq!(code, 0, "{err}");
    for round in 0..2 {
        let (code, out, err) = concord(&a, &["bundle", "import", "../b1.bundle"], Some(KEY));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.contains("imported before"), round == 1, "{out}");
        assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    }
    for f in ["data/customers.jsonl", "data/customers.csv"] {
        let text = std::fs::read_to_string(a.join(f)).unwrap();
        assert!(
            text.contains("Hamburg") && !text.contains("Berlin"),
            "{f}: {text}"
        );
    }
}

/// `concord peer sync URL --peer site-a --json` at `dir`: its report.
fn peer_sync(dir: &Path, url: &str) -> serde_json::Value {
    let (code, out, err) = concord(
        dir,
        &["peer", "sync", url, "--peer", "site-a", "--json"],
        Some(KEY),
    );
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn two_instances_exchange_over_http() {
    use std::io::BufRead;
    let (_root, a, b) = two_sites();
    assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    let mut server = Command::new(env!("CARGO_BIN_EXE_concord"))
        .current_dir(&a)
        .env("CONCORD_BUNDLE_KEY", KEY)
        .args(["peer", "serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches("/concord/v1/exchange")
        .to_string();

    // A wrong key: refused by the server, nothing imported on either side.
    let (code, _, err) = concord(
        &b,
        &["peer", "sync", &url, "--peer", "site-a"],
        Some("not the key the sites share"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("foreign"), "{err}");

    let r = peer_sync(&b, &url);
    assert_eq!(r["received"]["fast_forwarded"], 2, "{r}");
    assert_eq!(concord(&b, &["run", "accounts"], None).0, 0);
    let erp_b = b.join("data/customers.jsonl");
    let text = std::fs::read_to_string(&erp_b).unwrap();
    assert!(
        text.contains("Alfreds") && text.contains("Ana Trujillo"),
        "{text}"
    );

    // B's edit goes to A in the next exchange; A writes it once its server has stopped.
    std::fs::write(&erp_b, text.replace("Berlin", "Hamburg")).unwrap();
    assert_eq!(concord(&b, &["run", "accounts"], None).0, 0);
    let r = peer_sync(&b, &url);
    assert!(r["sent"].as_u64().unwrap() >= 1, "{r}");
    // The wrong instance name is refused before anything is imported.
    let (code, _, err) = concord(&b, &["peer", "sync", &url, "--peer", "site-c"], Some(KEY));
    assert_ne!(code, 0);
    assert!(err.contains("site-c"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    let text = std::fs::read_to_string(a.join("data/customers.csv")).unwrap();
    assert!(
        text.contains("Hamburg") && !text.contains("Berlin"),
        "{text}"
    );
}
