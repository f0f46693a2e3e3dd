//! The org's behaviour: indexes, compound names, CRUD errors, upsert, queries, modstamps.

use super::*;
use crate::schema::{build, SchemaFile};

fn org() -> Org {
    let schema: SchemaFile = toml::from_str(
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Erp_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
    )
    .unwrap();
    Org::new(build(&schema).unwrap())
}

fn m(v: J) -> Map<String, J> {
    v.as_object().unwrap().clone()
}

fn rows(org: &Org, soql: &str) -> Vec<J> {
    match org
        .query(&soql::parse(soql).unwrap(), false, "62.0")
        .unwrap()
    {
        QueryResult::Rows(r) => r,
        QueryResult::Count(_) => panic!("rows expected"),
    }
}

#[test]
fn the_unique_index_follows_updates_deletes_and_restores() {
    let mut org = org();
    let a = org
        .create("Account", &m(json!({"Name": "A", "Erp_Id__c": "K1"})))
        .unwrap();
    let dup = org
        .create("Account", &m(json!({"Name": "B", "Erp_Id__c": "k1"})))
        .unwrap_err();
    assert_eq!(
        dup.code, "DUPLICATE_VALUE",
        "case-insensitive, as Salesforce"
    );
    org.update("Account", &a, &m(json!({"Erp_Id__c": "K2"})))
        .unwrap();
    let b = org
        .create("Account", &m(json!({"Name": "B", "Erp_Id__c": "K1"})))
        .unwrap();
    assert_eq!(
        org.upsert("Account", "Erp_Id__c", "K2", &m(json!({"Name": "A2"})))
            .unwrap(),
        Upserted::Updated(a.clone())
    );
    org.delete("Account", &b).unwrap();
    org.create("Account", &m(json!({"Name": "C", "Erp_Id__c": "K1"})))
        .unwrap();
    // After a restore (`--data`), the index is rebuilt.
    let recs: Vec<(String, String, Rec)> = org
        .records
        .iter()
        .flat_map(|(o, ms)| {
            ms.iter()
                .map(move |(id, r)| (o.clone(), id.clone(), r.clone()))
        })
        .collect();
    let mut back = Org::restore(org.meta(), recs, Vec::new());
    assert_eq!(
        back.create("Account", &m(json!({"Name": "D", "Erp_Id__c": "K2"})))
            .unwrap_err()
            .code,
        "DUPLICATE_VALUE"
    );
}

#[test]
fn people_have_a_compound_read_only_name() {
    let mut org = org();
    let u = rows(&org, "SELECT Name, FirstName, LastName FROM User");
    assert_eq!(u[0]["Name"], "Admin");
    let id = org
        .create(
            "Contact",
            &m(json!({"FirstName": "Ada", "LastName": "Lovelace"})),
        )
        .unwrap();
    org.create("Lead", &m(json!({"LastName": "Solo", "Company": "X"})))
        .unwrap();
    let c = rows(&org, "SELECT Name FROM Contact WHERE Name = 'Ada Lovelace'");
    assert_eq!(c.len(), 1, "Name is queryable and filterable");
    org.update(
        "Contact",
        &id,
        &m(json!({"FirstName": null, "LastName": "Byron"})),
    )
    .unwrap();
    assert_eq!(org.get("Contact", &id).unwrap().fields["Name"], "Byron");
    assert_eq!(rows(&org, "SELECT Name FROM Lead")[0]["Name"], "Solo");
    let e = org
        .update("Contact", &id, &m(json!({"Name": "Someone"})))
        .unwrap_err();
    assert_eq!(e.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
    let d = crate::schema::describe(org.object("Contact").unwrap(), "62.0", org.objects());
    let name = d["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Name")
        .unwrap();
    assert_eq!(
        (
            name["createable"].as_bool(),
            name["updateable"].as_bool(),
            name["nameField"].as_bool()
        ),
        (Some(false), Some(false), Some(true))
    );
}

#[test]
fn crud_with_salesforce_errors() {
    let mut o = org();
    let id = o
        .create(
            "Account",
            &m(json!({"Name": "Acme", "AnnualRevenue": "1000.4", "Erp_Id__c": "E-1"})),
        )
        .unwrap();
    assert_eq!(id.len(), 18);
    let r = o.get("account", &id[..15]).unwrap();
    assert_eq!(r.fields["Name"], json!("Acme"));
    assert_eq!(
        r.fields["AnnualRevenue"],
        json!(1000.0),
        "currency scale 0 for AnnualRevenue"
    );
    assert_eq!(r.fields["OwnerId"], json!(o.user_id));
    let e = o.create("Account", &m(json!({"Phone": "1"}))).unwrap_err();
    assert_eq!((e.status, e.code), (400, "REQUIRED_FIELD_MISSING"));
    assert_eq!(e.fields, vec!["Name"]);
    // An empty string is null to Salesforce: a required field given "" is missing, and ""
    // clears a value.
    let e = o
        .create("Account", &m(json!({"Name": "", "Phone": "1"})))
        .unwrap_err();
    assert_eq!(
        (e.code, e.fields.clone()),
        ("REQUIRED_FIELD_MISSING", vec!["Name".to_string()])
    );
    let e = o
        .update("Account", &id, &m(json!({"Name": ""})))
        .unwrap_err();
    assert_eq!(e.code, "REQUIRED_FIELD_MISSING");
    o.update(
        "Account",
        &id,
        &m(json!({"Phone": "5", "AnnualRevenue": ""})),
    )
    .unwrap();
    o.update("Account", &id, &m(json!({"Phone": ""}))).unwrap();
    let r = o.get("Account", &id).unwrap();
    assert_eq!(
        (&r.fields["Phone"], &r.fields["AnnualRevenue"]),
        (&J::Null, &J::Null)
    );
    let e = o
        .create("Account", &m(json!({"Name": "x", "Nope__c": 1})))
        .unwrap_err();
    assert_eq!(e.code, "INVALID_FIELD");
    let e = o
        .create("Account", &m(json!({"Name": "x", "Erp_Id__c": "e-1"})))
        .unwrap_err();
    assert_eq!(e.code, "DUPLICATE_VALUE");
    let e = o
        .create(
            "Contact",
            &m(json!({"LastName": "x", "AccountId": "001000000000000AAA"})),
        )
        .unwrap_err();
    assert!(
        matches!(e.code, "INVALID_CROSS_REFERENCE_KEY" | "MALFORMED_ID"),
        "{e:?}"
    );
    let e = o
        .create("Account", &m(json!({"Name": "x".repeat(256)})))
        .unwrap_err();
    assert_eq!(e.code, "STRING_TOO_LONG");
    let e = o
        .create("Account", &m(json!({"Name": "x", "Id": "001"})))
        .unwrap_err();
    assert_eq!(e.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
    o.update("Account", &id, &m(json!({"Phone": "555"})))
        .unwrap();
    o.delete("Account", &id).unwrap();
    assert_eq!(o.get("Account", &id).unwrap_err().code, "ENTITY_IS_DELETED");
    assert_eq!(
        o.update("Account", &id, &m(json!({"Phone": "1"})))
            .unwrap_err()
            .code,
        "ENTITY_IS_DELETED"
    );
    assert_eq!(
        o.get("Account", "001000000000000").unwrap_err().code,
        "NOT_FOUND"
    );
    assert_eq!(o.get("Nope", "x").unwrap_err().status, 404);
}

#[test]
fn upsert_by_external_id() {
    let mut o = org();
    let body = m(json!({"Name": "Acme"}));
    let Upserted::Created(id) = o.upsert("Account", "Erp_Id__c", "E-9", &body).unwrap() else {
        panic!()
    };
    assert_eq!(
        o.upsert("Account", "Erp_Id__c", "E-9", &m(json!({"Phone": "1"})))
            .unwrap(),
        Upserted::Updated(id.clone())
    );
    assert_eq!(o.get("Account", &id).unwrap().fields["Phone"], json!("1"));
    assert_eq!(
        o.upsert("Account", "Name", "x", &body).unwrap_err().code,
        "INVALID_FIELD"
    );
}

#[test]
fn queries_with_parents_order_limit_and_deleted() {
    let mut o = org();
    let a = o.create("Account", &m(json!({"Name": "Edge"}))).unwrap();
    let b = o
        .create("Account", &m(json!({"Name": "burlington"})))
        .unwrap();
    for (n, acc) in [("Zed", &a), ("Amy", &b), ("Bob", &a)] {
        o.create("Contact", &m(json!({"LastName": n, "AccountId": acc})))
            .unwrap();
    }
    let q = soql::parse("SELECT Id, LastName, Account.Name FROM Contact WHERE Account.Name LIKE 'ed%' ORDER BY LastName").unwrap();
    let QueryResult::Rows(rows) = o.query(&q, false, "59.0").unwrap() else {
        panic!()
    };
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["LastName"], json!("Bob"));
    assert_eq!(rows[0]["Account"]["Name"], json!("Edge"));
    assert_eq!(rows[0]["attributes"]["type"], json!("Contact"));
    let q = soql::parse("SELECT COUNT() FROM Account").unwrap();
    assert_eq!(o.query(&q, false, "59.0").unwrap(), QueryResult::Count(2));
    o.delete("Account", &b).unwrap();
    assert_eq!(o.query(&q, false, "59.0").unwrap(), QueryResult::Count(1));
    assert_eq!(
        o.query(&q, true, "59.0").unwrap(),
        QueryResult::Count(2),
        "queryAll sees deleted"
    );
    let q = soql::parse("SELECT Name FROM Account WHERE IsDeleted = true").unwrap();
    let QueryResult::Rows(rows) = o.query(&q, true, "59.0").unwrap() else {
        panic!()
    };
    assert_eq!(rows.len(), 1);
    let q = soql::parse("SELECT Nope FROM Account").unwrap();
    assert_eq!(
        o.query(&q, false, "59.0").unwrap_err().code,
        "INVALID_FIELD"
    );
    let q = soql::parse("SELECT Id FROM Nope").unwrap();
    assert_eq!(o.query(&q, false, "59.0").unwrap_err().code, "INVALID_TYPE");
    let q = soql::parse("SELECT Id FROM Contact ORDER BY LastName DESC LIMIT 1 OFFSET 1").unwrap();
    let QueryResult::Rows(rows) = o.query(&q, false, "59.0").unwrap() else {
        panic!()
    };
    assert_eq!(rows.len(), 1);
}

#[test]
fn modstamps_strictly_increase_and_feed_updated_deleted() {
    let mut o = org();
    let start = Timestamp::now();
    let a = o.create("Account", &m(json!({"Name": "a"}))).unwrap();
    let b = o.create("Account", &m(json!({"Name": "b"}))).unwrap();
    let sa = o.get("Account", &a).unwrap().fields["SystemModstamp"].clone();
    let sb = o.get("Account", &b).unwrap().fields["SystemModstamp"].clone();
    assert!(sa.as_str() < sb.as_str(), "{sa} {sb}");
    o.delete("Account", &a).unwrap();
    let end = Timestamp(Timestamp::now().millis() + 10_000);
    assert_eq!(
        o.changed_between("Account", start, end, false)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        o.changed_between("Account", start, end, true)
            .unwrap()
            .len(),
        1
    );
}
