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
//!   feeding replacement characters to the index;
//! - every address is judged by the outbound guard ([`crate::netguard`]):
//!   host names are resolved once by the guarded resolver (the connection
//!   goes to the checked address), literal-IP URLs are checked before the
//!   request and on every redirect hop; a refusal fails as `blocked`.
//!   System proxies are not used: a proxy would resolve (and reach) the
//!   address itself, out of the guard's sight.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ExtractError;
use crate::dataplane::retry::{parse_retry_after, ErrorClass};
use crate::dataplane::search::serppost::read_capped;
use crate::netguard::{Allow, Blocked, NetGuard};
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

/// A sub-resource a rendered page asked for (script, XHR, fetch).
#[derive(Debug, Clone)]
pub struct Resource {
    /// HTTP status (any: the page's script sees it).
    pub status: u16,
    /// The `Content-Type` header, `application/octet-stream` when absent.
    pub content_type: String,
    /// The body (decompressed), at most `[extract] max_bytes`.
    pub body: Bytes,
}

/// The page fetcher (one per process; clones share the connection pool).
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_bytes: usize,
    guard: Arc<NetGuard>,
}

impl Fetcher {
    /// A fetcher with the limits of `settings`; `resolve` maps host suffixes
    /// to fixed addresses (trusted: the operator set them), and
    /// `settings.allow_private` opens private addresses or hosts.
    pub fn new(
        settings: &ExtractSettings,
        resolve: &[(String, IpAddr)],
    ) -> Result<Fetcher, ExtractError> {
        let allow = Allow::parse(&settings.allow_private).map_err(|e| {
            ExtractError::new(
                ErrorClass::Invalid,
                "",
                format!("[extract] allow_private: {e}"),
            )
        })?;
        let guard = Arc::new(NetGuard::new(allow, resolve));
        let max_redirects = settings.max_redirects as usize;
        let hop_guard = guard.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            // Literal-IP hops never reach the resolver: judge them here.
            if let Err(blocked) = hop_guard.check_url(attempt.url()) {
                attempt.error(blocked)
            } else if attempt.previous().iter().any(|u| u == attempt.url()) {
                attempt.error("redirect loop")
            } else if attempt.previous().len() > max_redirects {
                attempt.error(format!("more than {max_redirects} redirects"))
            } else {
                attempt.follow()
            }
        });
        let builder = reqwest::Client::builder()
            .redirect(policy)
            .user_agent(settings.user_agent.clone())
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .gzip(true)
            .no_proxy()
            .dns_resolver(guard.resolver());
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
            guard,
        })
    }

    /// The address guard this fetcher connects through (for any other
    /// component that fetches URLs it did not choose).
    pub fn guard(&self) -> &Arc<NetGuard> {
        &self.guard
    }

    /// Largest body read, in bytes (`[extract] max_bytes`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// One request for a sub-resource of a rendered page, through the same
    /// guard, redirect policy and body cap as [`fetch`](Self::fetch); any
    /// status and content type are returned as they are. `GET`, `HEAD`
    /// and `POST` only.
    pub async fn fetch_resource(
        &self,
        method: &str,
        url: &url::Url,
        body: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<Resource, ExtractError> {
        let method = match method {
            "GET" => reqwest::Method::GET,
            "HEAD" => reqwest::Method::HEAD,
            "POST" => reqwest::Method::POST,
            other => {
                return Err(ExtractError::new(
                    ErrorClass::Invalid,
                    url.as_str(),
                    format!("method {other} is not fetched for rendered pages"),
                ))
            }
        };
        let mut request = self.client.request(method.clone(), url.clone());
        if method == reqwest::Method::POST {
            if let Some(ct) = content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, ct);
            }
            request = request.body(body);
        }
        let response = self.send(url, request).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        Ok(Resource {
            status,
            content_type,
            body: self.read_body(url, response).await?,
        })
    }

    /// Sends `request` for `url` through the guard: literal-IP URLs are
    /// judged before, host names by the guarded resolver; a refusal fails
    /// as `blocked`.
    async fn send(
        &self,
        url: &url::Url,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ExtractError> {
        let fail = |class, message: String| ExtractError::new(class, url.as_str(), message);
        let blocked = |b: &Blocked| {
            b.emit();
            fail(ErrorClass::Blocked, b.to_string())
        };
        if let Err(b) = self.guard.check_url(url) {
            return Err(blocked(&b));
        }
        request
            .send()
            .await
            .map_err(|e| match Blocked::find_in(&e) {
                Some(b) => blocked(b),
                None => fail(ErrorClass::from_reqwest(&e), describe(&e)),
            })
    }

    /// Reads a response body up to `max_bytes`, counting the bytes.
    async fn read_body(
        &self,
        url: &url::Url,
        response: reqwest::Response,
    ) -> Result<Bytes, ExtractError> {
        let body = read_capped(response, self.max_bytes)
            .await
            .map_err(|(class, message)| ExtractError::new(class, url.as_str(), message))?;
        metrics::counter!(crate::metrics::EXTRACT_BYTES_TOTAL).increment(body.len() as u64);
        Ok(body)
    }

    /// One GET of `url`. The caller bounds it in time.
    pub async fn fetch(&self, url: &url::Url) -> Result<Fetched, ExtractError> {
        let started = Instant::now();
        let fail = |class, message: String| ExtractError::new(class, url.as_str(), message);
        let request = self.client.get(url.clone()).header(
            reqwest::header::ACCEPT,
            "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.5",
        );
        let response = self.send(url, request).await?;
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
        let body = self.read_body(url, response).await?;
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
