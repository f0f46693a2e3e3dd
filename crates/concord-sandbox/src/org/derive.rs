//! Values the org keeps from others, as Salesforce does: compound addresses, the closed flags
//! of tasks and cases, an activity's account, an opportunity's fiscal period and expected
//! revenue, a price book entry's and an opportunity product's product data and prices.

use super::*;

impl Org {
    /// Fills the derived fields of `fields`, the record as it will be stored (on update: the
    /// stored record with the change applied; `old` the stored record before it). Fails as an
    /// org fails a write breaking the objects' rules (price book entries, line item prices).
    pub(super) fn derive(
        &self,
        o: &ObjectDef,
        fields: &mut Map<String, J>,
        old: Option<&Map<String, J>>,
        now: &str,
    ) -> Result<(), SfError> {
        compound_addresses(o, fields);
        let text = |m: &Map<String, J>, k: &str| m.get(k).and_then(J::as_str).map(str::to_string);
        match o.name.as_str() {
            "Task" => {
                let closed = text(fields, "Status").as_deref() == Some("Completed");
                let was = old.is_some_and(|m| m.get("IsClosed") == Some(&J::Bool(true)));
                fields.insert("IsClosed".into(), J::Bool(closed));
                if closed && !was {
                    fields.insert("CompletedDateTime".into(), json!(now));
                } else if !closed {
                    fields.insert("CompletedDateTime".into(), J::Null);
                }
                let high = text(fields, "Priority").as_deref() == Some("High");
                fields.insert("IsHighPriority".into(), J::Bool(high));
                let account = self.activity_account(fields);
                fields.insert("AccountId".into(), account);
            }
            "Event" => {
                if let Some(start) = text(fields, "StartDateTime") {
                    fields.insert("ActivityDateTime".into(), json!(start));
                    fields.insert("ActivityDate".into(), json!(start.get(..10).unwrap_or("")));
                    let start_ms = Timestamp::parse(&start).ok().map(|t| t.millis());
                    let end_ms = text(fields, "EndDateTime")
                        .and_then(|e| Timestamp::parse(&e).ok())
                        .map(|t| t.millis());
                    let minutes = fields.get("DurationInMinutes").and_then(J::as_i64);
                    match (start_ms, end_ms, minutes) {
                        (Some(s), Some(e), _) if e >= s => {
                            fields.insert("DurationInMinutes".into(), json!((e - s) / 60_000));
                        }
                        (Some(_), Some(_), _) => {
                            return Err(SfError::new(
                                400,
                                "FIELD_INTEGRITY_EXCEPTION",
                                "End Date/Time can't be before Start Date/Time",
                            )
                            .field("EndDateTime"))
                        }
                        (Some(s), None, Some(m)) => {
                            fields.insert(
                                "EndDateTime".into(),
                                json!(sf_datetime(Timestamp(s + m * 60_000))),
                            );
                        }
                        _ => {}
                    }
                }
                let account = self.activity_account(fields);
                fields.insert("AccountId".into(), account);
            }
            "Case" => {
                let closed = text(fields, "Status").as_deref() == Some("Closed");
                let was = old.is_some_and(|m| m.get("IsClosed") == Some(&J::Bool(true)));
                fields.insert("IsClosed".into(), J::Bool(closed));
                if closed && !was {
                    fields.insert("ClosedDate".into(), json!(now));
                } else if !closed {
                    fields.insert("ClosedDate".into(), J::Null);
                }
                let contact = text(fields, "ContactId").and_then(|c| self.live("Contact", &c));
                for (to, from) in [("ContactEmail", "Email"), ("ContactPhone", "Phone")] {
                    let v = contact
                        .and_then(|c| c.get(from))
                        .cloned()
                        .unwrap_or(J::Null);
                    fields.insert(to.into(), v);
                }
            }
            "Opportunity" => {
                let close = text(fields, "CloseDate")
                    .and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
                if let Some(d) = close {
                    use chrono::Datelike;
                    fields.insert("FiscalYear".into(), json!(d.year()));
                    fields.insert("FiscalQuarter".into(), json!((d.month() - 1) / 3 + 1));
                }
                let amount = fields.get("Amount").and_then(J::as_f64);
                let p = fields.get("Probability").and_then(J::as_f64);
                let expected = match (amount, p) {
                    (Some(a), Some(p)) => json!((a * p).round() / 100.0),
                    _ => J::Null,
                };
                fields.insert("ExpectedRevenue".into(), expected);
            }
            "PricebookEntry" if old.is_none() => self.price_book_entry(fields)?,
            "OpportunityLineItem" => self.line_item(fields, old)?,
            _ => {}
        }
        Ok(())
    }

    /// A live record's fields.
    fn live(&self, object: &str, id: &str) -> Option<&Map<String, J>> {
        self.records
            .get(object)?
            .get(id)
            .filter(|r| !r.deleted)
            .map(|r| &r.fields)
    }

    /// The object an id's key prefix names.
    fn object_of(&self, id: &str) -> Option<&str> {
        let p = id.get(..3)?;
        self.objects
            .iter()
            .find(|o| o.prefix() == p)
            .map(|o| o.name.as_str())
    }

    /// The account an activity belongs to: its WhatId when that is an account, else the
    /// account of the opportunity or case it names, else that of its contact (WhoId).
    fn activity_account(&self, f: &Map<String, J>) -> J {
        let id = |k: &str| f.get(k).and_then(J::as_str).map(str::to_string);
        if let Some(what) = id("WhatId") {
            match self.object_of(&what) {
                Some("Account") => return json!(what),
                Some(o @ ("Opportunity" | "Case")) => {
                    if let Some(a) = self.live(o, &what).and_then(|r| r.get("AccountId")) {
                        if !a.is_null() {
                            return a.clone();
                        }
                    }
                }
                _ => {}
            }
        }
        id("WhoId")
            .filter(|w| self.object_of(w) == Some("Contact"))
            .and_then(|w| self.live("Contact", &w)?.get("AccountId").cloned())
            .unwrap_or(J::Null)
    }

    /// A new price book entry: one per (price book, product); a custom price book's needs the
    /// product's standard price first; Name and ProductCode are the product's.
    fn price_book_entry(&self, f: &mut Map<String, J>) -> Result<(), SfError> {
        let text = |k: &str| f.get(k).and_then(J::as_str).map(str::to_string);
        let (Some(book), Some(product)) = (text("Pricebook2Id"), text("Product2Id")) else {
            return Ok(()); // REQUIRED_FIELD_MISSING was answered already
        };
        let entries: Vec<&Map<String, J>> = self
            .records
            .get("PricebookEntry")
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|r| !r.deleted)
            .map(|r| &r.fields)
            .filter(|r| r.get("Product2Id").and_then(J::as_str) == Some(product.as_str()))
            .collect();
        if entries
            .iter()
            .any(|r| r.get("Pricebook2Id").and_then(J::as_str) == Some(book.as_str()))
        {
            return Err(SfError::new(
                400,
                "DUPLICATE_VALUE",
                "This price definition already exists in this price book",
            ));
        }
        let standard = self.standard_price_book_id();
        if standard.as_deref() != Some(book.as_str())
            && !entries
                .iter()
                .any(|r| r.get("Pricebook2Id").and_then(J::as_str) == standard.as_deref())
        {
            return Err(SfError::new(
                400,
                "STANDARD_PRICE_NOT_DEFINED",
                "No standard price defined for this product",
            ));
        }
        if let Some(p) = self.live("Product2", &product) {
            for k in ["Name", "ProductCode"] {
                f.insert(k.into(), p.get(k).cloned().unwrap_or(J::Null));
            }
        }
        Ok(())
    }

    /// An opportunity product: from its price book entry (or product, in the opportunity's
    /// price book) it takes Product2Id, Name, ProductCode and ListPrice; UnitPrice defaults to
    /// the list price; TotalPrice is Quantity × UnitPrice, or sets UnitPrice when given alone.
    fn line_item(
        &self,
        f: &mut Map<String, J>,
        old: Option<&Map<String, J>>,
    ) -> Result<(), SfError> {
        let text = |m: &Map<String, J>, k: &str| m.get(k).and_then(J::as_str).map(str::to_string);
        if old.is_none() {
            let entry_id = match text(f, "PricebookEntryId") {
                Some(e) => Some(e),
                None => {
                    let product = text(f, "Product2Id");
                    let book = text(f, "OpportunityId")
                        .and_then(|o| text(self.live("Opportunity", &o)?, "Pricebook2Id"))
                        .or_else(|| self.standard_price_book_id());
                    self.records.get("PricebookEntry").and_then(|m| {
                        m.iter().find_map(|(id, r)| {
                            (!r.deleted
                                && text(&r.fields, "Product2Id") == product
                                && text(&r.fields, "Pricebook2Id") == book)
                                .then(|| id.clone())
                        })
                    })
                }
            };
            let entry = entry_id
                .as_deref()
                .and_then(|e| self.live("PricebookEntry", e));
            let Some(entry) = entry else {
                return Err(SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    "Required fields are missing: [PricebookEntryId]",
                )
                .field("PricebookEntryId"));
            };
            f.insert("PricebookEntryId".into(), json!(entry_id));
            f.insert(
                "Product2Id".into(),
                entry.get("Product2Id").cloned().unwrap_or(J::Null),
            );
            f.insert(
                "ProductCode".into(),
                entry.get("ProductCode").cloned().unwrap_or(J::Null),
            );
            f.insert(
                "ListPrice".into(),
                entry.get("UnitPrice").cloned().unwrap_or(J::Null),
            );
            let opp = text(f, "OpportunityId")
                .and_then(|o| text(self.live("Opportunity", &o)?, "Name"))
                .unwrap_or_default();
            let product = text(entry, "Name").unwrap_or_default();
            f.insert(
                "Name".into(),
                json!(format!("{opp} {product}").trim().to_string()),
            );
        }
        let num = |m: &Map<String, J>, k: &str| m.get(k).and_then(J::as_f64);
        let changed = |k: &str| match old {
            None => f.get(k).is_some_and(|v| !v.is_null()),
            Some(o) => o.get(k) != f.get(k),
        };
        let qty = num(f, "Quantity").unwrap_or(0.0);
        let round = |x: f64| (x * 100.0).round() / 100.0;
        if old.is_none() && changed("UnitPrice") && changed("TotalPrice") {
            return Err(SfError::new(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                "You can't specify both Unit Price and Total Price.",
            ));
        }
        if changed("TotalPrice") && !changed("UnitPrice") {
            if let Some(t) = num(f, "TotalPrice") {
                if qty != 0.0 {
                    f.insert("UnitPrice".into(), json!(round(t / qty)));
                }
            }
        } else {
            let unit = num(f, "UnitPrice").or_else(|| num(f, "ListPrice"));
            if let Some(u) = unit {
                f.insert("UnitPrice".into(), json!(u));
                f.insert("TotalPrice".into(), json!(round(u * qty)));
            }
        }
        Ok(())
    }
}
