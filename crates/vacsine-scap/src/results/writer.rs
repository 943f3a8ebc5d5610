//! A small façade over `quick-xml`'s writer: every text and attribute value is escaped by
//! quick-xml and first cleaned of what XML 1.0 cannot carry at all.
//!
//! Threat model: rule evidence quotes file contents of the evaluated node, and node names,
//! host names and addresses come from the node too. Escaping alone is not enough: control
//! characters (U+0001…U+001F but tab, newline, carriage return), U+FFFE/U+FFFF and lone
//! surrogates are not allowed in XML 1.0 even as character references, so a file holding one
//! would make the whole document unreadable. They are replaced with `\u{…}` text.

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

pub(crate) struct Xml {
    w: Writer<Vec<u8>>,
}

/// `s` with the characters XML 1.0 forbids replaced by a visible `\u{…}` escape.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Xml {
    pub fn new() -> Xml {
        Xml {
            w: Writer::new_with_indent(Vec::new(), b' ', 2),
        }
    }

    fn tag<'a>(name: &'a str, attrs: &[(&str, &str)]) -> BytesStart<'a> {
        let mut t = BytesStart::new(name);
        for (k, v) in attrs {
            t.push_attribute((*k, clean(v).as_ref()));
        }
        t
    }

    // Writing to a Vec cannot fail: quick-xml's io errors come from the inner writer only.
    fn ev(&mut self, e: Event) {
        let _ = self.w.write_event(e);
    }

    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.ev(Event::Start(Self::tag(name, attrs)));
    }
    pub fn end(&mut self, name: &str) {
        self.ev(Event::End(BytesEnd::new(name)));
    }
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.ev(Event::Empty(Self::tag(name, attrs)));
    }
    /// `<name attrs>text</name>`.
    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.ev(Event::Start(Self::tag(name, attrs)));
        let t = clean(text);
        self.ev(Event::Text(BytesText::new(&t)));
        self.ev(Event::End(BytesEnd::new(name)));
    }
    /// Well-formed XML written as is (an element of the source document).
    pub fn raw(&mut self, xml: &str) {
        let _ = self.w.write_indent();
        self.w.get_mut().extend_from_slice(xml.as_bytes());
    }
    pub fn finish(self) -> String {
        // Every piece written was a `&str`: the buffer is UTF-8.
        String::from_utf8(self.w.into_inner()).unwrap_or_default()
    }
}
