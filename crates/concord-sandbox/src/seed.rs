//! `--seed`: loads SFDX data trees (`sf data import tree` files and their plans) into the org:
//! `@Ref` references between records are resolved, and custom objects and `__c` / `__s` fields
//! that the schema does not declare are added with types inferred from the data (text, long
//! text, number, boolean, date, reference to the referenced record's object).

use super::org::{Org, SfError};
use super::schema::{custom_object, reference_field, FieldDef, FieldType, ObjectDef};
use serde::Deserialize;
use serde_json::{Map, Value as J};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanEntry {
    sobject: String,
    #[serde(default)]
    save_refs: bool,
    #[serde(default)]
    resolve_refs: bool,
    files: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Tree {
    records: Vec<J>,
}

/// What a seed loaded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub records: BTreeMap<String, u64>,
    /// Fields added by inference, `Object.Field: type`.
    pub inferred: Vec<String>,
}

fn is_custom(name: &str) -> bool {
    name.ends_with("__c") || name.ends_with("__s")
}

/// Infers the type of a field from every value it has in the data.
fn infer(name: &str, values: &[&J], refs: &BTreeMap<String, (String, String)>) -> FieldDef {
    let strings: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
    if !strings.is_empty() && strings.len() == values.len() {
        if let Some(target) = strings.iter().find_map(|s| {
            s.strip_prefix('@')
                .and_then(|r| refs.get(r))
                .map(|(_, ty)| ty.clone())
        }) {
            return reference_field(name, &target);
        }
        if strings
            .iter()
            .all(|s| s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
        {
            return FieldDef::new(name, FieldType::Date);
        }
        let longest = strings.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        return FieldDef::new(
            name,
            if longest > 255 {
                FieldType::Textarea
            } else {
                FieldType::String
            },
        );
    }
    if values.iter().all(|v| v.is_boolean()) {
        return FieldDef::new(name, FieldType::Boolean);
    }
    if values.iter().all(|v| v.is_number()) {
        let scale = values
            .iter()
            .filter_map(|v| v.as_f64())
            .map(|f| {
                f.to_string()
                    .split('.')
                    .nth(1)
                    .map_or(0, |d| d.len() as u32)
            })
            .max()
            .unwrap_or(0);
        let mut f = FieldDef::new(name, FieldType::Double);
        f.precision = Some(18);
        f.scale = Some(scale);
        return f;
    }
    FieldDef::new(name, FieldType::Textarea)
}

fn load_entry(
    org: &mut Org,
    dir: &Path,
    entry: &PlanEntry,
    refs: &mut BTreeMap<String, (String, String)>,
    report: &mut SeedReport,
) -> Result<(), crate::InvalidInput> {
    let mut records = Vec::new();
    for f in &entry.files {
        let path = dir.join(f);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tree: Tree =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        records.extend(tree.records);
    }
    // Declare what the schema lacks (custom objects and custom fields only).
    let known = org.object(&entry.sobject).ok().cloned();
    if known.is_none() && !is_custom(&entry.sobject) {
        return Err(format!("{}: unknown standard object", entry.sobject).into());
    }
    let mut def = known.clone().unwrap_or_else(|| {
        let n = org.objects().iter().filter(|o| o.is_custom()).count();
        custom_object(&entry.sobject, &format!("a{n:02}"))
    });
    let mut names: Vec<String> = records
        .iter()
        .filter_map(J::as_object)
        .flat_map(|m| m.keys().filter(|k| *k != "attributes").cloned())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        if def.field(&name).is_some() {
            continue;
        }
        if !is_custom(&name) {
            return Err(format!("{}: no such standard field {name}", entry.sobject).into());
        }
        let values: Vec<&J> = records
            .iter()
            .filter_map(|r| r.get(&name))
            .filter(|v| !v.is_null())
            .collect();
        let f = infer(&name, &values, refs);
        report
            .inferred
            .push(format!("{}.{}: {}", def.name, f.name, f.ty.name()));
        def.fields.push(f);
    }
    let name = def.name.clone();
    org.extend_schema(ObjectDef { ..def });
    for (i, r) in records.iter().enumerate() {
        let mut fields: Map<String, J> = r.as_object().cloned().unwrap_or_default();
        let reference_id = fields
            .remove("attributes")
            .and_then(|a| a.get("referenceId").and_then(J::as_str).map(str::to_string));
        if entry.resolve_refs {
            for v in fields.values_mut() {
                if let Some(r) = v.as_str().and_then(|s| s.strip_prefix('@')) {
                    let (id, _) = refs.get(r).ok_or_else(|| {
                        format!("{name} record {}: unknown reference @{r}", i + 1)
                    })?;
                    *v = J::String(id.clone());
                }
            }
        }
        let id = org
            .create(&name, &fields)
            .map_err(|e: SfError| format!("{name} record {}: {e}", i + 1))?;
        if entry.save_refs {
            if let Some(rid) = reference_id {
                refs.insert(rid, (id, name.clone()));
            }
        }
        *report.records.entry(name.clone()).or_default() += 1;
    }
    Ok(())
}

/// Loads a plan file (a JSON array of `{sobject, saveRefs, resolveRefs, files}`) or a single
/// data tree file (`{"records": […]}`), resolving references across the whole seed.
pub fn seed(
    org: &mut Org,
    path: &Path,
    refs: &mut BTreeMap<String, (String, String)>,
) -> Result<SeedReport, crate::InvalidInput> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: J = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut report = SeedReport::default();
    let entries: Vec<PlanEntry> = if json.is_array() {
        serde_json::from_value(json)
            .map_err(|e| format!("{}: not a data plan: {e}", path.display()))?
    } else {
        let ty = json
            .get("records")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("attributes"))
            .and_then(|a| a.get("type"))
            .and_then(J::as_str)
            .ok_or_else(|| format!("{}: neither a plan nor a data tree", path.display()))?
            .to_string();
        vec![PlanEntry {
            sobject: ty,
            save_refs: true,
            resolve_refs: true,
            files: vec![path
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default()],
        }]
    };
    for e in &entries {
        load_entry(org, dir, e, refs, &mut report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{build, SchemaFile};
    use crate::soql;

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/salesforce-data")
    }

    #[test]
    fn loads_every_shared_sfdx_plan_with_references() {
        let mut org = Org::new(build(&SchemaFile::default()).unwrap());
        let mut refs = BTreeMap::new();
        let mut total = BTreeMap::new();
        for plan in [
            "lwc-recipes/data-plan.json",
            "dreamhouse-lwc/sample-data-plan.json",
            "ebikes-lwc/sample-data-plan.json",
            "easy-spaces-lwc/Plan1.json",
            "easy-spaces-lwc/Plan2.json",
        ] {
            let r = seed(&mut org, &fixtures().join(plan), &mut refs)
                .unwrap_or_else(|e| panic!("{plan}: {e}"));
            for (k, v) in r.records {
                *total.entry(k).or_insert(0) += v;
            }
        }
        assert_eq!(total["Opportunity"], 20);
        assert_eq!(total["Property__c"], 12);
        assert_eq!(total["Space__c"], 132);
        // References resolved: every opportunity points at a seeded account, queryable by path.
        let q =
            soql::parse("SELECT Name, Account.Name FROM Opportunity WHERE Account.Name != null")
                .unwrap();
        let crate::org::QueryResult::Rows(rows) = org.query(&q, false, "59.0").unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 20);
        let q = soql::parse(
            "SELECT Name, Broker__r.Name FROM Property__c WHERE Broker__r.Name != null",
        )
        .unwrap();
        let crate::org::QueryResult::Rows(rows) = org.query(&q, false, "59.0").unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 12, "property → broker references");
        let price = org
            .object("Property__c")
            .unwrap()
            .field("Price__c")
            .unwrap()
            .ty;
        assert_eq!(price, FieldType::Double);
    }

    #[test]
    fn bad_seeds_are_clear() {
        let mut org = Org::new(build(&SchemaFile::default()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"records": [{"attributes": {"type": "Account"}, "Nope": 1, "Name": "x"}]}"#,
        )
        .unwrap();
        let e = seed(&mut org, &dir.path().join("a.json"), &mut BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("no such standard field Nope"), "{e}");
        std::fs::write(dir.path().join("b.json"), r#"{"records": [{"attributes": {"type": "Contact"}, "LastName": "x", "AccountId": "@Missing"}]}"#).unwrap();
        let e = seed(&mut org, &dir.path().join("b.json"), &mut BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("@Missing"), "{e}");
    }
}
