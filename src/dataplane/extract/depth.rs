//! A nesting-depth cap applied to HTML before any parser sees it.
//!
//! The HTML tree builders behind extraction (html5ever, through dom_query,
//! dom_smoothie and rs-trafilatura) nest elements as deep as the markup says,
//! and parts of extraction walk the tree recursively: a page of 20,000 nested
//! `<div>`s overflowed a worker's 2 MiB stack and aborted the process, and at
//! 100,000 the builder's scope checks made the parse quadratic. Browsers cap
//! the DOM depth (Blink at 512); [`cap_nesting`] does the same on the markup
//! itself, in one pass that allocates nothing for ordinary pages. The cap,
//! [`MAX_DEPTH`] = 128 counted elements, is well above real pages (none of
//! the 1,120 pages of the mozilla/readability and trafilatura corpora counts
//! more than 47) and keeps the extractors' cost, which grows with depth
//! times size, bounded.
//!
//! It follows the tags with a stack of open element names, modelled on the
//! HTML tree builder closely enough never to count much less than the depth
//! the parser will build:
//! - void elements, raw-text elements (`script`, `style`, `textarea`,
//!   `title`, …, whose content is skipped) and elements that close each other
//!   without nesting (`p`, `li`, `dd`, `dt`, `td`, `th`, `tr`, `option`, …)
//!   are not counted; self-closing tags count only inside `<svg>`/`<math>`;
//! - an end tag closes the nearest open element of its name, unless an
//!   element that the tree builder would not close through comes first (a
//!   "special" element for ordinary end tags, a scope boundary such as
//!   `table` for special ones); then it is ignored, as the parser ignores it.
//!
//! A start tag that would open an element deeper than the cap is dropped
//! (its text kept), and so is the end tag that closes it: the content stays,
//! only the excess structure goes. (Dropped tags leave nothing behind, not
//! even a space: whitespace at the cap's depth is repeated once per level by
//! the markdown conversion.)

use std::borrow::Cow;

/// Deepest element nesting kept (counted elements; see the module docs).
pub const MAX_DEPTH: usize = 128;

const VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr",
];

/// Elements whose content is text up to their end tag.
const RAW_TEXT: &[&str] = &[
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "plaintext",
];

/// Elements the tree builder closes when a sibling of their kind starts
/// (or that only exist once), so they do not nest by themselves.
const NON_NESTING: &[&str] = &[
    "p", "li", "dd", "dt", "td", "th", "tr", "tbody", "thead", "tfoot", "caption", "colgroup",
    "option", "optgroup", "rb", "rp", "rt", "rtc", "html", "head", "body",
];

/// The HTML spec's "special" category (less the void and non-nesting ones,
/// which never sit on the stack here).
const SPECIAL: &[&str] = &[
    "address",
    "applet",
    "article",
    "aside",
    "blockquote",
    "button",
    "center",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "listing",
    "main",
    "marquee",
    "menu",
    "nav",
    "noscript",
    "object",
    "ol",
    "pre",
    "search",
    "section",
    "select",
    "summary",
    "table",
    "template",
    "ul",
    "foreignobject",
    "svg",
    "math",
];

/// Elements an end tag of a special element does not close through.
const SCOPE: &[&str] = &[
    "applet",
    "marquee",
    "object",
    "table",
    "template",
    "foreignobject",
    "svg",
    "math",
];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':' || b == b'.'
}

/// Index of the `>` that ends the tag whose attributes start at `from`
/// (quoted attribute values may hold `>`), or the end of the input.
fn tag_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    let mut after_eq = false;
    while i < b.len() {
        match b[i] {
            b'>' => return i,
            b'=' => after_eq = true,
            q @ (b'"' | b'\'') if after_eq => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                after_eq = false;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {}
            _ => after_eq = false,
        }
        i += 1;
    }
    b.len()
}

/// Position just after `</name ...>` (case-insensitive), searching from
/// `from`, or the end of the input.
fn after_end_tag(b: &[u8], from: usize, name: &str) -> usize {
    let n = name.len();
    let mut i = from;
    while let Some(off) = memchr_lt(&b[i..]) {
        let lt = i + off;
        let rest = &b[lt..];
        if rest.len() > n + 1
            && rest[1] == b'/'
            && rest[2..2 + n].eq_ignore_ascii_case(name.as_bytes())
            && rest.get(2 + n).is_none_or(|c| !is_name_byte(*c))
        {
            return (tag_end(b, lt + 2 + n) + 1).min(b.len());
        }
        i = lt + 1;
    }
    b.len()
}

fn memchr_lt(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'<')
}

/// Formatting elements: the tree builder reopens them after an element that
/// held them closes (the "active formatting elements").
const FORMATTING: &[&str] = &[
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
];

/// One open element.
#[derive(Debug)]
struct Open {
    name: String,
    id: u64,
    /// Its tags were dropped from the output.
    dropped: bool,
}

/// The tree builder, as far as depth goes: open elements and active
/// formatting elements (name and attributes, and the open element's id).
///
/// The builder's markers (table cells, `object`, `template`, …) hide
/// earlier formatting elements from reopening; they are not modelled, so
/// the model may count a little more than the builder builds, never less.
#[derive(Debug, Default)]
struct Model {
    stack: Vec<Open>,
    open_ids: std::collections::HashSet<u64>,
    active: Vec<(String, u64)>,
    next_id: u64,
}

impl Model {
    /// Active formatting elements that are not open (the ones the builder
    /// would reopen).
    fn closed_active(&self) -> usize {
        self.active
            .iter()
            .filter(|(_, id)| !self.open_ids.contains(id))
            .count()
    }

    /// Depth the builder may reach before the next tag.
    fn depth(&self) -> usize {
        self.stack.len() + self.closed_active()
    }

    fn push(&mut self, name: String, dropped: bool) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.open_ids.insert(id);
        self.stack.push(Open { name, id, dropped });
        id
    }

    fn truncate(&mut self, len: usize) {
        for gone in self.stack.drain(len..) {
            self.open_ids.remove(&gone.id);
        }
    }

    /// Text or a start tag: the builder reopens closed active elements.
    fn reconstruct(&mut self) {
        for k in 0..self.active.len() {
            let (key, id) = &self.active[k];
            if self.open_ids.contains(id) {
                continue;
            }
            let name = key.split(' ').next().unwrap_or_default().to_string();
            let new = self.push(name, false);
            self.active[k].1 = new;
        }
    }

    /// A kept formatting start tag (`key`: name and attributes) becomes
    /// active; at most three identical ones stay (the "Noah's Ark" rule).
    fn activate(&mut self, key: String, id: u64) {
        let same: Vec<usize> = (0..self.active.len())
            .filter(|&k| self.active[k].0 == key)
            .collect();
        if same.len() >= 3 {
            self.active.remove(same[0]);
        }
        self.active.push((key, id));
    }

    /// An end tag: `Some(dropped)` when it closed an element (whose tags
    /// were dropped or not), `None` when the builder ignores it.
    fn close(&mut self, name: &str) -> Option<bool> {
        if FORMATTING.contains(&name) {
            if let Some(k) = (0..self.active.len())
                .rev()
                .find(|&k| self.active[k].0.split(' ').next() == Some(name))
            {
                let (_, id) = self.active.remove(k);
                let j = self.stack.iter().rposition(|o| o.id == id)?;
                // With a block inside it, the builder moves the block out and
                // reopens a copy inside the block: no shallower than before.
                if self.stack[j + 1..]
                    .iter()
                    .any(|o| SPECIAL.contains(&o.name.as_str()))
                {
                    return None;
                }
                let dropped = self.stack[j].dropped;
                self.truncate(j);
                return Some(dropped);
            }
        }
        let barrier: &[&str] = if SPECIAL.contains(&name) {
            SCOPE
        } else {
            SPECIAL
        };
        let mut found = None;
        for (j, open) in self.stack.iter().enumerate().rev() {
            if open.name == name {
                found = Some(j);
                break;
            }
            if barrier.contains(&open.name.as_str()) {
                break;
            }
        }
        let j = found?;
        let dropped = self.stack[j].dropped;
        self.truncate(j);
        Some(dropped)
    }
}

/// `html` with elements nested deeper than `max` flattened (their tags
/// removed, their content kept). Borrowed when nothing is that deep.
pub fn cap_nesting(html: &str, max: usize) -> Cow<'_, str> {
    let b = html.as_bytes();
    let mut model = Model::default();
    // Depth at which the current svg/math subtree started, if inside one.
    let mut foreign_from: Option<usize> = None;
    let mut out: Option<String> = None;
    let mut copied = 0;
    let drop_range = |out: &mut Option<String>, copied: &mut usize, start: usize, end: usize| {
        let o = out.get_or_insert_with(|| String::with_capacity(html.len()));
        o.push_str(&html[*copied..start]);
        *copied = end;
    };
    let mut i = 0;
    while let Some(off) = memchr_lt(&b[i..]) {
        let lt = i + off;
        if b[i..lt].iter().any(|c| !c.is_ascii_whitespace()) {
            model.reconstruct();
        }
        let rest = &b[lt..];
        if rest.starts_with(b"<!--") {
            i = html[lt + 4..]
                .find("-->")
                .map_or(b.len(), |p| lt + 4 + p + 3);
            continue;
        }
        if rest.len() > 1 && (rest[1] == b'!' || rest[1] == b'?') {
            i = (tag_end(b, lt + 2) + 1).min(b.len());
            continue;
        }
        let closing = rest.len() > 1 && rest[1] == b'/';
        let name_start = lt + if closing { 2 } else { 1 };
        if name_start >= b.len() || !b[name_start].is_ascii_alphabetic() {
            // A lone `<` is text.
            model.reconstruct();
            i = lt + 1;
            continue;
        }
        let mut name_end = name_start;
        while name_end < b.len() && is_name_byte(b[name_end]) {
            name_end += 1;
        }
        let name = html[name_start..name_end].to_ascii_lowercase();
        let end = tag_end(b, name_end);
        let after = (end + 1).min(b.len());
        let self_closing = end > name_end && end < b.len() && b[end - 1] == b'/';
        i = after;
        let name_s = name.as_str();
        if closing {
            if VOID.contains(&name_s) || NON_NESTING.contains(&name_s) {
                continue;
            }
            if model.close(name_s) == Some(true) {
                drop_range(&mut out, &mut copied, lt, after);
            }
            if foreign_from.is_some_and(|f| model.stack.len() <= f) {
                foreign_from = None;
            }
            continue;
        }
        if RAW_TEXT.contains(&name_s) && foreign_from.is_none() {
            if !self_closing {
                i = after_end_tag(b, after, name_s);
            }
            continue;
        }
        if VOID.contains(&name_s)
            || NON_NESTING.contains(&name_s)
            || (self_closing && foreign_from.is_some())
        {
            continue;
        }
        model.reconstruct();
        let dropped = model.depth() >= max;
        if dropped {
            drop_range(&mut out, &mut copied, lt, after);
        }
        if foreign_from.is_none() && (name_s == "svg" || name_s == "math") {
            foreign_from = Some(model.stack.len());
        }
        let formatting = FORMATTING.contains(&name_s);
        let key = formatting.then(|| {
            let attrs = html[name_end..end].trim().trim_end_matches('/');
            format!("{name_s} {attrs}")
        });
        let id = model.push(name, dropped);
        if let (Some(key), false) = (key, dropped) {
            model.activate(key, id);
        }
    }
    match out {
        None => Cow::Borrowed(html),
        Some(mut o) => {
            o.push_str(&html[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(html: &str) -> usize {
        // The deepest element of the parsed tree.
        fn walk(node: &dom_query::NodeRef, d: usize, best: &mut usize) {
            // Iterative on purpose: the test must not overflow either.
            let mut todo = vec![(*node, d)];
            while let Some((n, d)) = todo.pop() {
                *best = (*best).max(d);
                for c in n.children() {
                    if c.is_element() {
                        todo.push((c, d + 1));
                    }
                }
            }
        }
        let doc = dom_query::Document::from(html);
        let mut best = 0;
        walk(&doc.root(), 0, &mut best);
        best
    }

    #[test]
    fn ordinary_pages_are_borrowed_unchanged() {
        let page = "<!doctype html><html><head><title>a <div> b</title><script>if (a<b) { x = '<div>'; }</script></head>\
                    <body><div class=\"x>y\"><p>one<p>two<ul><li>a<li>b</ul><br/><img src=a.png>\
                    <svg><path d=\"M0\"/><g><rect/></g></svg><!-- <div><div> --></div></body></html>";
        assert!(matches!(cap_nesting(page, 4), Cow::Borrowed(_)));
    }

    #[test]
    fn deep_nesting_is_flattened_and_text_kept() {
        let n = 5_000;
        let html = format!("{}deep text{}", "<div>".repeat(n), "</div>".repeat(n));
        let capped = cap_nesting(&html, MAX_DEPTH);
        assert!(capped.contains("deep text"));
        assert_eq!(capped.matches("<div>").count(), MAX_DEPTH);
        assert_eq!(capped.matches("</div>").count(), MAX_DEPTH);
        assert!(depth_of(&capped) <= MAX_DEPTH + 3, "{}", depth_of(&capped));
    }

    #[test]
    fn tricks_that_keep_elements_open_are_still_counted() {
        // Stray end tags the parser ignores, end tags blocked by a special
        // element, self-closing HTML tags (which open), unclosed inline tags.
        let tricks = [
            "<div></x>".repeat(3000),
            "<span><div></span>".repeat(1500),
            "<div/>".repeat(3000),
            "<b><div></b>".repeat(1500),
            "<table><tr><td>".repeat(1000),
            "<ul><li>".repeat(2000),
            "<font>".repeat(3000),
            // Formatting elements the builder reopens after their block closes.
            (0..3000)
                .map(|n| format!("<div><b id={n}></div>x"))
                .collect(),
            (0..3000)
                .map(|n| format!("<div><i class=c{n}></div>"))
                .collect::<String>()
                + "x",
        ];
        for html in tricks {
            let capped = cap_nesting(&html, MAX_DEPTH);
            let depth = depth_of(&capped);
            assert!(
                depth <= 4 * MAX_DEPTH + 8,
                "{}…: depth {depth} after the cap",
                &html[..20]
            );
        }
    }

    #[test]
    fn closed_siblings_do_not_add_up() {
        let html = "<div><span>a</span></div>".repeat(10_000);
        assert!(matches!(cap_nesting(&html, 8), Cow::Borrowed(_)));
        // An unclosed inline element is closed by its block's end tag.
        let html = "<div><span>a</div>".repeat(10_000);
        assert!(matches!(cap_nesting(&html, 8), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed_markup_does_not_panic() {
        for html in [
            "<",
            "</",
            "<a",
            "<a href=\"",
            "<!--",
            "<!",
            "<?x",
            "</>",
            "<1>",
            "<div",
            "<script>",
            "<svg><",
            "é<é>",
            "<div\u{0}>",
            "<a b='>'",
        ] {
            let _ = cap_nesting(html, 1);
            let _ = cap_nesting(&html.repeat(50), 2);
        }
    }
}
