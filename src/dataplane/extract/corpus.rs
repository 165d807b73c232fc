//! Real-page corpora with ground truth, and the measures that score an
//! extractor against them.
//!
//! Two on-disk formats are read, as their projects publish them (the script
//! `scripts/fetch-corpora` lays them out from a checkout):
//!
//! - **readability** (mozilla/readability `test/test-pages/`): one folder per
//!   page with `source.html` and `expected.html` (the article as Readability
//!   keeps it); the ground truth is the text of `expected.html`, scored with
//!   token F1.
//! - **trafilatura** (adbar/trafilatura `tests/`): `evaldata.json` maps each
//!   URL to a file under `cache/` or `eval/` with `with` segments (text the
//!   main content must contain) and `without` segments (boilerplate it must
//!   not contain); scored as trafilatura's own evaluation does (a `with`
//!   found is a true positive, a `without` found a false positive).
//!
//! A page belongs to the validation split by a stable hash of its id
//! ([`is_validation`]), so rules are developed on the rest and checked on
//! pages they were not looked at on.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::quality;

/// Why a corpus could not be read.
#[derive(Debug, Error)]
pub enum CorpusError {
    /// A file or folder could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `evaldata.json` is not the trafilatura annotation format.
    #[error("{path} is not trafilatura annotation JSON: {message}")]
    Annotations {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The folder holds neither corpus format.
    #[error(
        "{0} holds no corpus: expected evaldata.json (trafilatura) or folders with \
         source.html and expected.html (readability), or folders of those; \
         lay them out with scripts/fetch-corpora"
    )]
    Unknown(PathBuf),
}

/// What a page's extraction is scored against.
#[derive(Debug, Clone)]
pub enum Truth {
    /// The full main text (token F1).
    Text(String),
    /// Segments that must and must not be in the main text.
    Segments {
        /// Must be present.
        with: Vec<String>,
        /// Must be absent.
        without: Vec<String>,
    },
}

/// One page with its ground truth.
#[derive(Debug, Clone)]
pub struct RealPage {
    /// Corpus name (`readability`, `trafilatura`).
    pub corpus: &'static str,
    /// Stable id within the corpus (folder or file name).
    pub id: String,
    /// The page's original URL, when the corpus records it.
    pub url: Option<String>,
    /// The page, decoded.
    pub html: String,
    /// What the extraction is scored against.
    pub truth: Truth,
}

impl RealPage {
    /// Whether the page is in the validation (held-out) split.
    pub fn is_validation(&self) -> bool {
        is_validation(&self.id)
    }

    /// Scores `text` (the `--format text` output) against the truth.
    pub fn score(&self, text: &str) -> Prf {
        match &self.truth {
            Truth::Text(truth) => token_prf(text, truth),
            Truth::Segments { with, without } => segment_prf(text, with, without),
        }
    }
}

/// Precision, recall and F1 of one page or a mean over pages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prf {
    /// Share of the output that is main content.
    pub precision: f64,
    /// Share of the main content that is in the output.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

impl Prf {
    fn from_counts(hit: f64, predicted: f64, truth: f64) -> Prf {
        if predicted == 0.0 && truth == 0.0 {
            return Prf {
                precision: 1.0,
                recall: 1.0,
                f1: 1.0,
            };
        }
        let precision = if predicted > 0.0 {
            hit / predicted
        } else {
            0.0
        };
        let recall = if truth > 0.0 { hit / truth } else { 0.0 };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Prf {
            precision,
            recall,
            f1,
        }
    }

    /// Mean of each figure over `items`.
    pub fn mean<'a>(items: impl IntoIterator<Item = &'a Prf>) -> Prf {
        let mut sum = Prf::default();
        let mut n = 0usize;
        for p in items {
            sum.precision += p.precision;
            sum.recall += p.recall;
            sum.f1 += p.f1;
            n += 1;
        }
        let n = n.max(1) as f64;
        Prf {
            precision: sum.precision / n,
            recall: sum.recall / n,
            f1: sum.f1 / n,
        }
    }
}

/// Token precision/recall/F1 of `predicted` against `truth` (bags of
/// lower-cased words), the usual measure of main-content extraction.
pub fn token_prf(predicted: &str, truth: &str) -> Prf {
    use std::collections::HashMap;
    let mut want: HashMap<String, u32> = HashMap::new();
    let mut truth_n = 0usize;
    for t in quality::tokens(truth) {
        *want.entry(t).or_default() += 1;
        truth_n += 1;
    }
    let (mut pred_n, mut hit) = (0usize, 0usize);
    for t in quality::tokens(predicted) {
        pred_n += 1;
        if let Some(n) = want.get_mut(&t) {
            if *n > 0 {
                *n -= 1;
                hit += 1;
            }
        }
    }
    Prf::from_counts(hit as f64, pred_n as f64, truth_n as f64)
}

/// Whitespace-normalised form used to look segments up.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Segment precision/recall/F1 (trafilatura's evaluation): a `with` segment
/// found is a true positive and one missing a false negative; a `without`
/// segment found is a false positive.
pub fn segment_prf(predicted: &str, with: &[String], without: &[String]) -> Prf {
    let text = normalise(predicted);
    let found = |s: &String| text.contains(&normalise(s));
    let tp = with.iter().filter(|s| found(s)).count() as f64;
    let fp = without.iter().filter(|s| found(s)).count() as f64;
    Prf::from_counts(tp, tp + fp, with.len() as f64)
}

/// Spearman rank correlation of two equally long samples (ties get their
/// mean rank); 0 when either is constant or there are fewer than 3 points.
pub fn spearman(xs: &[f64], ys: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let mean = (i + j) as f64 / 2.0;
            for k in &idx[i..=j] {
                r[*k] = mean;
            }
            i = j + 1;
        }
        r
    }
    let n = xs.len().min(ys.len());
    if n < 3 {
        return 0.0;
    }
    let (rx, ry) = (ranks(&xs[..n]), ranks(&ys[..n]));
    let mean = (n as f64 - 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (rx[i] - mean, ry[i] - mean);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Whether a page id is in the validation split (about 30 % of pages, by a
/// stable FNV-1a hash of the id, so the split never changes between runs).
pub fn is_validation(id: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 10 < 3
}

/// Plain text of an HTML fragment with block boundaries kept (used for
/// `expected.html`).
pub fn html_text(html: &str) -> String {
    dom_query::Document::from(html).formatted_text().to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, CorpusError> {
    std::fs::read(path).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn decode(bytes: &[u8], what: &Path) -> String {
    super::fetch::decode(bytes, None, &what.display().to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let io = |source| CorpusError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads every corpus under `dir`: `dir` itself in one of the two formats,
/// or folders of them (`dir/readability`, `dir/trafilatura`).
pub fn load(dir: &Path) -> Result<Vec<RealPage>, CorpusError> {
    if let Some(pages) = load_one(dir)? {
        return Ok(pages);
    }
    let mut all = Vec::new();
    for sub in subdirs(dir)? {
        if let Some(pages) = load_one(&sub)? {
            all.extend(pages);
        }
    }
    if all.is_empty() {
        return Err(CorpusError::Unknown(dir.to_path_buf()));
    }
    Ok(all)
}

fn load_one(dir: &Path) -> Result<Option<Vec<RealPage>>, CorpusError> {
    if dir.join("evaldata.json").is_file() {
        return load_trafilatura(dir).map(Some);
    }
    let pages = subdirs(dir)?
        .into_iter()
        .filter(|d| d.join("source.html").is_file() && d.join("expected.html").is_file())
        .collect::<Vec<_>>();
    if pages.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(pages.len());
    for page in pages {
        let id = page
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let source = page.join("source.html");
        let expected = page.join("expected.html");
        out.push(RealPage {
            corpus: "readability",
            id,
            url: None,
            html: decode(&read(&source)?, &source),
            truth: Truth::Text(html_text(&decode(&read(&expected)?, &expected))),
        });
    }
    Ok(Some(out))
}

fn load_trafilatura(dir: &Path) -> Result<Vec<RealPage>, CorpusError> {
    use unicode_normalization::UnicodeNormalization;
    let path = dir.join("evaldata.json");
    let bad = |message: String| CorpusError::Annotations {
        path: path.clone(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_slice(&read(&path)?).map_err(|e| bad(e.to_string()))?;
    let map = json
        .as_object()
        .ok_or_else(|| bad("the top level is not an object".into()))?;
    // File names in the annotations and on disk may differ in Unicode
    // normalisation (NFC vs NFD); index the files by their NFC name.
    let mut files = std::collections::HashMap::new();
    for sub in ["cache", "eval"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            continue;
        }
        let io = |source| CorpusError::Io {
            path: d.clone(),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let p = entry.map_err(io)?.path();
            if let Some(name) = p.file_name() {
                files.insert(name.to_string_lossy().nfc().collect::<String>(), p);
            }
        }
    }
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (url, entry) in map {
        let Some(file) = entry.get("file").and_then(|f| f.as_str()) else {
            return Err(bad(format!("{url} has no \"file\"")));
        };
        let Some(p) = files.get(&file.nfc().collect::<String>()) else {
            // Annotated but not shipped (the repository keeps some pages out).
            continue;
        };
        let with = strings(entry.get("with"));
        if with.is_empty() {
            continue;
        }
        out.push(RealPage {
            corpus: "trafilatura",
            id: file.to_string(),
            url: Some(url.clone()),
            html: decode(&read(p)?, p),
            truth: Truth::Segments {
                with,
                without: strings(entry.get("without")),
            },
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_prf_counts_multiplicity() {
        let p = token_prf("the cat the cat", "the cat sat");
        assert!((p.precision - 0.5).abs() < 1e-9, "{p:?}");
        assert!((p.recall - 2.0 / 3.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn segments_score_like_trafilatura() {
        let with = vec!["kept  text".to_string(), "missing".to_string()];
        let without = vec!["Impressum".to_string()];
        let p = segment_prf("some kept text and Impressum", &with, &without);
        assert_eq!(p.precision, 0.5);
        assert_eq!(p.recall, 0.5);
    }

    #[test]
    fn spearman_of_monotone_and_reversed() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[10.0, 20.0, 25.0, 90.0]) - 1.0).abs() < 1e-9);
        assert!((spearman(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-9);
        assert_eq!(spearman(&x, &[1.0, 1.0, 1.0, 1.0]), 0.0);
    }

    #[test]
    fn html_text_separates_blocks() {
        let t = html_text("<div><p>one</p><p>two</p><ul><li>a</li><li>b</li></ul></div>");
        assert_eq!(
            quality::tokens(&t).collect::<Vec<_>>(),
            ["one", "two", "a", "b"]
        );
    }

    #[test]
    fn unknown_folder_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("freshet-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = load(&dir).unwrap_err();
        assert!(err.to_string().contains("scripts/fetch-corpora"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
