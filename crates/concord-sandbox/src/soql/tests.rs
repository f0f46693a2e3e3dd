//! Parsing and evaluating the SOQL subset.

use super::*;
use std::collections::BTreeMap;

#[test]
fn parses_the_supported_subset() {
    let q = parse(
        "select Id, Name, Account.Name FROM Contact WHERE (LastName = 'O\\'Brien' OR Email LIKE '%@demo.net') \
         AND NOT Amount__c < 10.5 AND Stage IN ('A', 'B') AND CreatedDate >= 2024-01-31T10:00:00.000+0000 \
         AND Birthdate != null ORDER BY Name DESC NULLS LAST, Id LIMIT 10 OFFSET 5",
    )
    .unwrap();
    assert_eq!(q.object, "Contact");
    assert_eq!(
        q.select[2],
        SelectItem::Field(vec!["Account".into(), "Name".into()])
    );
    assert_eq!(q.limit, Some(10));
    assert_eq!(q.offset, Some(5));
    assert_eq!(q.order.len(), 2);
    assert!(q.order[0].descending && !q.order[0].nulls_first);
    assert!(!q.order[1].descending && q.order[1].nulls_first);
    assert!(parse("SELECT COUNT() FROM Account").unwrap().is_count());
}

#[test]
fn malformed_queries_say_where() {
    for (q, want) in [
        ("SELECT FROM Account", "unexpected token: 'FROM'"),
        ("SELECT Id FROM", "unexpected end of query"),
        (
            "SELECT Id FROM Account WHERE Name = 'x",
            "unterminated string",
        ),
        ("SELECT Id FROM Account LIMIT x", "unexpected token: 'x'"),
        ("SELECT Id, COUNT() FROM Account", "COUNT()"),
        (
            "SELECT Id FROM Account WHERE Name ~ 1",
            "unexpected character",
        ),
    ] {
        let e = parse(q).unwrap_err();
        assert!(e.message.contains(want), "{q}: {e:?}");
    }
}

#[test]
fn evaluates_like_salesforce() {
    let rec: BTreeMap<&str, Value> = [
        ("Name", Value::text("Acme Corp")),
        ("Amount", Value::decimal_str("12.50").unwrap()),
        ("Close", Value::date_str("2024-02-01").unwrap()),
    ]
    .into_iter()
    .collect();
    let get = |p: &[String]| rec.get(p[0].as_str()).cloned().unwrap_or(Value::Null);
    let t = |w: &str| {
        eval(
            &parse(&format!("SELECT Id FROM X WHERE {w}"))
                .unwrap()
                .filter
                .unwrap(),
            &get,
        )
    };
    assert!(t("Name = 'acme corp'"), "case-insensitive equality");
    assert!(t("Name LIKE 'ac%'") && !t("Name NOT LIKE 'ac%'") && t("Name LIKE '_cme%'"));
    assert!(t("Amount = 12.5") && t("Amount > 12") && !t("Amount < 12"));
    assert!(t("Missing = null") && !t("Missing != null") && t("Name != null"));
    assert!(t("Amount IN (1, 12.5)") && t("Name NOT IN ('x')"));
    assert!(t("Close > 2024-01-31 AND Close < 2024-02-02T00:00:00Z"));
    assert!(t("NOT (Name = 'x' OR Amount < 1)"));
    assert!(!t("Missing > 3"), "null compares false");
    assert!(like("50%", "50\\%") && !like("500", "50\\%"));
}

#[test]
fn orders_with_nulls_first_or_last() {
    let mut rows = vec![
        Value::text("b"),
        Value::Null,
        Value::text("A"),
        Value::text("c"),
    ];
    let q = parse("SELECT Id FROM X ORDER BY Name").unwrap();
    sort(&mut rows, &q.order, &|v, _| v.clone());
    assert_eq!(
        rows,
        vec![
            Value::Null,
            Value::text("A"),
            Value::text("b"),
            Value::text("c")
        ]
    );
    let q = parse("SELECT Id FROM X ORDER BY Name DESC").unwrap();
    sort(&mut rows, &q.order, &|v, _| v.clone());
    assert_eq!(
        rows[3],
        Value::Null,
        "descending puts nulls last by default"
    );
    let q = parse("SELECT Id FROM X ORDER BY Name DESC NULLS FIRST").unwrap();
    sort(&mut rows, &q.order, &|v, _| v.clone());
    assert_eq!(rows[0], Value::Null);
}
