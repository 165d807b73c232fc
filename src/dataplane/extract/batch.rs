//! Batch extraction: many saved pages in, one JSON line per page out, and a
//! summary of the run (`freshet extract --batch PATH`).
//!
//! Inputs ([`Source::detect`]): a folder (every `*.html`/`*.htm` below it,
//! in path order), a `.jsonl` file of `{"url": …, "html": …}` objects, or a
//! text file listing HTML files one per line. Pages are read and extracted
//! as a stream (a `.jsonl` of any size works in bounded memory), `jobs`
//! pages at a time, and written in input order, so anyone can compare
//! freshet with another extractor on their own pages: the `text` field is
//! what `freshet extract --format text` prints for the same page.
//!
//! A page that cannot be read or decoded gets a line with `error` set and
//! the run goes on; only an unreadable input list or a failed write stops it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{content, quality};

/// Pages extracted together (in parallel when `jobs > 1`) before their
/// lines are written.
const CHUNK: usize = 64;

/// Why a batch could not run.
#[derive(Debug, Error)]
pub enum BatchError {
    /// The input could not be read.
    #[error("reading {path}: {source}")]
    Input {
        /// The input.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a record failed (a closed pipe, a full disk).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// Where the pages come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Every `*.html` / `*.htm` file below a folder.
    Dir(PathBuf),
    /// A JSONL file of `{"url", "html"}` objects.
    Jsonl(PathBuf),
    /// A file listing HTML files, one path per line (relative paths are
    /// relative to the list's folder).
    List(PathBuf),
}

impl Source {
    /// Picks the kind from the path: a folder, a `.jsonl` file, else a list.
    pub fn detect(path: &Path) -> Source {
        if path.is_dir() {
            Source::Dir(path.to_path_buf())
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
        {
            Source::Jsonl(path.to_path_buf())
        } else {
            Source::List(path.to_path_buf())
        }
    }
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pages extracted at once (1 = one core, the figure benchmarks quote).
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { jobs: 1 }
    }
}

/// One output line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The page's URL (from the JSONL) or its `file://` path.
    pub url: String,
    /// Page title, may be empty.
    pub title: String,
    /// Main content as plain text (`--format text`).
    pub text: String,
    /// Main content as markdown.
    pub markdown: String,
    /// Quality score in [0, 1] (see `quality.rs`).
    pub quality: f64,
    /// Words in the main content.
    pub words: usize,
    /// Extractor that produced the content.
    pub method: String,
    /// Milliseconds spent extracting (not reading).
    pub ms: f64,
    /// Why the page could not be extracted, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Figures of a whole run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Pages written (errors included).
    pub pages: usize,
    /// Pages that could not be read or decoded.
    pub errors: usize,
    /// Pages below the no-content bar (`quality` < 0.2).
    pub no_content: usize,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Pages per wall-clock second.
    pub pages_per_sec: f64,
    /// Median extraction milliseconds per page.
    pub p50_ms: f64,
    /// 99th percentile extraction milliseconds per page.
    pub p99_ms: f64,
    /// Mean quality score.
    pub mean_quality: f64,
}

/// A page still to extract: its URL and its HTML (or why it has none).
struct Input {
    url: String,
    html: Result<String, String>,
}

fn file_input(path: &Path) -> Input {
    let url =
        url::Url::from_file_path(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
            .map(String::from)
            .unwrap_or_else(|_| format!("file://{}", path.display()));
    let html = std::fs::read(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))
        .and_then(|bytes| super::fetch::decode(&bytes, None, &url).map_err(|e| e.to_string()));
    Input { url, html }
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BatchError> {
    let io = |source| BatchError::Input {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        entries.push(entry.map_err(io)?.path());
    }
    entries.sort();
    for path in entries {
        if path.is_dir() {
            html_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct JsonlPage {
    url: String,
    html: String,
}

/// The inputs of `source` as a stream.
fn inputs(source: &Source) -> Result<Box<dyn Iterator<Item = Input>>, BatchError> {
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|source| BatchError::Input {
                path: path.to_path_buf(),
                source,
            })
    };
    Ok(match source {
        Source::Dir(dir) => {
            let mut files = Vec::new();
            html_files(dir, &mut files)?;
            Box::new(files.into_iter().map(|p| file_input(&p)))
        }
        Source::List(list) => {
            let base = list.parent().map(Path::to_path_buf).unwrap_or_default();
            let reader = open(list)?;
            let mut files = Vec::new();
            for line in reader.lines() {
                let line = line.map_err(|source| BatchError::Input {
                    path: list.clone(),
                    source,
                })?;
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    files.push(base.join(line));
                }
            }
            Box::new(files.into_iter().map(|p| file_input(&p)))
        }
        Source::Jsonl(path) => {
            let reader = open(path)?;
            let name = path.display().to_string();
            Box::new(reader.lines().enumerate().filter_map(move |(i, line)| {
                let line = match line {
                    Ok(l) if l.trim().is_empty() => return None,
                    Ok(l) => l,
                    Err(e) => {
                        return Some(Input {
                            url: format!("{name}:{}", i + 1),
                            html: Err(format!("reading line {}: {e}", i + 1)),
                        })
                    }
                };
                Some(match serde_json::from_str::<JsonlPage>(&line) {
                    Ok(p) => Input {
                        url: p.url,
                        html: Ok(p.html),
                    },
                    Err(e) => Input {
                        url: format!("{name}:{}", i + 1),
                        html: Err(format!(
                            "line {} is not {{\"url\": …, \"html\": …}}: {e}",
                            i + 1
                        )),
                    },
                })
            }))
        }
    })
}

/// Extracts one page into its output line.
pub fn extract_record(url: &str, html: &str) -> Record {
    let started = Instant::now();
    let hint = url
        .starts_with("http://")
        .then_some(url)
        .or_else(|| url.starts_with("https://").then_some(url));
    let out = content::extract(html, hint);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    Record {
        url: url.to_string(),
        text: quality::markdown_text(&out.markdown).0.trim().to_string(),
        title: out.title,
        markdown: out.markdown,
        quality: out.quality.score,
        words: out.quality.words,
        method: out.method.as_str().to_string(),
        ms,
        error: None,
    }
}

fn record(input: Input) -> Record {
    match input.html {
        Ok(html) => extract_record(&input.url, &html),
        Err(error) => Record {
            url: input.url,
            title: String::new(),
            text: String::new(),
            markdown: String::new(),
            quality: 0.0,
            words: 0,
            method: content::Method::None.as_str().to_string(),
            ms: 0.0,
            error: Some(error),
        },
    }
}

/// Extracts every page of `source`, writing one JSON line per page to
/// `out`, and returns the run's figures.
pub fn run<W: Write>(
    source: &Source,
    out: &mut W,
    options: &Options,
) -> Result<Summary, BatchError> {
    use rayon::prelude::*;
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .ok();
    let mut ms = Vec::new();
    let (mut errors, mut no_content, mut quality_sum) = (0usize, 0usize, 0.0f64);
    let mut stream = inputs(source)?;
    loop {
        let chunk: Vec<Input> = stream.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let records: Vec<Record> = match (&pool, options.jobs > 1) {
            (Some(pool), true) => pool.install(|| chunk.into_par_iter().map(record).collect()),
            _ => chunk.into_iter().map(record).collect(),
        };
        for r in records {
            if r.error.is_some() {
                errors += 1;
            } else {
                ms.push(r.ms);
                quality_sum += r.quality;
                if r.quality < super::NO_CONTENT_SCORE {
                    no_content += 1;
                }
            }
            serde_json::to_writer(&mut *out, &r)
                .map_err(|e| BatchError::Output(std::io::Error::other(e)))?;
            out.write_all(b"\n").map_err(BatchError::Output)?;
        }
    }
    out.flush().map_err(BatchError::Output)?;
    let seconds = started.elapsed().as_secs_f64();
    let pages = ms.len() + errors;
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() - 1) as f64 * p).round() as usize]
        }
    };
    Ok(Summary {
        pages,
        errors,
        no_content,
        seconds,
        pages_per_sec: if seconds > 0.0 {
            pages as f64 / seconds
        } else {
            0.0
        },
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        mean_quality: quality_sum / ms.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> String {
        let prose = crate::dataplane::extract::quality::tests::prose(3);
        let body: String = prose.split("\n\n").map(|p| format!("<p>{p}</p>")).collect();
        format!("<html><head><title>T</title></head><body><article>{body}</article></body></html>")
    }

    #[test]
    fn jsonl_in_jsonl_out_with_errors_kept_in_order() {
        let dir = std::env::temp_dir().join(format!("freshet-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("pages.jsonl");
        let good = serde_json::json!({"url": "https://a.example/x", "html": article()});
        std::fs::write(&input, format!("{good}\nnot json\n\n{good}\n")).unwrap();
        let mut out = Vec::new();
        let summary = run(&Source::detect(&input), &mut out, &Options { jobs: 2 }).unwrap();
        let lines: Vec<Record> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(summary.pages, 3);
        assert_eq!(summary.errors, 1);
        assert!(
            lines[0].text.contains("The committee said"),
            "{:?}",
            lines[0]
        );
        assert!(lines[0].quality > 0.7);
        assert!(lines[1].error.as_deref().unwrap().contains("line 2"));
        assert_eq!(lines[2].url, "https://a.example/x");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn folder_and_list_read_html_files() {
        let dir = std::env::temp_dir().join(format!("freshet-batchdir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.html"), article()).unwrap();
        std::fs::write(dir.join("b.htm"), "<p>short</p>").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut out = Vec::new();
        let s = run(&Source::Dir(dir.clone()), &mut out, &Options::default()).unwrap();
        assert_eq!(s.pages, 2);
        assert_eq!(s.no_content, 1);
        let list = dir.join("list.txt");
        std::fs::write(&list, "sub/a.html\nmissing.html\n").unwrap();
        let mut out = Vec::new();
        let s = run(&Source::detect(&list), &mut out, &Options::default()).unwrap();
        assert_eq!((s.pages, s.errors), (2, 1));
        assert!(String::from_utf8(out).unwrap().contains("missing.html"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
