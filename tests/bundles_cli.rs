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

/// B runs (writing the two customers it received to its ERP), then Berlin becomes Hamburg in
/// its ERP and B runs again.
fn write_then_edit_at_b(b: &Path) {
    assert_eq!(concord(b, &["run", "accounts"], None).0, 0);
    let erp_b = b.join("data/customers.jsonl");
    let text = std::fs::read_to_string(&erp_b).unwrap();
    assert!(
        text.contains("Alfreds") && text.contains("Ana Trujillo"),
        "{text}"
    );
    std::fs::write(&erp_b, text.replace("Berlin", "Hamburg")).unwrap();
    assert_eq!(concord(b, &["run", "accounts"], None).0, 0);
}

/// The server at A stops; A runs and its report holds B's edit.
fn stop_then_a_has_hamburg(mut server: std::process::Child, a: &Path) {
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(concord(a, &["run", "accounts"], None).0, 0);
    let text = std::fs::read_to_string(a.join("data/customers.csv")).unwrap();
    assert!(
        text.contains("Hamburg") && !text.contains("Berlin"),
        "{text}"
    );
}

/// `concord peer serve` at `dir` on a free port: the child and its base URL.
fn serve(dir: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut server = Command::new(env!("CARGO_BIN_EXE_concord"))
        .current_dir(dir)
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
    (server, url)
}

#[test]
fn two_instances_exchange_over_http() {
    let (_root, a, b) = two_sites();
    assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    let (server, url) = serve(&a);

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
    // B writes what it received, then edits it; the edit goes to A in the next exchange, and
    // A writes it once its server has stopped.
    write_then_edit_at_b(&b);
    let r = peer_sync(&b, &url);
    assert!(r["sent"].as_u64().unwrap() >= 1, "{r}");
    // The wrong instance name is refused before anything is imported.
    let (code, _, err) = concord(&b, &["peer", "sync", &url, "--peer", "site-c"], Some(KEY));
    assert_ne!(code, 0);
    assert!(err.contains("site-c"), "{err}");
    stop_then_a_has_hamburg(server, &a);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// `peer sync --tree` compares what both instances actually hold: after B's store was restored
/// from a backup older than an exchange, A still believes B holds what it sent, so a plain
/// exchange sends nothing; the tree exchange finds exactly the missing entities and moves them,
/// and then finds nothing.
#[test]
fn tree_exchange_restores_an_instance_whose_store_went_back() {
    let (_root, a, b) = two_sites();
    assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    assert_eq!(concord(&b, &["run", "accounts"], None).0, 0);
    let backup = b.parent().unwrap().join("b-backup");
    copy_dir(&b.join("state"), &backup);

    let (server, url) = serve(&a);
    let tree = |dir: &Path| -> serde_json::Value {
        let (code, out, err) = concord(
            dir,
            &["peer", "sync", &url, "--peer", "site-a", "--tree", "--json"],
            Some(KEY),
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };

    // Two plain exchanges: B receives both entities, then acknowledges them.
    assert_eq!(peer_sync(&b, &url)["received"]["fast_forwarded"], 2);
    assert_eq!(peer_sync(&b, &url)["received"]["entities"], 0);
    // The tree agrees: nothing differs, nothing moves.
    let r = tree(&b);
    assert_eq!(r["tree"]["differing_entities"], 0, "{r}");
    assert_eq!(
        (r["sent"].as_u64(), r["received"]["entities"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );

    // B's store goes back to the backup: a plain exchange cannot tell.
    std::fs::remove_dir_all(b.join("state")).unwrap();
    copy_dir(&backup, &b.join("state"));
    assert_eq!(peer_sync(&b, &url)["received"]["entities"], 0);

    // A wrong key: the tree request is refused.
    let (code, _, err) = concord(
        &b,
        &["peer", "sync", &url, "--peer", "site-a", "--tree"],
        Some("not the key the sites share"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("MAC"), "{err}");

    let r = tree(&b);
    assert_eq!(r["tree"]["differing_entities"], 2, "{r}");
    assert_eq!(r["tree"]["asked_for"], 2, "{r}");
    assert_eq!(r["sent"], 0, "{r}");
    assert_eq!(r["received"]["fast_forwarded"], 2, "{r}");
    let r = tree(&b);
    assert_eq!(r["tree"]["differing_entities"], 0, "{r}");
    // An edit at B after the restore: the tree finds that one entity and sends it.
    write_then_edit_at_b(&b);
    let r = tree(&b);
    assert_eq!(r["tree"]["differing_entities"], 1, "{r}");
    assert_eq!(
        (r["sent"].as_u64(), r["tree"]["asked_for"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(tree(&b)["tree"]["differing_entities"], 0);
    stop_then_a_has_hamburg(server, &a);
}

/// Issue 12: a captured tree message could be replayed. Now each carries a nonce and the
/// sender's clock: the same message twice is refused, so is a stale one, and an answer echoes
/// its request's nonce.
#[test]
fn tree_messages_cannot_be_replayed() {
    let (_root, a, _b) = two_sites();
    assert_eq!(concord(&a, &["run", "accounts"], None).0, 0);
    let (mut server, url) = serve(&a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = |body: Vec<u8>| {
        let mac = blake3::Hash::from(concord::bundle::message_mac(KEY.as_bytes(), &body))
            .to_hex()
            .to_string();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/concord/v1/tree"))
                .header("x-concord-mac", mac)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let request = |nonce: &str, sent_ms: i64| {
        serde_json::to_vec(&serde_json::json!({
            "sender": "site-b", "recipient": "site-a", "bits": 1, "sums": [],
            "nonce": nonce, "sent_ms": sent_ms,
        }))
        .unwrap()
    };
    let now = concord::model::Timestamp::now().millis();
    let captured = request(&concord::bundle::message_nonce(), now);
    let (status, body) = post(captured.clone());
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["nonce"],
        serde_json::from_slice::<serde_json::Value>(&captured).unwrap()["nonce"]
    );
    let (status, body) = post(captured);
    assert_eq!(status, 401, "a replay must be refused: {body}");
    assert!(body.contains("replayed"), "{body}");
    let (status, body) = post(request(&concord::bundle::message_nonce(), now - 3_600_000));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("stale"), "{body}");
    // Without a nonce (an older client's message): refused as malformed.
    let old = serde_json::to_vec(&serde_json::json!({
        "sender": "site-b", "recipient": "site-a", "bits": 1, "sums": [],
    }))
    .unwrap();
    assert_eq!(post(old).0, 400);
    server.kill().unwrap();
    let _ = server.wait();
}
