//! The web UI: pages over the runs recorded in the lake, drawn on the
//! server (HTML from [`pages`], SVG charts from [`charts`]), and Prometheus
//! metrics ([`metrics`]). `kiln ui --lake URI` serves it alone, as a
//! read-only history server that needs nothing but the lake.
//!
//! Templates and styles are compiled into the binary; pages load nothing
//! from elsewhere and work without JavaScript.

pub mod charts;
pub mod metrics;
pub mod pages;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use kiln_engine::storage::Lake;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use kiln_pipelines::observer::RunState;
use kiln_pipelines::run_log;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the pages read: the lake and a session to open its object store.
#[derive(Clone)]
pub struct UiState {
    pub session: Arc<KilnSession>,
    pub lake: Lake,
    /// The job queue, when the pages are part of `kiln serve`.
    pub jobs: Option<crate::store::Store>,
}

impl UiState {
    /// A state over `lake` (a local path or an object-store URI).
    pub async fn open(lake: &str) -> Result<Self> {
        let master: Master = "local[1]".parse()?;
        let session = KilnSession::connect(&master, &kiln_pipelines::extensions()).await?;
        Ok(UiState {
            session: Arc::new(session),
            lake: Lake::new(lake)?,
            jobs: None,
        })
    }
}

/// The pages and `/metrics`.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{run_id}", get(run_page))
        .route("/runs/{run_id}/events.jsonl", get(run_events))
        .route("/runs/{run_id}/stream", get(run_stream))
        .route("/models", get(models_page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// `kiln ui`: serves the history pages of `lake` on `bind` until the
/// process is told to stop. Prints `listening on http://HOST:PORT` on
/// stderr once it accepts requests.
pub async fn history_server(lake: &str, bind: SocketAddr) -> Result<()> {
    let state = UiState::open(lake).await?;
    // Fail now, not on the first page, when the lake's store cannot be
    // opened (without reading every run log at start).
    state
        .session
        .stores()
        .store_for(&state.lake.resolve(run_log::RUNS_DIR)?)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| KilnError::config(format!("cannot listen on {bind}: {e}")))?;
    let address = listener.local_addr().map_err(|e| KilnError::io(bind, e))?;
    if !address.ip().is_loopback() {
        eprintln!(
            "warning: no authentication: anyone who reaches {address} reads the run history of {lake}"
        );
    }
    eprintln!("listening on http://{address}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
        .map_err(|e| KilnError::io(address, e))
}

/// A page that could not be shown: its status and what to do.
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn not_found(message: String) -> Self {
        PageError {
            status: StatusCode::NOT_FOUND,
            message,
        }
    }

    fn bad_request(message: String) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

impl From<KilnError> for PageError {
    fn from(e: KilnError) -> Self {
        tracing::error!("ui: {e}");
        PageError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the lake cannot be read: {e}"),
        }
    }
}

impl From<crate::problem::ApiError> for PageError {
    fn from(e: crate::problem::ApiError) -> Self {
        PageError {
            status: e.status,
            message: e.detail,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        (self.status, Html(pages::error_page(title, &self.message))).into_response()
    }
}

/// The runs list's filters, from the query string (empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub page: Option<usize>,
}

/// Runs per page of the list.
pub const PAGE_SIZE: usize = 50;

impl RunsQuery {
    fn state(&self) -> std::result::Result<Option<RunState>, PageError> {
        if self.state.is_empty() {
            return Ok(None);
        }
        RunState::ALL
            .into_iter()
            .find(|s| s.as_str() == self.state)
            .map(Some)
            .ok_or_else(|| {
                PageError::bad_request(format!(
                    "state '{}' is not a run state: use running, succeeded or failed",
                    self.state
                ))
            })
    }
}

async fn runs_page(
    State(ui): State<UiState>,
    Query(query): Query<RunsQuery>,
) -> std::result::Result<Html<String>, PageError> {
    let state = query.state()?;
    let runs = run_log::list_runs(&ui.session, &ui.lake).await?;
    let mut pipelines: Vec<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    let selected: Vec<&run_log::RunRecord> = runs
        .iter()
        .filter(|r| query.pipeline.is_empty() || r.pipeline == query.pipeline)
        .filter(|r| state.is_none_or(|s| r.state == s))
        .collect();
    let pages = selected.len().div_ceil(PAGE_SIZE).max(1);
    let page = query.page.unwrap_or(1);
    if page == 0 || page > pages {
        return Err(PageError::not_found(format!(
            "page {page} does not exist: there are {pages} page(s)"
        )));
    }
    let shown = &selected[(page - 1) * PAGE_SIZE..(page * PAGE_SIZE).min(selected.len())];
    Ok(Html(pages::runs_page(&pages::RunsView {
        lake: ui.lake.root().as_str(),
        runs: shown,
        matching: selected.len(),
        pipelines: &pipelines,
        query: &query,
        page,
        pages,
    })))
}

async fn run_page(
    State(ui): State<UiState>,
    Path(run_id): Path<String>,
) -> std::result::Result<Html<String>, PageError> {
    match run_log::read_run(&ui.session, &ui.lake, &run_id).await? {
        Some(run) => Ok(Html(pages::run_page(&run))),
        None => Err(PageError::not_found(format!(
            "no run '{run_id}' in {}: the runs are listed at /",
            ui.lake.root()
        ))),
    }
}

/// Every model repository in the lake with its versions and metrics.
async fn models_page(State(ui): State<UiState>) -> std::result::Result<Html<String>, PageError> {
    let lake = crate::datasets::DatasetLake::new(Arc::clone(&ui.session), ui.lake.clone());
    let repositories = crate::models::repositories(&lake).await?;
    Ok(Html(pages::models_page(
        ui.lake.root().as_str(),
        &repositories,
    )))
}

async fn run_events(
    State(ui): State<UiState>,
    Path(run_id): Path<String>,
) -> std::result::Result<Response, PageError> {
    match run_log::read_events(&ui.session, &ui.lake, &run_id).await? {
        Some(text) => Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()),
        None => Err(PageError::not_found(format!("no run '{run_id}'"))),
    }
}

/// `/metrics`: OpenMetrics when the scraper asks for it (Prometheus does),
/// else the classic Prometheus text format (0.0.4).
async fn metrics_text(
    State(ui): State<UiState>,
    headers: axum::http::HeaderMap,
) -> std::result::Result<Response, PageError> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let runs = run_log::list_runs(&ui.session, &ui.lake).await?;
    let jobs = match &ui.jobs {
        Some(store) => Some(store.job_counts().await.map_err(|e| PageError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the job database cannot be read: {e}"),
        })?),
        None => None,
    };
    let text = metrics::encode(&runs, jobs.as_deref()).map_err(|e| PageError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("bug in kiln: metrics did not encode: {e}"),
    })?;
    if openmetrics {
        Ok((
            [(header::CONTENT_TYPE, metrics::OPENMETRICS_CONTENT_TYPE)],
            text,
        )
            .into_response())
    } else {
        Ok((
            [(header::CONTENT_TYPE, metrics::PROMETHEUS_CONTENT_TYPE)],
            metrics::to_prometheus_text(&text),
        )
            .into_response())
    }
}

/// Where a live page's stream starts: after the event lines it showed.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    #[serde(default)]
    pub after: usize,
}

/// The run's event log lines after `after`, as Server-Sent Events (one
/// JSON line per `data:`), as they are appended; the stream ends after
/// `run_finished`. Polls the lake, so it follows runs of any process.
async fn run_stream(
    State(ui): State<UiState>,
    Path(run_id): Path<String>,
    Query(query): Query<StreamQuery>,
) -> std::result::Result<
    Sse<impl Stream<Item = std::result::Result<Event, std::convert::Infallible>>>,
    PageError,
> {
    if run_log::read_events(&ui.session, &ui.lake, &run_id)
        .await?
        .is_none()
    {
        return Err(PageError::not_found(format!("no run '{run_id}'")));
    }
    let finished = |line: &str| line.contains("\"event\":\"run_finished\"");
    let stream = futures::stream::unfold(
        (ui, run_id, query.after, false),
        move |(ui, run_id, seen, done)| async move {
            if done {
                return None;
            }
            loop {
                let text = match run_log::read_events(&ui.session, &ui.lake, &run_id).await {
                    Ok(text) => text.unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!("ui: following {run_id}: {e}");
                        String::new()
                    }
                };
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let ended = lines.iter().any(|l| finished(l));
                if lines.len() > seen {
                    let events: Vec<_> = lines[seen..]
                        .iter()
                        .map(|l| Ok(Event::default().data(*l)))
                        .collect();
                    let next = (ui, run_id, lines.len(), ended);
                    return Some((futures::stream::iter(events), next));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .flatten();
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
