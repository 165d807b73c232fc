//! The quick scenario-suite options the bench tests share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use freshet::bench::oracle::OracleBudget;
use freshet::bench::run::{PolicyName, RunConfig};
use freshet::bench::{SuiteOptions, BUILTIN_GUARDRAILS};
use freshet::control::guard::Guard;
use freshet::settings::Settings;
use freshet::sim::Scenario;

/// A suite of the shipped scenarios `names` × `policies` at 20× time with
/// a one-value oracle (seed 7), working in `work_dir`.
pub fn quick_suite(names: &[&str], policies: Vec<PolicyName>, work_dir: PathBuf) -> SuiteOptions {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenarios = names
        .iter()
        .map(|name| {
            let file = root.join("scenarios").join(format!("{name}.toml"));
            (
                file.display().to_string(),
                Scenario::load(&file).expect("shipped scenario"),
            )
        })
        .collect();
    SuiteOptions {
        scenarios,
        policies,
        run: RunConfig {
            base: Settings::from_toml("", "<defaults>", std::iter::empty()).unwrap(),
            guard: Guard::from_toml(BUILTIN_GUARDRAILS, "guardrails").unwrap(),
            time_scale: 20.0,
            interval: Duration::from_millis(300),
            seed: 7,
            work_dir,
        },
        budget: OracleBudget {
            warmup_s: 0.5,
            settle_s: 0.3,
            measure_s: 0.6,
            max_values: 1,
        },
        quick: true,
        progress: true,
    }
}
