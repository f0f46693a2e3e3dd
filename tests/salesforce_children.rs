//! Child records read with their parent (`children` on a Salesforce side): parent-to-child
//! subqueries, child results paged past the first 200 followed to their end, child-only edits
//! and deletes found by the next incremental read (they do not touch the parent's
//! SystemModstamp), fetch by id with children, child lists refused on writes, and a job that
//! maps an Account's Contacts into a JSONL file.

use crate::sf_common::{read_all, sandbox};
use concord::connector::salesforce::{SalesforceChild, SalesforceConnector, SalesforceSide};
use concord::connector::{Change, Connector, WriteBase, WriteErrorKind, WriteOp, WriteResult};
use concord::model::{EntityId, Fields, Key, SystemId, Value};
use serde_json::{json, Value as J};

fn contacts() -> SalesforceChild {
    SalesforceChild {
        relationship: "Contacts".into(),
        fields: vec!["LastName".into(), "Email".into()],
    }
}

fn fields(v: serde_json::Value) -> serde_json::Map<String, J> {
    v.as_object().unwrap().clone()
}

/// The newest change read for `key` (a read may see one record more than once).
fn last<'a>(changes: &'a [Change], key: &str) -> &'a Change {
    changes
        .iter()
        .rev()
        .find(|c| c.key.as_str() == key)
        .unwrap_or_else(|| panic!("{key} not read"))
}

fn kids(ch: &Change) -> Vec<J> {
    match ch.fields.as_ref().and_then(|f| f.get("Contacts")) {
        Some(Value::Json(J::Array(a))) => a.clone(),
        other => panic!("no Contacts list: {other:?}"),
    }
}

#[tokio::test]
async fn children_come_with_their_parent_and_child_edits_reach_it() {
    let (sb, mut cfg) = sandbox().await;
    cfg.children = vec![contacts()];
    let (a, b, quiet) = {
        let mut org = sb.org.lock().unwrap();
        // Made an hour ago, in one whole second as Salesforce stamps (no milliseconds): the
        // parents lie wholly before the next read's start, so only their children's changes
        // can bring them back.
        let hour_ago = (concord::model::Timestamp::now().millis() - 3_600_000) / 1000 * 1000;
        org.frozen_ms = Some(hour_ago);
        let a = org
            .create("Account", &fields(json!({"Name": "A"})))
            .unwrap();
        let b = org
            .create("Account", &fields(json!({"Name": "B"})))
            .unwrap();
        let quiet = org
            .create("Account", &fields(json!({"Name": "Q"})))
            .unwrap();
        // 250 contacts: more than one subquery batch (200), the rest behind nextRecordsUrl.
        for i in 0..250 {
            org.create(
                "Contact",
                &fields(json!({"LastName": format!("L{i:03}"), "Email": format!("l{i}@a.example"), "AccountId": a})),
            )
            .unwrap();
        }
        org.create(
            "Contact",
            &fields(json!({"LastName": "Solo", "AccountId": b})),
        )
        .unwrap();
        org.frozen_ms = None;
        (a, b, quiet)
    };
    let c = SalesforceConnector::connect(SystemId::new("sf").unwrap(), cfg)
        .await
        .unwrap();
    assert_eq!(c.children()[0].object, "Contact");
    assert_eq!(c.children()[0].parent_field, "AccountId");
    let before = sb.counters();
    let (changes, cursor) = read_all(&c, None).await;
    let after = sb.counters();
    let a_kids = kids(last(&changes, &a));
    assert_eq!(a_kids.len(), 250, "every child, past the first batch");
    let mut ids: Vec<&str> = a_kids.iter().map(|k| k["Id"].as_str().unwrap()).collect();
    let unsorted = ids.clone();
    ids.sort();
    assert_eq!(ids, unsorted, "ordered by Id");
    assert_eq!(
        a_kids[0].as_object().unwrap().len(),
        3,
        "Id, LastName, Email"
    );
    assert_eq!(kids(last(&changes, &b))[0]["LastName"], "Solo");
    assert_eq!(kids(last(&changes, &b))[0]["Email"], J::Null);
    assert!(kids(last(&changes, &quiet)).is_empty());
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(delta("query.more"), 1, "A's children past the first 200");

    // A child edited, another deleted: neither touches its parent's SystemModstamp, and the
    // next incremental read still brings both parents back with their new lists.
    let (edited, solo) = {
        let mut org = sb.org.lock().unwrap();
        let edited = a_kids[7]["Id"].as_str().unwrap().to_string();
        org.update(
            "Contact",
            &edited,
            &fields(json!({"Email": "new@a.example"})),
        )
        .unwrap();
        let solo = kids(last(&changes, &b))[0]["Id"]
            .as_str()
            .unwrap()
            .to_string();
        org.delete("Contact", &solo).unwrap();
        (edited, solo)
    };
    let (changes, cursor) = read_all(&c, cursor).await;
    let mut read: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    read.sort();
    read.dedup();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(
        read, want,
        "the parents of the changed children, and only they"
    );
    let a_now = kids(last(&changes, &a));
    let e = a_now.iter().find(|k| k["Id"] == json!(edited)).unwrap();
    assert_eq!(e["Email"], "new@a.example");
    assert_eq!(a_now.len(), 250);
    let b_now = kids(last(&changes, &b));
    assert!(
        b_now.iter().all(|k| k["Id"] != json!(solo)),
        "the deleted child left its parent's list"
    );

    // A new child: its parent comes back with it.
    sb.org
        .lock()
        .unwrap()
        .create(
            "Contact",
            &fields(json!({"LastName": "New", "AccountId": quiet})),
        )
        .unwrap();
    let (changes, _) = read_all(&c, cursor).await;
    assert_eq!(kids(last(&changes, &quiet))[0]["LastName"], "New");

    // Fetch by id carries the children (by a query: collections retrieve takes no subquery).
    let got = c.fetch(&[Key::new(a.clone())]).await.unwrap();
    assert_eq!(kids(&got[0]).len(), 250);
}

#[tokio::test]
async fn child_lists_are_never_written_through_the_parent() {
    let (sb, mut cfg) = sandbox().await;
    cfg.children = vec![contacts()];
    let id = sb
        .org
        .lock()
        .unwrap()
        .create("Account", &fields(json!({"Name": "A"})))
        .unwrap();
    let c = SalesforceConnector::connect(SystemId::new("sf").unwrap(), cfg)
        .await
        .unwrap();
    let sys = SystemId::new("erp").unwrap();
    let list = |n: &str| Value::Json(json!([{"Id": "003000000000001AAA", "LastName": n}]));
    let base = WriteBase {
        fields: Fields::new()
            .with("Name", "A")
            .with("Contacts", Value::Json(json!([]))),
        modstamp: None,
    };
    let res = c
        .write(vec![
            // A changed child list: refused, nothing written.
            WriteOp::Update {
                entity: EntityId::derive(&sys, "1"),
                key: Key::new(id.clone()),
                fields: Fields::new().with("Name", "A2").with("Contacts", list("X")),
                base: base.clone(),
            },
            // The same list as the base: the rest is written.
            WriteOp::Update {
                entity: EntityId::derive(&sys, "1"),
                key: Key::new(id.clone()),
                fields: Fields::new()
                    .with("Name", "A3")
                    .with("Contacts", Value::Json(json!([]))),
                base: base.clone(),
            },
            // A create with children: refused; one without: made.
            WriteOp::Upsert {
                entity: EntityId::derive(&sys, "2"),
                key: None,
                fields: Fields::new().with("Name", "B").with("Contacts", list("Y")),
            },
            WriteOp::Upsert {
                entity: EntityId::derive(&sys, "3"),
                key: None,
                fields: Fields::new().with("Name", "C"),
            },
        ])
        .await
        .unwrap();
    match &res[0] {
        WriteResult::Err { kind, message } => {
            assert_eq!(*kind, WriteErrorKind::Rejected);
            assert!(
                message.contains("Contacts are child records of Account"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(res[1], WriteResult::Ok { .. }), "{:?}", res[1]);
    assert!(matches!(
        res[2],
        WriteResult::Err {
            kind: WriteErrorKind::Rejected,
            ..
        }
    ));
    assert!(matches!(res[3], WriteResult::Ok { .. }), "{:?}", res[3]);
    let names: Vec<J> = crate::sf_common::soql(&sb, "SELECT Name FROM Account ORDER BY Name")
        .into_iter()
        .map(|r| r["Name"].clone())
        .collect();
    assert_eq!(names, [json!("A3"), json!("C")]);
    assert_eq!(crate::sf_common::count(&sb, "Contact"), 0);
}

#[tokio::test]
async fn children_are_configured_by_relationship_and_checked_against_describe() {
    let side: SalesforceSide = toml::from_str(
        "object = \"Account\"\n[[children]]\nrelationship = \"Contacts\"\nfields = [\"LastName\"]\n",
    )
    .unwrap();
    assert_eq!(side.children[0].relationship, "Contacts");
    let bad = toml::from_str::<SalesforceSide>(
        "object = \"Account\"\n[[children]]\nrelationship = \"Contacts\"\nfield = [\"LastName\"]\n",
    )
    .unwrap_err();
    assert!(bad.to_string().contains("unknown field `field`"), "{bad}");
    // The mapping names the list as a native field; it is not a field of the object.
    let system: concord::connector::salesforce::SalesforceSystem =
        toml::from_str("instance_url_env = \"X\"").unwrap();
    let cfg = concord::connector::salesforce::SalesforceConfig::from_parts(
        &system,
        &side,
        vec!["Name".into(), "Contacts".into()],
        std::path::Path::new("."),
    );
    assert_eq!(cfg.fields, Some(vec!["Name".to_string()]));

    let (_sb, mut cfg) = sandbox().await;
    cfg.children = vec![SalesforceChild {
        relationship: "Nopes".into(),
        fields: vec![],
    }];
    let e = SalesforceConnector::connect(SystemId::new("sf").unwrap(), cfg.clone())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("child relationship Nopes not found"),
        "{e}"
    );
    cfg.children = vec![SalesforceChild {
        relationship: "contacts".into(),
        fields: vec!["Nope__c".into()],
    }];
    let e = SalesforceConnector::connect(SystemId::new("sf").unwrap(), cfg)
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("field Nope__c not found in describe of Contact"),
        "{e}"
    );
}

/// A broadcast job maps an Account's Contacts into a JSONL file: the list lands as a nested
/// JSON value, and a contact's edit alone reaches the file on the next pass.
#[tokio::test]
async fn a_job_maps_children_into_another_system() {
    let (sb, sf) = sandbox().await;
    let (sf_url, sf_tok) = (sf.instance_url_env.clone(), sf.token_env.clone().unwrap());
    let kid = {
        let mut org = sb.org.lock().unwrap();
        let acme = org
            .create("Account", &fields(json!({"Name": "Acme"})))
            .unwrap();
        org.create(
            "Contact",
            &fields(json!({"LastName": "Doe", "Email": "doe@acme.example", "AccountId": acme})),
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concord.toml");
    let text = format!(
        r#"
[store]
dir = "state"

[systems.crm]
type = "salesforce"
instance_url_env = "{sf_url}"
token_env = "{sf_tok}"

[systems.lake]
type = "jsonl"
dir = "lake"

[jobs.accounts]
pattern = "broadcast"
systems = ["crm", "lake"]

[jobs.accounts.sides.crm]
object = "Account"
[[jobs.accounts.sides.crm.children]]
relationship = "Contacts"
fields = ["LastName", "Email"]
[jobs.accounts.sides.crm.fields]
name = "Name"
contacts = "Contacts"

[jobs.accounts.sides.lake]
file = "accounts.jsonl"
key = ["id"]
[jobs.accounts.sides.lake.fields]
name = "name"
contacts = "contacts"
"#
    );
    std::fs::create_dir_all(dir.path().join("lake")).unwrap();
    std::fs::write(&path, &text).unwrap();
    let cfg = concord::config::Config::parse(&text, &path).unwrap();
    let store = concord::store::SledStore::open(dir.path().join("state")).unwrap();
    let state = concord::store::StateStore::open(
        std::sync::Arc::new(store),
        concord::model::InstanceId::new("main").unwrap(),
    )
    .unwrap();
    let pass = || async {
        let job = concord::engine::build::build_job(&cfg, "accounts", &state, false)
            .await
            .unwrap();
        let r = concord::engine::Engine::new(state.clone())
            .sync(&job, None)
            .await
            .unwrap();
        assert!(r.errors.is_empty(), "{r:?}");
        r
    };
    let lake = || -> Vec<J> {
        std::fs::read_to_string(dir.path().join("lake/accounts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    pass().await;
    let rows = lake();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "Acme");
    assert_eq!(
        rows[0]["contacts"],
        json!([{"Id": kid, "LastName": "Doe", "Email": "doe@acme.example"}])
    );
    // Only the contact changes (the Account's SystemModstamp does not): the file follows.
    sb.org
        .lock()
        .unwrap()
        .update(
            "Contact",
            &kid,
            &fields(json!({"Email": "jd@acme.example"})),
        )
        .unwrap();
    let r = pass().await;
    assert_eq!(
        r.written.get("lake.accounts.jsonl").copied(),
        Some(1),
        "{r:?}"
    );
    assert_eq!(lake()[0]["contacts"][0]["Email"], "jd@acme.example");
    // Nothing changed: nothing written.
    let r = pass().await;
    assert_eq!(r.written.values().sum::<u64>(), 0, "{r:?}");
}
