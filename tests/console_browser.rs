//! The web console in a real browser: headless chromium (Debian's `chromium`) driven over the
//! DevTools protocol. The page loads after signing in, a parked conflict is resolved by
//! clicking, the next pass writes it; screenshots of the dashboard and the conflict page go to
//! `target/`. Skips with a printed reason when chromium is not installed (`.ci/run` installs
//! it), and fails then under CONCORD_REQUIRE_SERVICES=1.

use futures::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROME") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|c| {
            let o = std::process::Command::new("which").arg(c).output().ok()?;
            o.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        })
}

fn read_city(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["city"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The page's HTML once `done` holds of it (a click's navigation completes on its own time),
/// or as it is after 10 s.
async fn until(page: &chromiumoxide::Page, done: impl Fn(&str) -> bool) -> String {
    let mut html = String::new();
    for _ in 0..200 {
        html = page.content().await.unwrap_or_default();
        if done(&html) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    html
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_resolved_by_clicking_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "chromium is not installed (apt-get install chromium), and CONCORD_REQUIRE_SERVICES=1"
        );
        eprintln!(
            "skipped: chromium is not installed (apt-get update && apt-get install chromium)"
        );
        return;
    };
    let (dir, started, api) = crate::serve::people().await;
    // A parked conflict on the city.
    let (_, r) = api.post("/jobs/people/runs", json!({})).await;
    api.finished(r["id"].as_str().unwrap()).await;
    crate::serve::write_jsonl(
        &dir.path().join("a/people.jsonl"),
        &[json!({"id": 1, "city": "Lyon"})],
    );
    crate::serve::write_jsonl(
        &dir.path().join("b/people.jsonl"),
        &[json!({"id": 1, "city": "Nice"})],
    );
    let (_, r) = api.post("/jobs/people/runs", json!({})).await;
    assert_eq!(
        api.finished(r["id"].as_str().unwrap()).await["report"]["conflicts_parked"],
        1
    );

    let profile = tempfile::tempdir().unwrap();
    let config = chromiumoxide::BrowserConfig::builder()
        .chrome_executable(chrome)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .build()
        .unwrap();
    let (mut browser, mut handler) = chromiumoxide::Browser::launch(config).await.unwrap();
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let base = &api.base;
    let page = browser.new_page(format!("{base}/console")).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    // Redirected to the sign-in; sign in with the token.
    assert!(page
        .url()
        .await
        .unwrap()
        .unwrap_or_default()
        .ends_with("/console/login"));
    page.find_element("#token")
        .await
        .unwrap()
        .click()
        .await
        .unwrap()
        .type_str(crate::serve::TOKEN)
        .await
        .unwrap();
    page.find_element("#sign-in")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let html = until(&page, |h| h.contains("id=\"job-people\"")).await;
    assert!(
        html.contains("id=\"job-people\""),
        "the dashboard loads: {html}"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let shot = |p: chromiumoxide::Page, name: &'static str| {
        let path = shots.join(name);
        async move {
            p.save_screenshot(
                chromiumoxide::page::ScreenshotParams::builder()
                    .full_page(true)
                    .build(),
                &path,
            )
            .await
            .unwrap();
            assert!(
                std::fs::metadata(&path).unwrap().len() > 1000,
                "{}",
                path.display()
            );
        }
    };
    shot(page.clone(), "console-dashboard.png").await;

    // The conflict page: take a's value by clicking.
    page.goto(format!("{base}/console/conflicts"))
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    let html = page.content().await.unwrap();
    assert!(html.contains("Lyon") && html.contains("Nice"), "{html}");
    shot(page.clone(), "console-conflicts.png").await;
    page.find_element("button.take[data-system=\"a.people.jsonl\"]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let html = until(&page, |h| h.contains("id=\"no-conflicts\"")).await;
    assert!(html.contains("id=\"no-conflicts\""), "resolved: {html}");
    // The pass the resolution queued writes it everywhere.
    let b = dir.path().join("b/people.jsonl");
    for _ in 0..200 {
        if read_city(&b) == "Lyon" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(read_city(&b), "Lyon");
    assert_eq!(read_city(&dir.path().join("a/people.jsonl")), "Lyon");
    browser.close().await.unwrap();
    let _ = browser.wait().await;
    driver.abort();
    started.stop().await;
}
