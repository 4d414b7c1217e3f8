//! The web UI: pages over the runs recorded in the lake, drawn on the
//! server (HTML from [`pages`], SVG charts from [`charts`]), and Prometheus
//! metrics ([`metrics`]). `kiln ui --lake URI` serves it alone, as a
//! read-only history server that needs nothing but the lake.
//!
//! Templates and styles are compiled into the binary; pages load nothing
//! from elsewhere and work without JavaScript.

pub mod charts;
pub mod forms;
pub mod lake;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod platform;
pub mod reports;

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
use kiln_pipelines::run_log::{self, RunCache, RunRecord};
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
    /// The runs read so far, read again when their log changes.
    pub runs: Arc<RunCache>,
    /// The requests this process served.
    pub http: metrics::HttpMetrics,
}

impl UiState {
    /// A state over `lake` (a local path or an object-store URI).
    pub async fn open(lake: &str) -> Result<Self> {
        let master: Master = "local[1]".parse()?;
        let session = KilnSession::connect(&master, &kiln_pipelines::extensions()).await?;
        Ok(UiState::new(Arc::new(session), Lake::new(lake)?, None))
    }

    pub fn new(session: Arc<KilnSession>, lake: Lake, jobs: Option<crate::store::Store>) -> Self {
        UiState {
            session,
            lake,
            jobs,
            runs: Arc::default(),
            http: metrics::HttpMetrics::default(),
        }
    }
}

/// The pages, the lake's files and `/metrics`.
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{run_id}", get(run_page))
        .route("/runs/{run_id}/tasks/{task}", get(task_page))
        .route("/runs/{run_id}/events.jsonl", get(run_events))
        .route("/runs/{run_id}/stream", get(run_stream))
        .route("/models", get(models_page))
        .route("/schedules", get(schedules_page))
        .route("/lake/", get(lake::serve_root))
        .route("/lake/{*path}", get(lake::serve))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route_layer(axum::middleware::from_fn_with_state(
            state.http.clone(),
            metrics::track,
        ))
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
    // Jobs and datasets belong to the service: say so instead of a 404.
    let service_only = |what: &'static str| {
        get(move || async move {
            PageError::not_found(format!(
                "{what} are part of the job service: this is `kiln ui`, the read-only history \
                 server of the lake; open them on `kiln serve`"
            ))
        })
    };
    let app = router(state)
        .route("/jobs", service_only("jobs"))
        .route("/datasets", service_only("datasets"));
    axum::serve(listener, app)
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
            message: e.message(),
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
    /// Runs started on or after this day (`YYYY-MM-DD`, UTC).
    #[serde(default)]
    pub since: String,
    /// Runs started on or before this day (`YYYY-MM-DD`, UTC).
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub page: Option<usize>,
}

/// Runs per page of the list.
pub const PAGE_SIZE: usize = 50;

impl RunsQuery {
    /// The start-time window `[since, until + 1 day)` in milliseconds.
    fn window(&self) -> std::result::Result<(i64, i64), PageError> {
        let day = |name: &str, text: &str, end: bool| -> std::result::Result<i64, PageError> {
            if text.is_empty() {
                return Ok(if end { i64::MAX } else { i64::MIN });
            }
            let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                PageError::bad_request(format!(
                    "{name} '{text}' is not a day: write it as YYYY-MM-DD"
                ))
            })?;
            let date = if end {
                date.succ_opt().unwrap_or(date)
            } else {
                date
            };
            Ok(date
                .and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp_millis()))
        };
        Ok((
            day("since", &self.since, false)?,
            day("until", &self.until, true)?,
        ))
    }

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
    let (since, until) = query.window()?;
    let runs = ui.runs.list(&ui.session, &ui.lake).await?;
    let mut pipelines: Vec<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    pipelines.sort_unstable();
    pipelines.dedup();
    let selected: Vec<&run_log::RunRecord> = runs
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| query.pipeline.is_empty() || r.pipeline == query.pipeline)
        .filter(|r| state.is_none_or(|s| r.state == s))
        .filter(|r| (since..until).contains(&r.start_ms))
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
    let run = read_run(&ui, &run_id).await?;
    let progress = match run.state {
        RunState::Running => run_log::read_progress(&ui.session, &ui.lake, &run_id).await?,
        _ => None,
    };
    let links = output_links(&ui, &run);
    Ok(Html(pages::run_page(&run, progress.as_ref(), &links)))
}

async fn read_run(ui: &UiState, run_id: &str) -> std::result::Result<RunRecord, PageError> {
    run_log::read_run(&ui.session, &ui.lake, run_id)
        .await?
        .ok_or_else(|| {
            PageError::not_found(format!(
                "no run '{run_id}' in {}: the runs are listed at /",
                ui.lake.root()
            ))
        })
}

/// Each task's outputs with their `/lake/` links (when in the lake).
fn output_links(ui: &UiState, run: &RunRecord) -> pages::OutputLinks {
    run.tasks
        .iter()
        .map(|t| {
            let links = t
                .outputs
                .iter()
                .map(|o| (o.clone(), lake::href(ui.lake.root(), o)))
                .collect();
            (t.name.clone(), links)
        })
        .collect()
}

/// A task of a run: its attempts, events, metrics and outputs, and the
/// reports it left (a training task's model selection, a monitored
/// batch's drift).
async fn task_page(
    State(ui): State<UiState>,
    Path((run_id, task_name)): Path<(String, String)>,
) -> std::result::Result<Html<String>, PageError> {
    let run = read_run(&ui, &run_id).await?;
    let Some(task) = run.tasks.iter().find(|t| t.name == task_name) else {
        return Err(PageError::not_found(format!(
            "run '{run_id}' has no task '{task_name}': its tasks are {}",
            run.tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let log = run_log::read_events(&ui.session, &ui.lake, &run_id)
        .await?
        .unwrap_or_default();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e.get("task").and_then(|t| t.as_str()) == Some(task_name.as_str()))
        .collect();
    let progress = match task.status {
        run_log::TaskStatus::Running => run_log::read_progress(&ui.session, &ui.lake, &run_id)
            .await?
            .and_then(|p| p.tasks.get(&task_name).cloned()),
        _ => None,
    };
    let mut sections = Vec::new();
    for output in &task.outputs {
        if let Some(section) = report_section(&ui, output).await {
            sections.push(section);
        }
    }
    let links = output_links(&ui, &run)
        .remove(&task_name)
        .unwrap_or_default();
    Ok(Html(pages::task_page(&pages::TaskView {
        run: &run,
        task,
        events: &events,
        progress: progress.as_ref(),
        outputs: &links,
        sections: &sections,
    })))
}

/// The report an output stands for, drawn: a model version's
/// `report.json`, a batch's drift report. `None` for other outputs, and
/// for a report that is gone or unreadable (the page still shows).
async fn report_section(ui: &UiState, output: &str) -> Option<maud::Markup> {
    let read = |url: url::Url| async move {
        match ui.session.stores().read_object(&url).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("ui: {url}: {e}");
                None
            }
        }
    };
    if let Some(dir) = output.strip_suffix(kiln_models::registry::MODEL_FILE) {
        let bytes = read(url::Url::parse(&format!("{dir}report.json")).ok()?).await?;
        let report: reports::TrainingReport = serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("ui: {dir}report.json: {e}"))
            .ok()?;
        let files = lake::href(ui.lake.root(), dir);
        return Some(reports::training(&report, files.as_deref()));
    }
    if let Some(dir) = output.strip_suffix("drift/report.json") {
        let bytes = read(url::Url::parse(output).ok()?).await?;
        let report: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let plot = lake::href(ui.lake.root(), &format!("{dir}drift/drift.svg"));
        return Some(reports::drift(&report, plot.as_deref()));
    }
    None
}

/// The schedules recorded in the lake by `kiln schedule`, with the recent
/// runs of each pipeline.
async fn schedules_page(State(ui): State<UiState>) -> std::result::Result<Html<String>, PageError> {
    let records = kiln_pipelines::schedule::list_records(ui.session.stores(), &ui.lake).await?;
    let runs = ui.runs.list(&ui.session, &ui.lake).await?;
    Ok(Html(pages::schedules_page(
        ui.lake.root().as_str(),
        &records,
        &runs,
        chrono::Utc::now().timestamp_millis(),
    )))
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
    let runs = ui.runs.list(&ui.session, &ui.lake).await?;
    let unavailable = |e: crate::db::DbError| PageError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the job database cannot be read: {e}"),
    };
    let service = match &ui.jobs {
        Some(store) => Some(metrics::ServiceStats {
            jobs: store.job_counts().await.map_err(unavailable)?,
            durations: store.job_durations().await.map_err(unavailable)?,
        }),
        None => None,
    };
    let text = metrics::encode(&runs, service.as_ref(), &ui.http).map_err(|e| PageError {
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
/// JSON line per `data:`), as they are appended, and the running tasks'
/// progress as `progress` events when it changes; the stream ends after
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
        (ui, run_id, query.after, 0_i64, false),
        move |(ui, run_id, seen, progress_ms, done)| async move {
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
                    let next = (ui, run_id, lines.len(), progress_ms, ended);
                    return Some((futures::stream::iter(events), next));
                }
                if ended {
                    return None;
                }
                let progress = run_log::read_progress(&ui.session, &ui.lake, &run_id)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!("ui: progress of {run_id}: {e}");
                        None
                    });
                if let Some(p) = progress.filter(|p| p.ts_ms > progress_ms)
                    && let Ok(data) = serde_json::to_string(&p)
                {
                    let event = Ok(Event::default().event("progress").data(data));
                    let next = (ui, run_id, seen, p.ts_ms, false);
                    return Some((futures::stream::iter(vec![event]), next));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .flatten();
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
