//! `freshet bench soak`: the demo workload (simulated web, pipeline,
//! controller on) for a long time, sampling the process every few seconds:
//! resident memory, open file descriptors, threads, disk use of the data
//! dir (index, dead letters, audit log, everything) and goodput. Prints a
//! table (one row a minute, or ten rows for short runs), writes every
//! sample to `samples.csv` and a chart to `soak.svg`, and judges the goal:
//! after warm-up (the first fifth of the run), RSS, fds and threads grow by
//! at most 5 % (the mean of the last tenth against the mean of the first
//! tenth after warm-up), and the index grows with what was indexed (bytes
//! per indexed chunk do not climb).
//!
//! Linux only: the figures come from `/proc/self`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::demo::{DemoOptions, DemoSummary};
use crate::settings::Settings;

/// Growth allowed after warm-up, as a share.
pub const MAX_GROWTH: f64 = 0.05;

/// What a soak run is asked to do.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the workload runs.
    pub duration: Duration,
    /// Time between samples.
    pub every: Duration,
    /// Tasks per second of the demo stream.
    pub rate: f64,
    /// Seed of the simulated web and the stream.
    pub seed: u64,
    /// The run's data dir (emptied first).
    pub data_dir: PathBuf,
    /// Where `samples.csv` and `soak.svg` go.
    pub out: PathBuf,
}

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// The index directory, MiB.
    pub index_mib: f64,
    /// `dlq.jsonl`, KiB.
    pub dlq_kib: f64,
    /// The audit log and its head, KiB.
    pub audit_kib: f64,
    /// Everything in the data dir, MiB.
    pub data_mib: f64,
    /// Chunks indexed so far.
    pub chunks: u64,
    /// Chunks indexed per second since the previous sample.
    pub goodput: f64,
}

/// The process's own figures: (RSS KiB, threads, open fds).
fn process_figures() -> Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (the soak bench needs Linux)")?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rss = field("VmRSS:").context("no VmRSS in /proc/self/status")?;
    let threads = field("Threads:").context("no Threads in /proc/self/status")?;
    let fds = std::fs::read_dir("/proc/self/fd")
        .context("reading /proc/self/fd")?
        .count() as u64;
    Ok((rss, threads, fds))
}

/// Bytes under `path` (a file or a directory tree); 0 when absent.
fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| bytes_under(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn sample(data_dir: &Path, t_s: f64, chunks: u64, prev: Option<&Sample>) -> Result<Sample> {
    let (rss, threads, fds) = process_figures()?;
    const MIB: f64 = 1024.0 * 1024.0;
    let goodput = match prev {
        Some(p) if t_s > p.t_s => chunks.saturating_sub(p.chunks) as f64 / (t_s - p.t_s),
        _ => 0.0,
    };
    Ok(Sample {
        t_s,
        rss_mib: rss as f64 / 1024.0,
        fds,
        threads,
        index_mib: bytes_under(&data_dir.join("index")) as f64 / MIB,
        dlq_kib: bytes_under(&data_dir.join("dlq.jsonl")) as f64 / 1024.0,
        audit_kib: (bytes_under(&data_dir.join("audit.jsonl"))
            + bytes_under(&data_dir.join("audit.head"))) as f64
            / 1024.0,
        data_mib: bytes_under(data_dir) as f64 / MIB,
        chunks,
        goodput,
    })
}

/// Growth of a figure over the run after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Growth {
    /// Mean over the first tenth after warm-up.
    pub early: f64,
    /// Mean over the last tenth.
    pub late: f64,
    /// `late / early - 1`.
    pub share: f64,
}

fn growth(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Growth {
    let n = samples.len();
    let warm = n / 5;
    let span = ((n - warm) / 10).max(1);
    let mean = |s: &[Sample]| s.iter().map(&f).sum::<f64>() / s.len().max(1) as f64;
    let early = mean(&samples[warm..(warm + span).min(n)]);
    let late = mean(&samples[n.saturating_sub(span)..]);
    Growth {
        early,
        late,
        share: if early > 0.0 { late / early - 1.0 } else { 0.0 },
    }
}

/// What a soak run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// RSS growth after warm-up.
    pub rss: Growth,
    /// File descriptor growth.
    pub fds: Growth,
    /// Thread growth.
    pub threads: Growth,
    /// Index bytes per indexed chunk: growth after warm-up.
    pub index_per_chunk: Growth,
    /// The demo's own summary.
    pub demo: DemoSummary,
}

impl SoakReport {
    /// The figures that broke the goal (empty: it held).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, g) in [
            ("RSS", self.rss),
            ("open fds", self.fds),
            ("threads", self.threads),
            ("index bytes per chunk", self.index_per_chunk),
        ] {
            if g.share > MAX_GROWTH {
                out.push(format!(
                    "{name} grew {:.1} % after warm-up ({:.1} -> {:.1})",
                    g.share * 100.0,
                    g.early,
                    g.late
                ));
            }
        }
        out
    }
}

/// Runs the demo workload for `opts.duration`, sampling every `opts.every`.
pub async fn run(base: &Settings, opts: &SoakOptions) -> Result<SoakReport> {
    if opts.every.is_zero() || opts.duration < opts.every * 10 {
        bail!(
            "--duration must be at least ten --every intervals (got {:?} and {:?})",
            opts.duration,
            opts.every
        );
    }
    if opts.data_dir.exists() {
        std::fs::remove_dir_all(&opts.data_dir)
            .with_context(|| format!("emptying {}", opts.data_dir.display()))?;
    }
    let chunks = Arc::new(AtomicU64::new(0));
    let demo = DemoOptions {
        duration: opts.duration,
        scenario: None,
        data_dir: opts.data_dir.clone(),
        rate: opts.rate,
        seed: opts.seed,
        sim_embeddings: true,
        progress: false,
        control_interval: Duration::from_secs(2),
        chunks_seen: Some(chunks.clone()),
    };
    let started = Instant::now();
    let workload = tokio::spawn({
        let base = base.clone();
        async move { crate::cli::demo::run(&base, demo).await }
    });
    let mut samples: Vec<Sample> = Vec::new();
    let mut ticker = tokio::time::interval(opts.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !workload.is_finished() && started.elapsed() < opts.duration {
        ticker.tick().await;
        let s = sample(
            &opts.data_dir,
            started.elapsed().as_secs_f64(),
            chunks.load(Ordering::Relaxed),
            samples.last(),
        )?;
        eprintln!(
            "soak {:>6.0} s: rss {:.1} MiB, fds {}, threads {}, index {:.1} MiB, goodput {:.1}/s",
            s.t_s, s.rss_mib, s.fds, s.threads, s.index_mib, s.goodput
        );
        samples.push(s);
    }
    let demo = workload.await.context("the soak workload panicked")??;
    if samples.len() < 10 {
        bail!("only {} samples: the workload ended early", samples.len());
    }
    let per_chunk = |s: &Sample| {
        if s.chunks == 0 {
            0.0
        } else {
            s.index_mib * 1024.0 * 1024.0 / s.chunks as f64
        }
    };
    let report = SoakReport {
        rss: growth(&samples, |s| s.rss_mib),
        fds: growth(&samples, |s| s.fds as f64),
        threads: growth(&samples, |s| s.threads as f64),
        index_per_chunk: growth(&samples, per_chunk),
        samples,
        demo,
    };
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join("samples.csv"), csv(&report.samples))?;
    chart(&report.samples, &opts.out.join("soak.svg"))
        .map_err(|e| anyhow::anyhow!("drawing soak.svg: {e}"))?;
    Ok(report)
}

impl Sample {
    /// The figures as text, in the column order of [`COLUMNS`].
    fn cells(&self) -> [String; 10] {
        [
            format!("{:.0}", self.t_s),
            format!("{:.1}", self.rss_mib),
            self.fds.to_string(),
            self.threads.to_string(),
            format!("{:.2}", self.index_mib),
            format!("{:.1}", self.dlq_kib),
            format!("{:.1}", self.audit_kib),
            format!("{:.2}", self.data_mib),
            self.chunks.to_string(),
            format!("{:.1}", self.goodput),
        ]
    }
}

/// Column names of `samples.csv` (and, with units, of the table).
const COLUMNS: [&str; 10] = [
    "t_s",
    "rss_mib",
    "fds",
    "threads",
    "index_mib",
    "dlq_kib",
    "audit_kib",
    "data_mib",
    "chunks",
    "goodput",
];

fn csv(samples: &[Sample]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for s in samples {
        out.push_str(&s.cells().join(","));
        out.push('\n');
    }
    out
}

/// The table: about ten rows spread over the run (one a minute for runs of
/// ten minutes and more), then the growth figures and the verdict.
pub fn table(r: &SoakReport) -> String {
    let n = r.samples.len();
    let last_t = r.samples.last().map_or(0.0, |s| s.t_s);
    let step_s = if last_t >= 600.0 {
        60.0
    } else {
        (last_t / 10.0).max(1.0)
    };
    let mut out = String::from(
        "| t (s) | RSS (MiB) | fds | threads | index (MiB) | DLQ (KiB) | audit (KiB) | data dir (MiB) | chunks | goodput (chunks/s) |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut next = 0.0;
    for (i, s) in r.samples.iter().enumerate() {
        if s.t_s + 1e-9 >= next || i + 1 == n {
            out.push_str(&format!("| {} |\n", s.cells().join(" | ")));
            next = s.t_s + step_s;
        }
    }
    out.push_str(&format!(
        "\nAfter warm-up (first fifth of the run), first tenth -> last tenth: RSS {:.1} -> {:.1} MiB ({:+.1} %), fds {:.1} -> {:.1} ({:+.1} %), threads {:.1} -> {:.1} ({:+.1} %), index bytes per chunk {:.0} -> {:.0} ({:+.1} %). Goal: at most +{:.0} % each.\n",
        r.rss.early, r.rss.late, r.rss.share * 100.0,
        r.fds.early, r.fds.late, r.fds.share * 100.0,
        r.threads.early, r.threads.late, r.threads.share * 100.0,
        r.index_per_chunk.early, r.index_per_chunk.late, r.index_per_chunk.share * 100.0,
        MAX_GROWTH * 100.0,
    ));
    out.push_str(&format!(
        "Workload: {} tasks, {} chunks ({:.1}/s), {} dead letters, {} controller changes, drained: {}.\n",
        r.demo.tasks,
        r.demo.chunks,
        r.demo.goodput,
        r.demo.dead_letters,
        r.demo.changes.len(),
        r.demo.drained
    ));
    let failures = r.failures();
    if failures.is_empty() {
        out.push_str("Verdict: flat after warm-up.\n");
    } else {
        out.push_str(&format!("Verdict: NOT flat: {}.\n", failures.join("; ")));
    }
    out
}

type Panel = (&'static str, fn(&Sample) -> f64);

const PANELS: [Panel; 5] = [
    ("RSS (MiB)", |s| s.rss_mib),
    ("open fds", |s| s.fds as f64),
    ("threads", |s| s.threads as f64),
    ("data dir (MiB)", |s| s.data_mib),
    ("goodput (chunks/s)", |s| s.goodput),
];

fn chart(samples: &[Sample], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        "freshet bench soak: resources and goodput over the run",
        (10, 10),
        ("sans-serif", 20).into_font(),
    ))?;
    let end = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let panels = body.split_evenly((PANELS.len(), 1));
    for (k, (area, (label, metric))) in panels.iter().zip(PANELS.iter()).enumerate() {
        let max = samples.iter().map(metric).fold(0.0f64, f64::max).max(1.0) * 1.1;
        let mut c = ChartBuilder::on(area)
            .margin(6)
            .x_label_area_size(if k + 1 == PANELS.len() { 30 } else { 18 })
            .y_label_area_size(55)
            .caption(*label, ("sans-serif", 14))
            .build_cartesian_2d(0.0..end, 0.0..max)?;
        c.configure_mesh()
            .light_line_style(WHITE)
            .x_desc(if k + 1 == PANELS.len() { "seconds" } else { "" })
            .label_style(("sans-serif", 11))
            .draw()?;
        c.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, metric(s))),
            RGBColor(31, 119, 180).stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: impl Fn(usize) -> f64) -> Vec<Sample> {
        (0..100)
            .map(|i| Sample {
                t_s: i as f64,
                rss_mib: rss(i),
                fds: 40,
                threads: 12,
                index_mib: i as f64,
                chunks: (i as u64 + 1) * 100,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn growth_ignores_warm_up_and_catches_a_leak() {
        // Grows fast while warming up, then flat.
        let flat = samples(|i| if i < 20 { 50.0 + i as f64 * 5.0 } else { 150.0 });
        let g = growth(&flat, |s| s.rss_mib);
        assert!(g.share.abs() < 1e-9, "{g:?}");
        // A leak of 1 MiB per sample after warm-up.
        let leak = samples(|i| 150.0 + i as f64);
        let g = growth(&leak, |s| s.rss_mib);
        assert!(g.share > MAX_GROWTH, "{g:?}");
    }

    #[test]
    fn the_process_figures_are_read() {
        let (rss, threads, fds) = process_figures().unwrap();
        assert!(rss > 0 && threads > 0 && fds > 2);
        let dir = std::env::temp_dir().join(format!("freshet-soak-bytes-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), vec![0u8; 3000]).unwrap();
        std::fs::write(dir.join("g"), vec![0u8; 1000]).unwrap();
        assert_eq!(bytes_under(&dir), 4000);
        assert_eq!(bytes_under(&dir.join("missing")), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
