//! The simulated corpus: domains, article metadata, page generation, search.
//!
//! Only metadata (titles, paths, duplicate links) is built eagerly in
//! [`Corpus::new`]; page bodies are generated on demand from the seed, so a
//! page is a pure function of `(seed, url, js_share)`.
//!
//! # Ground truth
//!
//! [`SimPage::article_text`] is what a careful human would select as the
//! article: its authored text, blocks joined by `"\n\n"`, each block being
//! - a paragraph, whatever its markup (`<p>`, text separated by `<br><br>`
//!   in one `<div>`, `<div class="para">`, `<span>`), and both halves of an
//!   article split around an ad or "continue reading" block;
//! - a subheading;
//! - a list (items one per line) and a blockquote;
//! - a key-takeaways box at the top of the body: its label line, then its
//!   items one per line (authored summary of the article);
//! - a table: the header row then each row on its own line, cells joined by
//!   `" | "` (table text is article content, as on docs pages);
//! - a code block, verbatim (lines joined by `"\n"`).
//!
//! It excludes the title (also when repeated as an `<h1>` inside the body),
//! byline, dates, figures and their captions and photo credits, and all
//! inserted material even inside the body container: "Read more:" and
//! "Related:" links, newsletter boxes, ad slots (with their copy), share
//! rows, author bios and "About the author" boxes, teaser lists ("More
//! from …"), reader comments, navigation, tables of contents and footers.
//!
//! [`SimPage::rendered_markdown`] is `"# {title}\n\n"` followed by the same
//! blocks as markdown (`## ` headings, `- ` items, `> ` quotes, a bold label
//! for the takeaways box, GFM tables, fenced code), so its text tokens are
//! the title's plus `article_text`'s.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;

use super::block::Block;
use super::templates::{self, PageCtx};
use super::text::{self, hash_str, Rng, TOPICS};

/// Article domains (without the `.sim.test` suffix).
pub const DOMAIN_NAMES: &[&str] = &[
    "techdaily",
    "worldwire",
    "greenledger",
    "codeforge",
    "marketpulse",
    "citybeat",
    "sciencenotes",
    "devdocs",
    "heatmap-weekly",
    "oldtownherald",
    "fieldjournal",
    "datastack",
    "gridreport",
    "openmaint",
    "sportsdesk",
    "sleeplab",
    "farmtech",
    "privacywatch",
    "econbrief",
    "climatedesk",
    "bakerscorner",
    "quantumpost",
    "cloudcosts",
    "museumnews",
];
/// The domain that serves [`HostileKind`] pages.
pub const HOSTILE_DOMAIN: &str = "hostile.sim.test";
const ARTICLES_PER_DOMAIN: usize = 150;
const FIRST_ID: usize = 1000;
/// What kind of page a URL is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "detail")]
pub enum PageKind {
    Article,
    /// JavaScript-only shell: the text is not in the markup.
    JsShell,
    /// Reproduces the article at `of` with tiny changes.
    NearDuplicate {
        of: String,
    },
    Hostile(HostileKind),
}

/// Pages on `hostile.sim.test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum HostileKind {
    /// ≥ 10 MB body.
    Huge,
    /// Unclosed tags, garbage nesting, stray `<`.
    Malformed,
    /// Declares UTF-8 but contains invalid byte sequences.
    InvalidUtf8,
    /// `/redirect-loop` and `/redirect-loop-b` redirect to each other forever.
    RedirectLoop,
    /// A few bytes per second for up to 120 s.
    SlowDrip,
    /// A 200 response that is really a "page not found" message.
    ErrorPage,
    /// A 200 response with an empty body.
    Empty,
}

impl HostileKind {
    pub const ALL: [HostileKind; 7] = [
        HostileKind::Huge,
        HostileKind::Malformed,
        HostileKind::InvalidUtf8,
        HostileKind::RedirectLoop,
        HostileKind::SlowDrip,
        HostileKind::ErrorPage,
        HostileKind::Empty,
    ];
    pub fn path(self) -> &'static str {
        match self {
            HostileKind::Huge => "/huge",
            HostileKind::Malformed => "/malformed",
            HostileKind::InvalidUtf8 => "/invalid-utf8",
            HostileKind::RedirectLoop => "/redirect-loop",
            HostileKind::SlowDrip => "/slow-drip",
            HostileKind::ErrorPage => "/error-page",
            HostileKind::Empty => "/empty",
        }
    }
}

/// A page as the simulator serves it, with its ground truth.
#[derive(Debug, Clone, Serialize)]
pub struct SimPage {
    pub url: String,
    pub title: String,
    pub kind: PageKind,
    /// HTTP status the server answers with (200, or 302 for redirects).
    pub status: u16,
    /// `Content-Type` header value, including the charset.
    pub content_type: String,
    /// `Location` header for redirects.
    pub location: Option<String>,
    /// The markup as text (lossy for [`HostileKind::InvalidUtf8`]).
    pub html: String,
    /// The exact bytes on the wire (encoded in the declared charset).
    #[serde(skip)]
    pub body: bytes::Bytes,
    /// The true main text; see the module docs for the convention.
    pub article_text: String,
    /// What `/api/url` (remote rendering) returns as markdown.
    pub rendered_markdown: String,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub url: String,
    pub title: String,
    pub snippet: String,
}

#[derive(Debug, Clone)]
struct Meta {
    domain: usize,
    id: usize,
    title: String,
    topic: usize,
    date: (u32, u32, u32),
    path: String,
    dup_of: Option<usize>,
    author: String,
    /// Lowercased words of title and topic, for search.
    words: Vec<String>,
}

/// The deterministic ground-truth web. Cheap to build (metadata only).
#[derive(Debug)]
pub struct Corpus {
    seed: u64,
    domains: Vec<String>,
    metas: Vec<Meta>,
    by_path: HashMap<(usize, String), usize>,
    huge: OnceLock<bytes::Bytes>,
}

fn templ_of(domain: usize) -> usize {
    domain % templates::NUM_TEMPLATES
}
fn charset_of(domain: usize) -> &'static str {
    if domain % 6 == 4 {
        "windows-1252"
    } else {
        "utf-8"
    }
}
fn site_name(d: &str) -> String {
    d.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Corpus {
    pub fn new(seed: u64) -> Corpus {
        let domains: Vec<String> = DOMAIN_NAMES
            .iter()
            .map(|d| format!("{d}.sim.test"))
            .collect();
        let mut metas = Vec::with_capacity(domains.len() * ARTICLES_PER_DOMAIN);
        for d in 0..domains.len() {
            for k in 0..ARTICLES_PER_DOMAIN {
                let idx = metas.len();
                let mut r = Rng::derive(seed, 0x7171_0000 + idx as u64);
                // Domains lean towards a few topics, like real sites.
                let topic = if r.chance(0.7) {
                    (d * 3 + r.range(0, 2)) % TOPICS.len()
                } else {
                    r.range(0, TOPICS.len() - 1)
                };
                let title = text::title(&mut r, &TOPICS[topic]);
                let date = (
                    if r.chance(0.6) { 2026 } else { 2025 },
                    r.range(1, 12) as u32,
                    r.range(1, 28) as u32,
                );
                let author = text::person(&mut r);
                let is_dup = k > 0 && r.chance(0.06);
                metas.push(Meta {
                    domain: d,
                    id: FIRST_ID + k,
                    title,
                    topic,
                    date,
                    path: String::new(),
                    dup_of: if is_dup { Some(usize::MAX) } else { None },
                    author,
                    words: vec![],
                });
            }
        }
        // Resolve near-duplicates to an original on another domain.
        let n = metas.len();
        for i in 0..n {
            if metas[i].dup_of.is_some() {
                let mut r = Rng::derive(seed, 0xD0B0_0000 + i as u64);
                let mut j = r.range(0, n - 1);
                while metas[j].dup_of.is_some() || metas[j].domain == metas[i].domain {
                    j = (j + 7) % n;
                }
                metas[i].dup_of = Some(j);
                metas[i].title = metas[j].title.clone();
                metas[i].topic = metas[j].topic;
            }
        }
        let mut by_path = HashMap::new();
        for (i, m) in metas.iter_mut().enumerate() {
            let slug = text::slugify(&m.title);
            let (y, mo, da) = m.date;
            m.path = match templ_of(m.domain) {
                0 => format!("/{y}/{mo:02}/{slug}-{}", m.id),
                1 => format!("/blog/{slug}-{}", m.id),
                2 => format!("/news/{y}{mo:02}{da:02}/{slug}-{}.html", m.id),
                3 => format!(
                    "/docs/{}/{slug}-{}",
                    text::slugify(TOPICS[m.topic].name),
                    m.id
                ),
                _ => format!("/posts/{slug}-{}", m.id),
            };
            m.words = format!("{} {}", m.title, TOPICS[m.topic].name)
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 2)
                .map(str::to_string)
                .collect();
            by_path.insert((m.domain, m.path.clone()), i);
        }
        Corpus {
            seed,
            domains,
            metas,
            by_path,
            huge: OnceLock::new(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Article domains, all ending in `.sim.test` (excludes `hostile.sim.test`).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    fn url_of(&self, i: usize, port: u16) -> String {
        let m = &self.metas[i];
        format!("http://{}:{port}{}", self.domains[m.domain], m.path)
    }

    /// `n` distinct URLs of normal (non-duplicate) articles, round-robin over domains.
    pub fn article_urls(&self, port: u16, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        'outer: for k in 0..ARTICLES_PER_DOMAIN {
            for d in 0..self.domains.len() {
                let i = d * ARTICLES_PER_DOMAIN + k;
                if self.metas[i].dup_of.is_none() {
                    if out.len() == n {
                        break 'outer;
                    }
                    out.push(self.url_of(i, port));
                }
            }
        }
        out
    }

    /// URLs of all near-duplicate pages, with the URL of their original.
    pub fn near_duplicate_urls(&self, port: u16) -> Vec<(String, String)> {
        self.metas
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.dup_of
                    .map(|j| (self.url_of(i, port), self.url_of(j, port)))
            })
            .collect()
    }

    /// The hostile pages and their URLs.
    pub fn hostile_urls(&self, port: u16) -> Vec<(HostileKind, String)> {
        HostileKind::ALL
            .iter()
            .map(|k| (*k, format!("http://{HOSTILE_DOMAIN}:{port}{}", k.path())))
            .collect()
    }

    /// In [0, 1): a page is a JavaScript shell when this is below the js share
    /// in effect, so raising the share only ever adds shells.
    pub fn js_score(&self, domain: &str, path: &str) -> f64 {
        (hash_str(self.seed ^ 0x5_4E11, &format!("{domain}{path}")) >> 11) as f64
            / (1u64 << 53) as f64
    }

    fn lookup(&self, url: &url::Url) -> Option<usize> {
        let host = url.host_str()?;
        let d = self.domains.iter().position(|x| x == host)?;
        self.by_path.get(&(d, url.path().to_string())).copied()
    }

    /// Whether `url` names an article page (not hostile, not unknown).
    pub fn is_article(&self, url: &url::Url) -> bool {
        self.lookup(url).is_some()
    }

    fn blocks(&self, i: usize) -> Vec<Block> {
        let m = &self.metas[i];
        if let Some(j) = m.dup_of {
            // Same text as the original, with one sentence changed.
            let mut b = self.blocks(j);
            let mut r = Rng::derive(self.seed, 0xD0D0_0000 + i as u64);
            let ps: Vec<usize> = b
                .iter()
                .enumerate()
                .filter(|(_, x)| matches!(x, Block::P(_)))
                .map(|(k, _)| k)
                .collect();
            let k = *r.pick(&ps);
            if let Block::P(t) = &b[k] {
                let mut sents: Vec<String> = t.split_inclusive(". ").map(str::to_string).collect();
                let last = sents.len() - 1;
                sents[last] = text::sentence(&mut r, &TOPICS[m.topic], false);
                b[k] = Block::P(sents.concat());
            }
            return b;
        }
        let mut r = Rng::derive(self.seed, 0xB0D7_0000 + i as u64);
        let topic = &TOPICS[m.topic];
        let fancy = charset_of(m.domain) != "utf-8" || r.chance(0.3);
        let docs = templ_of(m.domain) == 3;
        let mut w = text::Writer::new(r.next_u64(), topic, fancy);
        // Length class: news briefs, ordinary articles, long reads.
        let x = r.f64();
        let (target, max_paras, sentences) = if x < 0.14 {
            (r.range(90, 230), 4, (2, 4))
        } else if x < 0.88 {
            (r.range(400, 1150), 60, (2, 6))
        } else {
            (r.range(2000, 3000), 200, (3, 7))
        };
        let mut out = Vec::new();
        if target >= 400 && !docs && r.chance(0.15) {
            let label = *r.pick(&[
                "Key takeaways",
                "In brief",
                "At a glance",
                "The short version",
            ]);
            let items = (0..r.range(3, 4)).map(|_| w.list_item()).collect();
            out.push(Block::Summary(label.to_string(), items));
        }
        let mut words = 0;
        let (mut lists, mut quotes, mut tables, mut codes) = (0, 0, 0, 0);
        let (max_tables, max_codes) = match (docs, target >= 400) {
            (_, false) => (0, 0),
            (true, _) => (r.range(0, 2), r.range(1, 3)),
            (false, _) => (usize::from(r.chance(0.1)), usize::from(r.chance(0.06))),
        };
        let mut p = 0;
        while (words < target || p < 2) && p < max_paras {
            if p > 0 && target >= 400 && r.chance(0.2) {
                out.push(Block::H2(w.subheading()));
            }
            out.push(Block::P(w.paragraph_n(sentences.0, sentences.1)));
            if p > 0 && target >= 400 {
                if lists < 2 && r.chance(0.1) {
                    lists += 1;
                    let n = r.range(3, 6);
                    out.push(Block::List((0..n).map(|_| w.list_item()).collect()));
                }
                if p > 1 && quotes < 2 && r.chance(0.07) {
                    quotes += 1;
                    out.push(Block::Quote(w.sentence()));
                }
                if tables < max_tables && r.chance(0.2) {
                    tables += 1;
                    let (head, rows) = w.table();
                    out.push(Block::Table(head, rows));
                }
                if codes < max_codes && r.chance(0.3) {
                    codes += 1;
                    out.push(Block::Code(w.code_block()));
                }
            }
            words = out.iter().map(Block::words).sum();
            p += 1;
        }
        out
    }

    fn date_str(&self, i: usize) -> String {
        let (mut y, mut mo, mut d) = self.metas[i].date;
        if let Some(j) = self.metas[i].dup_of {
            // Near-duplicates carry a different date line.
            (y, mo, d) = self.metas[j].date;
            d = d % 28 + 1;
            if d == 1 {
                mo = mo % 12 + 1;
                if mo == 1 {
                    y += 1;
                }
            }
        }
        format!("{} {d}, {y}", text::MONTH_NAMES[(mo - 1) as usize])
    }

    /// Publication date (for `Last-Modified`).
    pub fn published(&self, url: &url::Url) -> Option<std::time::SystemTime> {
        let i = self.lookup(url)?;
        let (y, mo, d) = self.metas[i].date;
        let days = (y as i64 - 1970) * 365
            + (y as i64 - 1969) / 4
            + [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(mo - 1) as usize]
            + d as i64
            - 1;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(days as u64 * 86400 + 9 * 3600))
    }

    /// The page at `url` as served when it is *not* a JavaScript shell
    /// (equivalently, with a js share of 0). See [`Corpus::page_in`].
    /// What a JS shell's app fetches from `/_content/<path>`: the article
    /// at `url` as JSON (`title`, `author`, `blocks`).
    pub fn content_json(&self, url: &url::Url) -> Option<serde_json::Value> {
        let i = self.lookup(url)?;
        let m = &self.metas[i];
        Some(serde_json::json!({"title": m.title, "author": m.author, "blocks": self.blocks(i)}))
    }

    pub fn page(&self, url: &url::Url) -> Option<SimPage> {
        self.page_in(url, 0.0)
    }

    /// The page at `url` as served while `js_share` is in effect for its
    /// domain: a shell iff `js_score < js_share`. `None` for unknown URLs.
    pub fn page_in(&self, url: &url::Url, js_share: f64) -> Option<SimPage> {
        if url.host_str() == Some(HOSTILE_DOMAIN) {
            return self.hostile(url);
        }
        let i = self.lookup(url)?;
        let port = url.port().unwrap_or(80);
        let m = &self.metas[i];
        let blocks = self.blocks(i);
        let article_text = blocks
            .iter()
            .map(Block::plain)
            .collect::<Vec<_>>()
            .join("\n\n");
        let rendered_markdown = format!(
            "# {}\n\n{}",
            m.title,
            blocks
                .iter()
                .map(Block::markdown)
                .collect::<Vec<_>>()
                .join("\n\n")
        );
        let canonical = self.url_of(i, port);
        let domain = &self.domains[m.domain];
        let shell = self.js_score(domain, &m.path) < js_share;
        let mut r = Rng::derive(self.seed, 0xB011_0000 + i as u64);
        let related: Vec<(String, String, String)> = (0..r.range(5, 8))
            .map(|_| {
                let j = m.domain * ARTICLES_PER_DOMAIN + r.range(0, ARTICLES_PER_DOMAIN - 1);
                (
                    self.url_of(j, port),
                    self.metas[j].title.clone(),
                    text::sentence(&mut r, &TOPICS[self.metas[j].topic], false),
                )
            })
            .collect();
        let site = site_name(DOMAIN_NAMES[m.domain]);
        let date = self.date_str(i);
        let charset = charset_of(m.domain);
        let mut ctx = PageCtx {
            // Near-duplicates reuse text under a different site's boilerplate.
            template: templ_of(m.domain),
            site: &site,
            domain,
            charset,
            canonical: &canonical,
            title: &m.title,
            author: &m.author,
            date: &date,
            blocks: &blocks,
            related: &related,
            topic: &TOPICS[m.topic],
            rng: r,
        };
        let (html, kind) = if shell {
            let embed = hash_str(self.seed, &canonical) % 2 == 0;
            (templates::js_shell(&mut ctx, embed), PageKind::JsShell)
        } else {
            let kind = match m.dup_of {
                Some(j) => PageKind::NearDuplicate {
                    of: self.url_of(j, port),
                },
                None => PageKind::Article,
            };
            (templates::render(ctx), kind)
        };
        let body = encode(&html, charset);
        Some(SimPage {
            url: canonical,
            title: m.title.clone(),
            kind,
            status: 200,
            content_type: format!("text/html; charset={charset}"),
            location: None,
            html,
            body,
            article_text,
            rendered_markdown,
        })
    }

    /// Deterministic ranked hits for any query: title/topic word overlap,
    /// ties broken by a hash of (query, page).
    pub fn search(&self, query: &str, port: u16, n: usize) -> Vec<SearchHit> {
        let q = query.to_lowercase();
        let toks: Vec<&str> = q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .collect();
        let qh = hash_str(self.seed, &q);
        let mut scored: Vec<(u32, u64, usize)> = self
            .metas
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let s = toks
                    .iter()
                    .filter(|t| m.words.iter().any(|w| w == *t))
                    .count() as u32;
                (s, text::mix64(qh ^ i as u64), i)
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(n)
            .map(|(_, _, i)| {
                let first = self
                    .blocks(i)
                    .into_iter()
                    .find_map(|b| if let Block::P(t) = b { Some(t) } else { None })
                    .unwrap_or_default();
                let snippet: String = if first.chars().count() > 160 {
                    first.chars().take(157).collect::<String>() + "..."
                } else {
                    first
                };
                SearchHit {
                    url: self.url_of(i, port),
                    title: self.metas[i].title.clone(),
                    snippet,
                }
            })
            .collect()
    }

    /// Up to `n` article links of a domain, for its home page.
    pub fn domain_links(&self, domain: &str, port: u16, n: usize) -> Option<Vec<(String, String)>> {
        let d = self.domains.iter().position(|x| x == domain)?;
        Some(
            (0..ARTICLES_PER_DOMAIN.min(n))
                .map(|k| {
                    let i = d * ARTICLES_PER_DOMAIN + k;
                    (self.url_of(i, port), self.metas[i].title.clone())
                })
                .collect(),
        )
    }

    fn hostile(&self, url: &url::Url) -> Option<SimPage> {
        let port = url.port().unwrap_or(80);
        let path = url.path();
        let kind = if path == "/redirect-loop-b" {
            HostileKind::RedirectLoop
        } else {
            *HostileKind::ALL.iter().find(|k| k.path() == path)?
        };
        let base = format!("http://{HOSTILE_DOMAIN}:{port}");
        let mut r = Rng::derive(self.seed, 0x4057_11E0 + kind as u64);
        let topic = &TOPICS[r.range(0, TOPICS.len() - 1)];
        let paras: Vec<String> = (0..4)
            .map(|_| text::paragraph(&mut r, topic, false))
            .collect();
        let title;
        let mut article_text = paras.join("\n\n");
        let mut status = 200;
        let mut location = None;
        let (html, body) = match kind {
            HostileKind::Huge => {
                title = "An extremely long page".to_string();
                let body = self.huge.get_or_init(|| {
                    let mut s = format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><article><h1>{title}</h1>");
                    for p in &paras {
                        s.push_str(&format!("<p>{}</p>", text::esc(p)));
                    }
                    s.push_str("</article><table class=\"data-dump\">");
                    let mut i = 0u64;
                    while s.len() < 10 * 1024 * 1024 + 4096 {
                        s.push_str(&format!("<tr><td>row {i}</td><td>{:016x}</td><td>lorem ipsum dolor sit amet consectetur</td></tr>\n", text::mix64(i)));
                        i += 1;
                    }
                    s.push_str("</table></body></html>");
                    bytes::Bytes::from(s)
                });
                (String::from_utf8_lossy(body).into_owned(), body.clone())
            }
            HostileKind::Malformed => {
                title = "Malformed markup".to_string();
                let s = format!(
                    "<html><head><title>{title}</title><body><div class=\"content\"><p>{}<p><b><i>{}</b></i><div><span>< not a tag &amp stray & <<<p>{}</div></div></div></span><table><tr><td><p>{}</td></p></tr><!-- unclosed comment <script>var x = '</div>';</script><div <p class=>",
                    text::esc(&paras[0]), text::esc(&paras[1]), text::esc(&paras[2]), text::esc(&paras[3])
                );
                let b = bytes::Bytes::from(s.clone());
                (s, b)
            }
            HostileKind::InvalidUtf8 => {
                title = "Broken encoding".to_string();
                let mut v: Vec<u8> = format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><article><h1>{title}</h1>").into_bytes();
                let mut texts = Vec::new();
                for (k, p) in paras.iter().enumerate() {
                    v.extend_from_slice(b"<p>");
                    let mid = p.find(' ').unwrap_or(0);
                    v.extend_from_slice(&p.as_bytes()[..mid]);
                    let bad: &[u8] = [&b"\xff\xfe"[..], b"\x80", b"\xe2\x82", b"\xc3\x28"][k % 4];
                    v.extend_from_slice(bad);
                    v.extend_from_slice(&p.as_bytes()[mid..]);
                    v.extend_from_slice(b"</p>");
                    let mut t = p.as_bytes()[..mid].to_vec();
                    t.extend_from_slice(bad);
                    t.extend_from_slice(&p.as_bytes()[mid..]);
                    texts.push(String::from_utf8_lossy(&t).into_owned());
                }
                v.extend_from_slice(b"</article></body></html>");
                article_text = texts.join("\n\n");
                (
                    String::from_utf8_lossy(&v).into_owned(),
                    bytes::Bytes::from(v),
                )
            }
            HostileKind::RedirectLoop => {
                title = String::new();
                article_text.clear();
                status = 302;
                location = Some(if path == "/redirect-loop" {
                    format!("{base}/redirect-loop-b")
                } else {
                    format!("{base}/redirect-loop")
                });
                (String::new(), bytes::Bytes::new())
            }
            HostileKind::SlowDrip => {
                title = "Slow page".to_string();
                let s = format!("<!DOCTYPE html><html><head><title>{title}</title></head><body><article><p>{}</p></article></body></html>", text::esc(&paras[0]));
                article_text = paras[0].clone();
                let b = bytes::Bytes::from(s.clone());
                (s, b)
            }
            HostileKind::ErrorPage => {
                title = "Page not found".to_string();
                article_text.clear();
                let mut s = String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>404 – Page not found</title>");
                s.push_str(&templates::big_style(&mut r, 200));
                s.push_str("</head><body><nav><a href=\"/\">Home</a> <a href=\"/news\">News</a> <a href=\"/about\">About</a></nav><main><h1>Oops! We can't find that page.</h1><p>Error 404: the page you requested may have been moved, deleted, or never existed. Access denied or content unavailable in your region.</p><p>Try searching our site or return to the home page.</p></main><footer>© 2026 Hostile Media. All rights reserved.</footer></body></html>");
                let b = bytes::Bytes::from(s.clone());
                (s, b)
            }
            HostileKind::Empty => {
                title = String::new();
                article_text.clear();
                (String::new(), bytes::Bytes::new())
            }
        };
        let rendered_markdown = if article_text.is_empty() {
            String::new()
        } else {
            format!("# {title}\n\n{article_text}")
        };
        Some(SimPage {
            url: format!("{base}{path}"),
            title,
            kind: PageKind::Hostile(kind),
            status,
            content_type: "text/html; charset=utf-8".into(),
            location,
            html,
            body,
            article_text,
            rendered_markdown,
        })
    }
}

fn encode(html: &str, charset: &str) -> bytes::Bytes {
    if charset == "utf-8" {
        return bytes::Bytes::from(html.to_string());
    }
    let (b, _, _) = encoding_rs::WINDOWS_1252.encode(html);
    bytes::Bytes::from(b.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let a = Corpus::new(7);
        let b = Corpus::new(7);
        let urls = a.article_urls(8080, 60);
        assert_eq!(urls, b.article_urls(8080, 60));
        assert_eq!(urls.len(), 60);
        for u in &urls {
            let u = url::Url::parse(u).unwrap();
            let p = a.page(&u).unwrap();
            assert_eq!(p.html, b.page(&u).unwrap().html);
            assert!(
                p.body.len() > 50_000 && p.body.len() < 150_000,
                "{} is {} bytes",
                u,
                p.body.len()
            );
            assert_eq!(p.kind, PageKind::Article);
            // Every piece of the truth appears in the markup (HTML-escaped).
            for b in a.blocks(a.lookup(&u).unwrap()) {
                let pieces = match &b {
                    Block::P(t) | Block::H2(t) | Block::Quote(t) | Block::Code(t) => {
                        vec![t.clone()]
                    }
                    Block::List(items) => items.clone(),
                    Block::Summary(l, items) => [vec![l.clone()], items.clone()].concat(),
                    Block::Table(h, rows) => [h.clone(), rows.concat()].concat(),
                };
                for t in pieces {
                    assert!(p.html.contains(&text::esc(&t)), "missing {t:?} in {u}");
                }
            }
            let shell = a.page_in(&u, 1.0).unwrap();
            assert_eq!(shell.kind, PageKind::JsShell);
            assert!(!shell.html.contains(&format!(
                "<p>{}",
                text::esc(p.article_text.split("\n\n").next().unwrap())
            )));
        }
        assert_ne!(Corpus::new(8).article_urls(1, 5), a.article_urls(1, 5));
    }

    #[test]
    fn prose_is_varied_and_lengths_are_mixed() {
        let c = Corpus::new(3);
        let urls = c.article_urls(1, 300);
        let (mut share, mut briefs, mut normal, mut long) = (0.0, 0, 0, 0);
        let mut min_share = 1.0f64;
        for u in &urls {
            let p = c.page(&url::Url::parse(u).unwrap()).unwrap();
            let s = text::distinct_trigram_share(&p.article_text);
            share += s;
            min_share = min_share.min(s);
            match p.article_text.split_whitespace().count() {
                0..=300 => briefs += 1,
                400..=1500 => normal += 1,
                2000.. => long += 1,
                _ => {}
            }
        }
        let share = share / urls.len() as f64;
        eprintln!("trigram share {share:.3} (min {min_share:.3}); briefs {briefs}, normal {normal}, long {long}");
        assert!(share > 0.85, "mean distinct trigram share {share}");
        assert!(min_share > 0.7, "min distinct trigram share {min_share}");
        assert!(
            briefs >= 15 && long >= 15 && normal >= 150,
            "{briefs} {normal} {long}"
        );
    }

    #[test]
    fn latin1_and_dups_and_search() {
        let c = Corpus::new(1);
        let u = c
            .article_urls(1, 200)
            .into_iter()
            .find(|u| u.contains("marketpulse.sim.test"))
            .unwrap();
        let p = c.page(&url::Url::parse(&u).unwrap()).unwrap();
        assert!(p.content_type.contains("windows-1252"));
        let (dup, orig) = c.near_duplicate_urls(1).into_iter().next().unwrap();
        let d = c.page(&url::Url::parse(&dup).unwrap()).unwrap();
        let o = c.page(&url::Url::parse(&orig).unwrap()).unwrap();
        assert_eq!(d.kind, PageKind::NearDuplicate { of: orig.clone() });
        assert_ne!(d.article_text, o.article_text);
        assert_eq!(d.title, o.title);
        let h = c.search("solar panel efficiency", 1, 10);
        assert_eq!(h.len(), 10);
        assert_eq!(h, c.search("solar panel efficiency", 1, 10));
        assert!(h[0].title.to_lowercase().contains("solar"));
        assert_eq!(c.search("zzzz qqq", 1, 10).len(), 10);
    }

    #[test]
    fn hostile() {
        let c = Corpus::new(1);
        for (k, u) in c.hostile_urls(9) {
            let p = c.page(&url::Url::parse(&u).unwrap()).unwrap();
            assert_eq!(p.kind, PageKind::Hostile(k));
            if k == HostileKind::Huge {
                assert!(p.body.len() >= 10 * 1024 * 1024);
            }
            if k == HostileKind::InvalidUtf8 {
                assert!(std::str::from_utf8(&p.body).is_err());
            }
        }
    }
}
