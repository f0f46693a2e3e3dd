//! Bulk API 1.0 (`/services/async/NN.N`) against the sandbox over HTTP: jobs in CSV, XML and
//! JSON, batches and their states, per-record results in request order, lookups by a parent's
//! external id, query results (JSON dates as epoch milliseconds, as Salesforce sends them), PK
//! chunking, batch-level failures that change nothing, and Bulk API 1.0's error answers.

use crate::sf_common::serve_in_process;
use concord::sandbox::server::Settings;
use serde_json::{json, Value as J};

const TOKEN: &str = "00Dsandbox!bulkv1";

async fn start() -> (String, String, reqwest::Client) {
    let (base, _) = serve_in_process(
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Erp_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
        Settings {
            token: TOKEN.into(),
            ..Settings::default()
        },
    )
    .await;
    (
        format!("{base}/services/async/59.0"),
        format!("{base}/services/data/v59.0"),
        reqwest::Client::new(),
    )
}

struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> J {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn call(
    c: &reqwest::Client,
    m: reqwest::Method,
    url: &str,
    ct: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut rb = c.request(m, url).header("X-SFDC-Session", TOKEN);
    if let Some(ct) = ct {
        rb = rb.header("content-type", ct).body(body.to_string());
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        text: r.text().await.unwrap(),
    }
}

async fn get(c: &reqwest::Client, url: &str) -> Answer {
    call(c, reqwest::Method::GET, url, None, "", &[]).await
}

/// A GET asking for JSON answers.
async fn get_as_json(c: &reqwest::Client, url: &str) -> Answer {
    call(c, reqwest::Method::GET, url, JSON, "", &[]).await
}

async fn get_json(c: &reqwest::Client, url: &str) -> J {
    get_as_json(c, url).await.json()
}

async fn post(c: &reqwest::Client, url: &str, ct: Option<&str>, body: &str) -> Answer {
    call(c, reqwest::Method::POST, url, ct, body, &[]).await
}

/// Every `<name>…</name>` text in an XML answer, in order.
fn tags(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).unwrap();
        out.push(after[..j].to_string());
        rest = &after[j..];
    }
    out
}

fn tag(xml: &str, name: &str) -> String {
    tags(xml, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
}

fn xml_job(op: &str, object: &str, content: &str, ext: Option<&str>) -> String {
    let ext = ext
        .map(|e| format!("<externalIdFieldName>{e}</externalIdFieldName>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload">
  <operation>{op}</operation><object>{object}</object>{ext}<contentType>{content}</contentType>
</jobInfo>"#
    )
}

const XML: Option<&str> = Some("application/xml; charset=UTF-8");
const CSV: Option<&str> = Some("text/csv");
const JSON: Option<&str> = Some("application/json");

/// Opens a job (XML body), returns its id.
async fn open_job(c: &reqwest::Client, bulk: &str, body: &str) -> String {
    let a = call(
        c,
        reqwest::Method::POST,
        &format!("{bulk}/job"),
        XML,
        body,
        &[],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert!(
        a.content_type.starts_with("application/xml"),
        "{}",
        a.content_type
    );
    assert_eq!(tag(&a.text, "state"), "Open");
    tag(&a.text, "id")
}

/// Adds a batch, polls it to a final state, returns (batch id, final batch info XML).
async fn run_batch(
    c: &reqwest::Client,
    bulk: &str,
    job: &str,
    ct: Option<&str>,
    data: &str,
) -> (String, String) {
    let a = call(
        c,
        reqwest::Method::POST,
        &format!("{bulk}/job/{job}/batch"),
        ct,
        data,
        &[],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = if a.content_type.starts_with("application/json") {
        let j = a.json();
        assert_eq!(j["state"], "Queued");
        j["id"].as_str().unwrap().to_string()
    } else {
        assert_eq!(tag(&a.text, "state"), "Queued");
        tag(&a.text, "id")
    };
    let info = get(c, &format!("{bulk}/job/{job}/batch/{id}")).await;
    assert_eq!(info.status, 200, "{}", info.text);
    (id, info.text)
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

/// A REST API GET (`query`, `limits`) with the session as a bearer token.
async fn rest_get(c: &reqwest::Client, rest: &str, path: &str, query: &[(&str, &str)]) -> J {
    c.get(format!("{rest}/{path}"))
        .query(query)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn soql(c: &reqwest::Client, rest: &str, q: &str) -> Vec<J> {
    let r = rest_get(c, rest, "query", &[("q", q)]).await;
    r["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn csv_jobs_apply_every_operation_with_results_in_request_order() {
    let (bulk, rest, c) = start().await;
    // insert: the second row lacks the required Name and fails alone.
    let job = open_job(&c, &bulk, &xml_job("insert", "Account", "CSV", None)).await;
    let (b, info) = run_batch(
        &c,
        &bulk,
        &job,
        CSV,
        "Name,Erp_Id__c,Phone\nAcme,E1,555\n,E2,\n\"Globex, Inc\",E3,#N/A\n",
    )
    .await;
    assert_eq!(tag(&info, "state"), "Completed");
    assert_eq!(tag(&info, "numberRecordsProcessed"), "3");
    assert_eq!(tag(&info, "numberRecordsFailed"), "1");
    let r = get(&c, &format!("{bulk}/job/{job}/batch/{b}/result")).await;
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
    let rows = csv_rows(&r.text);
    assert_eq!(rows[0], ["Id", "Success", "Created", "Error"]);
    assert_eq!((rows[1][1].as_str(), rows[1][2].as_str()), ("true", "true"));
    assert_eq!(rows[1][0].len(), 18);
    assert_eq!(
        rows[2][..3],
        ["".to_string(), "false".into(), "false".into()]
    );
    assert!(
        rows[2][3].starts_with("REQUIRED_FIELD_MISSING:"),
        "{:?}",
        rows[2]
    );
    assert_eq!(rows[3][1], "true");
    let acme_id = rows[1][0].clone();
    let close = post(&c, &format!("{bulk}/job/{job}"), XML, r#"<?xml version="1.0" encoding="UTF-8"?><jobInfo xmlns="http://www.force.com/2009/06/asyncapi/dataload"><state>Closed</state></jobInfo>"#)
    .await;
    assert_eq!(close.status, 200, "{}", close.text);
    assert_eq!(tag(&close.text, "state"), "Closed");
    assert_eq!(tag(&close.text, "numberBatchesCompleted"), "1");
    assert_eq!(tag(&close.text, "numberRecordsProcessed"), "3");
    assert_eq!(tag(&close.text, "numberRecordsFailed"), "1");
    // A closed job takes no batch.
    let late = post(&c, &format!("{bulk}/job/{job}/batch"), CSV, "Name\nLate\n").await;
    assert_eq!(late.status, 400);
    assert_eq!(tag(&late.text, "exceptionCode"), "InvalidJobState");

    // upsert by the external id: E1 exists (updated), E9 is new (created).
    let job = open_job(
        &c,
        &bulk,
        &xml_job("upsert", "Account", "CSV", Some("Erp_Id__c")),
    )
    .await;
    let (b, info) = run_batch(
        &c,
        &bulk,
        &job,
        CSV,
        "Erp_Id__c,Name\nE1,Acme Corp\nE9,Initech\n",
    )
    .await;
    assert_eq!(tag(&info, "state"), "Completed");
    let rows = csv_rows(
        &get(&c, &format!("{bulk}/job/{job}/batch/{b}/result"))
            .await
            .text,
    );
    assert_eq!(
        rows[1][..3],
        [acme_id.clone(), "true".into(), "false".into()]
    );
    assert_eq!(rows[2][1..3], ["true".to_string(), "true".into()]);

    // Contacts linked by their account's external id; update; delete.
    let job = open_job(&c, &bulk, &xml_job("insert", "Contact", "CSV", None)).await;
    let (b, info) = run_batch(
        &c,
        &bulk,
        &job,
        CSV,
        "LastName,Account.Erp_Id__c\nDoe,E1\nRoe,NOPE\n",
    )
    .await;
    assert_eq!(tag(&info, "numberRecordsFailed"), "1");
    let rows = csv_rows(
        &get(&c, &format!("{bulk}/job/{job}/batch/{b}/result"))
            .await
            .text,
    );
    let doe = rows[1][0].clone();
    assert_eq!(rows[2][1], "false");
    let contacts = soql(&c, &rest, "SELECT LastName, AccountId FROM Contact").await;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["AccountId"], json!(acme_id));

    let job = open_job(&c, &bulk, &xml_job("update", "Contact", "CSV", None)).await;
    let (_, info) = run_batch(&c, &bulk, &job, CSV, &format!("Id,Title\n{doe},CTO\n")).await;
    assert_eq!(tag(&info, "numberRecordsFailed"), "0");
    assert_eq!(
        soql(&c, &rest, "SELECT Title FROM Contact").await[0]["Title"],
        "CTO"
    );
    let job = open_job(&c, &bulk, &xml_job("delete", "Contact", "CSV", None)).await;
    let (_, info) = run_batch(&c, &bulk, &job, CSV, &format!("Id\n{doe}\n")).await;
    assert_eq!(tag(&info, "state"), "Completed");
    assert!(soql(&c, &rest, "SELECT Id FROM Contact").await.is_empty());
}

#[tokio::test]
async fn xml_jobs_read_xml_batches_and_answer_xml_results() {
    let (bulk, rest, c) = start().await;
    let job = open_job(&c, &bulk, &xml_job("insert", "Account", "XML", None)).await;
    let data = r#"<?xml version="1.0" encoding="UTF-8"?>
<sObjects xmlns="http://www.force.com/2009/06/asyncapi/dataload" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <sObject><Name>Umbrella &amp; Co</Name><Erp_Id__c>X1</Erp_Id__c><Phone xsi:nil="true"/></sObject>
  <sObject><Erp_Id__c>X2</Erp_Id__c></sObject>
</sObjects>"#;
    let (b, info) = run_batch(&c, &bulk, &job, XML, data).await;
    assert_eq!(tag(&info, "state"), "Completed", "{info}");
    let r = get(&c, &format!("{bulk}/job/{job}/batch/{b}/result")).await;
    assert!(r.content_type.starts_with("application/xml"));
    assert_eq!(tags(&r.text, "success"), ["true", "false"]);
    assert_eq!(tags(&r.text, "created"), ["true", "false"]);
    assert_eq!(tag(&r.text, "statusCode"), "REQUIRED_FIELD_MISSING");
    let names = soql(&c, &rest, "SELECT Name FROM Account").await;
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["Name"], "Umbrella & Co");
    // The batch's request comes back as uploaded; the job lists its batch.
    let req = get(&c, &format!("{bulk}/job/{job}/batch/{b}/request")).await;
    assert_eq!(req.text, data);
    let list = get(&c, &format!("{bulk}/job/{job}/batch")).await;
    assert_eq!(tags(&list.text, "id"), vec![b]);
    // A contact by its account's external id, the nested sObject form.
    let job = open_job(&c, &bulk, &xml_job("insert", "Contact", "XML", None)).await;
    let (_, info) = run_batch(
        &c,
        &bulk,
        &job,
        XML,
        r#"<sObjects xmlns="http://www.force.com/2009/06/asyncapi/dataload"><sObject><LastName>Poe</LastName><Account><sObject><type>Account</type><Erp_Id__c>X1</Erp_Id__c></sObject></Account></sObject></sObjects>"#,
    )
    .await;
    assert_eq!(tag(&info, "numberRecordsFailed"), "0", "{info}");
    let poe = soql(&c, &rest, "SELECT Account.Name FROM Contact").await;
    assert_eq!(poe[0]["Account"]["Name"], "Umbrella & Co");
    // Aborting: the job ends, and takes nothing more.
    let abort = post(&c, &format!("{bulk}/job/{job}"), XML, "<jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><state>Aborted</state></jobInfo>")
    .await;
    assert_eq!(tag(&abort.text, "state"), "Aborted");
    let again = post(&c, &format!("{bulk}/job/{job}"), XML, "<jobInfo xmlns=\"http://www.force.com/2009/06/asyncapi/dataload\"><state>Closed</state></jobInfo>")
    .await;
    assert_eq!(again.status, 400);
    assert_eq!(tag(&again.text, "exceptionCode"), "InvalidJobState");
}

#[tokio::test]
async fn batch_level_failures_change_nothing_and_name_what_is_wrong() {
    let (bulk, rest, c) = start().await;
    let job = open_job(&c, &bulk, &xml_job("insert", "Account", "CSV", None)).await;
    // An unknown column fails the batch whole: not even the good rows are written.
    let (b, info) = run_batch(&c, &bulk, &job, CSV, "Name,Nope__c\nA,1\nB,2\n").await;
    assert_eq!(tag(&info, "state"), "Failed");
    assert_eq!(
        tag(&info, "stateMessage"),
        "InvalidBatch : Field name not found : Nope__c"
    );
    assert_eq!(tag(&info, "numberRecordsProcessed"), "0");
    let r = get(&c, &format!("{bulk}/job/{job}/batch/{b}/result")).await;
    assert_eq!(r.status, 400);
    assert_eq!(tag(&r.text, "exceptionCode"), "InvalidBatch");
    // A row with the wrong number of cells names its row.
    let (_, info) = run_batch(&c, &bulk, &job, CSV, "Name,Phone\nA,1\nB\n").await;
    assert_eq!(tag(&info, "state"), "Failed");
    assert!(tag(&info, "stateMessage").contains("data row 2"), "{info}");
    // More than 10 000 records.
    let mut big = String::from("Name\n");
    for i in 0..10_001 {
        big.push_str(&format!("N{i}\n"));
    }
    let (_, info) = run_batch(&c, &bulk, &job, CSV, &big).await;
    assert_eq!(tag(&info, "state"), "Failed");
    assert!(tag(&info, "stateMessage").contains("Exceeded number of records : 10001"));
    assert!(soql(&c, &rest, "SELECT Id FROM Account").await.is_empty());
    // A batch that is not in the job's format is refused.
    let wrong = post(
        &c,
        &format!("{bulk}/job/{job}/batch"),
        JSON,
        "[{\"Name\":\"A\"}]",
    )
    .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["exceptionCode"], "InvalidBatch");
    // JSON: the record and field at fault are named.
    let j = post(
        &c,
        &format!("{bulk}/job"),
        JSON,
        r#"{"operation":"insert","object":"Account","contentType":"JSON"}"#,
    )
    .await;
    assert_eq!(j.status, 201, "{}", j.text);
    let jid = j.json()["id"].as_str().unwrap().to_string();
    let b = post(
        &c,
        &format!("{bulk}/job/{jid}/batch"),
        JSON,
        r#"[{"Name":"A"},{"Name":"B","Tags":["x"]}]"#,
    )
    .await;
    let bid = b.json()["id"].as_str().unwrap().to_string();
    let info = get_json(&c, &format!("{bulk}/job/{jid}/batch/{bid}")).await;
    assert_eq!(info["state"], "Failed");
    assert!(
        info["stateMessage"]
            .as_str()
            .unwrap()
            .contains("record 2, field Tags"),
        "{info}"
    );
    assert!(soql(&c, &rest, "SELECT Id FROM Account").await.is_empty());
}

#[tokio::test]
async fn errors_come_in_bulk_api_form() {
    let (bulk, _rest, c) = start().await;
    let base = bulk.trim_end_matches("/services/async/59.0").to_string();
    // A bad session: 400 InvalidSessionId (what clients take as "refresh the session").
    let r = c
        .get(format!("{bulk}/job/750000000000001"))
        .header("X-SFDC-Session", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        tag(&r.text().await.unwrap(), "exceptionCode"),
        "InvalidSessionId"
    );
    // A retired version (30.0), and one not yet released.
    for v in ["30.0", "99.0"] {
        let a = post(
            &c,
            &format!("{base}/services/async/{v}/job"),
            XML,
            &xml_job("insert", "Account", "CSV", None),
        )
        .await;
        assert_eq!(a.status, 400, "{v}");
        assert_eq!(tag(&a.text, "exceptionCode"), "InvalidVersion");
    }
    // An unknown job, an unknown object, an upsert without an external id, a bad operation.
    let a = get(&c, &format!("{bulk}/job/750000000000999")).await;
    assert_eq!(tag(&a.text, "exceptionCode"), "InvalidJob");
    for (body, want) in [
        (
            xml_job("insert", "Nope__c", "CSV", None),
            "Unable to find object: Nope__c",
        ),
        (
            xml_job("upsert", "Account", "CSV", None),
            "External ID was blank",
        ),
        (
            xml_job("merge", "Account", "CSV", None),
            "Invalid operation: merge",
        ),
        (
            xml_job("insert", "Account", "ZIP_CSV", None),
            "not supported",
        ),
    ] {
        let a = post(&c, &format!("{bulk}/job"), XML, &body).await;
        assert_eq!(a.status, 400);
        assert_eq!(tag(&a.text, "exceptionCode"), "InvalidJob");
        assert!(
            tag(&a.text, "exceptionMessage").contains(want),
            "{}",
            a.text
        );
    }
    // Malformed XML.
    let a = post(
        &c,
        &format!("{bulk}/job"),
        XML,
        "<jobInfo><operation>insert</jobInfo>",
    )
    .await;
    assert_eq!(tag(&a.text, "exceptionCode"), "InvalidXML");
    // JSON asked, JSON answered; an unknown path is InvalidUrl.
    let a = get_as_json(&c, &format!("{bulk}/job/750000000000999")).await;
    assert_eq!(a.json()["exceptionCode"], "InvalidJob");
    let a = get(&c, &format!("{bulk}/jobs")).await;
    assert_eq!(a.status, 404);
    assert_eq!(tag(&a.text, "exceptionCode"), "InvalidUrl");
}

#[tokio::test]
async fn queries_answer_in_the_jobs_format_and_pk_chunking_splits_by_id() {
    let (bulk, rest, c) = start().await;
    let job = open_job(&c, &bulk, &xml_job("insert", "Account", "CSV", None)).await;
    let mut data = String::from("Name,Erp_Id__c,AnnualRevenue\n");
    for i in 0..5 {
        data.push_str(&format!("Acct {i},Q{i},{}\n", i * 10));
    }
    run_batch(&c, &bulk, &job, CSV, &data).await;
    let limits = || async {
        rest_get(&c, &rest, "limits", &[]).await["DailyBulkApiBatches"]["Remaining"]
            .as_u64()
            .unwrap()
    };
    let before = limits().await;

    // JSON: the result list is JSON; dates are epoch milliseconds, numbers are numbers.
    let j = post(
        &c,
        &format!("{bulk}/job"),
        JSON,
        r#"{"operation":"query","object":"Account","contentType":"JSON","concurrencyMode":0}"#,
    )
    .await;
    assert_eq!(j.status, 201, "{}", j.text);
    let jid = j.json()["id"].as_str().unwrap().to_string();
    let b = post(&c, &format!("{bulk}/job/{jid}/batch"), JSON, "SELECT Id, Name, AnnualRevenue, CreatedDate FROM Account WHERE Name != 'Acct 4' ORDER BY Name")
    .await;
    let bid = b.json()["id"].as_str().unwrap().to_string();
    let list = get_as_json(&c, &format!("{bulk}/job/{jid}/batch/{bid}/result")).await;
    let ids = list.json();
    let rid = ids[0].as_str().unwrap();
    let rows = get_json(&c, &format!("{bulk}/job/{jid}/batch/{bid}/result/{rid}")).await;
    assert_eq!(rows.as_array().unwrap().len(), 4);
    assert_eq!(rows[0]["Name"], "Acct 0");
    assert_eq!(rows[0]["attributes"]["type"], "Account");
    assert!(rows[0]["CreatedDate"].is_i64(), "{}", rows[0]);
    assert_eq!(rows[1]["AnnualRevenue"], json!(10.0));
    let rest_row = &soql(
        &c,
        &rest,
        "SELECT CreatedDate FROM Account WHERE Name = 'Acct 0'",
    )
    .await[0];
    let created = chrono::DateTime::parse_from_str(
        rest_row["CreatedDate"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%.3f%z",
    )
    .unwrap();
    assert_eq!(
        rows[0]["CreatedDate"].as_i64().unwrap(),
        created.timestamp_millis()
    );

    // CSV with PK chunking by 2: the original batch is NotProcessed, three chunks hold every
    // record once.
    let a = call(
        &c,
        reqwest::Method::POST,
        &format!("{bulk}/job"),
        XML,
        &xml_job("query", "Account", "CSV", None),
        &[("Sforce-Enable-PKChunking", "chunkSize=2")],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let qjob = tag(&a.text, "id");
    let (orig, info) = run_batch(
        &c,
        &bulk,
        &qjob,
        CSV,
        "SELECT Name, Owner.Name FROM Account",
    )
    .await;
    assert_eq!(tag(&info, "state"), "NotProcessed");
    let list = get(&c, &format!("{bulk}/job/{qjob}/batch")).await;
    let batch_ids = tags(&list.text, "id");
    assert_eq!(batch_ids.len(), 4, "{}", list.text);
    assert_eq!(batch_ids[0], orig);
    let mut names = Vec::new();
    for b in &batch_ids[1..] {
        let r = get(&c, &format!("{bulk}/job/{qjob}/batch/{b}/result")).await;
        assert!(r.content_type.starts_with("application/xml"));
        let rid = tag(&r.text, "result");
        let f = get(&c, &format!("{bulk}/job/{qjob}/batch/{b}/result/{rid}")).await;
        assert!(f.content_type.starts_with("text/csv"));
        let rows = csv_rows(&f.text);
        assert_eq!(rows[0], ["Name", "Owner.Name"]);
        assert!(rows.len() <= 3);
        names.extend(rows[1..].iter().map(|r| r[0].clone()));
    }
    names.sort();
    assert_eq!(names, ["Acct 0", "Acct 1", "Acct 2", "Acct 3", "Acct 4"]);
    let info = get(&c, &format!("{bulk}/job/{qjob}")).await;
    assert_eq!(tag(&info.text, "numberBatchesCompleted"), "3");
    assert_eq!(tag(&info.text, "numberRecordsProcessed"), "5");
    // Every batch counts against the daily Bulk API batches: 1 JSON + 1 + 3 chunks.
    assert_eq!(before - limits().await, 5);

    // XML query results; what Bulk API query refuses fails the batch.
    let xjob = open_job(&c, &bulk, &xml_job("query", "Account", "XML", None)).await;
    let (xb, info) = run_batch(
        &c,
        &bulk,
        &xjob,
        XML,
        "SELECT Name FROM Account WHERE Erp_Id__c = 'Q1'",
    )
    .await;
    assert_eq!(tag(&info, "state"), "Completed", "{info}");
    let rid = tag(
        &get(&c, &format!("{bulk}/job/{xjob}/batch/{xb}/result"))
            .await
            .text,
        "result",
    );
    let f = get(&c, &format!("{bulk}/job/{xjob}/batch/{xb}/result/{rid}")).await;
    assert!(
        f.text
            .contains("<records xsi:type=\"sObject\"><type>Account</type>"),
        "{}",
        f.text
    );
    assert_eq!(tags(&f.text, "Name"), ["Acct 1"]);
    let (_, info) = run_batch(&c, &bulk, &xjob, XML, "SELECT COUNT(Id) FROM Account").await;
    assert_eq!(tag(&info, "state"), "Failed");
    assert!(
        tag(&info, "stateMessage").contains("not supported"),
        "{info}"
    );
    let (_, info) = run_batch(&c, &bulk, &xjob, XML, "SELECT Name FROM Contact").await;
    assert_eq!(tag(&info, "state"), "Failed");
}
