//! Every recorded Salesforce response under ../shared/fixtures/salesforce/ is parsed by the
//! connector's own parsing code, and the sandbox answers in the same shapes.

use concord::connector::salesforce::read::to_value;
use concord::connector::salesforce::{parse_describe, parse_error};
use serde_json::Value as J;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/salesforce")
}

fn all_fixtures() -> Vec<(String, J)> {
    let mut out = Vec::new();
    let mut stack = vec![dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p).unwrap();
                let name = p.strip_prefix(dir()).unwrap().display().to_string();
                // The empty upsert body stands for a 204 No Content.
                let j = if text.trim().is_empty() {
                    J::Null
                } else {
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
                };
                out.push((name, j));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Converts every field of every record the way the connector reads it (types guessed from the
/// JSON, as describe would give them), following nested parent and child records.
fn walk_records(name: &str, j: &J, n: &mut usize) {
    for rec in j.get("records").and_then(J::as_array).into_iter().flatten() {
        assert!(
            rec.get("attributes").and_then(|a| a.get("type")).is_some(),
            "{name}: record without attributes.type: {rec}"
        );
        *n += 1;
        for (k, v) in rec.as_object().unwrap() {
            if k == "attributes" {
                continue;
            }
            if v.get("records").is_some() {
                walk_records(name, v, n);
                continue;
            }
            if v.get("attributes").is_some() {
                continue; // a parent record
            }
            let ty = match v {
                J::Bool(_) => "boolean",
                J::Number(_) => "double",
                J::String(s) if s.len() == 10 && s.as_bytes()[4] == b'-' => "date",
                J::String(s) if s.len() > 19 && s.as_bytes().get(10) == Some(&b'T') => "datetime",
                _ => "string",
            };
            if !v.is_null() {
                assert!(
                    to_value(ty, v).is_some(),
                    "{k}: {v} did not convert as {ty}"
                );
            }
        }
    }
}

#[test]
fn every_recorded_response_parses() {
    let fixtures = all_fixtures();
    assert!(fixtures.len() >= 38, "fixtures found: {}", fixtures.len());
    let (mut records, mut errors, mut checked) = (0usize, 0usize, 0usize);
    for (name, j) in &fixtures {
        checked += 1;
        if name.contains("upsert_multiple") {
            // 300 Multiple Choices: the URLs of the matching records (the sandbox answers alike).
            assert!(
                j.as_array()
                    .unwrap()
                    .iter()
                    .all(|u| u.as_str().is_some_and(|s| s.contains("/sobjects/"))),
                "{name}"
            );
        } else if name.contains("error") || name.contains("expired") {
            let (code, _) = parse_error(j).unwrap_or_else(|| panic!("{name}: not an error body"));
            assert!(!code.is_empty(), "{name}");
            errors += 1;
        } else if name.ends_with("sobject_describe_success_response.json") {
            let fields = parse_describe(j);
            assert!(fields.len() > 10, "{name}");
            assert!(fields
                .iter()
                .any(|f| f.name == "Id" && f.ty == "id" && !f.createable));
        } else if name.contains("list_view") {
            // List views answer rows of columns, not sObject records.
            for r in j["records"].as_array().unwrap() {
                assert!(r["columns"].is_array(), "{name}");
            }
        } else if name.contains("query") || name.contains("sobject_select") {
            walk_records(name, j, &mut records);
            assert!(
                j.get("totalSize").is_some()
                    || j.get("records").is_some()
                    || j.get("size").is_some()
                    || j.get("attributes").is_some(),
                "{name}"
            );
            if name.contains("paginated_first") {
                assert!(
                    j["nextRecordsUrl"].as_str().unwrap().contains("/query/"),
                    "{name}"
                );
                assert_eq!(j["done"], false);
            }
        } else if name.contains("get_updated") {
            assert!(
                j["ids"].as_array().is_some() && j["latestDateCovered"].as_str().is_some(),
                "{name}"
            );
        } else if name.contains("get_deleted") {
            for d in j["deletedRecords"].as_array().unwrap() {
                assert!(
                    d["id"].is_string() && d["deletedDate"].is_string(),
                    "{name}"
                );
            }
        } else if name.contains("composite_response") {
            for r in j["compositeResponse"].as_array().unwrap() {
                assert!(
                    r["httpStatusCode"].is_u64() && r["referenceId"].is_string(),
                    "{name}"
                );
            }
        } else if name.ends_with("limits.json") {
            assert!(j["DailyApiRequests"]["Max"].is_u64(), "{name}");
        } else if name.contains("auth_success")
            || name.contains("refresh_success")
            || name.contains("reauth")
        {
            assert!(
                j["access_token"].is_string() && j["instance_url"].is_string(),
                "{name}"
            );
        }
    }
    assert!(
        records >= 5 && errors >= 8,
        "records {records}, errors {errors}, files {checked}"
    );
}
