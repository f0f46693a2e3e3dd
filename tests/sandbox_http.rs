//! The sandbox over real HTTP (reqwest), checked against the shapes of recorded Salesforce
//! responses in ../shared/fixtures/salesforce/.

use concord::sandbox::server::{Sandbox, Settings};
use serde_json::{json, Value as J};
use std::sync::Arc;

const TOKEN: &str = "00Dsandbox!test-token";

async fn start(limit: u64) -> (String, Arc<Sandbox>) {
    crate::sf_common::serve_in_process(
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Erp_Id__c\"\ntype = \"string\"\nexternal_id = true\n",
        Settings {
            token: TOKEN.into(),
            daily_limit: limit,
            ..Default::default()
        },
    )
    .await
}

fn fixture(name: &str) -> J {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/salesforce")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn keys(j: &J) -> Vec<String> {
    let mut k: Vec<String> = j.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn rest_crud_query_paging_limits_and_errors() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");

    // Versions and OAuth.
    let v: J = c
        .get(format!("{base}/services/data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys(&v[0]),
        keys(&fixture("restforce/services_data_success_response.json")[0])
    );
    let tok: J = c
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "concord-sandbox"),
            ("client_secret", "concord-sandbox-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let minted = tok["access_token"].as_str().unwrap().to_string();
    assert_ne!(minted, TOKEN, "each grant issues its own session");
    let r = c
        .get(format!("{api}/limits"))
        .bearer_auth(&minted)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the issued token is a valid session");
    for k in keys(&fixture("restforce/auth_success_response.json")) {
        assert!(tok.get(&k).is_some(), "token response lacks {k}");
    }

    // No token: 401 in Salesforce's error form.
    let r = c.get(format!("{api}/sobjects")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: J = r.json().await.unwrap();
    assert_eq!(body, fixture("restforce/expired_session_response.json").as_array().map(|a| json!([{"message": "Session expired or invalid", "errorCode": a[0]["errorCode"]}])).unwrap());

    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    // Create, retrieve with ?fields=, update, delete.
    let r = auth(c.post(format!("{api}/sobjects/Account")))
        .json(&json!({"Name": "Acme", "Erp_Id__c": "E1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers()["sforce-limit-info"]
        .to_str()
        .unwrap()
        .starts_with("api-usage="));
    let created: J = r.json().await.unwrap();
    assert_eq!(
        keys(&created),
        keys(&fixture("restforce/sobject/create_success_response.json"))
    );
    let id = created["id"].as_str().unwrap().to_string();
    let rec: J = auth(c.get(format!(
        "{api}/sobjects/Account/{}?fields=Name,Erp_Id__c",
        &id[..15]
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(rec["Name"], "Acme");
    assert_eq!(rec["attributes"]["type"], "Account");
    let r = auth(c.patch(format!("{api}/sobjects/Account/{id}")))
        .json(&json!({"Phone": "555"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = auth(c.post(format!("{api}/sobjects/Account")))
        .json(&json!({"Phone": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(keys(&e[0]), {
        let mut k = keys(&fixture("restforce/sobject/write_error_response.json")[0]);
        if !k.contains(&"fields".to_string()) {
            k.push("fields".into());
            k.sort();
        }
        k
    });

    // Upsert by external id: 201 then 200.
    let r = auth(c.patch(format!("{api}/sobjects/Account/Erp_Id__c/E2")))
        .json(&json!({"Name": "Beta"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = auth(c.patch(format!("{api}/sobjects/Account/Erp_Id__c/E2")))
        .json(&json!({"Phone": "9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Query paging: 450 records, batchSize 200 → 3 pages, nextRecordsUrl like Salesforce's.
    for i in 0..448 {
        let r = auth(c.post(format!("{api}/sobjects/Account")))
            .json(&json!({"Name": format!("Bulk {i:03}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let q = "SELECT Id, Name FROM Account ORDER BY Name";
    let first: J = auth(c.get(format!("{api}/query")).query(&[("q", q)]))
        .header("Sforce-Query-Options", "batchSize=200")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys(&first),
        keys(&fixture(
            "restforce/sobject/query_paginated_first_page_response.json"
        ))
    );
    assert_eq!(first["totalSize"], 450);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 200);
    let mut next = first["nextRecordsUrl"].as_str().unwrap().to_string();
    let mut seen = 200;
    let page = |next: String| {
        let r = auth(c.get(format!("{base}{next}")));
        async move { r.send().await.unwrap().json::<J>().await.unwrap() }
    };
    loop {
        let p = page(next.clone()).await;
        // A page asked for again (a retry after a lost answer) is the same page, and the
        // cursor goes on from it.
        assert_eq!(page(next.clone()).await, p, "{next} again");
        seen += p["records"].as_array().unwrap().len();
        if p["done"] == true {
            assert!(p.get("nextRecordsUrl").is_none());
            break;
        }
        next = p["nextRecordsUrl"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, 450);
    let bad = auth(c.get(format!("{api}/query/01g000000000999-200")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: J = bad.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_QUERY_LOCATOR");

    // Delete: gone from query, present in queryAll with IsDeleted.
    let r = auth(c.delete(format!("{api}/sobjects/Account/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let count: J = auth(
        c.get(format!("{api}/query"))
            .query(&[("q", "SELECT COUNT() FROM Account")]),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(count["totalSize"], 449);
    let all: J = auth(
        c.get(format!("{api}/queryAll"))
            .query(&[("q", "SELECT Id FROM Account WHERE IsDeleted = true")]),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(all["totalSize"], 1);
    let r = auth(c.get(format!("{api}/sobjects/Account/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let now = chrono::Utc::now();
    let window = [
        ("start", (now - chrono::Duration::hours(1)).to_rfc3339()),
        ("end", (now + chrono::Duration::hours(1)).to_rfc3339()),
    ];
    let del: J = auth(
        c.get(format!("{api}/sobjects/Account/deleted/"))
            .query(&window),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        keys(&del),
        keys(&fixture(
            "restforce/sobject/get_deleted_success_response.json"
        ))
    );
    assert_eq!(del["deletedRecords"][0]["id"], id);
    let upd: J = auth(
        c.get(format!("{api}/sobjects/Account/updated/"))
            .query(&window),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        keys(&upd),
        keys(&fixture(
            "restforce/sobject/get_updated_success_response.json"
        ))
    );
    assert_eq!(upd["ids"].as_array().unwrap().len(), 449);

    // Malformed query, describe, limits.
    let r = auth(
        c.get(format!("{api}/query"))
            .query(&[("q", "SELEKT Id FROM Account")]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "MALFORMED_QUERY");
    let d: J = auth(c.get(format!("{api}/sobjects/Contact/describe")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["keyPrefix"], "003");
    let l: J = auth(c.get(format!("{api}/limits")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l["DailyApiRequests"]["Max"], 10_000);

    // The admin counters count exactly.
    let counters = sb.counters();
    assert_eq!(counters["sobject.create"], 450);
    assert_eq!(counters["query.more"], 2 * 2 + 1); // each page twice, the bad locator
}

#[tokio::test]
async fn records_by_external_id_get_and_delete() {
    let (base, _sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    for (name, ext) in [("Alpha", "E1"), ("Beta", "DUP"), ("Gamma", "DUP")] {
        let r = auth(c.post(format!("{api}/sobjects/Account")))
            .json(&json!({"Name": name, "Erp_Id__c": ext, "Phone": "5"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // GET by external id: the whole record, as retrieve by Id answers it; `fields` narrows it.
    let r = auth(c.get(format!("{api}/sobjects/Account/Erp_Id__c/E1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec: J = r.json().await.unwrap();
    assert_eq!(rec["Name"], "Alpha");
    assert_eq!(rec["attributes"]["type"], "Account");
    let id = rec["Id"].as_str().unwrap().to_string();
    let by_id: J = auth(c.get(format!("{api}/sobjects/Account/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rec, by_id);
    let narrow: J = auth(c.get(format!("{api}/sobjects/Account/Erp_Id__c/e1")))
        .query(&[("fields", "Name,Phone")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        narrow["Name"], "Alpha",
        "external ids compare case-insensitively"
    );
    assert_eq!(narrow["Phone"], "5");
    assert!(narrow.get("Erp_Id__c").is_none(), "{narrow}");

    // None: 404 with the error array; a field that is no external id: 400.
    let r = auth(c.get(format!("{api}/sobjects/Account/Erp_Id__c/NOPE")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "NOT_FOUND");
    let r = auth(c.get(format!("{api}/sobjects/Account/Name/Alpha")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Two records share it: 300 with both URLs, for GET and DELETE; nothing deleted.
    for m in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = auth(c.request(m, format!("{api}/sobjects/Account/Erp_Id__c/DUP")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 300);
        let urls: Vec<String> = r.json().await.unwrap();
        assert_eq!(urls.len(), 2);
        assert!(urls
            .iter()
            .all(|u| u.starts_with("/services/data/v59.0/sobjects/Account/001")));
    }
    let q: J = auth(
        c.get(format!("{api}/query"))
            .query(&[("q", "SELECT Id FROM Account WHERE Erp_Id__c = 'DUP'")]),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(q["totalSize"], 2);

    // DELETE by external id: 204, then the record is gone (404 by either path).
    let r = auth(c.delete(format!("{api}/sobjects/Account/Erp_Id__c/E1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for url in [
        format!("{api}/sobjects/Account/Erp_Id__c/E1"),
        format!("{api}/sobjects/Account/{id}"),
    ] {
        let r = auth(c.get(url)).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = auth(c.delete(format!("{api}/sobjects/Account/Erp_Id__c/E1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn api_versions_served_retired_and_per_resource() {
    let (base, _sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let get = |path: String| c.get(format!("{base}{path}")).bearer_auth(TOKEN).send();

    // The org's range, 31.0 to the current version, each with its release's label.
    let v: Vec<J> = get("/services/data".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = v.iter().map(|x| x["version"].as_str().unwrap()).collect();
    let want: Vec<String> = (31..=concord::sandbox::server::CURRENT_API_VERSION)
        .map(|n| format!("{n}.0"))
        .collect();
    assert_eq!(listed, want);
    let label = |ver: &str| {
        v.iter().find(|x| x["version"] == ver).unwrap()["label"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(label("31.0"), "Summer '14");
    assert_eq!(label("50.0"), "Winter '21");
    assert_eq!(label("62.0"), "Winter '25");
    assert_eq!(label("66.0"), "Spring '26");
    assert_eq!(v[0]["url"], "/services/data/v31.0");

    // Every served version answers alike: jsforce's default 50.0, the oldest, the newest.
    for ver in ["31.0", "50.0", "59.0", &want[want.len() - 1]] {
        let r = get(format!("/services/data/v{ver}/sobjects/Account/describe"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "v{ver}");
        let r = get(format!(
            "/services/data/v{ver}/query?q=SELECT+Id+FROM+Account"
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "v{ver}");
    }
    // Retired versions are gone (410, the error array); versions not yet released, and
    // malformed ones, are not found.
    for ver in ["30.0", "21.0", "7.0"] {
        let r = get(format!("/services/data/v{ver}/sobjects"))
            .await
            .unwrap();
        assert_eq!(r.status(), 410, "v{ver}");
        let e: J = r.json().await.unwrap();
        assert_eq!(e[0]["errorCode"], "GONE");
    }
    let next = concord::sandbox::server::CURRENT_API_VERSION + 1;
    for ver in [
        format!("{next}.0"),
        "62.5".into(),
        "62".into(),
        "abc".into(),
    ] {
        let r = get(format!("/services/data/v{ver}/sobjects"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "v{ver}");
        let e: J = r.json().await.unwrap();
        assert_eq!(e[0]["errorCode"], "NOT_FOUND");
    }
    // A resource newer than the version is not there: Bulk API 2.0 ingest came with 41.0, its
    // query with 47.0, sObject Collections with 42.0 and their upsert with 46.0.
    for (path, since) in [
        ("jobs/ingest", 41),
        ("jobs/query", 47),
        (
            "composite/sobjects/Account?ids=001000000000000AAA&fields=Id",
            42,
        ),
    ] {
        let r = get(format!("/services/data/v{}.0/{path}", since - 1))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path} before {since}.0");
        let r = get(format!("/services/data/v{since}.0/{path}"))
            .await
            .unwrap();
        assert_ne!(r.status(), 404, "{path} in {since}.0");
    }
    let r = c
        .patch(format!(
            "{base}/services/data/v45.0/composite/sobjects/Account/Erp_Id__c"
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"allOrNone": false, "records": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn api_versions_are_a_setting() {
    let (base, _sb) = crate::sf_common::serve_in_process(
        "",
        Settings {
            token: TOKEN.into(),
            versions: "41.0-55.0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let v: Vec<J> = c
        .get(format!("{base}/services/data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v.len(), 15);
    assert_eq!(v[0]["version"], "41.0");
    assert_eq!(v[14]["version"], "55.0");
    for (ver, status) in [("40.0", 410), ("41.0", 200), ("55.0", 200), ("56.0", 404)] {
        let r = c
            .get(format!("{base}/services/data/v{ver}/limits"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "v{ver}");
    }
    for bad in ["55.0-41.0", "x-55.0", "41.5-55.0", ""] {
        assert!(
            bad.parse::<concord::sandbox::server::ApiVersions>()
                .is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        "31-67"
            .parse::<concord::sandbox::server::ApiVersions>()
            .unwrap()
            .to_string(),
        "31.0-67.0"
    );
}

#[tokio::test]
async fn sobject_collections_retrieve_get_and_post() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    let mut ids = Vec::new();
    for i in 0..5 {
        let r: J = auth(c.post(format!("{api}/sobjects/Account")))
            .json(&json!({"Name": format!("R{i}"), "Phone": format!("{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let r = auth(c.delete(format!("{api}/sobjects/Account/{}", ids[4])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let contact: J = auth(c.post(format!("{api}/sobjects/Contact")))
        .json(&json!({"LastName": "C"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before = sb.counters().get("composite.sobjects.retrieve").copied();

    // GET: in the order of the ids, 15-character ids too, field names case-insensitive; null
    // for a deleted record, an unknown id, another object's id and a malformed id.
    let asked = [
        ids[2].clone(),
        ids[0][..15].to_string(),
        ids[4].clone(),
        "001000000000000AAA".into(),
        contact["id"].as_str().unwrap().to_string(),
        "nonsense".into(),
    ];
    let r = auth(c.get(format!("{api}/composite/sobjects/Account")))
        .query(&[("ids", asked.join(",")), ("fields", "id,name,PHONE".into())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Vec<J> = r.json().await.unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0]["Id"], ids[2].as_str());
    assert_eq!(got[0]["Name"], "R2");
    assert_eq!(got[0]["Phone"], "2");
    assert_eq!(
        got[0]["attributes"],
        json!({"type": "Account", "url": format!("/services/data/v59.0/sobjects/Account/{}", ids[2])})
    );
    assert_eq!(keys(&got[0]), ["Id", "Name", "Phone", "attributes"]);
    assert_eq!(
        got[1]["Id"],
        ids[0].as_str(),
        "a 15-character id finds its record"
    );
    assert!(got[2..].iter().all(J::is_null), "{got:?}");
    assert_eq!(
        sb.counters().get("composite.sobjects.retrieve").copied(),
        Some(before.unwrap_or(0) + 1),
        "one API call"
    );

    // POST: the same with a body, for more ids than a URL holds.
    let got: Vec<J> = auth(c.post(format!("{api}/composite/sobjects/Account")))
        .json(&json!({"ids": [ids[1], ids[3]], "fields": ["Name"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got[0]["Name"], "R1");
    assert_eq!(got[1]["Name"], "R3");
    assert!(got[1].get("Phone").is_none());

    // An unknown field fails the call (400 INVALID_FIELD), found records or not; ids and fields
    // are required; more than 2 000 ids is EXCEEDED_ID_LIMIT; an unknown object NOT_FOUND.
    for ask in [&ids[0], "001000000000000AAA"] {
        let r = auth(c.get(format!("{api}/composite/sobjects/Account")))
            .query(&[("ids", ask), ("fields", "Name,Nope__c")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let e: J = r.json().await.unwrap();
        assert_eq!(e[0]["errorCode"], "INVALID_FIELD");
    }
    for q in [vec![("ids", ids[0].as_str())], vec![("fields", "Name")]] {
        let r = auth(c.get(format!("{api}/composite/sobjects/Account")))
            .query(&q)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let e: J = r.json().await.unwrap();
        assert_eq!(e[0]["errorCode"], "MISSING_ARGUMENT");
    }
    let too_many: Vec<String> = (0..2001).map(|_| ids[0].clone()).collect();
    let r = auth(c.post(format!("{api}/composite/sobjects/Account")))
        .json(&json!({"ids": too_many, "fields": ["Name"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    let r = auth(c.get(format!("{api}/composite/sobjects/Nope__c")))
        .query(&[("ids", ids[0].as_str()), ("fields", "Name")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn resources_identity_revoke_limits_and_error_bodies() {
    let (base, _sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    let json = |r: reqwest::Response| async move { r.json::<J>().await.unwrap() };

    // The version root lists the resources served, the identity URL among them.
    let root = json(auth(c.get(&api)).send().await.unwrap()).await;
    for k in [
        "sobjects",
        "query",
        "queryAll",
        "composite",
        "limits",
        "recent",
        "jobs",
    ] {
        assert_eq!(root[k], format!("/services/data/v59.0/{k}"), "{root}");
    }
    let id_url = root["identity"].as_str().unwrap().to_string();
    assert!(id_url.starts_with(&format!("{base}/id/00D")), "{id_url}");
    let old = json(
        auth(c.get(format!("{base}/services/data/v40.0")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        old.get("jobs").is_none(),
        "Bulk API 2.0 came with 41.0: {old}"
    );
    assert_eq!(c.get(&api).send().await.unwrap().status(), 401);

    // Basic information: the describeGlobal entry and the recent items, newest first.
    let mut made = Vec::new();
    for name in ["First", "Second", "Third"] {
        let r = json(
            auth(c.post(format!("{api}/sobjects/Account")))
                .json(&json!({"Name": name}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        made.push(r["id"].as_str().unwrap().to_string());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let info = json(
        auth(c.get(format!("{api}/sobjects/Account")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let global = json(auth(c.get(format!("{api}/sobjects"))).send().await.unwrap()).await;
    let entry = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "Account")
        .unwrap()
        .clone();
    assert_eq!(info["objectDescribe"], entry);
    let recent = info["recentItems"].as_array().unwrap();
    assert_eq!(recent[0]["Id"], made[2].as_str());
    assert_eq!(recent[0]["Name"], "Third");
    assert_eq!(recent[2]["Name"], "First");
    assert_eq!(recent[0]["attributes"]["type"], "Account");
    assert_eq!(
        keys(&recent[0]),
        keys(&fixture("restforce/sobject/recent_success_response.json")[0])
    );
    let across = json(
        auth(c.get(format!("{api}/recent?limit=2")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(across.as_array().unwrap().len(), 2);
    assert_eq!(across[0]["Id"], made[2].as_str());

    // Unknown resources, methods a resource does not take, bodies that do not parse: the
    // error array, never an empty body.
    let r = auth(c.get(format!("{api}/nope/thing")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json(r).await[0]["errorCode"], "NOT_FOUND");
    let r = auth(c.put(format!("{api}/sobjects/Account/{}", made[0])))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(
        allow.contains("PATCH") && allow.contains("DELETE"),
        "{allow}"
    );
    let e = json(r).await;
    assert_eq!(e[0]["errorCode"], "METHOD_NOT_ALLOWED");
    assert!(e[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("HTTP Method 'PUT' not allowed"));
    let r = auth(c.post(format!("{api}/sobjects/Account")))
        .header("content-type", "application/json")
        .body("{\"Name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await[0]["errorCode"], "JSON_PARSER_ERROR");
    let r = auth(c.post(format!("{api}/composite/sobjects")))
        .json(&json!({"allOrNone": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a body missing `records`");
    assert_eq!(json(r).await[0]["errorCode"], "JSON_PARSER_ERROR");
    let r = auth(c.post(format!("{api}/sobjects/Account")))
        .body("Name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(json(r).await[0]["errorCode"], "UNSUPPORTED_MEDIA_TYPE");

    // Limits: every key an org reports, each with Max and Remaining; usage tracked.
    let lim = json(auth(c.get(format!("{api}/limits"))).send().await.unwrap()).await;
    let org_keys = keys(&fixture("apache-camel/limits.json"));
    for k in org_keys.iter().chain(
        [
            "DailyBulkV2QueryJobs",
            "DailyBulkApiBatches",
            "DataStorageMB",
        ]
        .map(String::from)
        .iter(),
    ) {
        let l = &lim[k];
        assert!(l["Max"].is_u64() && l["Remaining"].is_u64(), "{k}: {l}");
    }
    assert!(
        lim.as_object().unwrap().len() >= 40,
        "{}",
        lim.as_object().unwrap().len()
    );
    let job = json(
        auth(c.post(format!("{api}/jobs/query")))
            .json(&json!({"operation": "query", "query": "SELECT Id FROM Account"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(job["id"].is_string(), "{job}");
    let lim2 = json(auth(c.get(format!("{api}/limits"))).send().await.unwrap()).await;
    assert_eq!(
        lim2["DailyBulkV2QueryJobs"]["Remaining"].as_u64().unwrap() + 1,
        lim["DailyBulkV2QueryJobs"]["Remaining"].as_u64().unwrap()
    );
    assert!(
        lim2["DailyApiRequests"]["Remaining"].as_u64().unwrap()
            < lim["DailyApiRequests"]["Remaining"].as_u64().unwrap()
    );

    // OAuth: a password grant's token, its identity URL and userinfo, then revocation.
    let tok = json(
        c.post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "concord-sandbox"),
                ("client_secret", "concord-sandbox-secret"),
                ("username", "admin@sandbox.concord"),
                ("password", "concord-sandbox-password"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(tok["id"], id_url.as_str());
    let me = json(c.get(&id_url).bearer_auth(&access).send().await.unwrap()).await;
    assert_eq!(me["id"], id_url.as_str());
    assert_eq!(me["username"], "admin@sandbox.concord");
    assert!(me["user_id"].as_str().unwrap().starts_with("005"));
    assert!(me["organization_id"].as_str().unwrap().starts_with("00D"));
    assert_eq!(
        me["urls"]["rest"],
        format!("{base}/services/data/v{{version}}/")
    );
    let me = json(
        c.get(&id_url)
            .query(&[
                ("format", "json"),
                ("version", "59.0"),
                ("oauth_token", &access),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["urls"]["rest"], format!("{base}/services/data/v59.0/"));
    let r = c.get(&id_url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let ui = json(
        c.get(format!("{base}/services/oauth2/userinfo"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ui["sub"], id_url.as_str());
    assert_eq!(ui["preferred_username"], "admin@sandbox.concord");

    let revoke = |t: String| {
        c.post(format!("{base}/services/oauth2/revoke"))
            .form(&[("token", t)])
            .send()
    };
    assert_eq!(revoke(access.clone()).await.unwrap().status(), 200);
    let r = c.get(&api).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 401, "a revoked token is no session");
    let r = revoke(access.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "unsupported_token_type");

    // Revoking the refresh token ends it and the sessions it issued.
    let refresh = || async {
        c.post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "concord-sandbox"),
                ("refresh_token", "5Aep861concordSandboxRefreshToken"),
            ])
            .send()
            .await
            .unwrap()
    };
    let from_refresh = json(refresh().await).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.get(&api)
            .bearer_auth(&from_refresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .get(format!("{base}/services/oauth2/revoke"))
        .query(&[("token", "5Aep861concordSandboxRefreshToken")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(&api)
            .bearer_auth(&from_refresh)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = refresh().await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid_grant");
    // The configured token is untouched by all this.
    assert_eq!(auth(c.get(&api)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn standard_schema_compound_fields_auto_numbers_and_child_relationships() {
    let (base, _sb) = crate::sf_common::serve_in_process(
        "[[objects]]\nname = \"Property__c\"\nlabel = \"Property\"\n[[objects.fields]]\nname = \"Account__c\"\ntype = \"reference\"\nreference_to = [\"Account\"]\n[[objects.fields]]\nname = \"Owner_Contact__c\"\ntype = \"reference\"\nreference_to = [\"Contact\"]\nchild_relationship_name = \"Homes__r\"\n[[objects.fields]]\nname = \"Invoice_No__c\"\ntype = \"string\"\nauto_number = \"INV-{0000}\"\n",
        Settings {
            token: TOKEN.into(),
            ..Default::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let c = &client;
    let api = format!("{base}/services/data/v62.0");
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    let get = move |url: String| async move {
        auth(c.get(url))
            .send()
            .await
            .unwrap()
            .json::<J>()
            .await
            .unwrap()
    };
    let post = move |url: String, body: J| async move {
        let r = auth(c.post(url)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json::<J>().await.unwrap())
    };

    // The standard objects an org has, and Account's common fields.
    let global = get(format!("{api}/sobjects")).await;
    let names: Vec<&str> = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for o in [
        "Task",
        "Event",
        "Case",
        "Campaign",
        "Pricebook2",
        "PricebookEntry",
        "OpportunityLineItem",
    ] {
        assert!(names.contains(&o), "{o} missing: {names:?}");
    }
    let d = get(format!("{api}/sobjects/Account/describe")).await;
    let field = |d: &J, n: &str| {
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .clone()
    };
    for n in [
        "Sic",
        "SicDesc",
        "Ownership",
        "TickerSymbol",
        "Site",
        "AccountSource",
        "LastActivityDate",
        "Jigsaw",
        "BillingLatitude",
        "BillingGeocodeAccuracy",
    ] {
        field(&d, n);
    }
    let addr = field(&d, "BillingAddress");
    assert_eq!(addr["type"], "address");
    assert_eq!(addr["createable"], false);
    assert_eq!(addr["filterable"], false);
    assert_eq!(
        field(&d, "BillingCity")["compoundFieldName"],
        "BillingAddress"
    );
    assert_eq!(field(&d, "Sic")["compoundFieldName"], J::Null);
    assert_eq!(field(&d, "LastActivityDate")["updateable"], false);

    // childRelationships: the standard names, a custom reference's default and own names.
    let rels: Vec<(String, String, J)> = d["childRelationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["childSObject"].as_str().unwrap().to_string(),
                r["field"].as_str().unwrap().to_string(),
                r["relationshipName"].clone(),
            )
        })
        .collect();
    for (child, f, rel) in [
        ("Contact", "AccountId", "Contacts"),
        ("Opportunity", "AccountId", "Opportunities"),
        ("Case", "AccountId", "Cases"),
        ("Account", "ParentId", "ChildAccounts"),
        ("Task", "WhatId", "Tasks"),
        ("Event", "WhatId", "Events"),
        ("Property__c", "Account__c", "Properties__r"),
    ] {
        assert!(
            rels.contains(&(child.into(), f.into(), json!(rel))),
            "{child}.{f} → {rel}: {rels:?}"
        );
    }
    let cd = get(format!("{api}/sobjects/Contact/describe")).await;
    assert!(cd["childRelationships"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["relationshipName"] == "Homes__r"));

    // A compound address: the components as one read-only value, null when all are.
    let (st, a) = post(
        format!("{api}/sobjects/Account"),
        json!({"Name": "Acme", "BillingCity": "Lyon", "BillingCountry": "France", "Sic": "3571", "Ownership": "Private"}),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    let acc = a["id"].as_str().unwrap().to_string();
    let rec = get(format!("{api}/sobjects/Account/{acc}")).await;
    assert_eq!(rec["BillingAddress"]["city"], "Lyon");
    assert_eq!(rec["BillingAddress"]["country"], "France");
    assert_eq!(rec["BillingAddress"]["street"], J::Null);
    assert_eq!(rec["ShippingAddress"], J::Null);
    assert_eq!(rec["Sic"], "3571");
    let q = get(format!(
        "{api}/query?q=SELECT+BillingAddress,BillingCity+FROM+Account+WHERE+Id='{acc}'"
    ))
    .await;
    assert_eq!(q["records"][0]["BillingAddress"]["city"], "Lyon", "{q}");
    let r = auth(c.patch(format!("{api}/sobjects/Account/{acc}")))
        .json(&json!({"BillingAddress": {"city": "Paris"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the compound field is read-only");
    let r = auth(c.patch(format!("{api}/sobjects/Account/{acc}")))
        .json(&json!({"BillingCity": "Paris"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let rec = get(format!("{api}/sobjects/Account/{acc}")).await;
    assert_eq!(rec["BillingAddress"]["city"], "Paris");

    // Case: an AutoNumber, read-only; closing sets IsClosed and ClosedDate.
    let (_, c1) = post(
        format!("{api}/sobjects/Case"),
        json!({"Subject": "One", "AccountId": acc}),
    )
    .await;
    let (_, c2) = post(format!("{api}/sobjects/Case"), json!({"Subject": "Two"})).await;
    let c1 = get(format!(
        "{api}/sobjects/Case/{}",
        c1["id"].as_str().unwrap()
    ))
    .await;
    let c2 = get(format!(
        "{api}/sobjects/Case/{}",
        c2["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(c1["CaseNumber"], "00000001");
    assert_eq!(c2["CaseNumber"], "00000002");
    assert_eq!(c1["Status"], "New");
    assert_eq!(c1["IsClosed"], false);
    let (st, e) = post(format!("{api}/sobjects/Case"), json!({"CaseNumber": "X"})).await;
    assert_eq!(st, 400);
    assert_eq!(e[0]["errorCode"], "INVALID_FIELD_FOR_INSERT_UPDATE");
    let id1 = c1["Id"].as_str().unwrap();
    auth(c.patch(format!("{api}/sobjects/Case/{id1}")))
        .json(&json!({"Status": "Closed"}))
        .send()
        .await
        .unwrap();
    let c1 = get(format!("{api}/sobjects/Case/{id1}")).await;
    assert_eq!(c1["IsClosed"], true);
    assert!(c1["ClosedDate"].is_string());

    // A custom AutoNumber from the schema file.
    for n in ["INV-0001", "INV-0002"] {
        let (st, p) = post(format!("{api}/sobjects/Property__c"), json!({"Name": "P"})).await;
        assert_eq!(st, 201, "{p}");
        let p = get(format!(
            "{api}/sobjects/Property__c/{}",
            p["id"].as_str().unwrap()
        ))
        .await;
        assert_eq!(p["Invoice_No__c"], n);
    }
    let (st, _) = post(
        format!("{api}/sobjects/Property__c"),
        json!({"Name": "P", "Invoice_No__c": "X"}),
    )
    .await;
    assert_eq!(st, 400, "an AutoNumber is read-only");

    // Task: defaults, closed flag, the account of its WhatId / WhoId.
    let (_, ct) = post(
        format!("{api}/sobjects/Contact"),
        json!({"LastName": "Doe", "AccountId": acc}),
    )
    .await;
    let (st, t) = post(
        format!("{api}/sobjects/Task"),
        json!({"Subject": "Call", "WhoId": ct["id"], "Status": "Completed"}),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    let t = get(format!("{api}/sobjects/Task/{}", t["id"].as_str().unwrap())).await;
    assert_eq!(t["Priority"], "Normal");
    assert_eq!(t["IsClosed"], true);
    assert_eq!(t["AccountId"], acc.as_str(), "the contact's account");
    let (st, ev) = post(
        format!("{api}/sobjects/Event"),
        json!({"Subject": "Visit", "WhatId": acc, "StartDateTime": "2026-12-01T10:00:00.000+0000", "DurationInMinutes": 90}),
    )
    .await;
    assert_eq!(st, 201, "{ev}");
    let ev = get(format!(
        "{api}/sobjects/Event/{}",
        ev["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(ev["EndDateTime"], "2026-12-01T11:30:00.000+0000");
    assert_eq!(ev["AccountId"], acc.as_str());

    // Price books: the standard one exists; a custom price needs the standard price first;
    // an opportunity product takes its prices from the entry.
    let pb = get(format!(
        "{api}/query?q=SELECT+Id+FROM+Pricebook2+WHERE+IsStandard=true"
    ))
    .await;
    assert_eq!(pb["totalSize"], 1);
    let std_pb = pb["records"][0]["Id"].as_str().unwrap().to_string();
    let (_, prod) = post(
        format!("{api}/sobjects/Product2"),
        json!({"Name": "Widget", "ProductCode": "W-1"}),
    )
    .await;
    let (_, custom) = post(
        format!("{api}/sobjects/Pricebook2"),
        json!({"Name": "Partners", "IsActive": true}),
    )
    .await;
    let (st, e) = post(
        format!("{api}/sobjects/PricebookEntry"),
        json!({"Pricebook2Id": custom["id"], "Product2Id": prod["id"], "UnitPrice": 8}),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(e[0]["errorCode"], "STANDARD_PRICE_NOT_DEFINED");
    let (st, pbe) = post(
        format!("{api}/sobjects/PricebookEntry"),
        json!({"Pricebook2Id": std_pb, "Product2Id": prod["id"], "UnitPrice": 10, "IsActive": true}),
    )
    .await;
    assert_eq!(st, 201, "{pbe}");
    let (st, e) = post(
        format!("{api}/sobjects/PricebookEntry"),
        json!({"Pricebook2Id": std_pb, "Product2Id": prod["id"], "UnitPrice": 11}),
    )
    .await;
    assert_eq!(
        (st, e[0]["errorCode"].clone()),
        (400, json!("DUPLICATE_VALUE"))
    );
    let pbe_rec = get(format!(
        "{api}/sobjects/PricebookEntry/{}",
        pbe["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(pbe_rec["Name"], "Widget");
    assert_eq!(pbe_rec["ProductCode"], "W-1");
    let r = auth(c.patch(format!(
        "{api}/sobjects/PricebookEntry/{}",
        pbe["id"].as_str().unwrap()
    )))
    .json(&json!({"Pricebook2Id": custom["id"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "Pricebook2Id is set on create only");
    let (_, opp) = post(
        format!("{api}/sobjects/Opportunity"),
        json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2026-08-15", "AccountId": acc, "Amount": 1000, "Probability": 25}),
    )
    .await;
    let o = get(format!(
        "{api}/sobjects/Opportunity/{}",
        opp["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (o["FiscalYear"].clone(), o["FiscalQuarter"].clone()),
        (json!(2026), json!(3))
    );
    assert_eq!(o["ExpectedRevenue"], 250.0);
    let (st, li) = post(
        format!("{api}/sobjects/OpportunityLineItem"),
        json!({"OpportunityId": opp["id"], "PricebookEntryId": pbe["id"], "Quantity": 3}),
    )
    .await;
    assert_eq!(st, 201, "{li}");
    let li = get(format!(
        "{api}/sobjects/OpportunityLineItem/{}",
        li["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(li["UnitPrice"], 10.0);
    assert_eq!(li["ListPrice"], 10.0);
    assert_eq!(li["TotalPrice"], 30.0);
    assert_eq!(li["Product2Id"], prod["id"]);
    assert_eq!(li["Name"], "Deal Widget");
    let (st, e) = post(
        format!("{api}/sobjects/OpportunityLineItem"),
        json!({"OpportunityId": opp["id"], "PricebookEntryId": pbe["id"], "Quantity": 2, "UnitPrice": 9, "TotalPrice": 18}),
    )
    .await;
    assert_eq!(
        (st, e[0]["errorCode"].clone()),
        (400, json!("FIELD_INTEGRITY_EXCEPTION"))
    );
    let (st, li2) = post(
        format!("{api}/sobjects/OpportunityLineItem"),
        json!({"OpportunityId": opp["id"], "Product2Id": prod["id"], "Quantity": 4, "TotalPrice": 36}),
    )
    .await;
    assert_eq!(
        st, 201,
        "the product's entry in the opportunity's (standard) price book: {li2}"
    );
    let li2 = get(format!(
        "{api}/sobjects/OpportunityLineItem/{}",
        li2["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(li2["UnitPrice"], 9.0);
}

#[tokio::test]
async fn soql_subqueries_aggregates_dates_explain_and_sosl() {
    let (base_url, _sb) = start(10_000).await;
    let base = base_url.as_str();
    let client = reqwest::Client::new();
    let c = &client;
    let api = format!("{base}/services/data/v62.0");
    let q = move |soql: String| async move {
        let r = c
            .get(format!("{base}/services/data/v62.0/query"))
            .query(&[("q", soql)])
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<J>().await.unwrap())
    };
    let post = move |url: String, body: J| async move {
        c.post(url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<J>()
            .await
            .unwrap()
    };
    let get = move |url: String| async move {
        let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
        r.json::<J>().await.unwrap()
    };
    let mut accounts = Vec::new();
    for (name, industry) in [
        ("Acme Corp", "Energy"),
        ("Globex", "Energy"),
        ("Initech", "Banking"),
    ] {
        let a = post(
            format!("{api}/sobjects/Account"),
            json!({"Name": name, "Industry": industry}),
        )
        .await;
        accounts.push(a["id"].as_str().unwrap().to_string());
    }
    for (i, last) in ["Ada", "Bob", "Cy"].iter().enumerate() {
        post(
            format!("{api}/sobjects/Contact"),
            json!({"LastName": last, "AccountId": accounts[0], "Email": format!("{}@acme.test", last.to_lowercase()), "Phone": format!("555-010{i}")}),
        )
        .await;
    }
    let today = chrono::Utc::now().date_naive();
    let fmt = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    for (amount, stage, close) in [
        (100, "Prospecting", today),
        (250, "Prospecting", today - chrono::Duration::days(3)),
        (400, "Closed Won", today - chrono::Duration::days(400)),
    ] {
        post(
            format!("{api}/sobjects/Opportunity"),
            json!({"Name": format!("Deal {amount}"), "StageName": stage, "CloseDate": fmt(close), "Amount": amount, "AccountId": accounts[0]}),
        )
        .await;
    }

    // Parent-to-child subqueries: nested results, filtered and ordered; null without children.
    let (st, r) = q("SELECT Name, (SELECT LastName FROM Contacts WHERE LastName != 'Cy' ORDER BY LastName DESC) FROM Account ORDER BY Name".into()).await;
    assert_eq!(st, 200, "{r}");
    let acme = &r["records"][0];
    assert_eq!(acme["Name"], "Acme Corp");
    assert_eq!(acme["Contacts"]["totalSize"], 2);
    assert_eq!(acme["Contacts"]["done"], true);
    assert_eq!(acme["Contacts"]["records"][0]["LastName"], "Bob");
    assert_eq!(
        acme["Contacts"]["records"][0]["attributes"]["type"],
        "Contact"
    );
    assert_eq!(r["records"][1]["Contacts"], J::Null);
    let (st, e) = q("SELECT Id, (SELECT Id FROM Nope) FROM Account".into()).await;
    assert_eq!(
        (st, e[0]["errorCode"].clone()),
        (400, json!("INVALID_TYPE"))
    );

    // FOR VIEW / FOR REFERENCE / FOR UPDATE are accepted.
    for f in ["VIEW", "REFERENCE", "UPDATE"] {
        let (st, r) = q(format!("SELECT Id FROM Account LIMIT 1 FOR {f}")).await;
        assert_eq!((st, r["totalSize"].clone()), (200, json!(1)), "FOR {f}");
    }

    // Date literals and functions.
    let count = |r: &J| r["totalSize"].as_u64().unwrap();
    let (_, r) = q("SELECT Id FROM Opportunity WHERE CloseDate = TODAY".into()).await;
    assert_eq!(count(&r), 1);
    let (_, r) = q("SELECT Id FROM Opportunity WHERE CloseDate = LAST_N_DAYS:7".into()).await;
    assert_eq!(count(&r), 2);
    let (_, r) = q("SELECT Id FROM Opportunity WHERE CloseDate < LAST_N_DAYS:7".into()).await;
    assert_eq!(count(&r), 1);
    let (_, r) =
        q("SELECT Id FROM Opportunity WHERE CreatedDate = TODAY AND CloseDate > LAST_YEAR".into())
            .await;
    assert!(count(&r) >= 2, "{r}");
    let (_, r) = q(format!(
        "SELECT Id FROM Opportunity WHERE CALENDAR_YEAR(CloseDate) = {}",
        chrono::Datelike::year(&today)
    ))
    .await;
    assert!(count(&r) >= 2, "{r}");
    let (st, e) = q("SELECT Id FROM Opportunity WHERE CloseDate = LAST_N_DAYS".into()).await;
    assert_eq!(
        (st, e[0]["errorCode"].clone()),
        (400, json!("MALFORMED_QUERY"))
    );

    // GROUP BY with aggregates: AggregateResult rows, exprN names and aliases.
    let (st, r) = q("SELECT StageName, SUM(Amount), COUNT(Id) n, MAX(Amount) FROM Opportunity GROUP BY StageName ORDER BY StageName".into()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["totalSize"], 2);
    let won = &r["records"][0];
    assert_eq!(won["attributes"], json!({"type": "AggregateResult"}));
    assert_eq!(won["StageName"], "Closed Won");
    assert_eq!(won["expr0"], 400.0);
    assert_eq!(won["n"], 1);
    assert_eq!(r["records"][1]["expr0"], 350.0);
    assert_eq!(r["records"][1]["n"], 2);
    assert_eq!(r["records"][1]["expr1"], 250.0);
    assert_eq!(
        keys(&r["records"][0]).len(),
        keys(&fixture("restforce/sobject/query_aggregate_success_response.json")["records"][0])
            .len()
            + 2
    );
    let (_, r) =
        q("SELECT COUNT(Id), AVG(Amount) avg, COUNT_DISTINCT(StageName) FROM Opportunity".into())
            .await;
    assert_eq!(r["records"][0]["expr0"], 3);
    assert!((r["records"][0]["avg"].as_f64().unwrap() - 250.0).abs() < 1e-9);
    assert_eq!(r["records"][0]["expr1"], 2);
    let (_, r) = q(
        "SELECT Industry, COUNT(Id) FROM Account GROUP BY Industry ORDER BY Industry DESC".into(),
    )
    .await;
    assert_eq!(r["records"][0]["Industry"], "Energy");
    assert_eq!(r["records"][0]["expr0"], 2);
    let (_, r) = q("SELECT CALENDAR_YEAR(CloseDate) y, SUM(Amount) FROM Opportunity GROUP BY CALENDAR_YEAR(CloseDate) ORDER BY y".into()).await;
    assert_eq!(r["totalSize"], 2, "{r}");
    let (st, e) =
        q("SELECT StageName, Name, COUNT(Id) FROM Opportunity GROUP BY StageName".into()).await;
    assert_eq!(
        (st, e[0]["errorCode"].clone()),
        (400, json!("MALFORMED_QUERY"))
    );

    // Long text areas are selected, never filtered, sorted or grouped; a short text area
    // (BillingStreet, 255) is; describe says which.
    for (soql, says) in [
        (
            "SELECT Id FROM Account WHERE Description = 'x'",
            "field 'Description' can not be filtered in query call",
        ),
        (
            "SELECT Id FROM Account ORDER BY Description",
            "field 'Description' can not be sorted in a query call",
        ),
        (
            "SELECT Description, COUNT(Id) FROM Account GROUP BY Description",
            "field 'Description' can not be grouped in a query call",
        ),
        (
            "SELECT Id FROM Account WHERE BillingAddress != null",
            "field 'BillingAddress' can not be filtered in query call",
        ),
    ] {
        let (st, e) = q(soql.into()).await;
        assert_eq!(
            (st, e[0]["errorCode"].clone()),
            (400, json!("INVALID_FIELD")),
            "{soql}: {e}"
        );
        assert_eq!(e[0]["message"], says, "{soql}");
    }
    let (st, r) = q(
        "SELECT Id, Description FROM Account WHERE BillingStreet != null ORDER BY BillingStreet"
            .into(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let d = get(format!("{api}/sobjects/Account/describe")).await;
    let field = |n: &str| {
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == n)
            .unwrap()
            .clone()
    };
    for (n, can) in [
        ("Description", false),
        ("BillingAddress", false),
        ("BillingStreet", true),
        ("Name", true),
    ] {
        for k in ["filterable", "sortable", "groupable"] {
            assert_eq!(field(n)[k], can, "{n} {k}");
        }
    }

    // ?explain=: an index for an indexed filter, a table scan otherwise.
    let plan = |soql: &str| {
        let soql = soql.to_string();
        async move {
            c.get(format!("{base}/services/data/v62.0/query"))
                .query(&[("explain", soql)])
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json::<J>()
                .await
                .unwrap()
        }
    };
    let p = plan(&format!(
        "SELECT Id FROM Account WHERE Id = '{}'",
        accounts[1]
    ))
    .await;
    assert_eq!(p["plans"][0]["leadingOperationType"], "Index", "{p}");
    assert_eq!(p["plans"][0]["cardinality"], 1);
    assert_eq!(p["plans"][0]["sobjectCardinality"], 3);
    assert_eq!(p["plans"][0]["sobjectType"], "Account");
    let p = plan("SELECT Id FROM Account WHERE Industry = 'Energy'").await;
    assert_eq!(p["plans"][0]["leadingOperationType"], "TableScan");
    assert_eq!(p["plans"][0]["cardinality"], 2);

    // SOSL: words in any text field, scopes, RETURNING with fields, WHERE and LIMIT.
    let search = move |sosl: &str| {
        let sosl = sosl.to_string();
        async move {
            let r = c
                .get(format!("{base}/services/data/v62.0/search"))
                .query(&[("q", sosl)])
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<J>().await.unwrap())
        }
    };
    let (st, r) =
        search("FIND {Acme} RETURNING Account(Id, Name), Contact(LastName ORDER BY LastName)")
            .await;
    assert_eq!(st, 200, "{r}");
    let recs = r["searchRecords"].as_array().unwrap();
    assert_eq!(recs[0]["Name"], "Acme Corp");
    assert_eq!(recs[0]["attributes"]["type"], "Account");
    assert_eq!(
        recs.len(),
        4,
        "the account and the three contacts whose email holds acme: {r}"
    );
    assert_eq!(recs[1]["LastName"], "Ada");
    let (_, r) =
        search("FIND {acme} IN NAME FIELDS RETURNING Account(Name), Contact(LastName)").await;
    assert_eq!(r["searchRecords"].as_array().unwrap().len(), 1);
    let (_, r) = search("FIND {Glob*} RETURNING Account(Name)").await;
    assert_eq!(r["searchRecords"][0]["Name"], "Globex");
    let (_, r) =
        search("FIND {Initech OR Globex} RETURNING Account(Name WHERE Industry = 'Energy')").await;
    assert_eq!(r["searchRecords"].as_array().unwrap().len(), 1);
    let (_, r) = search("FIND {5550101} IN PHONE FIELDS RETURNING Contact(LastName)").await;
    assert_eq!(r["searchRecords"][0]["LastName"], "Bob");
    let (_, r) = search("FIND {acme} RETURNING Contact(LastName LIMIT 2)").await;
    assert_eq!(r["searchRecords"].as_array().unwrap().len(), 2);
    let (_, r) = search("FIND {acme}").await;
    assert_eq!(
        r["searchRecords"].as_array().unwrap().len(),
        4,
        "every object, ids only"
    );
    for bad in ["FIND {a}", "SEARCH {x}", "FIND {acme} RETURNING"] {
        let (st, e) = search(bad).await;
        assert_eq!(
            (st, e[0]["errorCode"].clone()),
            (400, json!("MALFORMED_SEARCH")),
            "{bad}"
        );
    }

    // Bulk API 2.0 refuses what it cannot serialise.
    for soql in [
        "SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName",
        "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
        "SELECT BillingAddress FROM Account",
    ] {
        let r = c
            .post(format!("{api}/jobs/query"))
            .bearer_auth(TOKEN)
            .json(&json!({"operation": "query", "query": soql}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{soql}");
    }
}

#[tokio::test]
async fn daily_limit_gives_request_limit_exceeded() {
    let (base, _sb) = start(3).await;
    let c = reqwest::Client::new();
    let url = format!("{base}/services/data/v59.0/limits");
    for i in 1..=3 {
        let r = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["sforce-limit-info"],
            format!("api-usage={i}/3").as_str()
        );
    }
    let r = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn sobject_collections_with_all_or_none() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let recs: Vec<J> = (0..3).map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("C{i}"), "Erp_Id__c": format!("X{i}")})).collect();
    let r: J = c
        .post(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .json(&json!({"allOrNone": false, "records": recs}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.as_array().unwrap().len(), 3);
    assert!(r.as_array().unwrap().iter().all(|x| x["success"] == true));
    let ids: Vec<String> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    // allOrNone=false: the bad record fails alone, in order.
    let mixed = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Account"}, "Id": ids[0], "Phone": "1"},
        {"attributes": {"type": "Account"}, "Id": ids[1], "Name": null},
    ]});
    let r: J = c
        .patch(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .json(&mixed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r[0]["success"], true);
    assert_eq!(r[1]["success"], false);
    assert_eq!(r[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    // allOrNone=true: everything rolls back.
    let all = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Account"}, "Name": "kept?"},
        {"attributes": {"type": "Account"}},
    ]});
    let r: J = c
        .post(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .json(&all)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(r[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    let n: J = c
        .get(format!("{api}/query"))
        .bearer_auth(TOKEN)
        .query(&[("q", "SELECT COUNT() FROM Account")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(n["totalSize"], 3, "rolled back");
    // Upsert collection by external id: created flags.
    let up = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Account"}, "Erp_Id__c": "X1", "Phone": "2"},
        {"attributes": {"type": "Account"}, "Erp_Id__c": "X9", "Name": "New"},
    ]});
    let r: J = c
        .patch(format!("{api}/composite/sobjects/Account/Erp_Id__c"))
        .bearer_auth(TOKEN)
        .json(&up)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r[0]["created"].clone(), r[1]["created"].clone()),
        (json!(false), json!(true))
    );
    // A failed upsert is still an UpsertResult: `created` false, id null.
    let bad = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Account"}, "Erp_Id__c": "X10"},
        {"attributes": {"type": "Account"}, "Name": "no key"},
    ]});
    let r: J = c
        .patch(format!("{api}/composite/sobjects/Account/Erp_Id__c"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (i, code) in [(0, "REQUIRED_FIELD_MISSING"), (1, "MISSING_ARGUMENT")] {
        assert_eq!(r[i]["success"], false, "{r}");
        assert_eq!(r[i]["created"], false, "{r}");
        assert_eq!(r[i]["id"], J::Null, "{r}");
        assert_eq!(r[i]["errors"][0]["statusCode"], code, "{r}");
    }
    // Update by collection with the documented lowercase `id` (and `Id`, and any case).
    let upd = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Account"}, "id": &ids[0], "Phone": "555-0001"},
        {"attributes": {"type": "Account"}, "Id": &ids[1], "Phone": "555-0002"},
    ]});
    let r: J = c
        .patch(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .json(&upd)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        r.as_array().unwrap().iter().all(|x| x["success"] == true),
        "{r}"
    );
    for (id, phone) in [(&ids[0], "555-0001"), (&ids[1], "555-0002")] {
        let rec: J = c
            .get(format!("{api}/sobjects/Account/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(rec["Phone"], phone, "{rec}");
    }
    // Delete collection, including an already deleted id.
    let r: J = c
        .delete(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .query(&[("ids", format!("{},{}", ids[2], ids[2]))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r[0]["success"], true);
    assert_eq!(r[1]["errors"][0]["statusCode"], "ENTITY_IS_DELETED");
    // More than 200 records is refused.
    let many: Vec<J> = (0..201)
        .map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("M{i}")}))
        .collect();
    let r = c
        .post(format!("{api}/composite/sobjects"))
        .bearer_auth(TOKEN)
        .json(&json!({"records": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(sb.counters()["composite.sobjects.create"], 3);
}

#[tokio::test]
async fn injected_faults_are_salesforce_shaped_and_reproducible() {
    let (base, sb) = start(100_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let set = |f: J| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c
                .post(format!("{base}/admin/faults"))
                .json(&f)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    set(json!({"limit_exceeded": true})).await;
    let r = c
        .get(format!("{api}/limits"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");

    // A 30 % 503 rate with a fixed seed: the same calls fail in two runs.
    let mut runs = Vec::new();
    for _ in 0..2 {
        set(json!({"rate_503": 0.3, "seed": 7})).await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let r = c
                .get(format!("{api}/limits"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if status == 503 {
                assert_eq!(r.headers()["retry-after"], "1");
                let e: J = r.json().await.unwrap();
                assert_eq!(e[0]["errorCode"], "SERVER_UNAVAILABLE");
            }
            statuses.push(status);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    let failed = runs[0].iter().filter(|s| **s == 503).count();
    assert!((4..=20).contains(&failed), "about 30 % of 40: {failed}");

    // Lock errors only on writes.
    set(json!({"rate_lock": 1.0})).await;
    let r = c
        .get(format!("{api}/limits"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{api}/sobjects/Account"))
        .bearer_auth(TOKEN)
        .json(&json!({"Name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: J = r.json().await.unwrap();
    assert_eq!(e[0]["errorCode"], "UNABLE_TO_LOCK_ROW");
    set(json!({})).await;
    assert!(sb.counters()["fault.lock"] >= 1);
    // Unknown fault settings are refused.
    let r = c
        .post(format!("{base}/admin/faults"))
        .json(&json!({"rate_404": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test]
async fn composite_with_references_and_all_or_none() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let ok = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "NewAccount", "body": {"Name": "Composite Co"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "NewContact", "body": {"LastName": "Ref", "AccountId": "@{NewAccount.id}"}},
        {"method": "GET", "url": "/services/data/v59.0/sobjects/Account/@{NewAccount.id}?fields=Name", "referenceId": "ReadBack"},
        {"method": "GET", "url": "/services/data/v59.0/query?q=SELECT+Id,Account.Name+FROM+Contact", "referenceId": "Q"},
    ]});
    let before = sb.counters().get("composite").copied().unwrap_or(0);
    let r = c
        .post(format!("{api}/composite"))
        .bearer_auth(TOKEN)
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["sforce-limit-info"],
        "api-usage=1/10000",
        "one API call for the whole composite"
    );
    let r: J = r.json().await.unwrap();
    let success = fixture("apache-camel/composite_response_example_success.json");
    assert_eq!(
        keys(&r["compositeResponse"][0]),
        keys(&success["compositeResponse"][0])
    );
    assert_eq!(r["compositeResponse"][0]["httpStatusCode"], 201);
    assert!(r["compositeResponse"][0]["httpHeaders"]["Location"]
        .as_str()
        .unwrap()
        .starts_with("/services/data/v59.0/sobjects/Account/"));
    assert_eq!(r["compositeResponse"][2]["body"]["Name"], "Composite Co");
    assert_eq!(
        r["compositeResponse"][3]["body"]["records"][0]["Account"]["Name"],
        "Composite Co"
    );
    assert_eq!(sb.counters()["composite"], before + 1);
    // allOrNone: a failure rolls everything back; the others say PROCESSING_HALTED, like the
    // recorded failure response.
    let bad = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "A", "body": {"Name": "Rolled back"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "B", "body": {"Nope__c": 1}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "C", "body": {"Name": "never"}},
    ]});
    let r: J = c
        .post(format!("{api}/composite"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failure = fixture("apache-camel/composite_response_example_failure.json");
    assert_eq!(
        r["compositeResponse"][0]["body"],
        failure["compositeResponse"][0]["body"]
    );
    assert_eq!(
        r["compositeResponse"][1]["body"][0]["errorCode"],
        "INVALID_FIELD"
    );
    assert_eq!(
        r["compositeResponse"][2]["body"][0]["errorCode"],
        "PROCESSING_HALTED"
    );
    let n: J = c
        .get(format!("{api}/query"))
        .bearer_auth(TOKEN)
        .query(&[("q", "SELECT COUNT() FROM Account")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(n["totalSize"], 1, "rolled back");
    // Without allOrNone, a reference to a failed subrequest is reported, the rest stands.
    let partial = json!({"allOrNone": false, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "X", "body": {}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "Y", "body": {"LastName": "y", "AccountId": "@{X.id}"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "Z", "body": {"Name": "stands"}},
    ]});
    let r: J = c
        .post(format!("{api}/composite"))
        .bearer_auth(TOKEN)
        .json(&partial)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["compositeResponse"][0]["body"][0]["errorCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert!(r["compositeResponse"][1]["body"][0]["message"]
        .as_str()
        .unwrap()
        .contains("X.id"));
    assert_eq!(r["compositeResponse"][2]["httpStatusCode"], 201);
}

#[tokio::test]
async fn bulk_query_results_in_csv_pages_with_locator() {
    let (base, _sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/services/data/v59.0");
    let acct: J = c
        .post(format!("{api}/sobjects/Account"))
        .bearer_auth(TOKEN)
        .json(&json!({"Name": "Parent, \"Quoted\""}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in 0..25 {
        let r = c
            .post(format!("{api}/sobjects/Contact"))
            .bearer_auth(TOKEN)
            .json(&json!({"LastName": format!("L{i:02}"), "AccountId": acct["id"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let job: J = c
        .post(format!("{api}/jobs/query"))
        .bearer_auth(TOKEN)
        .json(&json!({"operation": "query", "query": "SELECT Id, LastName, Account.Name FROM Contact ORDER BY LastName"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["state"], "UploadComplete");
    let info: J = c
        .get(format!("{api}/jobs/query/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 25);
    let mut locator: Option<String> = None;
    let mut rows = Vec::new();
    loop {
        let mut url = format!("{api}/jobs/query/{id}/results?maxRecords=10");
        if let Some(l) = &locator {
            url.push_str(&format!("&locator={l}"));
        }
        let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/csv");
        let next = r.headers()["sforce-locator"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            rd.headers().unwrap().iter().collect::<Vec<_>>(),
            vec!["Id", "LastName", "Account.Name"]
        );
        for rec in rd.records() {
            rows.push(rec.unwrap().iter().map(str::to_string).collect::<Vec<_>>());
        }
        if next == "null" {
            break;
        }
        locator = Some(next);
    }
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[0][1], "L00");
    assert_eq!(rows[24][2], "Parent, \"Quoted\"", "CSV quoting round-trips");
}

/// A POST with the test's token: the status and the JSON answer.
async fn post_json(c: &reqwest::Client, url: String, body: J) -> (u16, J) {
    let r = c
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json::<J>().await.unwrap())
}

/// A Bayeux client of the sandbox's Streaming API at `cometd`: handshaken and connected once
/// (the first connect is answered at once); its client id.
async fn bayeux_client(c: &reqwest::Client, cometd: &str) -> String {
    let (_, hs) = post_json(
        c,
        cometd.to_string(),
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
    )
    .await;
    let cid = hs[0]["clientId"].as_str().unwrap().to_string();
    let (_, first) = post_json(
        c,
        cometd.to_string(),
        json!([{"channel": "/meta/connect", "clientId": cid}]),
    )
    .await;
    assert_eq!(first[0]["successful"], true, "{first}");
    cid
}

/// One connect of the Bayeux client `cid`: the replay ids of the events it delivers.
async fn replay_ids(c: &reqwest::Client, cometd: &str, cid: &str) -> Vec<u64> {
    let (_, got) = post_json(
        c,
        cometd.to_string(),
        json!([{"channel": "/meta/connect", "clientId": cid}]),
    )
    .await;
    got.as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["data"]["event"]["replayId"].as_u64())
        .collect()
}

/// The Streaming API's Bayeux protocol over HTTP: handshake, the first connect answered at
/// once, subscriptions with replay ids (-1, -2, N; an invalid one refused), change events for
/// creates, updates and deletes with their ChangeEventHeader, the `…/meta/{type}` URL form,
/// unknown clients and channels, and the session check.
#[tokio::test]
async fn streaming_api_delivers_change_events_with_replay_ids() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let cometd = format!("{base}/cometd/59.0");
    let post = |url: String, body: J| {
        let c = c.clone();
        async move {
            let (status, answer) = post_json(&c, url, body).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    let hs = post(
        format!("{cometd}/meta/handshake"),
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"], "id": "1"}]),
    )
    .await;
    assert_eq!(hs[0]["successful"], true, "{hs}");
    assert_eq!(hs[0]["id"], "1");
    assert_eq!(hs[0]["ext"]["replay"], true);
    let cid = hs[0]["clientId"].as_str().unwrap().to_string();
    let first = post(
        cometd.clone(),
        json!({"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}),
    )
    .await;
    assert_eq!(first[0]["successful"], true, "answered at once: {first}");

    // Two accounts before any subscription, one after.
    let a1 = sb
        .org
        .lock()
        .unwrap()
        .create("Account", json!({"Name": "Before"}).as_object().unwrap())
        .unwrap();
    let sub = |replay: i64, channel: &str| {
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": channel,
                "ext": {"replay": {channel: replay}}}])
    };
    let r = post(cometd.clone(), sub(-1, "/data/AccountChangeEvent")).await;
    assert_eq!(r[0]["successful"], true, "{r}");
    let r = post(cometd.clone(), sub(-1, "/data/NopeChangeEvent")).await;
    assert_eq!(r[0]["successful"], false);
    assert!(r[0]["error"].as_str().unwrap().starts_with("400::"), "{r}");
    let r = post(cometd.clone(), sub(999, "/data/ContactChangeEvent")).await;
    assert!(
        r[0]["error"].as_str().unwrap().contains("replayId {999}"),
        "{r}"
    );
    {
        let mut org = sb.org.lock().unwrap();
        let a2 = org
            .create(
                "Account",
                json!({"Name": "After", "Phone": "1"}).as_object().unwrap(),
            )
            .unwrap();
        org.update("Account", &a2, json!({"Phone": null}).as_object().unwrap())
            .unwrap();
        org.delete("Account", &a1).unwrap();
    }
    let got = post(
        format!("{cometd}/meta/connect"),
        json!([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}]),
    )
    .await;
    let events: Vec<&J> = got
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["channel"] == "/data/AccountChangeEvent")
        .collect();
    let types: Vec<&str> = events
        .iter()
        .map(|e| {
            e["data"]["payload"]["ChangeEventHeader"]["changeType"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        ["CREATE", "UPDATE", "DELETE"],
        "-1: only new events: {got}"
    );
    let upd = &events[1]["data"]["payload"];
    assert_eq!(upd["ChangeEventHeader"]["nulledFields"], json!(["Phone"]));
    assert!(upd["ChangeEventHeader"]["changedFields"]
        .as_array()
        .unwrap()
        .contains(&json!("Phone")));
    assert_eq!(
        events[2]["data"]["payload"]["ChangeEventHeader"]["recordIds"],
        json!([a1])
    );
    assert_eq!(
        got.as_array().unwrap().last().unwrap()["channel"],
        "/meta/connect"
    );
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["event"]["replayId"].as_u64().unwrap())
        .collect();

    // A second client replays from the first event on (N), and everything (-2).
    let c2 = bayeux_client(&c, &cometd).await;
    let r = post(
        cometd.clone(),
        json!([{"channel": "/meta/subscribe", "clientId": c2, "subscription": "/data/ChangeEvents",
                "ext": {"replay": {"/data/ChangeEvents": ids[0]}}}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true, "{r}");
    assert_eq!(replay_ids(&c, &cometd, &c2).await, ids[1..], "after N");

    // Restored from the recycle bin: an UNDELETE event with the record's fields.
    let r = c
        .post(format!("{base}/admin/undelete"))
        .json(&json!({"object": "Account", "id": a1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = post(
        cometd.clone(),
        json!([{"channel": "/meta/connect", "clientId": c2}]),
    )
    .await;
    let undel = got
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["data"]["payload"]["ChangeEventHeader"]["changeType"] == "UNDELETE")
        .unwrap_or_else(|| panic!("{got}"));
    assert_eq!(undel["data"]["payload"]["Name"], "Before");
    assert_eq!(
        undel["data"]["payload"]["ChangeEventHeader"]["recordIds"],
        json!([a1])
    );
    let r = c
        .post(format!("{base}/admin/undelete"))
        .json(&json!({"object": "Account", "id": a1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not in the recycle bin any more");

    // Unknown client, no session, a retired version.
    let r = post(
        cometd.clone(),
        json!([{"channel": "/meta/connect", "clientId": "nope"}]),
    )
    .await;
    assert_eq!(r[0]["error"], "403::Unknown client");
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    let r = c.post(&cometd).json(&json!([])).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/cometd/30.0"))
        .bearer_auth(TOKEN)
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    // Long polls are not API requests: between the two limits calls only the second counts.
    let limits_url = format!("{base}/services/data/v59.0/limits");
    let remaining = |c: reqwest::Client| {
        let url = limits_url.clone();
        async move {
            let l: J = c
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            l["DailyApiRequests"]["Remaining"].as_u64().unwrap()
        }
    };
    let before = remaining(c.clone()).await;
    post(
        cometd.clone(),
        json!([{"channel": "/meta/disconnect", "clientId": c2}]),
    )
    .await;
    let r = post(
        cometd.clone(),
        json!([{"channel": "/meta/connect", "clientId": c2}]),
    )
    .await;
    assert_eq!(r[0]["error"], "403::Unknown client", "disconnected");
    assert_eq!(before - remaining(c.clone()).await, 1);
    assert!(sb.counters()["streaming"] >= 8);
}

/// PushTopics: a `PushTopic` record's query decides which changes of its object notify on
/// `/topic/{Name}` (creates, updates, deletes, undeletes; `NotifyForFields`; the WHERE clause
/// evaluated on the record as changed), with replay ids; queries Salesforce refuses are
/// refused with its `INVALID_FIELD` messages.
#[tokio::test]
async fn pushtopic_notifications_follow_the_query() {
    let (base, sb) = start(10_000).await;
    let c = reqwest::Client::new();
    let cometd = format!("{base}/cometd/59.0");
    let post = |url: String, body: J| {
        let c = c.clone();
        async move { post_json(&c, url, body).await }
    };
    let topics = format!("{base}/services/data/v59.0/sobjects/PushTopic");
    let topic = |name: &str, query: &str| json!({"Name": name, "Query": query, "ApiVersion": 59.0});
    for (query, says) in [
        ("SELECT Name FROM Account", "Id field must be selected"),
        (
            "SELECT Id, Name FROM Account ORDER BY Name",
            "'ORDER BY' clause is not allowed",
        ),
        (
            "SELECT Id, Name FROM Account LIMIT 10",
            "'LIMIT' is not allowed",
        ),
        (
            "SELECT Id, Account.Name FROM Contact",
            "relationships are not supported",
        ),
        (
            "SELECT Id FROM Account WHERE NOT Name = 'x'",
            "'NOT' is not supported",
        ),
        (
            "SELECT COUNT() FROM Account",
            "Aggregate queries are not supported",
        ),
        ("SELECT Id FROM Account", "other than Id"),
        ("SELECT Id, Nope FROM Account", "No such column 'Nope'"),
        (
            "SELECT Id, Name FROM Account WHERE Description = 'x'",
            "field 'Description' can not be filtered",
        ),
    ] {
        let (s, r) = post(topics.clone(), topic("Bad", query)).await;
        assert_eq!(s, 400, "{query}: {r}");
        assert_eq!(r[0]["errorCode"], "INVALID_FIELD", "{query}: {r}");
        assert!(
            r[0]["message"].as_str().unwrap().contains(says),
            "{query}: {r}"
        );
    }
    let (s, r) = post(
        topics.clone(),
        topic(
            "OsloAccounts",
            "SELECT Id, Name, Phone FROM Account WHERE BillingCity = 'Oslo'",
        ),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let topic_id = r["id"].as_str().unwrap().to_string();
    let (s, r) = post(
        topics.clone(),
        topic("OsloAccounts", "SELECT Id, Name FROM Account"),
    )
    .await;
    assert_eq!(
        (s, r[0]["errorCode"].as_str()),
        (400, Some("DUPLICATE_VALUE")),
        "{r}"
    );

    let cid = bayeux_client(&c, &cometd).await;
    let sub = |channel: &str, replay: i64| {
        json!([{"channel": "/meta/subscribe", "clientId": cid, "subscription": channel,
                "ext": {"replay": {channel: replay}}}])
    };
    let (_, r) = post(cometd.clone(), sub("/topic/Nope", -1)).await;
    assert_eq!(r[0]["successful"], false, "{r}");
    let (_, r) = post(cometd.clone(), sub("/topic/OsloAccounts", -1)).await;
    assert_eq!(r[0]["successful"], true, "{r}");
    let (a, b) = {
        let mut org = sb.org.lock().unwrap();
        let obj = |v: J| v.as_object().unwrap().clone();
        let a = org
            .create("Account", &obj(json!({"Name": "A", "BillingCity": "Oslo"})))
            .unwrap();
        let b = org
            .create(
                "Account",
                &obj(json!({"Name": "B", "BillingCity": "Bergen"})),
            )
            .unwrap();
        org.update("Account", &a, &obj(json!({"Phone": "1"})))
            .unwrap(); // selected
        org.update("Account", &a, &obj(json!({"Description": "x"})))
            .unwrap(); // not referenced
        org.update("Account", &b, &obj(json!({"Phone": "2"})))
            .unwrap(); // does not match
        org.update("Account", &b, &obj(json!({"BillingCity": "Oslo"})))
            .unwrap(); // matches now
        org.delete("Account", &a).unwrap();
        org.undelete("Account", &a).unwrap();
        (a, b)
    };
    let (_, got) = post(
        cometd.clone(),
        json!([{"channel": "/meta/connect", "clientId": cid}]),
    )
    .await;
    let msgs: Vec<&J> = got
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["channel"] == "/topic/OsloAccounts")
        .collect();
    let seen: Vec<(&str, &str)> = msgs
        .iter()
        .map(|m| {
            (
                m["data"]["event"]["type"].as_str().unwrap(),
                m["data"]["sobject"]["Id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("created", a.as_str()),
            ("updated", a.as_str()),
            ("updated", b.as_str()),
            ("deleted", a.as_str()),
            ("undeleted", a.as_str())
        ],
        "{got}"
    );
    assert_eq!(
        msgs[0]["data"]["sobject"],
        json!({"Id": a, "Name": "A", "Phone": null})
    );
    assert_eq!(msgs[1]["data"]["sobject"]["Phone"], "1");
    assert_eq!(
        msgs[3]["data"]["sobject"],
        json!({"Id": a}),
        "a delete carries the Id"
    );
    let created = msgs[0]["data"]["event"]["createdDate"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    let ids: Vec<u64> = msgs
        .iter()
        .map(|m| m["data"]["event"]["replayId"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Replay after the first notification, on a second client; then the topic deactivated:
    // no subscription to it any more.
    let c2 = bayeux_client(&c, &cometd).await;
    let (_, r) = post(
        cometd.clone(),
        json!([{"channel": "/meta/subscribe", "clientId": c2, "subscription": "/topic/OsloAccounts",
                "ext": {"replay": {"/topic/OsloAccounts": ids[0]}}}]),
    )
    .await;
    assert_eq!(r[0]["successful"], true, "{r}");
    assert_eq!(replay_ids(&c, &cometd, &c2).await, ids[1..]);
    sb.org
        .lock()
        .unwrap()
        .update(
            "PushTopic",
            &topic_id,
            json!({"IsActive": false}).as_object().unwrap(),
        )
        .unwrap();
    let (_, r) = post(cometd.clone(), sub("/topic/OsloAccounts", -1)).await;
    assert_eq!(r[0]["successful"], false, "{r}");
}
