//! The HTTP client behind `kiln jobs …` and `kiln datasets …`: a thin
//! reqwest wrapper that turns problem responses back into kiln errors with
//! their fix.

use crate::problem::Problem;
use kiln_engine::{KilnError, Result};
use serde_json::Value;
use std::time::Duration;

/// A client of one server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `server` is `http://HOST:PORT`; `token` an OIDC access token.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| KilnError::internal("creating an HTTP client", e))?;
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|e| KilnError::io(&self.base, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<Problem>(&text) {
            Ok(p) => {
                let field = p.field.map(|f| format!(" ({f})")).unwrap_or_default();
                let message = format!("{} {}{field}: {}", p.status, p.title, p.detail);
                match p.fix {
                    Some(fix) => KilnError::config_fix(message, fix),
                    None => KilnError::config(message),
                }
            }
            Err(_) => KilnError::config(format!("the server answered {status}: {text}")),
        })
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = self.send(request).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        response
            .json()
            .await
            .map_err(|e| KilnError::io(&self.base, e))
    }

    /// Uploads a local CSV or Parquet file.
    pub async fn upload(&self, path: &std::path::Path, name: Option<&str>) -> Result<Value> {
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            KilnError::config_fix(
                format!("cannot read {}: {e}", path.display()),
                "check the path",
            )
        })?;
        let size = file
            .metadata()
            .await
            .map_err(|e| KilnError::io(path.display(), e))?
            .len();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part =
            reqwest::multipart::Part::stream_with_length(body, size).file_name(file_name.clone());
        let form = reqwest::multipart::Form::new()
            .text("name", name.map_or(file_name, str::to_string))
            .part("file", part);
        self.json(
            self.request(reqwest::Method::POST, "/api/v1/datasets")
                .multipart(form),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.json(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Downloads a dataset's content into `out`, atomically (a temporary
    /// file renamed at the end).
    pub async fn download(&self, id: &str, out: &std::path::Path) -> Result<u64> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let response = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("/api/v1/datasets/{id}/content"),
            ))
            .await?;
        let tmp = out.with_extension("kiln-download");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| KilnError::io(tmp.display(), e))?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| KilnError::io(&self.base, e))?;
            total += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| KilnError::io(tmp.display(), e))?;
        }
        file.flush()
            .await
            .map_err(|e| KilnError::io(tmp.display(), e))?;
        tokio::fs::rename(&tmp, out)
            .await
            .map_err(|e| KilnError::io(out.display(), e))?;
        Ok(total)
    }
}
