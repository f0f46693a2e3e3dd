//! Bulk API 2.0 ingest against the sandbox over HTTP: every operation, the state machine,
//! result CSVs with sf__Id / sf__Created / sf__Error, a job that fails on a bad column or line
//! ending, aborting, relationship columns by external id, and hard deletes that only getDeleted
//! still reports.

use concord::sandbox::launch::{launch, Options};
use concord::sandbox::server::Settings;
use serde_json::{json, Value as J};

const TOKEN: &str = "00Dsandbox!bulk";

async fn start() -> (String, reqwest::Client) {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(
        &schema,
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Erp_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
    )
    .unwrap();
    let opts = Options {
        schema: Some(schema),
        ..Options::default()
    };
    let settings = Settings {
        token: TOKEN.into(),
        ..Settings::default()
    };
    let l = launch(&opts, settings).await.unwrap();
    std::mem::forget(dir);
    (
        format!("{}/services/data/v62.0", l.base_url),
        reqwest::Client::new(),
    )
}

async fn json_call(
    c: &reqwest::Client,
    m: reqwest::Method,
    url: &str,
    body: Option<J>,
) -> (u16, J) {
    let mut rb = c.request(m, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(J::String(t)))
}

async fn text(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    r.text().await.unwrap()
}

fn rows(csv_text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// Creates a job, uploads `data`, marks it UploadComplete and polls to the end; returns the
/// job id and its final info.
async fn run_job(c: &reqwest::Client, api: &str, spec: J, data: &str) -> (String, J) {
    let (s, job) = json_call(
        c,
        reqwest::Method::POST,
        &format!("{api}/jobs/ingest"),
        Some(spec),
    )
    .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["state"], "Open");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750"));
    assert_eq!(
        job["contentUrl"],
        format!("services/data/v62.0/jobs/ingest/{id}/batches")
    );
    let r = c
        .put(format!("{api}/jobs/ingest/{id}/batches"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/csv")
        .body(data.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, j) = json_call(
        c,
        reqwest::Method::PATCH,
        &format!("{api}/jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["state"], "UploadComplete");
    let mut seen = Vec::new();
    loop {
        let (_, info) = json_call(
            c,
            reqwest::Method::GET,
            &format!("{api}/jobs/ingest/{id}"),
            None,
        )
        .await;
        let st = info["state"].as_str().unwrap().to_string();
        seen.push(st.clone());
        if st == "JobComplete" || st == "Failed" {
            assert_eq!(
                seen[0], "InProgress",
                "clients see the job in progress before its end"
            );
            return (id, info);
        }
        assert!(seen.len() < 10, "job never finished: {seen:?}");
    }
}

#[tokio::test]
async fn ingest_insert_upsert_update_delete_with_results() {
    let (api, c) = start().await;
    // Insert 5 accounts, one of them invalid (no Name).
    let (id, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "insert", "lineEnding": "LF"}),
        "Name,Erp_Id__c,AnnualRevenue,Phone\nAcme,E1,1000.50,555-0100\nGlobex,E2,,\n\"Initech, Inc.\",E3,2000,\n,E4,3,\nUmbrella,E5,#N/A,555\n",
    )
    .await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 5);
    assert_eq!(info["numberRecordsFailed"], 1);
    let ok = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/successfulResults/")).await);
    assert_eq!(
        ok[0],
        [
            "sf__Id",
            "sf__Created",
            "Name",
            "Erp_Id__c",
            "AnnualRevenue",
            "Phone"
        ]
    );
    assert_eq!(ok.len(), 5);
    assert!(ok[1..]
        .iter()
        .all(|r| r[0].starts_with("001") && r[0].len() == 18 && r[1] == "true"));
    assert_eq!(ok[3][2], "Initech, Inc.", "quoted commas survive");
    let failed = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/failedResults/")).await);
    assert_eq!(
        failed[0],
        [
            "sf__Id",
            "sf__Error",
            "Name",
            "Erp_Id__c",
            "AnnualRevenue",
            "Phone"
        ]
    );
    assert_eq!(failed.len(), 2);
    assert!(
        failed[1][1].starts_with("REQUIRED_FIELD_MISSING:"),
        "{:?}",
        failed[1]
    );
    assert_eq!(failed[1][3], "E4");
    let un = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/unprocessedrecords/")).await);
    assert_eq!(
        un,
        vec![vec!["Name", "Erp_Id__c", "AnnualRevenue", "Phone"]]
    );

    // Values landed typed: query them back.
    let (_, q) = json_call(
        &c,
        reqwest::Method::GET,
        &format!(
            "{api}/query?q=SELECT+Name,AnnualRevenue,Phone+FROM+Account+WHERE+Erp_Id__c+=+'E1'"
        ),
        None,
    )
    .await;
    assert_eq!(
        q["records"][0]["AnnualRevenue"],
        json!(1001.0),
        "currency(18,0) rounds half up"
    );
    assert_eq!(q["records"][0]["Phone"], "555-0100");

    // Upsert by external id: E1 updated (empty cell leaves Phone alone, #N/A clears revenue),
    // E9 created.
    let (id, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "upsert", "externalIdFieldName": "Erp_Id__c"}),
        "Erp_Id__c,Name,AnnualRevenue,Phone\nE1,Acme Corp,#N/A,\nE9,Hooli,9,\n",
    )
    .await;
    assert_eq!(info["numberRecordsFailed"], 0);
    let ok = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/successfulResults")).await);
    let created: Vec<&str> = ok[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(created, ["false", "true"]);
    let (_, q) = json_call(
        &c,
        reqwest::Method::GET,
        &format!(
            "{api}/query?q=SELECT+Id,Name,AnnualRevenue,Phone+FROM+Account+WHERE+Erp_Id__c+=+'E1'"
        ),
        None,
    )
    .await;
    let e1 = q["records"][0].clone();
    assert_eq!(e1["Name"], "Acme Corp");
    assert_eq!(e1["AnnualRevenue"], J::Null);
    assert_eq!(e1["Phone"], "555-0100");

    // Update by Id, with one unknown id.
    let e1_id = e1["Id"].as_str().unwrap();
    let (id, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "update"}),
        &format!("Id,Phone\n{e1_id},555-0199\n001000000000999AAA,1\n"),
    )
    .await;
    assert_eq!(info["numberRecordsFailed"], 1);
    let failed = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/failedResults")).await);
    assert_eq!(failed[1][0], "001000000000999AAA");
    assert!(
        failed[1][1].starts_with("NOT_FOUND:") || failed[1][1].starts_with("ENTITY_IS_DELETED:"),
        "{:?}",
        failed[1]
    );

    // Delete (soft: queryAll and getDeleted see it) and hardDelete (only getDeleted does).
    let ok = rows(
        &text(
            &c,
            &format!(
                "{api}/jobs/ingest/{}/successfulResults",
                run_job(
                    &c,
                    &api,
                    json!({"object": "Account", "operation": "insert"}),
                    "Name\nGone soft\nGone hard\n"
                )
                .await
                .0
            ),
        )
        .await,
    );
    let (soft, hard) = (ok[1][0].clone(), ok[2][0].clone());
    let (_, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "delete"}),
        &format!("Id\n{soft}\n"),
    )
    .await;
    assert_eq!(info["numberRecordsFailed"], 0);
    let (_, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "hardDelete"}),
        &format!("Id\n{hard}\n"),
    )
    .await;
    assert_eq!(info["numberRecordsFailed"], 0);
    let (_, q) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/queryAll?q=SELECT+Id+FROM+Account+WHERE+IsDeleted+=+true"),
        None,
    )
    .await;
    let in_bin: Vec<&str> = q["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap())
        .collect();
    assert_eq!(
        in_bin,
        [soft.as_str()],
        "a hard-deleted record skips the recycle bin"
    );
    let (_, r) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/sobjects/Account/{hard}"),
        None,
    )
    .await;
    assert_eq!(r[0]["errorCode"], "NOT_FOUND");
    let start = "2000-01-01T00:00:00Z";
    let now = chrono::Utc::now();
    let (s, d) = json_call(
        &c,
        reqwest::Method::GET,
        &format!(
            "{api}/sobjects/Account/deleted/?start={}&end={}",
            (now - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
            (now + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let mut ids: Vec<&str> = d["deletedRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![soft.as_str(), hard.as_str()];
    want.sort();
    assert_eq!(ids, want, "getDeleted reports both");
    let _ = start;

    // The job list shows every ingest job; a finished job can be deleted.
    let (_, list) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/jobs/ingest"),
        None,
    )
    .await;
    assert_eq!(list["done"], true);
    assert_eq!(list["records"].as_array().unwrap().len(), 6);
    let first = list["records"][0]["id"].as_str().unwrap().to_string();
    let r = c
        .delete(format!("{api}/jobs/ingest/{first}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/jobs/ingest/{first}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn ingest_relationship_columns_failures_and_state_errors() {
    let (api, c) = start().await;
    run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "insert"}),
        "Name,Erp_Id__c\nParent,P1\n",
    )
    .await;
    // Contact.AccountId through the parent's external id.
    let (id, info) = run_job(
        &c,
        &api,
        json!({"object": "Contact", "operation": "insert"}),
        "LastName,Account.Erp_Id__c\nDoe,P1\nRoe,NOPE\n",
    )
    .await;
    assert_eq!(info["numberRecordsFailed"], 1);
    let failed = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/failedResults")).await);
    assert!(
        failed[1][1].contains("Foreign key external ID: NOPE not found"),
        "{:?}",
        failed[1]
    );
    let (_, q) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/query?q=SELECT+LastName,Account.Erp_Id__c+FROM+Contact"),
        None,
    )
    .await;
    assert_eq!(q["records"][0]["Account"]["Erp_Id__c"], "P1");

    // An unknown column fails the whole job; every row is unprocessed.
    let (id, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "insert"}),
        "Name,Bogus__c\nA,1\n",
    )
    .await;
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"]
        .as_str()
        .unwrap()
        .contains("Field name not found : Bogus__c"));
    let _ = id;
    // CRLF data in an LF job fails as in Salesforce.
    let (_, info) = run_job(
        &c,
        &api,
        json!({"object": "Account", "operation": "insert"}),
        "Name\r\nA\r\n",
    )
    .await;
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"]
        .as_str()
        .unwrap()
        .contains("LineEnding is invalid"));
    // ... and is accepted with lineEnding CRLF, TAB delimited.
    let (_, info) = run_job(&c, &api, json!({"object": "Account", "operation": "insert", "lineEnding": "CRLF", "columnDelimiter": "TAB"}), "Name\tPhone\r\nTabbed\t1\r\n").await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 1);

    // An empty upload completes the job with no record (an org does not fail it), whether the
    // body has no bytes or only a line ending; its result files are headers only.
    for empty in ["", "\n"] {
        let (id, info) = run_job(
            &c,
            &api,
            json!({"object": "Account", "operation": "insert"}),
            empty,
        )
        .await;
        assert_eq!(info["state"], "JobComplete", "{empty:?}: {info}");
        assert_eq!(info["numberRecordsProcessed"], 0);
        assert_eq!(info["numberRecordsFailed"], 0);
        let ok = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/successfulResults/")).await);
        assert_eq!(
            ok,
            vec![vec!["sf__Id".to_string(), "sf__Created".to_string()]]
        );
        let failed = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/failedResults/")).await);
        assert_eq!(
            failed,
            vec![vec!["sf__Id".to_string(), "sf__Error".to_string()]]
        );
    }

    // Job creation errors.
    let (s, e) = json_call(
        &c,
        reqwest::Method::POST,
        &format!("{api}/jobs/ingest"),
        Some(json!({"object": "Account", "operation": "upsert"})),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(e[0]["errorCode"], "INVALIDJOB");
    let (s, _) = json_call(
        &c,
        reqwest::Method::POST,
        &format!("{api}/jobs/ingest"),
        Some(json!({"object": "Nope__c", "operation": "insert"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = json_call(
        &c,
        reqwest::Method::POST,
        &format!("{api}/jobs/ingest"),
        Some(json!({"object": "Account", "operation": "merge"})),
    )
    .await;
    assert_eq!(s, 400);

    // State machine: UploadComplete without data, a second upload, abort, results of an
    // unfinished job.
    let (_, job) = json_call(
        &c,
        reqwest::Method::POST,
        &format!("{api}/jobs/ingest"),
        Some(json!({"object": "Account", "operation": "insert"})),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let (s, e) = json_call(
        &c,
        reqwest::Method::PATCH,
        &format!("{api}/jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    assert_eq!((s, e[0]["errorCode"].as_str()), (400, Some("INVALIDJOB")));
    let (s, _) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/jobs/ingest/{id}/successfulResults"),
        None,
    )
    .await;
    assert_eq!(s, 400, "no results before the job ends");
    let put = |body: &'static str| {
        c.put(format!("{api}/jobs/ingest/{id}/batches"))
            .bearer_auth(TOKEN)
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    assert_eq!(put("Name\nX\nY\n").await.unwrap().status(), 201);
    assert_eq!(
        put("Name\nZ\n").await.unwrap().status(),
        400,
        "one upload per job"
    );
    let (s, j) = json_call(
        &c,
        reqwest::Method::PATCH,
        &format!("{api}/jobs/ingest/{id}"),
        Some(json!({"state": "Aborted"})),
    )
    .await;
    assert_eq!((s, j["state"].as_str()), (200, Some("Aborted")));
    let un = rows(&text(&c, &format!("{api}/jobs/ingest/{id}/unprocessedrecords")).await);
    assert_eq!(un, vec![vec!["Name"], vec!["X"], vec!["Y"]]);
    let (s, _) = json_call(
        &c,
        reqwest::Method::PATCH,
        &format!("{api}/jobs/ingest/{id}"),
        Some(json!({"state": "UploadComplete"})),
    )
    .await;
    assert_eq!(s, 400, "an aborted job stays aborted");
    let (_, q) = json_call(
        &c,
        reqwest::Method::GET,
        &format!("{api}/query?q=SELECT+COUNT()+FROM+Account+WHERE+Name+IN+('X','Y')"),
        None,
    )
    .await;
    assert_eq!(q["totalSize"], 0, "nothing of an aborted job is applied");
    let r = c
        .put(format!("{api}/jobs/ingest/{id}/batches"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
