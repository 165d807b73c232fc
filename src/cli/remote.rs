//! Calls to the running instance that holds a data dir: the embedded index
//! and the dead-letter file belong to one process (see
//! [`crate::service::lock`]), so `freshet query`, `freshet dlq replay` and
//! `freshet approvals` ask it through its API instead of opening them a second time.

use std::time::Duration;

use anyhow::{Context, Result};

/// The base URL of an instance given as `host:port` or a URL.
pub(super) fn base_url(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The address of the instance holding `data_dir`, `None` when the data
/// dir is free. A holder that serves no HTTP API is an error naming it and
/// `what` (the call that needs one).
pub(super) fn holder_addr(data_dir: &std::path::Path, what: &str) -> Result<Option<String>> {
    match crate::service::lock::holder_of(data_dir)? {
        None => Ok(None),
        Some(holder) => match holder.addr {
            Some(addr) => Ok(Some(addr)),
            None => anyhow::bail!(
                "the data dir {} is held by {holder}, which serves no {what}; wait for it to finish, or pass --addr of an instance that serves this data",
                data_dir.display()
            ),
        },
    }
}

/// One call to a freshet instance (`POST` with [`Call::send`], `GET` with
/// [`Call::get`]).
pub(super) struct Call<'a> {
    /// `host:port` or a base URL.
    pub addr: &'a str,
    /// The path and query, e.g. `/v1/search`.
    pub path: &'a str,
    /// The bearer token; empty sends none.
    pub token: &'a str,
    /// The environment variables that set the token, for a 401's hint.
    pub token_vars: &'a str,
    /// The JSON body, if any.
    pub body: Option<serde_json::Value>,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

impl Call<'_> {
    /// Sends the call; the body of a 2xx answer, else an error with the
    /// status and the instance's `error` message.
    pub(super) async fn send(self) -> Result<bytes::Bytes> {
        self.request(reqwest::Method::POST).await
    }

    /// The call as a `GET` (the body, if any, is not sent).
    pub(super) async fn get(self) -> Result<bytes::Bytes> {
        Call { body: None, ..self }
            .request(reqwest::Method::GET)
            .await
    }

    async fn request(self, method: reqwest::Method) -> Result<bytes::Bytes> {
        let url = format!("{}{}", base_url(self.addr), self.path);
        let client = reqwest::Client::builder().timeout(self.timeout).build()?;
        let mut req = client.request(method, &url);
        if let Some(body) = &self.body {
            req = req.json(body);
        }
        if !self.token.is_empty() {
            req = req.bearer_auth(self.token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the freshet instance at {url}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                format!(" (set {} to the instance's token)", self.token_vars)
            } else {
                String::new()
            };
            anyhow::bail!("{url} answered {status}: {why}{hint}");
        }
        Ok(body)
    }
}
