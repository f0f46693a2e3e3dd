use super::config::FileType;
use super::read::{from_json, from_text, to_json, to_text};
use concord_model::model::Value;

#[test]
fn declared_types_round_trip_through_text_and_json() {
    let cases = [
        (FileType::Int, Value::Int(-42)),
        (FileType::Decimal, Value::decimal_str("12.5").unwrap()),
        (
            FileType::Decimal,
            Value::decimal_str("1234567890.123456789012").unwrap(),
        ),
        (FileType::Bool, Value::Bool(true)),
        (FileType::Date, Value::date_str("2024-02-29").unwrap()),
        (
            FileType::Datetime,
            Value::datetime_str("2024-05-01T08:00:00.123Z").unwrap(),
        ),
        (
            FileType::Json,
            Value::Json(serde_json::json!({"a": [1, 2]})),
        ),
        (FileType::Bytes, Value::Bytes(vec![0, 255])),
        (FileType::Text, Value::text("x, \"y\"\nz")),
    ];
    for (t, v) in cases {
        let s = to_text("c", Some(t), &v).unwrap();
        assert_eq!(from_text(t, &s).unwrap(), v, "{t:?} via text");
        let j = to_json("c", Some(t), &v).unwrap();
        assert_eq!(
            from_json(Some(t), &j).unwrap(),
            Some(v.clone()),
            "{t:?} via json"
        );
    }
}

#[test]
fn undeclared_columns_refuse_what_would_not_read_back() {
    assert!(to_text("amount", None, &Value::Int(3))
        .unwrap_err()
        .0
        .contains("declare"));
    assert!(to_json("since", None, &Value::date_str("2024-01-01").unwrap()).is_err());
    let big = Value::decimal_str("1234567890.123456789012").unwrap();
    assert!(to_json("amount", None, &big)
        .unwrap_err()
        .0
        .contains("decimal"));
    // What JSON can hold as itself is fine undeclared.
    for v in [
        Value::Int(3),
        Value::decimal_str("12.5").unwrap(),
        Value::Bool(false),
        Value::text("a"),
    ] {
        let j = to_json("c", None, &v).unwrap();
        assert_eq!(from_json(None, &j).unwrap(), Some(v));
    }
    assert!(to_text("n", Some(FileType::Int), &Value::text("x"))
        .unwrap_err()
        .0
        .contains("declared"));
}
