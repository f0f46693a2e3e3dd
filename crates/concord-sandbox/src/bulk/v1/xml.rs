//! The XML Bulk API 1.0 speaks: a small element tree read with quick-xml (job and state
//! bodies, XML batches) and a writer for its answers, in the
//! `http://www.force.com/2009/06/asyncapi/dataload` namespace.

use quick_xml::events::Event;
use quick_xml::Reader;

pub(crate) const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";
pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// An element: its local name, whether it is `xsi:nil="true"`, its `xsi:type`, its text and
/// its child elements.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) nil: bool,
    pub(crate) text: String,
    pub(crate) children: Vec<Element>,
}

impl Element {
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses a document into its root element. The error says where (byte offset) and what.
pub(crate) fn parse(data: &[u8]) -> Result<Element, String> {
    let mut r = Reader::from_reader(data);
    r.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut buf = Vec::new();
    let open = |e: &quick_xml::events::BytesStart| -> Result<Element, String> {
        let mut el = Element {
            name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
            ..Element::default()
        };
        for a in e.attributes() {
            let a = a.map_err(|e| format!("bad attribute: {e}"))?;
            if a.key.local_name().as_ref() == b"nil" {
                el.nil = a.value.as_ref() == b"true";
            }
        }
        Ok(el)
    };
    loop {
        let at = r.buffer_position();
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML at byte {at}: {e}"))?;
        match ev {
            Event::Start(e) => stack.push(open(&e)?),
            Event::Empty(e) => {
                let el = open(&e)?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| format!("malformed XML at byte {at}: {e}"))?;
                    p.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => {
                return Err(if stack.is_empty() {
                    "no root element".into()
                } else {
                    "unexpected end of the document".into()
                })
            }
            _ => {}
        }
        buf.clear();
    }
}

/// Builds an answer: `<?xml …?>` then elements, text escaped.
#[derive(Default)]
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
        }
    }
    /// Opens the root element in the dataload namespace (and xsi's, for nil values).
    pub(crate) fn root(&mut self, name: &str) -> &mut Self {
        self.out
            .push_str(&format!("<{name} xmlns=\"{NS}\" xmlns:xsi=\"{XSI}\">"));
        self
    }
    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        self.out.push_str(&format!("<{name}>"));
        self
    }
    pub(crate) fn open_typed(&mut self, name: &str, ty: &str) -> &mut Self {
        self.out
            .push_str(&format!("<{name} xsi:type=\"{}\">", escape(ty)));
        self
    }
    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str(&format!("</{name}>"));
        self
    }
    pub(crate) fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.out
            .push_str(&format!("<{name}>{}</{name}>", escape(text)));
        self
    }
    pub(crate) fn nil(&mut self, name: &str) -> &mut Self {
        self.out.push_str(&format!("<{name} xsi:nil=\"true\"/>"));
        self
    }
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

pub(crate) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_nested_and_nil_elements() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<sObjects xmlns="http://www.force.com/2009/06/asyncapi/dataload" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <sObject><Name>A &amp; B</Name><Phone xsi:nil="true"/><Parent><Erp_Id__c>7</Erp_Id__c></Parent></sObject>
</sObjects>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "sObjects");
        let o = root.child("sObject").unwrap();
        assert_eq!(o.child("Name").unwrap().text, "A & B");
        assert!(o.child("Phone").unwrap().nil);
        assert_eq!(
            o.child("Parent").unwrap().child("Erp_Id__c").unwrap().text,
            "7"
        );
    }

    #[test]
    fn malformed_documents_say_where() {
        let e = parse(b"<jobInfo><state>Closed</jobInfo>").unwrap_err();
        assert!(e.contains("malformed XML at byte"), "{e}");
        assert!(parse(b"<jobInfo>").unwrap_err().contains("unexpected end"));
        assert!(parse(b"").unwrap_err().contains("no root"));
    }

    #[test]
    fn the_writer_escapes_text() {
        let mut w = Writer::new();
        let s = w.root("r").leaf("a", "<&>").nil("b").close("r").finish();
        assert!(
            s.ends_with("<a>&lt;&amp;&gt;</a><b xsi:nil=\"true\"/></r>"),
            "{s}"
        );
    }
}
