//! SVG charts of a scenario's runs (plotters): goodput and the main knobs
//! over scenario time, one line per policy, phase boundaries marked.
//!
//! Only the SVG backend is built: it writes text as SVG `<text>`, so the
//! charts need no font files on the machine that makes them (a bitmap
//! backend would need a font feature and a font to rasterize labels).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::ScenarioResult;
use super::run::{PolicyName, Window};

fn colour(p: PolicyName) -> RGBColor {
    match p {
        PolicyName::Static => RGBColor(140, 140, 140),
        PolicyName::Aimd => RGBColor(31, 119, 180),
        PolicyName::Gradient2 => RGBColor(255, 127, 14),
        PolicyName::Vegas => RGBColor(148, 103, 189),
        PolicyName::Arc => RGBColor(140, 86, 75),
        PolicyName::EnvoyGradient => RGBColor(227, 119, 194),
        PolicyName::Ds2 => RGBColor(23, 190, 207),
        PolicyName::Heuristic => RGBColor(214, 39, 40),
        PolicyName::LlmScripted => RGBColor(44, 160, 44),
        PolicyName::Oracle => RGBColor(20, 20, 20),
    }
}

type Metric = (&'static str, fn(&Window) -> f64);

const PANELS: [Metric; 5] = [
    ("goodput (chunks/s)", |w| w.goodput),
    ("extract.slots", |w| w.knobs.extract_slots as f64),
    ("extract.timeout_ms (s)", |w| {
        w.knobs.extract_timeout_ms as f64 / 1e3
    }),
    ("embed.batch_size", |w| w.knobs.embed_batch as f64),
    ("domains rendered remotely", |w| {
        w.knobs.remote_domains as f64
    }),
];

/// Writes `DIR/<scenario>.svg`.
pub fn write(s: &ScenarioResult, dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.svg", s.name));
    draw(s, &path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    Ok(path)
}

fn draw(s: &ScenarioResult, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 1150)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        format!("{}: goodput and knobs over scenario time", s.name),
        (10, 10),
        ("sans-serif", 20).into_font(),
    ))?;
    let end: f64 = s.phases.iter().map(|p| p.duration_s).sum::<f64>().max(1.0);
    let mut bounds = Vec::new();
    let mut t = 0.0;
    for p in &s.phases {
        bounds.push((t, p.name.clone()));
        t += p.duration_s;
    }
    let panels = body.split_evenly((PANELS.len(), 1));
    for (k, (area, (label, metric))) in panels.iter().zip(PANELS.iter()).enumerate() {
        let max = s
            .runs
            .iter()
            .flat_map(|r| r.windows.iter().map(metric))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(6)
            .x_label_area_size(if k + 1 == PANELS.len() { 30 } else { 18 })
            .y_label_area_size(55)
            .caption(*label, ("sans-serif", 14))
            .build_cartesian_2d(0.0..end, 0.0..max)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc(if k + 1 == PANELS.len() {
                "scenario seconds"
            } else {
                ""
            })
            .label_style(("sans-serif", 11))
            .draw()?;
        for (x, name) in &bounds {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(*x, 0.0), (*x, max)],
                BLACK.mix(0.35).stroke_width(1),
            )))?;
            if k == 0 {
                chart.draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (*x + end * 0.005, max * 0.97),
                    ("sans-serif", 11).into_font(),
                )))?;
            }
        }
        for r in &s.runs {
            let c = colour(r.policy);
            let series = chart.draw_series(LineSeries::new(
                r.windows.iter().map(|w| (w.t_s, metric(w))),
                c.stroke_width(if r.policy == PolicyName::Heuristic {
                    2
                } else {
                    1
                }),
            ))?;
            if k == 0 {
                series
                    .label(r.policy.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
            }
        }
        if k == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 11))
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
