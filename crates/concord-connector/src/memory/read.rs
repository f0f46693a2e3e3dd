//! Full-scan reads in key order, paged; the cursor is the last key of the previous page.

use super::MemorySystem;
use crate::{Change, ConnectorError, ReadPage};
use concord_model::model::Key;
use std::ops::Bound;

pub(super) fn page(sys: &MemorySystem, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
    let after = match cursor {
        None => None,
        Some(c) => Some(Key::new(std::str::from_utf8(c).map_err(|_| {
            ConnectorError {
                system: sys.system.to_string(),
                object: "table".into(),
                message: "cursor is not a key of this system".into(),
                retryable: false,
            }
        })?)),
    };
    let t = sys.table.lock().expect("lock");
    let lower = match &after {
        Some(k) => Bound::Excluded(k.clone()),
        None => Bound::Unbounded,
    };
    let mut changes = Vec::new();
    let mut more = false;
    for (k, row) in t.rows.range((lower, Bound::Unbounded)) {
        if changes.len() == sys.page_size {
            more = true;
            break;
        }
        changes.push(Change {
            key: k.clone(),
            entity_hint: row.entity,
            fields: Some(row.fields.clone()),
            modstamp: Some(row.modstamp),
        });
    }
    let cursor = if more {
        changes
            .last()
            .map(|c: &Change| c.key.as_str().as_bytes().to_vec())
    } else {
        None // a scan starts from the beginning again next time
    };
    Ok(ReadPage {
        changes,
        cursor,
        more,
        complete: true,
    })
}
