//! The platform's pages in `kiln serve`, for researchers who do not use a
//! terminal: their datasets (list, upload, schema, preview, download) and
//! jobs (list, a form per job type generated from its parameter schema,
//! a job's progress, events and results, followed live). They call the
//! same functions as the API, as the signed-in user, with the same checks.

use super::pages::{layout, state_badge, utc};
use super::{PageError, forms};
use crate::api::{self, AppState};
use crate::auth::{Principal, Role};
use crate::jobs::JobType;
use crate::store::{DatasetRecord, JobRecord, Scope};
use axum::Form;
use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, PreEscaped, html};

/// Jobs and datasets a list shows.
const LISTED: i64 = 200;
/// Rows of a dataset's preview.
const PREVIEW_ROWS: usize = 20;

/// The pages, behind the API's authentication.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/jobs", get(jobs_page))
        .route("/jobs/new", get(job_types_page))
        .route("/jobs/new/{job_type}", get(job_form).post(submit_form))
        .route("/jobs/{id}", get(job_page))
        .route("/datasets", get(datasets_page).post(upload_form))
        .route("/datasets/{id}", get(dataset_page))
        .with_state(state)
}

fn db_error(e: crate::db::DbError) -> PageError {
    PageError::from(crate::problem::ApiError::from(e))
}

async fn jobs_page(State(app): State<AppState>, who: Principal) -> Result<Html<String>, PageError> {
    let jobs = app
        .store
        .jobs(Some(&who.subject), None, LISTED, 0)
        .await
        .map_err(db_error)?;
    Ok(Html(layout(
        "Jobs",
        html! {
            h1 { "Jobs" }
            p.muted { "Your jobs, newest first (signed in as " (who.subject) "). " }
            @if who.has(Role::User) { p { a href="/jobs/new" { "Start a job" } } }
            @if jobs.is_empty() { p { "No job yet." } }
            @else { (jobs_table(&jobs)) }
        },
    )))
}

fn jobs_table(jobs: &[JobRecord]) -> Markup {
    html! {
        table.jobs {
            thead { tr { th { "Job" } th { "Type" } th { "State" } th { "Created" } th { "Progress" } th { "Results" } } }
            tbody {
                @for j in jobs {
                    tr {
                        td { a href=(format!("/jobs/{}", j.id)) { code { (j.id) } } }
                        td { (j.job_type) }
                        td { (state_badge(j.state.as_str())) }
                        td { (utc(j.created_ms)) }
                        td { (j.progress.as_ref().map(progress_text).unwrap_or_default()) }
                        td { @for o in &j.outputs { a href=(format!("/datasets/{}", o.dataset_id)) { "dataset" } " " } }
                    }
                }
            }
        }
    }
}

fn progress_text(p: &crate::store::Progress) -> String {
    match p.rows {
        Some(rows) => format!("{} · {rows} rows", p.stage),
        None => p.stage.clone(),
    }
}

async fn job_types_page(who: Principal) -> Result<Html<String>, PageError> {
    who.require(Role::User)?;
    Ok(Html(layout(
        "Start a job",
        html! {
            h1 { "Start a job" }
            table {
                tbody {
                    @for t in JobType::ALL {
                        tr {
                            td { a href=(format!("/jobs/new/{}", t.as_str())) { (t.as_str()) } }
                            td { (t.description()) }
                        }
                    }
                }
            }
        },
    )))
}

/// The user's datasets and finished jobs, for the form's pickers.
async fn choices(app: &AppState, who: &Principal) -> Result<forms::Choices, PageError> {
    let datasets = app
        .store
        .datasets(Scope::Visible, &who.subject, LISTED, 0)
        .await
        .map_err(db_error)?;
    let jobs = app
        .store
        .jobs(
            Some(&who.subject),
            Some(crate::store::JobState::Succeeded),
            LISTED,
            0,
        )
        .await
        .map_err(db_error)?;
    Ok(forms::Choices {
        datasets: datasets.into_iter().map(|d| (d.id, d.name)).collect(),
        jobs: jobs
            .into_iter()
            .map(|j| {
                let finished = j.finished_ms.map(utc).unwrap_or_default();
                (j.id, j.job_type, finished)
            })
            .collect(),
    })
}

fn form_page(
    job_type: JobType,
    values: &[(String, String)],
    choices: &forms::Choices,
    error: Option<&str>,
) -> String {
    let fields = forms::fields(&job_type.params_schema());
    let time_limit = values
        .iter()
        .find(|(k, _)| k == "time_limit_seconds")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    layout(
        &format!("New {} job", job_type.as_str()),
        html! {
            h1 { "New " (job_type.as_str()) " job" }
            p.muted { (job_type.description()) ". Datasets are picked from yours and those shared with you (" a href="/datasets" { "upload one" } ")." }
            @if let Some(error) = error { p.error #form-error { (error) } }
            form.job method="post" action=(format!("/jobs/new/{}", job_type.as_str())) {
                (forms::inputs(&fields, values, choices))
                div.field {
                    label for="field-time_limit_seconds" { b { "time_limit_seconds" } }
                    div.muted { "The job's time limit (default: the server's)." }
                    input #field-time_limit_seconds name="time_limit_seconds" type="number" step="1" min="1" value=(time_limit);
                }
                button type="submit" { "Start" }
            }
        },
    )
}

fn job_type(text: &str) -> Result<JobType, PageError> {
    JobType::parse(text).map_err(|e| PageError::not_found(e.detail))
}

async fn job_form(
    State(app): State<AppState>,
    who: Principal,
    Path(type_name): Path<String>,
) -> Result<Html<String>, PageError> {
    who.require(Role::User)?;
    let choices = choices(&app, &who).await?;
    Ok(Html(form_page(job_type(&type_name)?, &[], &choices, None)))
}

/// `POST /jobs/new/{type}`: the form's parameters checked like the API's,
/// the job queued, and its page; or the form again with what to fix.
async fn submit_form(
    State(app): State<AppState>,
    who: Principal,
    Path(type_name): Path<String>,
    Form(values): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let job_type = job_type(&type_name)?;
    let choices = choices(&app, &who).await?;
    let again = |message: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(form_page(job_type, &values, &choices, Some(&message))),
        )
            .into_response()
    };
    let fields = forms::fields(&job_type.params_schema());
    let params = match forms::params(&fields, &values) {
        Ok(p) => p,
        Err(e) => return Ok(again(e.message)),
    };
    let time_limit = match values
        .iter()
        .find(|(k, _)| k == "time_limit_seconds")
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::parse::<u64>)
        .transpose()
    {
        Ok(t) => t,
        Err(_) => return Ok(again("time_limit_seconds must be a whole number".into())),
    };
    match api::submit(&app, &who, job_type, params, time_limit).await {
        Ok(id) => Ok(Redirect::to(&format!("/jobs/{id}")).into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => Ok(again(e.message())),
        Err(e) => Err(e.into()),
    }
}

async fn job_page(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let job = api::visible_job(&app, &who, &id).await?;
    let events = app.store.events(&id, 0).await.map_err(db_error)?;
    let params = serde_json::to_string_pretty(&job.params).unwrap_or_default();
    Ok(Html(layout(
        &format!("Job {id}"),
        html! {
            h1 { "Job " code { (job.id) } " " (state_badge(job.state.as_str())) }
            p {
                (job.job_type) " by " (job.owner) ", created " (utc(job.created_ms))
                @if let Some(t) = job.started_ms { ", started " (utc(t)) }
                @if let Some(t) = job.finished_ms { ", finished " (utc(t)) }
                ". Attempt " (job.attempts) " of " (job.max_attempts) "."
            }
            // Always there while the job runs: the live script fills it in.
            @if job.progress.is_some() || !job.state.is_final() {
                p.progress #job-progress { (job.progress.as_ref().map(progress_text).unwrap_or_default()) }
            }
            @if let Some(error) = &job.error { p.error { (error) } }
            @if !job.outputs.is_empty() {
                h2 { "Results" }
                ul { @for o in &job.outputs { li { a href=(format!("/datasets/{}", o.dataset_id)) { "dataset " code { (o.dataset_id) } } } } }
            }
            @if !job.state.is_final() {
                p.muted { "With JavaScript, this page follows the job." }
                // Reloads on the first event after the ones shown (the
                // stream names each event by its kind).
                script { (PreEscaped(format!(
                    "let seen = 0;\nconst s = new EventSource('/api/v1/jobs/{}/events/stream');\n\
                     const next = () => {{ if (++seen > {}) location.reload(); }};\n\
                     for (const kind of {}) s.addEventListener(kind, next);\n\
                     s.addEventListener('progress', e => {{\n\
                       const p = JSON.parse(e.data);\n\
                       const cell = document.getElementById('job-progress');\n\
                       if (cell) cell.textContent = p.stage + (p.rows ? ' · ' + p.rows + ' rows' : '');\n\
                     }});",
                    job.id,
                    events.len(),
                    serde_json::json!(crate::worker::EVENT_KINDS)
                ))) }
            }
            h2 { "Parameters" }
            pre { (params) }
            h2 { "Events" }
            table {
                thead { tr { th { "#" } th { "Time" } th { "Event" } th { "Details" } } }
                tbody {
                    @for e in &events {
                        tr { td.num { (e.seq) } td { (utc(e.at_ms)) } td { (e.kind) } td { code { (e.data.to_string()) } } }
                    }
                }
            }
        },
    )))
}

async fn datasets_page(
    State(app): State<AppState>,
    who: Principal,
) -> Result<Html<String>, PageError> {
    let datasets = app
        .store
        .datasets(Scope::Visible, &who.subject, LISTED, 0)
        .await
        .map_err(db_error)?;
    Ok(Html(datasets_markup(&who, &datasets, None)))
}

fn datasets_markup(who: &Principal, datasets: &[DatasetRecord], error: Option<&str>) -> String {
    layout(
        "Datasets",
        html! {
            h1 { "Datasets" }
            @if who.has(Role::User) {
                h2 { "Upload" }
                @if let Some(error) = error { p.error #upload-error { (error) } }
                form.upload method="post" action="/datasets" enctype="multipart/form-data" {
                    div.field { label for="upload-name" { b { "name" } } " "
                        input #upload-name name="name" type="text" placeholder="letters, digits, - and _"; }
                    div.field { label for="upload-file" { b { "file" } " (CSV or Parquet)" } " "
                        input #upload-file name="file" type="file" accept=".csv,.parquet" required; }
                    button type="submit" { "Upload" }
                }
            }
            h2 { "Yours and shared with you" }
            @if datasets.is_empty() { p { "No dataset yet." } }
            @else {
                table {
                    thead { tr { th { "Name" } th { "Id" } th { "Rows" } th { "Size" } th { "Owner" } th { "Created" } } }
                    tbody {
                        @for d in datasets {
                            tr {
                                td { a href=(format!("/datasets/{}", d.id)) { (d.name) } }
                                td { code { (d.id) } }
                                td.num { (d.rows) }
                                td.num { (bytesize::ByteSize(d.bytes.max(0) as u64).to_string()) }
                                td { (d.owner) @if d.shared { " (shared)" } }
                                td { (utc(d.created_ms)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `POST /datasets` (multipart, from the upload form): the dataset's page,
/// or the list again with what went wrong.
async fn upload_form(
    State(app): State<AppState>,
    who: Principal,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, PageError> {
    let uploaded = match multipart {
        Ok(m) => api::upload(&app, &who, m).await,
        Err(e) => Err(crate::problem::ApiError::unsupported_media(e.body_text())),
    };
    match uploaded {
        Ok(record) => Ok(Redirect::to(&format!("/datasets/{}", record.id)).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let datasets = app
                .store
                .datasets(Scope::Visible, &who.subject, LISTED, 0)
                .await
                .map_err(db_error)?;
            Ok((
                e.status,
                Html(datasets_markup(&who, &datasets, Some(&e.message()))),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn dataset_page(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let d = api::visible_dataset(&app, &who, &id).await?;
    let rows = app.datasets.sample(&d, PREVIEW_ROWS, Some(0)).await?;
    let columns: Vec<&str> = d.schema.iter().map(|c| c.name.as_str()).collect();
    Ok(Html(layout(
        &d.name,
        html! {
            h1 { "Dataset " (d.name) }
            p {
                code { (d.id) } ": " (d.rows) " rows, " (bytesize::ByteSize(d.bytes.max(0) as u64).to_string())
                ", " (d.format.extension()) ", owned by " (d.owner) ", created " (utc(d.created_ms)) "."
                @if let Some(job) = &d.source_job { " Made by job " a href=(format!("/jobs/{job}")) { code { (job) } } "." }
                " " a href=(format!("/api/v1/datasets/{}/content", d.id)) download { "Download" }
            }
            h2 { "Columns" }
            table.compact {
                thead { tr { th { "Name" } th { "Type" } } }
                tbody { @for c in &d.schema { tr { td { (c.name) } td { code { (c.data_type) } } } } }
            }
            h2 { "Preview (" (rows.len()) " random rows)" }
            div.scroll {
                table.preview {
                    thead { tr { @for c in &columns { th { (c) } } } }
                    tbody {
                        @for row in &rows {
                            tr { @for c in &columns {
                                td { (row.get(*c).map(cell).unwrap_or_default()) }
                            } }
                        }
                    }
                }
            }
        },
    )))
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
