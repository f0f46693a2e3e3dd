//! Record operations: create, update, soft and hard delete, the recycle bin, look-ups by
//! field, upsert by external id.

use super::*;

impl Org {
    pub fn create(&mut self, object: &str, input: &Map<String, J>) -> Result<String, SfError> {
        let o = self.object(object)?.clone();
        let mut fields = self.prepare(&o, input, true)?;
        self.check_unique(&o, None, &fields)?;
        if o.name == "PushTopic" {
            self.check_push_topic(None, &mut fields, true)?;
        }
        let id = ids::mint(o.prefix(), self.next);
        self.next += 1;
        let now = self.now();
        for f in &o.fields {
            fields.entry(f.name.clone()).or_insert(match f.ty {
                FieldType::Boolean => J::Bool(false),
                _ => J::Null,
            });
        }
        compound_name(&o, &mut fields);
        self.derive(&o, &mut fields, None, &now)?;
        for f in &o.fields {
            if let Some(format) = &f.auto_number {
                let n = self
                    .auto_numbers
                    .entry(format!("{}.{}", o.name, f.name))
                    .or_insert(0);
                *n += 1;
                fields.insert(f.name.clone(), json!(auto_number_text(format, *n)));
            }
        }
        fields.insert("Id".into(), json!(id));
        fields.insert("IsDeleted".into(), J::Bool(false));
        for k in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            fields.insert(k.into(), json!(now));
        }
        for k in ["CreatedById", "LastModifiedById"] {
            fields.insert(k.into(), json!(self.user_id));
        }
        if o.field("OwnerId").is_some() && fields.get("OwnerId").is_none_or(J::is_null) {
            fields.insert("OwnerId".into(), json!(self.user_id));
        }
        self.dirty.insert((o.name.clone(), id.clone()));
        self.records.entry(o.name.clone()).or_default().insert(
            id.clone(),
            Rec {
                fields,
                deleted: false,
            },
        );
        self.index_record(&o.name, &id, true);
        let sent: Map<String, J> = self.records[&o.name][&id]
            .fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.emit_change(&o.name, &id, "CREATE", sent);
        Ok(id)
    }

    /// A change event for the Streaming API (Change Data Capture).
    fn emit_change(&mut self, object: &str, id: &str, change_type: &str, fields: Map<String, J>) {
        let at = self
            .frozen_ms
            .unwrap_or_else(|| Timestamp::now().millis() + self.clock_offset_ms);
        let user = self.user_id.clone();
        // The record as changed, for the PushTopics to evaluate: kept only once the org has
        // one (a topic notifies of changes made after it exists, as in Salesforce).
        let topics = self
            .records
            .get("PushTopic")
            .is_some_and(|m| m.values().any(|r| !r.deleted));
        let record = match self.records.get(object).and_then(|m| m.get(id)) {
            Some(r) if topics => r.fields.clone(),
            _ => Map::new(),
        };
        self.events
            .emit(object, id, change_type, fields, record, &user, at);
    }

    pub(super) fn find_live(&self, o: &ObjectDef, id: &str) -> Result<String, SfError> {
        let id18 = ids::to18(id)
            .filter(|i| ids::prefix(i) == Some(o.prefix()))
            .ok_or_else(|| {
                SfError::new(404, "NOT_FOUND", "The requested resource does not exist")
            })?;
        match self.records.get(&o.name).and_then(|m| m.get(&id18)) {
            Some(r) if r.deleted => {
                Err(SfError::new(404, "ENTITY_IS_DELETED", "entity is deleted"))
            }
            Some(_) => Ok(id18),
            None => Err(SfError::new(
                404,
                "NOT_FOUND",
                "The requested resource does not exist",
            )),
        }
    }

    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        input: &Map<String, J>,
    ) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = self.find_live(&o, id)?;
        let fields = self.prepare(&o, input, false)?;
        self.check_unique(&o, Some(&id18), &fields)?;
        for f in o.fields.iter().filter(|f| f.required) {
            if fields.get(&f.name).is_some_and(J::is_null) {
                return Err(SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", f.name),
                )
                .field(&f.name));
            }
        }
        let stored = self.records[&o.name][&id18].fields.clone();
        let mut merged = stored.clone();
        for (k, v) in fields {
            merged.insert(k, v);
        }
        if o.name == "PushTopic" {
            self.check_push_topic(Some(&id18), &mut merged, false)?;
        }
        compound_name(&o, &mut merged);
        let now = self.now();
        self.derive(&o, &mut merged, Some(&stored), &now)?;
        let uid = self.user_id.clone();
        self.index_record(&o.name, &id18, false);
        let rec = self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.get_mut(&id18))
            .expect("found above");
        rec.fields = merged;
        rec.fields.insert("LastModifiedDate".into(), json!(now));
        rec.fields.insert("SystemModstamp".into(), json!(now));
        rec.fields.insert("LastModifiedById".into(), json!(uid));
        let changed: Map<String, J> = rec
            .fields
            .iter()
            .filter(|(k, v)| stored.get(*k) != Some(*v) && k.as_str() != "SystemModstamp")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.index_record(&o.name, &id18, true);
        self.emit_change(&o.name, &id18, "UPDATE", changed);
        self.dirty.insert((o.name, id18));
        Ok(())
    }

    /// Soft delete: the record leaves queries, stays for `queryAll` and `getDeleted`.
    pub fn delete(&mut self, object: &str, id: &str) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = self.find_live(&o, id)?;
        let now = self.now();
        self.index_record(&o.name, &id18, false);
        let rec = self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.get_mut(&id18))
            .expect("found above");
        rec.deleted = true;
        rec.fields.insert("IsDeleted".into(), J::Bool(true));
        rec.fields.insert("SystemModstamp".into(), json!(now));
        self.emit_change(&o.name, &id18, "DELETE", Map::new());
        self.dirty.insert((o.name, id18));
        Ok(())
    }

    /// Restores a record from the recycle bin (what a user does in the org's Recycle Bin, or
    /// Apex `undelete`; the REST API has no such call): live again, stamped now, announced as
    /// an `UNDELETE` change event with its fields.
    pub fn undelete(&mut self, object: &str, id: &str) -> Result<String, SfError> {
        let o = self.object(object)?.clone();
        let id18 = ids::to18(id)
            .filter(|i| ids::prefix(i) == Some(o.prefix()))
            .ok_or_else(|| SfError::new(400, "MALFORMED_ID", format!("malformed id {id}")))?;
        match self.records.get(&o.name).and_then(|m| m.get(&id18)) {
            Some(r) if r.deleted => {}
            Some(_) => {
                return Err(SfError::new(
                    400,
                    "UNDELETE_FAILED",
                    "Entity is not in the recycle bin",
                ))
            }
            None => {
                return Err(SfError::new(
                    404,
                    "NOT_FOUND",
                    "The requested resource does not exist",
                ))
            }
        }
        let now = self.now();
        let rec = self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.get_mut(&id18))
            .expect("found above");
        rec.deleted = false;
        rec.fields.insert("IsDeleted".into(), J::Bool(false));
        rec.fields.insert("SystemModstamp".into(), json!(now));
        let sent: Map<String, J> = rec
            .fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.index_record(&o.name, &id18, true);
        self.emit_change(&o.name, &id18, "UNDELETE", sent);
        self.dirty.insert((o.name, id18.clone()));
        Ok(id18)
    }

    /// Hard delete (Bulk API `hardDelete`): the record bypasses the recycle bin and is gone for
    /// good; only `getDeleted` still reports it. Works on live and recycle-bin records.
    pub fn hard_delete(&mut self, object: &str, id: &str) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = ids::to18(id)
            .filter(|i| ids::prefix(i) == Some(o.prefix()))
            .ok_or_else(|| SfError::new(400, "MALFORMED_ID", format!("malformed id {id}")))?;
        self.index_record(&o.name, &id18, false);
        let Some(gone) = self.records.get_mut(&o.name).and_then(|m| m.remove(&id18)) else {
            return Err(SfError::new(404, "ENTITY_IS_DELETED", "entity is deleted"));
        };
        if !gone.deleted {
            // A live record's hard delete is its delete event (one purged from the recycle
            // bin had its event when it was deleted).
            self.emit_change(&o.name, &id18, "DELETE", Map::new());
        }
        let now = self.now();
        let t = Timestamp::parse(&now).unwrap_or(Timestamp(0));
        self.dirty.insert((o.name.clone(), id18.clone()));
        self.delete_log.entry(o.name).or_default().insert(id18, t);
        Ok(())
    }

    /// Empties the recycle bin: every soft-deleted record is purged (kept in the delete log).
    /// Returns how many were purged.
    pub fn empty_recycle_bin(&mut self) -> usize {
        let mut n = 0;
        for (object, m) in self.records.iter_mut() {
            let gone: Vec<String> = m
                .iter()
                .filter(|(_, r)| r.deleted)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                let r = m.remove(&id).expect("listed");
                let t = r
                    .fields
                    .get("SystemModstamp")
                    .and_then(J::as_str)
                    .and_then(|s| Timestamp::parse(s).ok())
                    .unwrap_or(Timestamp(0));
                self.dirty.insert((object.clone(), id.clone()));
                self.delete_log
                    .entry(object.clone())
                    .or_default()
                    .insert(id, t);
                n += 1;
            }
        }
        n
    }

    /// The id of the one live record of `object` whose `field` equals `value` (relationship
    /// columns of Bulk API uploads: `Account.External_Id__c`).
    pub fn find_by(&self, object: &str, field: &str, value: &str) -> Result<String, SfError> {
        let o = self.object(object)?;
        let f = o
            .field(field)
            .filter(|f| f.external_id || f.name == "Id")
            .ok_or_else(|| {
                SfError::new(
                    400,
                    "INVALID_FIELD",
                    format!("{field} is not an external id field of {}", o.name),
                )
            })?;
        let key = J::String(value.to_string());
        let found: Vec<&String> = self
            .records
            .get(&o.name)
            .into_iter()
            .flatten()
            .filter(|(_, r)| !r.deleted && r.fields.get(&f.name).is_some_and(|x| eq_ci(x, &key)))
            .map(|(id, _)| id)
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "Foreign key external ID: {value} not found for field {} in entity {}",
                    f.name, o.name
                ),
            )),
            _ => Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "Foreign key external ID: {value} matches more than one record for field {} in entity {}",
                    f.name, o.name
                ),
            )),
        }
    }

    pub fn get(&self, object: &str, id: &str) -> Result<&Rec, SfError> {
        let o = self.object(object)?;
        let id18 = self.find_live(o, id)?;
        Ok(&self.records[&o.name][&id18])
    }

    /// The live records of `object` whose external id field `ext_field` (or `Id`) equals
    /// `value` (case-insensitively, as an org compares external ids), with the field's
    /// canonical name. An unknown field is NOT_FOUND, a field not marked external id
    /// INVALID_FIELD, as an org answers.
    pub fn find_by_external_id(
        &self,
        object: &str,
        ext_field: &str,
        value: &str,
    ) -> Result<(String, Vec<String>), SfError> {
        let o = self.object(object)?;
        let f = o.field(ext_field).ok_or_else(|| {
            SfError::new(
                404,
                "NOT_FOUND",
                format!(
                    "Provided external ID field does not exist or is not accessible: {ext_field}"
                ),
            )
        })?;
        if !(f.external_id || f.name == "Id") {
            return Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!("Field {} is not an external id field", f.name),
            ));
        }
        let key = J::String(value.to_string());
        let matches: Vec<String> = match self.lookup(&o.name, &f.name, &key) {
            Some(ids) => ids,
            None => self
                .records
                .get(&o.name)
                .map(|m| {
                    m.iter()
                        .filter(|(_, r)| {
                            !r.deleted && r.fields.get(&f.name).is_some_and(|x| eq_ci(x, &key))
                        })
                        .map(|(id, _)| id.clone())
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok((f.name.clone(), matches))
    }

    /// The one live record of `object` whose external id `ext_field` is `value`: NOT_FOUND
    /// when there is none, MULTIPLE_CHOICES (status 300, the ids in `fields`) when several.
    pub fn one_by_external_id(
        &self,
        object: &str,
        ext_field: &str,
        value: &str,
    ) -> Result<String, SfError> {
        let (field, matches) = self.find_by_external_id(object, ext_field, value)?;
        match matches.len() {
            0 => Err(SfError::new(
                404,
                "NOT_FOUND",
                "The requested resource does not exist",
            )),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => Err(multiple(&field, value, matches)),
        }
    }

    /// Upsert by external id: creates, updates, or 300 when several records match.
    pub fn upsert(
        &mut self,
        object: &str,
        ext_field: &str,
        value: &str,
        input: &Map<String, J>,
    ) -> Result<Upserted, SfError> {
        let (field, matches) = self.find_by_external_id(object, ext_field, value)?;
        let object = self.object(object)?.name.clone();
        match matches.len() {
            0 => {
                let mut with_key = input.clone();
                with_key.insert(field, J::String(value.to_string()));
                self.create(&object, &with_key).map(Upserted::Created)
            }
            1 => {
                self.update(&object, &matches[0], input)?;
                Ok(Upserted::Updated(matches[0].clone()))
            }
            _ => Err(multiple(&field, value, matches)),
        }
    }
}

/// MULTIPLE_CHOICES for an external id several records share (status 300, their ids in
/// `fields`).
fn multiple(field: &str, value: &str, ids: Vec<String>) -> SfError {
    let mut e = SfError::new(
        300,
        "MULTIPLE_CHOICES",
        format!("Multiple records found for {field} = {value}"),
    );
    e.fields = ids;
    e
}
