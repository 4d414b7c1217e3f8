//! `/lake/PATH`: the files tasks wrote into the lake, read-only: an object
//! is streamed with its media type, a directory is listed. What a task
//! page links its outputs to (reports, ROC plots, drift plots, models).
//!
//! Nothing outside the lake root can be named (no `..`, no full URIs), and
//! files are served with a content security policy that runs no script,
//! so an SVG in the lake cannot act in the UI's origin.

use super::{PageError, UiState, pages};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use futures::TryStreamExt;
use kiln_engine::KilnError;
use kiln_engine::storage::object_path;
use object_store::ObjectStoreExt;
use url::Url;

/// What a served file may do: show itself and its inline styles.
const FILE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:";

/// The `/lake/…` link of `uri` when it lies under the lake `root`.
pub fn href(root: &Url, uri: &str) -> Option<String> {
    let rest = uri.strip_prefix(root.as_str())?;
    let mut link = Url::parse("http://ui/lake/").ok()?;
    link.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(rest.split('/'));
    Some(link.path().to_string())
}

/// The URL `relative` names under `root`, if every segment is a plain name.
fn resolve(root: &Url, relative: &str) -> Option<Url> {
    let segments: Vec<&str> = relative.split('/').collect();
    let last = segments.len() - 1;
    let plain = segments.iter().enumerate().all(|(i, s)| {
        // Only the last segment may be empty: a trailing slash.
        (!s.is_empty() || i == last) && *s != "." && *s != ".." && !s.contains('\\')
    });
    if !plain {
        return None;
    }
    let mut url = root.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    Some(url)
}

fn media_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "svg" => "image/svg+xml",
        Some(e) if e == "json" => "application/json",
        Some(e) if e == "jsonl" => "application/x-ndjson",
        Some(e) if e == "txt" || e == "log" => "text/plain; charset=utf-8",
        Some(e) if e == "csv" => "text/csv; charset=utf-8",
        Some(e) if e == "yaml" || e == "yml" => "text/plain; charset=utf-8",
        Some(e) if e == "png" => "image/png",
        Some(e) if e == "parquet" => "application/vnd.apache.parquet",
        _ => "application/octet-stream",
    }
}

/// `GET /lake/{*path}`.
pub async fn serve(
    State(ui): State<UiState>,
    Path(relative): Path<String>,
) -> Result<Response, PageError> {
    serve_path(&ui, &relative).await
}

/// `GET /lake/`: the lake's top directory.
pub async fn serve_root(State(ui): State<UiState>) -> Result<Response, PageError> {
    serve_path(&ui, "").await
}

async fn serve_path(ui: &UiState, relative: &str) -> Result<Response, PageError> {
    let root = ui.lake.root().clone();
    let url = resolve(&root, relative).ok_or_else(|| {
        PageError::not_found(format!(
            "'{relative}' is not a path inside the lake: use plain names, without '..'"
        ))
    })?;
    let store = ui.session.stores().store_for(&url)?;
    let location = object_path(&url)?;
    if !relative.is_empty() && !relative.ends_with('/') {
        match store.get(&location).await {
            Ok(object) => {
                let size = object.meta.size;
                let body = Body::from_stream(object.into_stream().map_err(std::io::Error::other));
                let name = relative.rsplit('/').next().unwrap_or_default();
                let mut response = (
                    [
                        (header::CONTENT_TYPE, media_type(name).to_string()),
                        (header::CONTENT_LENGTH, size.to_string()),
                        (header::CONTENT_SECURITY_POLICY, FILE_POLICY.to_string()),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                    ],
                    body,
                )
                    .into_response();
                if media_type(name) == "application/octet-stream"
                    || media_type(name) == "application/vnd.apache.parquet"
                {
                    let disposition = format!("attachment; filename=\"{}\"", name.replace('"', ""));
                    if let Ok(value) = disposition.parse() {
                        response
                            .headers_mut()
                            .insert(header::CONTENT_DISPOSITION, value);
                    }
                }
                return Ok(response);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(KilnError::io(&url, e).into()),
        }
    }
    // A directory: its sub-directories and files.
    let listing = store
        .list_with_delimiter(Some(&location))
        .await
        .map_err(|e| KilnError::io(&url, e))?;
    if listing.common_prefixes.is_empty() && listing.objects.is_empty() {
        return Err(PageError::not_found(format!(
            "nothing at {url}: the lake's files are listed at /lake/"
        )));
    }
    let base = match relative.trim_end_matches('/') {
        "" => String::new(),
        dir => format!("{dir}/"),
    };
    let name_of = |p: &object_store::path::Path| p.filename().unwrap_or_default().to_string();
    let entries: Vec<pages::LakeEntry> = listing
        .common_prefixes
        .iter()
        .map(|p| pages::LakeEntry {
            name: format!("{}/", name_of(p)),
            size: None,
            modified_ms: None,
        })
        .chain(listing.objects.iter().map(|o| pages::LakeEntry {
            name: name_of(&o.location),
            size: Some(o.size),
            modified_ms: Some(o.last_modified.timestamp_millis()),
        }))
        .collect();
    let links: Vec<String> = entries
        .iter()
        .map(|e| href(&root, &format!("{root}{base}{}", e.name)).unwrap_or_default())
        .collect();
    Ok(Html(pages::lake_page(url.as_str(), &base, &entries, &links)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_the_root_resolve() -> Result<(), url::ParseError> {
        let root = Url::parse("s3://bucket/lake/")?;
        let ok = resolve(&root, "models/io/v1/report.json").map(|u| u.to_string());
        assert_eq!(
            ok.as_deref(),
            Some("s3://bucket/lake/models/io/v1/report.json")
        );
        assert_eq!(
            resolve(&root, "models/").map(|u| u.to_string()).as_deref(),
            Some("s3://bucket/lake/models/")
        );
        for bad in ["../x", "a/../../b", "a//b", "./a", "a\\..\\b"] {
            assert_eq!(resolve(&root, bad), None, "{bad}");
        }
        // A name that looks like a URI stays a name.
        assert_eq!(
            resolve(&root, "file:x").map(|u| u.to_string()).as_deref(),
            Some("s3://bucket/lake/file:x")
        );
        Ok(())
    }

    #[test]
    fn outputs_under_the_lake_link_to_it() -> Result<(), url::ParseError> {
        let root = Url::parse("file:///data/lake/")?;
        assert_eq!(
            href(&root, "file:///data/lake/models/io/v2/model.json").as_deref(),
            Some("/lake/models/io/v2/model.json")
        );
        assert_eq!(
            href(&root, "file:///data/lake/a b/").as_deref(),
            Some("/lake/a%20b/")
        );
        assert_eq!(href(&root, "file:///elsewhere/x"), None);
        Ok(())
    }
}
