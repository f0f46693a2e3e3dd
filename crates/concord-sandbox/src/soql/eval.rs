//! Evaluating conditions and ordering rows as Salesforce does (case-insensitive text).

use super::*;

fn fold(v: &Value) -> Value {
    match v {
        Value::Text(s) => Value::Text(s.to_lowercase()),
        other => other.clone(),
    }
}

/// Orders two values of a field (case-insensitive text); `None` when they cannot be compared.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (fold(a), fold(b)) {
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(&y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Int(x), Value::Decimal(y)) => Some(Decimal::from(x).cmp(&y)),
        (Value::Decimal(x), Value::Int(y)) => Some(x.cmp(&Decimal::from(y))),
        (Value::Decimal(x), Value::Decimal(y)) => Some(x.cmp(&y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(&y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(&y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(&y)),
        (Value::Date(x), Value::DateTime(y)) => {
            let t = Timestamp::from_chrono(&x.and_hms_opt(0, 0, 0)?.and_utc());
            Some(t.cmp(&y))
        }
        (Value::DateTime(x), Value::Date(y)) => {
            let t = Timestamp::from_chrono(&y.and_hms_opt(0, 0, 0)?.and_utc());
            Some(x.cmp(&t))
        }
        _ => None,
    }
}

/// SOQL LIKE: `%` any run, `_` one character, `\%` `\_` literal; case-insensitive.
pub fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let mut p: Vec<(char, bool)> = Vec::new(); // (char, is_wildcard)
    let mut chars = pattern
        .to_lowercase()
        .chars()
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    p.push((n, false));
                }
            }
            '%' | '_' => p.push((c, true)),
            other => p.push((other, false)),
        }
    }
    fn m(v: &[char], p: &[(char, bool)]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some(('%', true)) => (0..=v.len()).any(|i| m(&v[i..], &p[1..])),
            Some(('_', true)) => !v.is_empty() && m(&v[1..], &p[1..]),
            Some((c, _)) => v.first() == Some(c) && m(&v[1..], &p[1..]),
        }
    }
    m(&v, &p)
}

/// Evaluates a condition; `get` resolves a field path to its value (Null when absent).
pub fn eval(c: &Cond, get: &dyn Fn(&[String]) -> Value) -> bool {
    match c {
        Cond::And(a, b) => eval(a, get) && eval(b, get),
        Cond::Or(a, b) => eval(a, get) || eval(b, get),
        Cond::Not(a) => !eval(a, get),
        Cond::Cmp {
            field,
            func,
            op,
            value,
        } => {
            let v = get(field);
            let v = match func {
                Some(f) => f.apply(&v),
                None => v,
            };
            if let Literal::Range(start, end) = value {
                // A relative date: `=` inside [start, end), `<` before it, `>` after it.
                let t = match &v {
                    Value::DateTime(t) => *t,
                    Value::Date(d) => match d.and_hms_opt(0, 0, 0) {
                        Some(x) => Timestamp::from_chrono(&x.and_utc()),
                        None => return false,
                    },
                    _ => return matches!(op, CmpOp::Ne) && !v.is_null(),
                };
                let inside = t >= *start && t < *end;
                return match op {
                    CmpOp::Eq => inside,
                    CmpOp::Ne => !inside,
                    CmpOp::Lt => t < *start,
                    CmpOp::Le => t < *end,
                    CmpOp::Gt => t >= *end,
                    CmpOp::Ge => t >= *start,
                };
            }
            let lit = value.to_value();
            match (op, v.is_null(), lit.is_null()) {
                (CmpOp::Eq, true, true) => true,
                (CmpOp::Ne, true, true) => false,
                (CmpOp::Eq, _, _) if v.is_null() || lit.is_null() => false,
                (CmpOp::Ne, _, _) if v.is_null() || lit.is_null() => true,
                (_, true, _) | (_, _, true) => false,
                _ => match compare(&v, &lit) {
                    None => matches!(op, CmpOp::Ne),
                    Some(o) => match op {
                        CmpOp::Eq => o == Ordering::Equal,
                        CmpOp::Ne => o != Ordering::Equal,
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Le => o != Ordering::Greater,
                        CmpOp::Ge => o != Ordering::Less,
                    },
                },
            }
        }
        Cond::Like {
            field,
            pattern,
            negated,
        } => {
            let hit = match get(field) {
                Value::Null => false,
                Value::Text(s) => like(&s, pattern),
                other => like(&other.to_string(), pattern),
            };
            hit != *negated
        }
        Cond::In {
            field,
            values,
            negated,
        } => {
            let v = get(field);
            let hit = values.iter().any(|l| {
                let lv = l.to_value();
                if v.is_null() || lv.is_null() {
                    v.is_null() && lv.is_null()
                } else {
                    compare(&v, &lv) == Some(Ordering::Equal)
                }
            });
            hit != *negated
        }
    }
}

/// Orders rows by the query's ORDER BY (stable; ties keep their input order).
pub fn sort<T>(rows: &mut [T], order: &[OrderItem], get: &dyn Fn(&T, &[String]) -> Value) {
    rows.sort_by(|a, b| {
        for o in order {
            let (va, vb) = (get(a, &o.field), get(b, &o.field));
            let ord = match (va.is_null(), vb.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if o.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if o.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, false) => {
                    let c = compare(&va, &vb).unwrap_or(Ordering::Equal);
                    if o.descending {
                        c.reverse()
                    } else {
                        c
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}
