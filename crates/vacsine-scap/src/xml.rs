//! A small owned element tree for the OVAL parts of a data stream (tests, objects, states,
//! variables, definitions), interpreted at evaluation time.

/// One XML element: local name, attributes (local names; `xsi:nil` is `nil`), text, children,
/// and the line it starts on in its file (for messages).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Elem {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Elem>,
    pub line: u32,
}

impl Elem {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Builds an element; for tests and in-memory content.
    pub fn new(name: &str) -> Elem {
        Elem {
            name: name.into(),
            attrs: Vec::new(),
            text: String::new(),
            children: Vec::new(),
            line: 0,
        }
    }
    pub fn with_attr(mut self, k: &str, v: &str) -> Elem {
        self.attrs.push((k.into(), v.into()));
        self
    }
    pub fn with_text(mut self, t: &str) -> Elem {
        self.text = t.into();
        self
    }
    pub fn with_child(mut self, c: Elem) -> Elem {
        self.children.push(c);
        self
    }
}

/// Copies a roxmltree element (and its subtree) into an owned [`Elem`].
pub fn own(lines: &Lines, node: roxmltree::Node) -> Elem {
    let mut text = String::new();
    let mut children = Vec::new();
    for c in node.children() {
        if c.is_element() {
            children.push(own(lines, c));
        } else if c.is_text() {
            text.push_str(c.text().unwrap_or(""));
        }
    }
    let text = if children.is_empty() {
        text
    } else {
        text.trim().to_string()
    };
    Elem {
        name: node.tag_name().name().to_string(),
        attrs: node
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect(),
        text,
        children,
        line: lines.line(node.range().start),
    }
}

/// Byte offset → line number, in O(log n) (roxmltree's `text_pos_at` scans from the start).
pub struct Lines(Vec<usize>);

impl Lines {
    pub fn new(text: &str) -> Lines {
        let mut v = vec![0];
        v.extend(memchr_newlines(text));
        Lines(v)
    }
    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> u32 {
        self.0.partition_point(|&s| s <= offset) as u32
    }
}

fn memchr_newlines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i + 1)
}
