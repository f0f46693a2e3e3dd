//! Bulk API 1.0's three formats (CSV, JSON, XML): batches read into records, and job info,
//! batch info, results and query results written back.

use super::jobs::{QueryOut, RowResult};
use super::xml::{self, Element};
use crate::bulk::jobs::{csv_writer, read_csv, ExtRef, InRecord};
use crate::bulk::{column_paths, csv_cell};
use crate::org::Org;
use crate::schema::FieldType;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as J};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Json,
    Xml,
}

impl Format {
    pub(crate) fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "CSV" => Format::Csv,
            "JSON" => Format::Json,
            "XML" => Format::Xml,
            _ => return None,
        })
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Csv => "CSV",
            Format::Json => "JSON",
            Format::Xml => "XML",
        }
    }
    pub(crate) fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        }
    }
    /// Whether a request's Content-Type carries this format.
    pub(crate) fn accepts(self, content_type: &str) -> bool {
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match self {
            Format::Csv => ct == "text/csv",
            Format::Json => ct == "application/json",
            Format::Xml => ct == "application/xml" || ct == "text/xml",
        }
    }
}

/// A body in `format` with its content type.
pub(crate) fn body(status: StatusCode, format: Format, text: impl Into<Vec<u8>>) -> Response {
    (
        status,
        [("content-type", format!("{}; charset=UTF-8", format.mime()))],
        text.into(),
    )
        .into_response()
}

/// An error answer: `<error><exceptionCode>…` (XML) or `{"exceptionCode": …}` (JSON).
pub(crate) fn error(status: u16, code: &str, message: &str, json: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if json {
        let b = json!({"exceptionCode": code, "exceptionMessage": message}).to_string();
        return body(status, Format::Json, b);
    }
    let b = xml::Writer::new()
        .root("error")
        .leaf("exceptionCode", code)
        .leaf("exceptionMessage", message)
        .close("error")
        .finish();
    body(status, Format::Xml, b)
}

/// Info fields as a JSON object or as `<root>` with one element each (nulls left out, as
/// Salesforce leaves out an unset `externalIdFieldName`).
pub(crate) fn info(root: &str, fields: &[(&'static str, J)], format: Format) -> String {
    if format == Format::Json {
        let m: Map<String, J> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        return J::Object(m).to_string();
    }
    let mut w = xml::Writer::new();
    w.root(root);
    info_elements(&mut w, fields);
    w.close(root).finish()
}

fn info_elements(w: &mut xml::Writer, fields: &[(&'static str, J)]) {
    for (k, v) in fields {
        if let Some(t) = text_of(v) {
            w.leaf(k, &t);
        }
    }
}

/// A list of infos: `{"batchInfo": […]}` or `<batchInfoList><batchInfo>…`.
pub(crate) fn info_list(
    root: &str,
    item: &str,
    items: &[Vec<(&'static str, J)>],
    format: Format,
) -> String {
    if format == Format::Json {
        let list: Vec<J> = items
            .iter()
            .map(|f| J::Object(f.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()))
            .collect();
        return json!({ item: list }).to_string();
    }
    let mut w = xml::Writer::new();
    w.root(root);
    for f in items {
        w.open(item);
        info_elements(&mut w, f);
        w.close(item);
    }
    w.close(root).finish()
}

fn text_of(v: &J) -> Option<String> {
    match v {
        J::Null => None,
        J::String(s) => Some(s.clone()),
        J::Bool(b) => Some(b.to_string()),
        J::Number(n) => {
            // apiVersion is a decimal in XML too ("59.0").
            if n.is_f64() {
                n.as_f64().map(|f| format!("{f:.1}"))
            } else {
                Some(n.to_string())
            }
        }
        other => Some(other.to_string()),
    }
}

/// The body of a job creation or state change: `<jobInfo>…</jobInfo>` or a JSON object, as
/// field → value (a nested element or non-scalar is an error naming the field).
pub(crate) fn read_job_body(data: &[u8], json_body: bool) -> Result<Map<String, J>, String> {
    if json_body {
        return match serde_json::from_slice::<J>(data) {
            Ok(J::Object(m)) => Ok(m),
            Ok(_) => Err("the body must be a JSON object".into()),
            Err(e) => Err(format!("malformed JSON: {e}")),
        };
    }
    let root = xml::parse(data)?;
    if root.name != "jobInfo" {
        return Err(format!("expected a jobInfo element, found {}", root.name));
    }
    let mut m = Map::new();
    for c in root.children {
        if !c.children.is_empty() {
            return Err(format!("jobInfo/{}: a value was expected", c.name));
        }
        m.insert(c.name, J::String(c.text.trim().to_string()));
    }
    Ok(m)
}

/// A CSV batch's header row (empty when there is none).
pub(crate) fn csv_header(data: &[u8]) -> Vec<String> {
    csv::ReaderBuilder::new()
        .from_reader(data)
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A data batch read into records. The error names the row or record and the field.
pub(crate) fn parse_records(format: Format, data: &[u8]) -> Result<Vec<InRecord>, String> {
    match format {
        Format::Csv => parse_csv(data),
        Format::Json => parse_json(data),
        Format::Xml => parse_xml(data),
    }
}

fn parse_csv(data: &[u8]) -> Result<Vec<InRecord>, String> {
    let (header, rows) = read_csv(data, b',')?;
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    Ok(rows
        .iter()
        .map(|row| InRecord::from_csv(&header, row))
        .collect())
}

fn parse_json(data: &[u8]) -> Result<Vec<InRecord>, String> {
    let v: J = serde_json::from_slice(data)
        .map_err(|e| format!("InvalidBatch : Failed to parse JSON: {e}"))?;
    let J::Array(items) = v else {
        return Err("InvalidBatch : Failed to parse JSON: a batch is an array of records".into());
    };
    let mut out = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
        let at = |field: &str, what: &str| {
            format!(
                "InvalidBatch : Failed to parse JSON: record {}, field {field}: {what}",
                n + 1
            )
        };
        let J::Object(m) = item else {
            return Err(format!(
                "InvalidBatch : Failed to parse JSON: record {} is not an object",
                n + 1
            ));
        };
        let mut rec = InRecord::default();
        for (k, v) in m {
            if k == "attributes" {
                continue;
            }
            if k.eq_ignore_ascii_case("Id") {
                match v {
                    J::String(s) if !s.is_empty() => rec.id = Some(s),
                    J::String(_) | J::Null => {}
                    _ => return Err(at(&k, "an Id is a string")),
                }
                continue;
            }
            match v {
                J::Object(parent) => rec.refs.push(json_ref(&k, parent).map_err(|w| at(&k, &w))?),
                J::Array(_) => return Err(at(&k, "arrays are not field values")),
                v => {
                    rec.fields.insert(k, v);
                }
            }
        }
        out.push(rec);
    }
    Ok(out)
}

/// `"Account": {"Erp_Id__c": "7"}` (with an optional `attributes.type`).
fn json_ref(rel: &str, parent: Map<String, J>) -> Result<ExtRef, String> {
    let object = parent
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(J::as_str)
        .map(str::to_string);
    let keys: Vec<(&String, &J)> = parent.iter().filter(|(k, _)| *k != "attributes").collect();
    match keys.as_slice() {
        [(field, value)] => Ok(ExtRef {
            relationship: rel.to_string(),
            object,
            field: field.to_string(),
            value: match value {
                J::String(s) => s.clone(),
                J::Number(n) => n.to_string(),
                _ => return Err("an external id value is a string or a number".into()),
            },
        }),
        _ => Err("a related record is set by exactly one external id field".into()),
    }
}

fn parse_xml(data: &[u8]) -> Result<Vec<InRecord>, String> {
    let root = xml::parse(data).map_err(|e| format!("InvalidBatch : Failed to parse XML: {e}"))?;
    if root.name != "sObjects" {
        return Err(format!(
            "InvalidBatch : Failed to parse XML: expected sObjects, found {}",
            root.name
        ));
    }
    let mut out = Vec::new();
    for (n, o) in root.children.into_iter().enumerate() {
        if o.name != "sObject" {
            return Err(format!(
                "InvalidBatch : Failed to parse XML: record {}: expected sObject, found {}",
                n + 1,
                o.name
            ));
        }
        let mut rec = InRecord::default();
        for f in o.children {
            if f.name.eq_ignore_ascii_case("Id") {
                let t = f.text.trim();
                if !t.is_empty() {
                    rec.id = Some(t.to_string());
                }
                continue;
            }
            if f.nil {
                rec.fields.insert(f.name, J::Null);
            } else if f.children.is_empty() {
                rec.fields.insert(f.name, J::String(f.text));
            } else {
                let r = xml_ref(&f).map_err(|w| {
                    format!(
                        "InvalidBatch : Failed to parse XML: record {}, field {}: {w}",
                        n + 1,
                        f.name
                    )
                })?;
                rec.refs.push(r);
            }
        }
        out.push(rec);
    }
    Ok(out)
}

/// `<Account><Erp_Id__c>7</Erp_Id__c></Account>`, or with an `sObject` (and `type`) inside.
fn xml_ref(f: &Element) -> Result<ExtRef, String> {
    let inner = f.child("sObject").unwrap_or(f);
    let object = inner.child("type").map(|t| t.text.trim().to_string());
    let keys: Vec<&Element> = inner.children.iter().filter(|c| c.name != "type").collect();
    match keys.as_slice() {
        [k] if k.children.is_empty() => Ok(ExtRef {
            relationship: f.name.clone(),
            object,
            field: k.name.clone(),
            value: k.text.trim().to_string(),
        }),
        _ => Err("a related record is set by exactly one external id field".into()),
    }
}

/// A data batch's results, one per record in request order.
pub(crate) fn results(format: Format, results: &[RowResult]) -> String {
    match format {
        Format::Csv => {
            let mut w = csv_writer();
            let _ = w.write_record(["Id", "Success", "Created", "Error"]);
            for r in results {
                let err = r
                    .error
                    .as_ref()
                    .map(|e| format!("{}:{}:{} --", e.code, e.message, e.fields.join(",")))
                    .unwrap_or_default();
                let _ = w.write_record([
                    r.id.clone().unwrap_or_default(),
                    r.error.is_none().to_string(),
                    r.created.to_string(),
                    err,
                ]);
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Json => J::Array(
            results
                .iter()
                .map(|r| {
                    let errors: Vec<J> = r
                        .error
                        .iter()
                        .map(|e| json!({"message": e.message, "fields": e.fields, "statusCode": e.code}))
                        .collect();
                    json!({"success": r.error.is_none(), "created": r.created, "id": r.id, "errors": errors})
                })
                .collect(),
        )
        .to_string(),
        Format::Xml => {
            let mut w = xml::Writer::new();
            w.root("results");
            for r in results {
                w.open("result");
                if let Some(e) = &r.error {
                    w.open("errors");
                    for f in &e.fields {
                        w.leaf("fields", f);
                    }
                    w.leaf("message", &e.message).leaf("statusCode", e.code);
                    w.close("errors");
                }
                match &r.id {
                    Some(id) => w.leaf("id", id),
                    None => w.nil("id"),
                };
                w.leaf("success", &r.error.is_none().to_string())
                    .leaf("created", &r.created.to_string())
                    .close("result");
            }
            w.close("results").finish()
        }
    }
}

/// A query batch's result ids: `<result-list><result>752…` (CSV and XML jobs) or `["752…"]`.
pub(crate) fn result_list(format: Format, ids: &[&str]) -> (Format, String) {
    if format == Format::Json {
        return (Format::Json, json!(ids).to_string());
    }
    let mut w = xml::Writer::new();
    w.root("result-list");
    for id in ids {
        w.leaf("result", id);
    }
    (Format::Xml, w.close("result-list").finish())
}

/// A query result file. CSV: a header of the selected paths, empty cells for null. JSON: the
/// records as the REST API renders them, but dates and date-times as epoch milliseconds, as
/// Bulk API 1.0 sends them. XML: `<queryResult><records xsi:type="sObject"><type>…`.
pub(crate) fn query_result(format: Format, q: &QueryOut, org: &Org) -> String {
    match format {
        Format::Csv => {
            let mut w = csv_writer();
            let _ = w.write_record(&q.columns);
            let paths = column_paths(&q.columns);
            for row in &q.rows {
                let _ = w.write_record(paths.iter().map(|p| csv_cell(row, p)));
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Json => J::Array(
            q.rows
                .iter()
                .map(|r| epoch_dates(r.clone(), &q.object, org))
                .collect(),
        )
        .to_string(),
        Format::Xml => {
            let mut w = xml::Writer::new();
            w.root("queryResult");
            for r in &q.rows {
                xml_record(&mut w, "records", r, &q.object);
            }
            w.close("queryResult").finish()
        }
    }
}

fn type_of<'a>(row: &'a J, default: &'a str) -> &'a str {
    row.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(J::as_str)
        .unwrap_or(default)
}

fn epoch_dates(mut row: J, object: &str, org: &Org) -> J {
    let ty = type_of(&row, object).to_string();
    let def = org.object(&ty).ok();
    if let J::Object(m) = &mut row {
        for (k, v) in m.iter_mut() {
            if k == "attributes" {
                continue;
            }
            if v.is_object() {
                *v = epoch_dates(std::mem::take(v), "", org);
                continue;
            }
            let Some(s) = v.as_str() else { continue };
            let millis = match def.and_then(|d| d.field(k)).map(|f| f.ty) {
                Some(FieldType::Datetime) => {
                    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z")
                        .ok()
                        .map(|t| t.timestamp_millis())
                }
                Some(FieldType::Date) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp_millis()),
                _ => None,
            };
            if let Some(ms) = millis {
                *v = json!(ms);
            }
        }
    }
    row
}

fn xml_record(w: &mut xml::Writer, name: &str, row: &J, object: &str) {
    w.open_typed(name, "sObject");
    w.leaf("type", type_of(row, object));
    if let J::Object(m) = row {
        for (k, v) in m {
            if k == "attributes" {
                continue;
            }
            match v {
                J::Null => {
                    w.nil(k);
                }
                J::Object(_) => xml_record(w, k, v, ""),
                v => {
                    w.leaf(k, &text_of(v).unwrap_or_default());
                }
            }
        }
    }
    w.close(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records_with_lookups_nulls_and_errors_naming_the_record() {
        let recs = parse_json(
            br#"[{"attributes":{"type":"Contact"},"LastName":"A","Phone":null,"Account":{"Erp_Id__c":"7"},"Id":""},
                 {"Id":"003000000000001","Age__c":4}]"#,
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].fields.get("Phone"), Some(&J::Null));
        assert_eq!(recs[0].refs[0].field, "Erp_Id__c");
        assert_eq!(recs[0].id, None);
        assert_eq!(recs[1].id.as_deref(), Some("003000000000001"));
        let e = parse_json(br#"[{"Name":"x"},{"Tags":[1]}]"#).unwrap_err();
        assert!(e.contains("record 2, field Tags"), "{e}");
        assert!(parse_json(b"{}").unwrap_err().contains("array of records"));
        assert!(parse_json(b"[1]").unwrap_err().contains("record 1"));
    }

    #[test]
    fn xml_records_with_lookups_and_nil() {
        let recs = parse_xml(
            br#"<sObjects xmlns="http://www.force.com/2009/06/asyncapi/dataload" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<sObject><LastName>B</LastName><Phone xsi:nil="true"/><Account><sObject><type>Account</type><Erp_Id__c>9</Erp_Id__c></sObject></Account></sObject>
</sObjects>"#,
        )
        .unwrap();
        assert_eq!(recs[0].fields.get("Phone"), Some(&J::Null));
        assert_eq!(recs[0].refs[0].object.as_deref(), Some("Account"));
        assert_eq!(recs[0].refs[0].value, "9");
        let e = parse_xml(b"<sObjects><sObject><A><x>1</x><y>2</y></A></sObject></sObjects>")
            .unwrap_err();
        assert!(e.contains("record 1, field A"), "{e}");
    }

    #[test]
    fn results_in_each_format() {
        let rs = vec![
            RowResult {
                id: Some("001A".into()),
                created: true,
                error: None,
            },
            RowResult {
                id: None,
                created: false,
                error: Some(crate::org::SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    "Required fields are missing: [Name]",
                )),
            },
        ];
        let csv = results(Format::Csv, &rs);
        assert_eq!(
            csv,
            "\"Id\",\"Success\",\"Created\",\"Error\"\n\"001A\",\"true\",\"true\",\"\"\n\"\",\"false\",\"false\",\"REQUIRED_FIELD_MISSING:Required fields are missing: [Name]: --\"\n"
        );
        let j: J = serde_json::from_str(&results(Format::Json, &rs)).unwrap();
        assert_eq!(j[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
        assert_eq!(j[1]["id"], J::Null);
        let x = results(Format::Xml, &rs);
        assert!(
            x.contains(
                "<result><id>001A</id><success>true</success><created>true</created></result>"
            ),
            "{x}"
        );
        assert!(
            x.contains("<id xsi:nil=\"true\"/><success>false</success>"),
            "{x}"
        );
    }
}
