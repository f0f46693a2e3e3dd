//! Shared by the benches: a record generator (about 10 fields and 300 canonical bytes a record,
//! shaped like an Opportunity / sales-order row) and number formatting. Each bench is a crate of
//! its own and uses part of this.
#![allow(dead_code)]

use concord::model::{Fields, Timestamp, Value};
use rust_decimal::Decimal;

pub fn record(i: u64) -> Fields {
    let day = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
        + chrono::Duration::days((i % 700) as i64);
    Fields::new()
        .with("Id", format!("006{:015}", i))
        .with("Name", format!("Opportunity number {i} for Acme"))
        .with("Amount", Value::Decimal(Decimal::new((i as i64 % 1_000_000) * 100 + 25, 2)))
        .with("Quantity", (i % 500) as i64)
        .with("IsClosed", i.is_multiple_of(3))
        .with("CloseDate", Value::Date(day))
        .with("LastModifiedDate", Value::DateTime(Timestamp(1_700_000_000_000 + i as i64 * 1000)))
        .with("Email", format!("buyer{i}@example.com"))
        .with("StageName", ["Prospecting", "Qualification", "Closed Won"][(i % 3) as usize])
        .with(
            "Description",
            format!("Renewal of the annual maintenance contract, line {i}; ships from the north warehouse"),
        )
}

pub fn mean_bytes(n: u64) -> usize {
    (0..n)
        .map(|i| record(i).canonical_bytes().len())
        .sum::<usize>()
        / n as usize
}

/// `1234567` as `1 234 567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}
