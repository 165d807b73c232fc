//! One block of a simulated article body, in its ground-truth plain text
//! and markdown forms (a leaf module: the corpus and the page templates both
//! name it).

use serde::Serialize;

/// One block of an article body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Block {
    P(String),
    H2(String),
    List(Vec<String>),
    Quote(String),
    /// A key-takeaways box at the top of the body: label and items.
    Summary(String, Vec<String>),
    /// A table: header cells and rows.
    Table(Vec<String>, Vec<Vec<String>>),
    /// A code or configuration listing, verbatim.
    Code(String),
}

fn md_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("- {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Block {
    /// Plain text of the block (ground truth form).
    pub fn plain(&self) -> String {
        match self {
            Block::P(t) | Block::H2(t) | Block::Quote(t) | Block::Code(t) => t.clone(),
            Block::List(items) => items.join("\n"),
            Block::Summary(label, items) => format!("{label}\n{}", items.join("\n")),
            Block::Table(head, rows) => std::iter::once(head)
                .chain(rows)
                .map(|r| r.join(" | "))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
    /// The block as markdown (the rendered ground truth).
    pub fn markdown(&self) -> String {
        match self {
            Block::P(t) => t.clone(),
            Block::H2(t) => format!("## {t}"),
            Block::List(items) => md_list(items),
            Block::Quote(t) => format!("> {t}"),
            Block::Summary(label, items) => format!("**{label}**\n\n{}", md_list(items)),
            Block::Table(head, rows) => {
                let row = |r: &Vec<String>| format!("| {} |", r.join(" | "));
                let mut o = vec![row(head), format!("|{}", "---|".repeat(head.len()))];
                o.extend(rows.iter().map(row));
                o.join("\n")
            }
            Block::Code(t) => format!("```\n{t}\n```"),
        }
    }
    /// Number of words in the block's text.
    pub fn words(&self) -> usize {
        self.plain().split_whitespace().count()
    }
}
