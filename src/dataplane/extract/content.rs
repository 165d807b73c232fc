//! Main content extraction: HTML to clean markdown of the article alone.
//!
//! Two proven extractors, combined by confidence:
//! 1. `dom_smoothie` (a Readability port; ~4x faster) runs first. When its
//!    result scores at least [`ACCEPT_SCORE`] on the quality score and is not
//!    suspiciously short next to the page's text, it is taken as it is.
//! 2. Otherwise `rs-trafilatura` runs too, and the result with the higher
//!    quality score wins (trafilatura's own confidence breaks near-ties).
//!
//! Most article pages stop after step 1, which keeps throughput near the
//! fast extractor's; pages where Readability picks a wrong or partial
//! container get the second opinion. Figures: `docs/BENCHMARKS.md`.

use std::time::Instant;

use serde::Serialize;

use super::quality::{self, Quality};

/// A quality at or above this from the fast extractor is accepted at once.
pub const ACCEPT_SCORE: f64 = 0.75;

/// Largest HTML parsed; bigger documents are cut (the fetcher caps bodies
/// too, this protects `freshet extract --file`).
pub const MAX_HTML_BYTES: usize = 16 * 1024 * 1024;

/// Which extractor produced the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// dom_smoothie (Readability).
    Readability,
    /// rs-trafilatura.
    Trafilatura,
    /// The provider's remote renderer returned markdown.
    Remote,
    /// Nothing could be extracted.
    None,
}

impl Method {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Readability => "readability",
            Method::Trafilatura => "trafilatura",
            Method::Remote => "remote",
            Method::None => "none",
        }
    }
}

/// The main content of one page.
#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    /// Page title (from metadata), may be empty.
    pub title: String,
    /// Main content as markdown.
    pub markdown: String,
    /// Quality of `markdown`.
    pub quality: Quality,
    /// Extractor that produced it.
    pub method: Method,
    /// rs-trafilatura's own predicted extraction quality, when it ran.
    pub trafilatura_confidence: Option<f64>,
    /// Microseconds spent extracting.
    pub micros: u64,
}

struct Candidate {
    title: String,
    markdown: String,
    quality: Quality,
}

/// Elements that are boilerplate by the web's own conventions (HTML5
/// sectioning, ARIA roles, and the class/id vocabulary that CMSs, ad
/// servers and share widgets use). Removed before Readability scores the
/// page, unless an element holds a large part of the page's text (then it is
/// more likely a wrapper with an unlucky class name than boilerplate).
const BOILERPLATE_SELECTOR: &str = "aside, nav, footer, form, figcaption, \
    [role=complementary], [role=navigation], [role=contentinfo], [aria-hidden=true], \
    [class~=ad], [class^=ad-], [class*=' ad-'], [class*='-ad '], [class$='-ad'], [id^=ad-], \
    [class*=advert], [id*=advert], [class*=sponsor], [class*=promo], \
    [class*=newsletter], [class*=subscribe], [class*=related], [class*=share], [class*=social], \
    [class*=author-bio], [class*=about-author], [class*=about-the-author], [class*=author-box], \
    [class*=comment], [id*=comment], [id=respond], [class*=teaser], [class*=more-from], \
    [class*=caption], [class*=byline], [class*=breadcrumb], [class*=cookie], [class*=consent], \
    [class*=widget], [class*=sidebar], [class*=pullout]";

/// Removes boilerplate elements (see [`BOILERPLATE_SELECTOR`]).
fn preclean(doc: &dom_query::Document) {
    let total = doc.select("body").text().len().max(1);
    for node in doc.select(BOILERPLATE_SELECTOR).nodes() {
        let sel = dom_query::Selection::from(*node);
        if sel.text().len() * 10 < total * 4 {
            sel.remove();
        }
    }
}

/// Drops lines of extracted markdown that are links and labels rather than
/// text: link lists and "read also" lines (mostly link text), one-to-three
/// word labels without punctuation ("Advertisement"), the title repeated as
/// a heading, and short unpunctuated lines before the first real paragraph
/// (bylines, dates, "5 min read").
fn drop_link_and_label_blocks(markdown: &str, title: &str) -> String {
    let title_tokens: Vec<String> = quality::tokens(title).collect();
    let mut out = String::with_capacity(markdown.len());
    let mut seen_text = false;
    for block in markdown.split("\n\n") {
        let mut kept_lines: Vec<&str> = Vec::new();
        for line in block.lines() {
            let (text, link_chars) = quality::markdown_text(line);
            let chars = text.chars().filter(|c| !c.is_whitespace()).count().max(1);
            let words = text.split_whitespace().count();
            let trimmed = line.trim();
            let is_heading = trimmed.starts_with('#');
            let is_list =
                trimmed.starts_with("- ") || trimmed.starts_with("* ") || trimmed.starts_with("1.");
            let punctuated = trimmed
                .trim_end_matches(['*', '_', '"', '\u{201d}', ')'])
                .ends_with(['.', '!', '?', ':', ';']);
            let drop = (link_chars * 10 >= chars * 6 && words <= 40)
                || (is_heading
                    && !title_tokens.is_empty()
                    && quality::tokens(trimmed).collect::<Vec<_>>() == title_tokens)
                || (!is_heading && !is_list && words <= 3 && !punctuated)
                || (!seen_text && !is_heading && !is_list && words <= 10 && !punctuated);
            if !drop {
                if words > 10 {
                    seen_text = true;
                }
                kept_lines.push(line);
            }
        }
        if !kept_lines.is_empty() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&kept_lines.join("\n"));
        }
    }
    out
}

fn readability(html: &str, url: Option<&str>) -> Option<Candidate> {
    let config = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Markdown,
        max_elements_to_parse: 200_000,
        ..Default::default()
    };
    let url = url.filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let doc = dom_query::Document::from(html);
    preclean(&doc);
    let mut reader = dom_smoothie::Readability::with_document(doc, url, Some(config)).ok()?;
    let article = reader.parse().ok()?;
    let markdown =
        drop_link_and_label_blocks(&tidy_markdown(&article.text_content), &article.title);
    let quality = quality::score_with_title(&markdown, &article.title);
    Some(Candidate {
        title: article.title.trim().to_string(),
        markdown,
        quality,
    })
}

fn trafilatura(html: &str, url: Option<&str>) -> Option<(Candidate, f64)> {
    let options = rs_trafilatura::Options {
        output_markdown: true,
        include_comments: false,
        include_images: false,
        url: url.map(str::to_string),
        ..Default::default()
    };
    let result = rs_trafilatura::extract_with_options(html, &options).ok()?;
    let markdown = tidy_markdown(
        result
            .content_markdown
            .as_deref()
            .unwrap_or(&result.content_text),
    );
    let title = result.metadata.title.unwrap_or_default().trim().to_string();
    let quality = quality::score_with_title(&markdown, &title);
    Some((
        Candidate {
            title,
            markdown,
            quality,
        },
        result.extraction_quality,
    ))
}

/// Collapses runs of blank lines and trims trailing spaces.
fn tidy_markdown(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut blank = 0;
    for line in markdown.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// Runs one extractor alone (evaluation and debugging).
pub fn extract_single(html: &str, url: Option<&str>, method: Method) -> Extracted {
    let started = Instant::now();
    let c = match method {
        Method::Trafilatura => trafilatura(html, url).map(|(c, _)| c),
        _ => readability(html, url),
    };
    match c {
        Some(c) => finish(c, method, None, started),
        None => finish(
            Candidate {
                title: String::new(),
                markdown: String::new(),
                quality: Quality::default(),
            },
            Method::None,
            None,
            started,
        ),
    }
}

/// Extracts the main content of `html`. `url` (absolute) helps resolve
/// links and metadata. Never panics; an empty result has `Method::None`.
pub fn extract(html: &str, url: Option<&str>) -> Extracted {
    let started = Instant::now();
    let html = if html.len() > MAX_HTML_BYTES {
        let mut cut = MAX_HTML_BYTES;
        while !html.is_char_boundary(cut) {
            cut -= 1;
        }
        &html[..cut]
    } else {
        html
    };
    // Before any parser: deeper nesting overflows the stack or makes the
    // parse quadratic (see `depth`).
    let capped = super::depth::cap_nesting(html, super::depth::MAX_DEPTH);
    let html = capped.as_ref();
    let fast = readability(html, url);
    if let Some(c) = &fast {
        if c.quality.score >= ACCEPT_SCORE {
            let c = fast.expect("checked above");
            return finish(c, Method::Readability, None, started);
        }
    }
    let slow = trafilatura(html, url);
    let pick = match (fast, slow) {
        (None, None) => None,
        (Some(f), None) => Some((f, Method::Readability, None)),
        (None, Some((s, conf))) => Some((s, Method::Trafilatura, Some(conf))),
        (Some(f), Some((s, conf))) => {
            // Prefer the higher score; within 0.02, trust trafilatura's own
            // confidence about whether it found the article.
            let margin = s.quality.score - f.quality.score;
            if margin > 0.02 || (margin > -0.02 && conf >= 0.6) {
                Some((s, Method::Trafilatura, Some(conf)))
            } else {
                Some((f, Method::Readability, Some(conf)))
            }
        }
    };
    match pick {
        Some((c, method, conf)) => finish(c, method, conf, started),
        None => Extracted {
            title: String::new(),
            markdown: String::new(),
            quality: Quality::default(),
            method: Method::None,
            trafilatura_confidence: None,
            micros: started.elapsed().as_micros() as u64,
        },
    }
}

fn finish(c: Candidate, method: Method, conf: Option<f64>, started: Instant) -> Extracted {
    Extracted {
        title: c.title,
        markdown: c.markdown,
        quality: c.quality,
        method,
        trafilatura_confidence: conf,
        micros: started.elapsed().as_micros() as u64,
    }
}

/// Wraps markdown that a remote renderer returned as an extraction result.
pub fn from_remote(title: String, markdown: &str) -> Extracted {
    let started = Instant::now();
    let markdown = tidy_markdown(markdown);
    // The renderer puts the title first as "# Title"; it is metadata, not body.
    let body = match markdown.split_once('\n') {
        Some((first, rest)) if first.starts_with("# ") => rest.trim_start().to_string(),
        _ => markdown.clone(),
    };
    let title = if title.is_empty() {
        markdown
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .unwrap_or_default()
            .to_string()
    } else {
        title
    };
    let quality = quality::score_with_title(&body, &title);
    Extracted {
        title,
        markdown: body,
        quality,
        method: Method::Remote,
        trafilatura_confidence: None,
        micros: started.elapsed().as_micros() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_article_not_the_menu() {
        let prose = crate::dataplane::extract::quality::tests::prose(3);
        let body: String = prose.split("\n\n").map(|p| format!("<p>{p}</p>")).collect();
        let nav: String = (0..40)
            .map(|i| format!("<li><a href='/s/{i}'>Section {i}</a></li>"))
            .collect();
        let html = format!(
            "<html><head><title>Flood</title></head><body><nav><ul>{nav}</ul></nav>\
             <article><h1>Flood</h1>{body}</article><footer>Copyright 2026 Example Media. All rights reserved.</footer></body></html>"
        );
        let out = extract(&html, Some("https://news.example/flood"));
        assert!(out.markdown.contains("The committee said"), "{out:?}");
        assert!(!out.markdown.contains("Section 12"), "{}", out.markdown);
        assert!(!out.markdown.contains("Copyright"), "{}", out.markdown);
        assert!(out.quality.score > 0.7, "{:?}", out.quality);
    }

    #[test]
    fn garbage_does_not_panic() {
        for html in [
            "",
            "<",
            "<<<>>>",
            "<html><body></body></html>",
            "\u{0}\u{1}<p>x",
        ] {
            let out = extract(html, None);
            assert!(out.quality.score < 0.3, "{html:?}: {out:?}");
        }
    }

    #[test]
    fn remote_markdown_drops_the_title_line() {
        let out = from_remote(String::new(), "# Hello\n\nBody text here.");
        assert_eq!(out.title, "Hello");
        assert_eq!(out.markdown, "Body text here.");
    }
}
