//! Page fetching: one HTTP GET with every limit a hostile web needs.
//!
//! - the whole attempt (headers and body) is bounded by the live
//!   `extract.timeout_ms` (applied by the retry loop), which also ends slow-drip
//!   servers;
//! - bodies are streamed and cut at `extract.max_bytes` (memory stays bounded
//!   whatever the server sends or claims in `Content-Length`);
//! - redirects are followed up to `extract.max_redirects`, and a loop fails at
//!   once as `redirect`;
//! - gzip is decoded transparently; the charset comes from the
//!   `Content-Type` header, else a `<meta>` declaration, else a BOM, else
//!   UTF-8; text with many invalid sequences fails as `decode` rather than
//!   feeding replacement characters to the index.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ExtractError;
use crate::dataplane::retry::{parse_retry_after, ErrorClass};
use crate::dataplane::search::serppost::read_capped;
use crate::settings::ExtractSettings;

/// Share of replacement characters above which a page fails to decode.
const MAX_INVALID_SHARE: f64 = 0.01;

/// A fetched page body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The URL after redirects.
    pub final_url: url::Url,
    /// The raw body (decompressed).
    pub body: Bytes,
    /// The charset named by the `Content-Type` header, if any.
    pub header_charset: Option<String>,
    /// Time to the last body byte.
    pub elapsed: Duration,
}

/// Resolves host names by suffix to fixed addresses, else through the system
/// resolver. Used to point the simulator's `*.sim.test` domains at loopback.
#[derive(Debug, Clone)]
struct SuffixResolver {
    map: Arc<Vec<(String, IpAddr)>>,
}

impl reqwest::dns::Resolve for SuffixResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let fixed = self.map.iter().find_map(|(suffix, ip)| {
            let matches = host == *suffix
                || (host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.');
            matches.then_some(*ip)
        });
        Box::pin(async move {
            if let Some(ip) = fixed {
                let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(SocketAddr::new(ip, 0)));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The page fetcher (one per process; clones share the connection pool).
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
}

impl Fetcher {
    /// A fetcher with the limits of `settings`; `resolve` maps host suffixes
    /// to fixed addresses.
    pub fn new(
        settings: &ExtractSettings,
        resolve: &[(String, IpAddr)],
    ) -> Result<Fetcher, ExtractError> {
        let max_redirects = settings.max_redirects as usize;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().iter().any(|u| u == attempt.url()) {
                attempt.error("redirect loop")
            } else if attempt.previous().len() > max_redirects {
                attempt.error(format!("more than {max_redirects} redirects"))
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .redirect(policy)
            .user_agent(settings.user_agent.clone())
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .gzip(true);
        if !resolve.is_empty() {
            builder = builder.dns_resolver(Arc::new(SuffixResolver {
                map: Arc::new(resolve.to_vec()),
            }));
        }
        let client = builder.build().map_err(|e| {
            ExtractError::new(
                ErrorClass::Invalid,
                "",
                format!("cannot build HTTP client: {e}"),
            )
        })?;
        Ok(Fetcher {
            client,
            max_bytes: settings.max_bytes as usize,
        })
    }

    /// One GET of `url`. The caller bounds it in time.
    pub async fn fetch(&self, url: &url::Url) -> Result<Fetched, ExtractError> {
        let started = Instant::now();
        let fail = |class, message: String| ExtractError::new(class, url.as_str(), message);
        let response = self
            .client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.5",
            )
            .send()
            .await
            .map_err(|e| fail(ErrorClass::from_reqwest(&e), describe(&e)))?;
        let status = response.status();
        let final_url = response.url().clone();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if !status.is_success() {
            let class = if status.as_u16() == 503 && retry_after.is_some() {
                ErrorClass::RateLimited
            } else {
                ErrorClass::from_status(status.as_u16())
            };
            let mut err = fail(class, format!("HTTP {status}"));
            err.retry_after = retry_after;
            return Err(err);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if !(mime.is_empty() || mime.contains("html") || mime.starts_with("text/")) {
            return Err(fail(
                ErrorClass::NotHtml,
                format!("content type `{mime}` is not HTML"),
            ));
        }
        let header_charset = content_type
            .split(';')
            .skip(1)
            .filter_map(|p| p.trim().strip_prefix("charset="))
            .map(|c| c.trim_matches('"').to_string())
            .next();
        let body = read_capped(response, self.max_bytes)
            .await
            .map_err(|(class, message)| fail(class, message))?;
        metrics::counter!(crate::metrics::EXTRACT_BYTES_TOTAL).increment(body.len() as u64);
        Ok(Fetched {
            final_url,
            body,
            header_charset,
            elapsed: started.elapsed(),
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The charset a `<meta>` tag in the first 4 KiB declares.
fn meta_charset(head: &[u8]) -> Option<String> {
    let head = &head[..head.len().min(4096)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let at = text.find("charset=")?;
    let rest = &text[at + "charset=".len()..];
    let rest = rest.trim_start_matches(['"', '\'', ' ']);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

/// Decodes a page body to text (see the module docs for the charset order).
pub fn decode(
    body: &[u8],
    header_charset: Option<&str>,
    url: &str,
) -> Result<String, ExtractError> {
    let label = header_charset
        .map(str::to_string)
        .or_else(|| meta_charset(body));
    let encoding = label
        .as_deref()
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, used, had_errors) = encoding.decode(body);
    if had_errors {
        let bad = text.chars().filter(|c| *c == '\u{FFFD}').count();
        let total = text.chars().count().max(1);
        if bad as f64 / total as f64 > MAX_INVALID_SHARE {
            return Err(ExtractError::new(
                ErrorClass::Decode,
                url,
                format!(
                    "{bad} invalid byte sequences in {total} characters for charset {}",
                    used.name()
                ),
            ));
        }
    }
    Ok(text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_follows_header_then_meta_then_utf8() {
        let latin = b"<html><head><meta charset=\"iso-8859-1\"></head><body>Caf\xe9</body></html>";
        assert!(decode(latin, None, "u").unwrap().contains("Café"));
        assert!(decode(b"Caf\xe9 au lait", Some("windows-1252"), "u")
            .unwrap()
            .contains("Café"));
        assert!(decode("Café".as_bytes(), None, "u")
            .unwrap()
            .contains("Café"));
        let mut junk = b"<html><body>".to_vec();
        junk.extend(std::iter::repeat_n(0xffu8, 200));
        let err = decode(&junk, Some("utf-8"), "u").unwrap_err();
        assert_eq!(err.class, ErrorClass::Decode);
        // a stray invalid byte in a long page is tolerated
        let mut mostly = "a".repeat(5000).into_bytes();
        mostly.push(0xff);
        assert!(decode(&mostly, None, "u").is_ok());
    }
}
