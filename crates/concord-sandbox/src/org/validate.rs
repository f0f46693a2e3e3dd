//! Client values checked and converted as Salesforce does: types, lengths, required and unique
//! fields, read-only and unknown fields.

use super::*;

impl Org {
    pub(super) fn coerce(&self, f: &FieldDef, v: &J) -> Result<J, SfError> {
        let bad = |what: &str| {
            SfError::new(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!("{}: value not of required type {what}: {v}", f.name),
            )
            .field(&f.name)
        };
        // Salesforce keeps no empty strings: "" is null (so a required field given "" is
        // missing), for every type but checkboxes.
        if v.is_null() || (f.ty != FieldType::Boolean && v.as_str() == Some("")) {
            return Ok(J::Null);
        }
        Ok(match f.ty {
            FieldType::Boolean => match v {
                J::Bool(_) => v.clone(),
                J::String(s)
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
                {
                    J::Bool(s.eq_ignore_ascii_case("true"))
                }
                _ => return Err(bad("boolean")),
            },
            FieldType::Int => match v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(i) => json!(i),
                None => return Err(bad("int")),
            },
            FieldType::Double | FieldType::Currency | FieldType::Percent => {
                let text = match v {
                    J::Number(n) => n.to_string(),
                    J::String(s) => s.clone(),
                    _ => return Err(bad("number")),
                };
                let d = Value::decimal_str(&text).map_err(|_| bad("number"))?;
                let scale = f
                    .scale
                    .unwrap_or(if f.ty == FieldType::Currency { 2 } else { 0 });
                let rounded = match d {
                    Value::Decimal(x) => x.round_dp_with_strategy(
                        scale,
                        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                    ),
                    Value::Int(i) => rust_decimal::Decimal::from(i),
                    _ => return Err(bad("number")),
                };
                let f64v: f64 = rounded.to_string().parse().map_err(|_| bad("number"))?;
                json!(f64v)
            }
            FieldType::Date => match v
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok())
            {
                Some(d) => json!(d.format("%Y-%m-%d").to_string()),
                None => return Err(bad("date")),
            },
            FieldType::Datetime => match v.as_str().and_then(|s| Timestamp::parse(s).ok()) {
                Some(t) => json!(sf_datetime(t)),
                None => return Err(bad("datetime")),
            },
            FieldType::Reference => {
                let s = v.as_str().ok_or_else(|| bad("reference"))?;
                let id = ids::to18(s).ok_or_else(|| {
                    SfError::new(
                        400,
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {s}", f.name),
                    )
                    .field(&f.name)
                })?;
                let ok = f.reference_to.iter().any(|t| {
                    self.records
                        .get(t.as_str())
                        .is_some_and(|m| m.get(&id).is_some_and(|r| !r.deleted))
                });
                if !ok {
                    return Err(SfError::new(
                        400,
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                    )
                    .field(&f.name));
                }
                json!(id)
            }
            _ => {
                let s = match v {
                    J::String(s) => s.clone(),
                    J::Number(n) => n.to_string(),
                    J::Bool(b) => b.to_string(),
                    _ => return Err(bad("text")),
                };
                let len = f.text_length() as usize;
                if s.chars().count() > len {
                    return Err(SfError::new(
                        400,
                        "STRING_TOO_LONG",
                        format!(
                            "{}: data value too large: {} (max length={len})",
                            f.name,
                            s.chars().take(40).collect::<String>()
                        ),
                    )
                    .field(&f.name));
                }
                json!(s)
            }
        })
    }

    /// Validates and converts client fields for `o` (create when `creating`).
    pub(super) fn prepare(
        &self,
        o: &ObjectDef,
        input: &Map<String, J>,
        creating: bool,
    ) -> Result<Map<String, J>, SfError> {
        let mut out = Map::new();
        for (k, v) in input {
            if k == "attributes" {
                continue;
            }
            let f = o.field(k).ok_or_else(|| {
                SfError::new(
                    400,
                    "INVALID_FIELD",
                    format!("No such column '{k}' on sobject of type {}", o.name),
                )
            })?;
            if f.system {
                return Err(SfError::new(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name),
                )
                .field(&f.name));
            }
            if f.create_only && !creating {
                return Err(SfError::new(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name),
                )
                .field(&f.name));
            }
            out.insert(f.name.clone(), self.coerce(f, v)?);
        }
        if creating {
            for f in o.fields.iter().filter(|f| f.default_value.is_some()) {
                if out.get(&f.name).is_none_or(J::is_null) {
                    out.insert(f.name.clone(), json!(f.default_value));
                }
            }
            let missing: Vec<String> = o
                .fields
                .iter()
                .filter(|f| f.required && out.get(&f.name).is_none_or(J::is_null))
                .map(|f| f.name.clone())
                .collect();
            if !missing.is_empty() {
                let mut e = SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", missing.join(", ")),
                );
                e.fields = missing;
                return Err(e);
            }
        }
        Ok(out)
    }

    pub(super) fn check_unique(
        &self,
        o: &ObjectDef,
        id: Option<&str>,
        fields: &Map<String, J>,
    ) -> Result<(), SfError> {
        for f in o.fields.iter().filter(|f| f.unique || f.external_id) {
            let Some(v) = fields.get(&f.name).filter(|v| !v.is_null()) else {
                continue;
            };
            if !f.unique {
                continue;
            }
            let dup = self
                .lookup(&o.name, &f.name, v)
                .unwrap_or_default()
                .into_iter()
                .find(|rid| Some(rid.as_str()) != id);
            if let Some(rid) = dup {
                return Err(SfError::new(
                    400,
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {rid}",
                        f.name
                    ),
                )
                .field(&f.name));
            }
        }
        Ok(())
    }
}
