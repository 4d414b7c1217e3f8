//! The job service end to end: a real server on loopback (SQLite, and the
//! queue on PostgreSQL when one is given), a real HTTP client, an OIDC
//! issuer on loopback with keys made here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kiln_service::auth::OidcSettings;
use kiln_service::{ServeOptions, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RULES: &str = "name: t
entity: { column: device_id, mean_rows: 50, sigma: 0.5 }
columns:
  - name: sample_id
    gen: { unique_id: { start: 1 } }
  - name: speed
    gen: { lognormal: { mu: 2.0, sigma: 0.5, max: 500, round: 1 } }
";

struct TestServer {
    base: String,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    async fn start(oidc: Option<OidcSettings>, tweak: impl FnOnce(&mut ServeOptions)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = ServeOptions {
            bind: "127.0.0.1:0".parse().expect("address"),
            public_url: None,
            lake: format!("{}/lake/", dir.path().display()),
            db: format!("sqlite:{}/service.sqlite", dir.path().display()),
            master: "local[2]".parse().expect("master"),
            oidc,
            workers: kiln_service::worker::WorkerSettings {
                workers: 2,
                lease: Duration::from_secs(3),
                heartbeat: Duration::from_millis(300),
                poll: Duration::from_millis(200),
                per_user_running: 4,
                retry_backoff: Duration::from_millis(200),
            },
            limits: Default::default(),
        };
        tweak(&mut options);
        let server = Server::bind(options).await.expect("server starts");
        let base = format!("http://{}", server.address());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            base,
            dir,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// Checks a problem response: status, media type, and the field named.
async fn problem(response: reqwest::Response, status: StatusCode, field: Option<&str>) -> Value {
    assert_eq!(response.status(), status, "status");
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(media, "application/problem+json", "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{body}");
    }
    body
}

async fn upload(
    client: &reqwest::Client,
    server: &TestServer,
    file_name: &str,
    bytes: Vec<u8>,
    name: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("name", name.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string()),
        );
    let mut r = client.post(server.url("/api/v1/datasets")).multipart(form);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("upload request")
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

async fn wait_for_job(
    client: &reqwest::Client,
    server: &TestServer,
    id: &str,
    token: Option<&str>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut r = client.get(server.url(&format!("/api/v1/jobs/{id}")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let job: Value = r
            .send()
            .await
            .expect("get job")
            .json()
            .await
            .expect("job JSON");
        let state = job["state"].as_str().unwrap_or_default().to_string();
        if !matches!(state.as_str(), "queued" | "running") {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_upload_sample_download_share_delete_and_bad_input() {
    let server = TestServer::start(None, |o| o.limits.max_upload_bytes = 4096).await;
    let client = http();

    // Service endpoints.
    let r = client
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
    let r = client
        .get(server.url("/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 200);
    let r = client
        .get(server.url("/api/v1/nope"))
        .send()
        .await
        .expect("404");
    problem(r, StatusCode::NOT_FOUND, None).await;
    let r = client
        .patch(server.url("/api/v1/jobs"))
        .send()
        .await
        .expect("405");
    problem(r, StatusCode::METHOD_NOT_ALLOWED, None).await;
    let metrics: Value = client
        .get(server.url("/api/v1/metrics"))
        .send()
        .await
        .expect("metrics")
        .json()
        .await
        .expect("metrics JSON");
    assert!(
        metrics["metrics"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == "areaUnderROC"))
    );

    // A CSV: schema inferred, rows counted, content returned byte for byte.
    let csv: String = std::iter::once("id,city,speed\n".to_string())
        .chain((0..100).map(|i| format!("{i},c{},{}.5\n", i % 7, i * 3)))
        .collect();
    let r = upload(
        &client,
        &server,
        "trips.csv",
        csv.clone().into_bytes(),
        "trips",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.expect("created JSON");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["rows"], 100);
    assert_eq!(created["name"], "trips");
    let names: Vec<&str> = created["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["id", "city", "speed"]);

    let sample: Value = client
        .get(server.url(&format!("/api/v1/datasets/{id}/sample?n=3")))
        .send()
        .await
        .expect("sample")
        .json()
        .await
        .expect("sample JSON");
    assert_eq!(
        sample["rows"],
        json!([
            {"id": 0, "city": "c0", "speed": 0.5},
            {"id": 1, "city": "c1", "speed": 3.5},
            {"id": 2, "city": "c2", "speed": 6.5}
        ])
    );
    let seeded = |seed: u64| {
        let client = client.clone();
        let url = server.url(&format!("/api/v1/datasets/{id}/sample?n=5&seed={seed}"));
        async move {
            let v: Value = client
                .get(url)
                .send()
                .await
                .expect("sample")
                .json()
                .await
                .expect("JSON");
            v["rows"].clone()
        }
    };
    let a = seeded(7).await;
    assert_eq!(a, seeded(7).await, "same seed, same rows");
    assert_ne!(a, seeded(8).await, "another seed, other rows");
    assert_eq!(a.as_array().map(Vec::len), Some(5));

    let content = client
        .get(server.url(&format!("/api/v1/datasets/{id}/content")))
        .send()
        .await
        .expect("content");
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "text/csv");
    assert_eq!(content.text().await.expect("text"), csv);

    let schema: Value = client
        .get(server.url(&format!("/api/v1/datasets/{id}/schema")))
        .send()
        .await
        .expect("schema")
        .json()
        .await
        .expect("schema JSON");
    assert_eq!(schema["schema"][2]["type"], "Float64");

    // Share and unshare; list.
    let r = client
        .put(server.url(&format!("/api/v1/datasets/{id}/share")))
        .send()
        .await
        .expect("share");
    assert_eq!(r.json::<Value>().await.expect("JSON")["shared"], true);
    let list: Value = client
        .get(server.url("/api/v1/datasets"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(list["datasets"][0]["shared"], true);
    let r = client
        .delete(server.url(&format!("/api/v1/datasets/{id}/share")))
        .send()
        .await
        .expect("unshare");
    assert_eq!(r.json::<Value>().await.expect("JSON")["shared"], false);

    // Bad input: each a problem, nothing stored.
    let staging = server.dir.path().join("lake/_kiln/service/staging");
    let r = upload(&client, &server, "big.csv", vec![b'a'; 5000], "big", None).await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, Some("file")).await;
    let r = upload(
        &client,
        &server,
        "ragged.csv",
        b"a,b\n1,2\n3,4,5\n6,7\n".to_vec(),
        "ragged",
        None,
    )
    .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("file")).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("line 3") || d.contains("fields")),
        "{body}"
    );
    let r = upload(
        &client,
        &server,
        "broken.parquet",
        b"PAR1 this is not parquet PAR1".to_vec(),
        "broken",
        None,
    )
    .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("file")).await;
    let r = upload(&client, &server, "x.xlsx", b"a,b\n".to_vec(), "sheet", None).await;
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("file")).await;
    let r = upload(
        &client,
        &server,
        "ok.csv",
        b"a\n1\n".to_vec(),
        "../../etc/passwd",
        None,
    )
    .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("name")).await;
    let r = client
        .post(server.url("/api/v1/datasets"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("not multipart");
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, None).await;
    let form = reqwest::multipart::Form::new().text("name", "nofile");
    let r = client
        .post(server.url("/api/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .expect("no file");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("file")).await;
    assert!(
        files_under(&staging).is_empty(),
        "staging left: {:?}",
        files_under(&staging)
    );
    let list: Value = client
        .get(server.url("/api/v1/datasets"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(list["datasets"].as_array().map(Vec::len), Some(1), "{list}");

    let r = client
        .get(server.url(&format!("/api/v1/datasets/{id}/sample?n=0")))
        .send()
        .await
        .expect("n=0");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("n")).await;
    let r = client
        .get(server.url(&format!("/api/v1/datasets/{id}/sample?n=abc")))
        .send()
        .await
        .expect("n=abc");
    problem(r, StatusCode::BAD_REQUEST, Some("query")).await;
    let r = client
        .get(server.url("/api/v1/datasets?scope=everything"))
        .send()
        .await
        .expect("scope");
    problem(r, StatusCode::BAD_REQUEST, Some("query")).await;

    // Delete: gone from the listing and the lake.
    let r = client
        .delete(server.url(&format!("/api/v1/datasets/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client
        .get(server.url(&format!("/api/v1/datasets/{id}")))
        .send()
        .await
        .expect("get deleted");
    problem(r, StatusCode::NOT_FOUND, None).await;
    assert!(files_under(&server.dir.path().join("lake/_kiln/service/datasets")).is_empty());
    let audit: Value = client
        .get(server.url("/api/v1/audit"))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("JSON");
    let actions: Vec<&str> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for action in [
        "dataset.upload",
        "dataset.share",
        "dataset.unshare",
        "dataset.delete",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_jobs_run_stream_events_cancel_time_out_and_refuse_bad_input() {
    let server = TestServer::start(None, |_| {}).await;
    let client = http();
    let submit = |body: Value| {
        let client = client.clone();
        let url = server.url("/api/v1/jobs");
        async move { client.post(url).json(&body).send().await.expect("submit") }
    };

    let r = submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 5000, "seed": 3, "name": "gen"}})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let job = wait_for_job(&client, &server, &id, None).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["type"], "generate");
    let out = job["outputs"][0]["dataset_id"]
        .as_str()
        .expect("output")
        .to_string();
    let dataset: Value = client
        .get(server.url(&format!("/api/v1/datasets/{out}")))
        .send()
        .await
        .expect("output")
        .json()
        .await
        .expect("JSON");
    assert_eq!(dataset["rows"], 5000, "{dataset}");
    assert_eq!(dataset["source_job"], id.as_str());
    assert_eq!(dataset["name"], "gen");
    let parquet = client
        .get(server.url(&format!("/api/v1/datasets/{out}/content")))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            parquet.clone(),
        )
        .expect("a Parquet file")
        .build()
        .expect("reader");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 5000);
    // The download is a valid Parquet upload again.
    let r = upload(
        &client,
        &server,
        "again.parquet",
        parquet.to_vec(),
        "again",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.expect("JSON");
    assert_eq!(again["rows"], 5000);
    assert_eq!(again["format"], "parquet");
    assert_eq!(again["schema"], dataset["schema"]);

    // The same rules and seed give the same rows as `kiln generate` would.
    let events: Value = client
        .get(server.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("JSON");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["queued", "started", "result", "succeeded"]);
    let stream = client
        .get(server.url(&format!("/api/v1/jobs/{id}/events/stream")))
        .send()
        .await
        .expect("SSE");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(20), stream.text())
        .await
        .expect("the stream ends")
        .expect("text");
    assert!(text.contains("event: succeeded"), "{text}");
    // The job's progress, as the web UI's job page follows it.
    assert!(
        text.contains("event: progress\ndata: {\"stage\":"),
        "{text}"
    );

    // A long job cancelled stops within 5 s; one over its limit times out.
    let r =
        submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 90_000_000}})).await;
    let long = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let started = Instant::now();
    loop {
        let s: Value = client
            .get(server.url(&format!("/api/v1/jobs/{long}/status")))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        if s["state"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never started: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    let r = client
        .delete(server.url(&format!("/api/v1/jobs/{long}")))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job = wait_for_job(&client, &server, &long, None).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert!(job["outputs"].as_array().is_some_and(Vec::is_empty));
    assert!(
        !server
            .dir
            .path()
            .join(format!("lake/_kiln/service/datasets/{long}-0"))
            .exists()
    );
    let r = client
        .post(server.url(&format!("/api/v1/jobs/{long}/cancel")))
        .send()
        .await
        .expect("cancel again");
    problem(r, StatusCode::CONFLICT, None).await;
    let r = client
        .delete(server.url(&format!("/api/v1/jobs/{long}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 90_000_000}, "time_limit_seconds": 1})).await;
    let slow = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let job = wait_for_job(&client, &server, &slow, None).await;
    assert_eq!(job["state"], "timed_out", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("time limit")),
        "{job}"
    );

    // Bad submissions: a clear problem each, quickly, nothing queued.
    let before: Value = client
        .get(server.url("/api/v1/jobs"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let r = submit(json!({"type": "generat", "params": {}})).await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("type")).await;
    assert!(
        body["fix"]
            .as_str()
            .is_some_and(|f| f.contains("did you mean 'generate'")),
        "{body}"
    );
    let r = submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 0}})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.rows")).await;
    let r = submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 10, "rowz": 1}}))
        .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params")).await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("rowz")),
        "{body}"
    );
    let r =
        submit(json!({"type": "generate", "params": {"rules": "columns: [", "rows": 10}})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.rules")).await;
    let r = submit(json!({"type": "pipeline", "params": {"config": "name: x\nprocessing_tasks: [{name: a, classname: Nope}]\n"}})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.config")).await;
    let r = submit(json!({"type": "generate", "params": {"rules": RULES, "rows": 10}, "time_limit_seconds": 0})).await;
    problem(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("time_limit_seconds"),
    )
    .await;
    let r = client
        .post(server.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .expect("malformed");
    problem(r, StatusCode::BAD_REQUEST, None).await;
    let r = client
        .post(server.url("/api/v1/jobs"))
        .body("type=generate")
        .send()
        .await
        .expect("form");
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("Content-Type")).await;
    let started = Instant::now();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = client
        .post(server.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("deep JSON");
    problem(r, StatusCode::BAD_REQUEST, None).await;
    let deep_yaml = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = submit(json!({"type": "generate", "params": {"rules": deep_yaml, "rows": 10}})).await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.rules")).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nests more than")),
        "{body}"
    );
    let deep_config = format!(
        "{}x: 1\n",
        (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>()
    );
    let r = submit(json!({"type": "pipeline", "params": {"config": deep_config}})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.config")).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "deep documents took {:?}",
        started.elapsed()
    );
    let r = client
        .post(server.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .expect("huge body");
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, None).await;
    let after: Value = client
        .get(server.url("/api/v1/jobs"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        before["jobs"].as_array().map(Vec::len),
        after["jobs"].as_array().map(Vec::len)
    );
    for path in [
        "/api/v1/jobs/does-not-exist",
        "/api/v1/jobs/does-not-exist/status",
        "/api/v1/jobs/does-not-exist/events",
        "/api/v1/jobs/does-not-exist/events/stream",
    ] {
        let r = client.get(server.url(path)).send().await.expect("404");
        problem(r, StatusCode::NOT_FOUND, None).await;
    }
    let r = client
        .get(server.url("/api/v1/jobs?state=bogus"))
        .send()
        .await
        .expect("bad state");
    problem(r, StatusCode::BAD_REQUEST, Some("query")).await;
    let r = client
        .get(server.url("/api/v1/jobs?limit=0"))
        .send()
        .await
        .expect("bad limit");
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("limit")).await;
    let r = client
        .post(server.url("/api/v1/jobs/does-not-exist/cancel"))
        .send()
        .await
        .expect("cancel");
    problem(r, StatusCode::NOT_FOUND, None).await;
    let r = client
        .delete(server.url("/api/v1/jobs/does-not-exist"))
        .send()
        .await
        .expect("delete");
    problem(r, StatusCode::NOT_FOUND, None).await;
    // Submissions beyond the per-user limit wait their turn: 429.
    let limited = TestServer::start(None, |o| {
        o.limits.max_open_jobs_per_user = 1;
        o.workers.workers = 0;
    })
    .await;
    let body = json!({"type": "generate", "params": {"rules": RULES, "rows": 10}});
    let r = client
        .post(limited.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .expect("first");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = client
        .post(limited.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .expect("second");
    let retry = r.headers().get("retry-after").is_some();
    problem(r, StatusCode::TOO_MANY_REQUESTS, None).await;
    assert!(retry, "429 without Retry-After");
    limited.stop().await;
    server.stop().await;
}

/// An OIDC issuer on loopback: discovery, a JWKS that can rotate, tokens.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    rsa: EncodingKey,
    rsa_public_pem: String,
}

fn rsa_jwk(key: &rsa::RsaPrivateKey, kid: &str) -> Value {
    use rsa::traits::PublicKeyParts;
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": B64.encode(key.n().to_bytes_be()), "e": B64.encode(key.e().to_bytes_be())})
}

fn ec_key(kid: &str) -> (EncodingKey, Value) {
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": B64.encode(point.x().expect("x")), "y": B64.encode(point.y().expect("y"))});
    let der = key.to_pkcs8_der().expect("pkcs8");
    (EncodingKey::from_ec_der(der.as_bytes()), jwk)
}

impl Issuer {
    async fn start() -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
        let der = key.to_pkcs1_der().expect("der");
        let rsa = EncodingKey::from_rsa_der(der.as_bytes());
        let rsa_public_pem = key
            .to_public_key()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("pem");
        let jwks = Arc::new(Mutex::new(vec![rsa_jwk(&key, "k1")]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/realms/test",
            listener.local_addr().expect("address")
        );
        let discovery = json!({"issuer": url,
            "jwks_uri": format!("{url}/protocol/openid-connect/certs"),
            "authorization_endpoint": format!("{url}/protocol/openid-connect/auth"),
            "token_endpoint": format!("{url}/protocol/openid-connect/token")});
        let keys = Arc::clone(&jwks);
        // The browser sign-in: the user "alice" (role user) signs in at
        // once; a code is good for one exchange with its PKCE verifier.
        let codes: Arc<Mutex<std::collections::HashMap<String, (String, String)>>> = Arc::default();
        let (authorize_codes, token_codes) = (Arc::clone(&codes), Arc::clone(&codes));
        let signer = EncodingKey::from_rsa_der(der.as_bytes());
        let token_issuer = url.clone();
        let app = axum::Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/realms/test/protocol/openid-connect/certs",
                axum::routing::get(move || {
                    let keys = keys.lock().expect("keys").clone();
                    async move { axum::Json(json!({"keys": keys})) }
                }),
            )
            .route(
                "/realms/test/protocol/openid-connect/auth",
                axum::routing::get(
                    move |axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, String>,
                    >| {
                        let codes = Arc::clone(&authorize_codes);
                        async move {
                            assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
                            assert_eq!(q.get("client_id").map(String::as_str), Some("kiln"));
                            let code = format!("code-{}", codes.lock().expect("codes").len());
                            codes.lock().expect("codes").insert(
                                code.clone(),
                                (q["code_challenge"].clone(), q["redirect_uri"].clone()),
                            );
                            let mut back = url::Url::parse(&q["redirect_uri"]).expect("redirect_uri");
                            back.query_pairs_mut()
                                .append_pair("code", &code)
                                .append_pair("state", &q["state"]);
                            axum::response::Redirect::to(back.as_str())
                        }
                    },
                ),
            )
            .route(
                "/realms/test/protocol/openid-connect/token",
                axum::routing::post(
                    move |axum::Form(f): axum::Form<std::collections::HashMap<String, String>>| {
                        let codes = Arc::clone(&token_codes);
                        let signer = signer.clone();
                        let issuer = token_issuer.clone();
                        async move {
                            use sha2::Digest;
                            let now = jsonwebtoken::get_current_timestamp();
                            let claims = json!({"iss": issuer, "aud": "kiln", "sub": "alice", "exp": now + 600,
                                "iat": now, "realm_access": {"roles": ["user"]}});
                            let mut header = Header::new(Algorithm::RS256);
                            header.kid = Some("k1".into());
                            let token = jsonwebtoken::encode(&header, &claims, &signer).expect("sign");
                            // A refresh token is good until used (rotated).
                            if f.get("grant_type").map(String::as_str) == Some("refresh_token") {
                                let known = codes.lock().expect("codes").remove(&f["refresh_token"]);
                                if known.is_none() {
                                    return (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                                }
                                let next = format!("refresh-{now}-{}", f["refresh_token"].len());
                                codes.lock().expect("codes").insert(next.clone(), (String::new(), String::new()));
                                return (axum::http::StatusCode::OK, axum::Json(json!({"access_token": token,
                                    "expires_in": 600, "refresh_token": next, "refresh_expires_in": 1800})));
                            }
                            let known = codes.lock().expect("codes").remove(&f["code"]);
                            let Some((challenge, redirect_uri)) = known else {
                                return (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                            };
                            let proof = B64.encode(sha2::Sha256::digest(f["code_verifier"].as_bytes()));
                            if proof != challenge || f["redirect_uri"] != redirect_uri
                                || f["grant_type"] != "authorization_code"
                            {
                                return (axum::http::StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                            }
                            codes.lock().expect("codes").insert("refresh-first".into(), (String::new(), String::new()));
                            (axum::http::StatusCode::OK, axum::Json(json!({"access_token": token, "token_type": "Bearer",
                                "expires_in": 600, "refresh_token": "refresh-first", "refresh_expires_in": 1800})))
                        }
                    },
                ),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            url,
            jwks,
            rsa,
            rsa_public_pem,
        }
    }

    fn claims(&self, sub: &str, roles: &[&str]) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"iss": self.url, "aud": "kiln", "sub": sub, "exp": now + 600, "iat": now,
            "realm_access": {"roles": roles}})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, &self.rsa).expect("sign")
    }

    fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.sign(&self.claims(sub, roles))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_checked_the_way_an_attacker_would_try_them() {
    let issuer = Issuer::start().await;
    let mut settings = OidcSettings::new(&issuer.url, "kiln");
    settings.jwks_refresh_interval = Duration::ZERO;
    let server = TestServer::start(Some(settings), |_| {}).await;
    let client = http();
    let list = |token: Option<String>| {
        let client = client.clone();
        let url = server.url("/api/v1/jobs");
        async move {
            let mut r = client.get(url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.expect("request")
        }
    };
    let alice = issuer.token("alice", &["user"]);
    assert_eq!(list(Some(alice.clone())).await.status(), StatusCode::OK);
    // The pages and metrics of `kiln serve` take the same tokens.
    for path in ["/", "/metrics", "/models"] {
        let page = |token: Option<&str>| {
            let mut r = client.get(server.url(path));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let refused = page(None).await.expect("request");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
        let shown = page(Some(&alice)).await.expect("request");
        assert_eq!(shown.status(), StatusCode::OK, "{path}");
        if path == "/metrics" {
            let text = shown.text().await.expect("body");
            assert!(
                text.lines().any(|l| l == "kiln_service_queue_depth 0"),
                "{text}"
            );
        }
    }

    let now = jsonwebtoken::get_current_timestamp();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = issuer.claims("alice", &["user"]);
        change(&mut c);
        issuer.sign(&c)
    };
    let mut attacks: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(with(&|c| c["exp"] = json!(now - 3600)))),
        (
            "not yet valid",
            Some(with(&|c| c["nbf"] = json!(now + 3600))),
        ),
        (
            "wrong issuer",
            Some(with(&|c| {
                c["iss"] = json!("http://evil.example/realms/test")
            })),
        ),
        (
            "wrong audience",
            Some(with(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "no exp",
            Some(with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            })),
        ),
        ("garbage", Some("not.a.token".into())),
    ];
    // A valid token with its payload swapped: the signature no longer matches.
    let parts: Vec<&str> = alice.split('.').collect();
    let admin_payload =
        B64.encode(serde_json::to_vec(&issuer.claims("alice", &["admin"])).expect("JSON"));
    attacks.push((
        "bad signature",
        Some(format!("{}.{admin_payload}.{}", parts[0], parts[2])),
    ));
    // alg none.
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    attacks.push(("alg none", Some(format!("{none_header}.{admin_payload}."))));
    // HS256 "signed" with the RSA public key as the secret.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &hs,
        &issuer.claims("alice", &["admin"]),
        &EncodingKey::from_secret(issuer.rsa_public_pem.as_bytes()),
    )
    .expect("HS256");
    attacks.push(("HS256 with the public key", Some(forged)));
    // A key the issuer never published.
    let (rogue, _) = ec_key("rogue");
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("rogue".into());
    attacks.push((
        "unknown kid",
        Some(
            jsonwebtoken::encode(&es, &issuer.claims("alice", &["admin"]), &rogue).expect("ES256"),
        ),
    ));
    for (what, token) in attacks {
        let r = list(token.clone()).await;
        let body = problem(r, StatusCode::UNAUTHORIZED, None).await;
        let text = body.to_string();
        if let Some(t) = &token {
            for part in t.split('.').filter(|p| p.len() > 8) {
                assert!(
                    !text.contains(part),
                    "{what}: the body repeats the token: {text}"
                );
            }
        }
        assert!(
            !text.contains("alice"),
            "{what}: the body leaks the subject: {text}"
        );
    }

    // Every endpoint but the probes and the document refuses a missing token.
    for (method, path) in [
        ("GET", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets"),
        ("GET", "/api/v1/datasets/x"),
        ("DELETE", "/api/v1/datasets/x"),
        ("GET", "/api/v1/datasets/x/schema"),
        ("GET", "/api/v1/datasets/x/sample"),
        ("GET", "/api/v1/datasets/x/content"),
        ("PUT", "/api/v1/datasets/x/share"),
        ("DELETE", "/api/v1/datasets/x/share"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/metrics"),
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/x"),
        ("DELETE", "/api/v1/jobs/x"),
        ("GET", "/api/v1/jobs/x/status"),
        ("POST", "/api/v1/jobs/x/cancel"),
        ("GET", "/api/v1/jobs/x/events"),
        ("GET", "/api/v1/jobs/x/events/stream"),
        ("GET", "/api/v1/audit"),
    ] {
        let r = client
            .request(method.parse().expect("method"), server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            r.headers().get("www-authenticate").is_some(),
            "{method} {path}"
        );
    }
    for path in ["/health", "/ready", "/api/v1/openapi.json"] {
        assert_eq!(
            client
                .get(server.url(path))
                .send()
                .await
                .expect("open")
                .status(),
            StatusCode::OK,
            "{path}"
        );
    }

    // Key rotation: a token signed with a newly published key is accepted
    // after one JWKS re-fetch.
    let (rotated, jwk) = ec_key("e2");
    let mut es = Header::new(Algorithm::ES256);
    es.kid = Some("e2".into());
    let token =
        jsonwebtoken::encode(&es, &issuer.claims("bob", &["user"]), &rotated).expect("ES256");
    problem(
        list(Some(token.clone())).await,
        StatusCode::UNAUTHORIZED,
        None,
    )
    .await;
    issuer.jwks.lock().expect("keys").push(jwk);
    assert_eq!(list(Some(token)).await.status(), StatusCode::OK);

    // Roles and ownership.
    let viewer = issuer.token("victor", &["viewer"]);
    let bob = issuer.token("bob", &["user"]);
    let admin = issuer.token("ada", &["admin"]);
    let nobody = issuer.token("nora", &[]);
    problem(list(Some(nobody)).await, StatusCode::FORBIDDEN, None).await;
    let r = client
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&viewer)
        .json(&json!({"type": "generate", "params": {"rules": RULES, "rows": 10}}))
        .send()
        .await
        .expect("submit");
    problem(r, StatusCode::FORBIDDEN, None).await;
    let r = upload(
        &client,
        &server,
        "a.csv",
        b"a\n1\n".to_vec(),
        "alices",
        Some(&alice),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    for path in [
        format!("/api/v1/datasets/{id}"),
        format!("/api/v1/datasets/{id}/content"),
        format!("/api/v1/datasets/{id}/sample"),
    ] {
        let r = client
            .get(server.url(&path))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("bob reads");
        let body = problem(r, StatusCode::NOT_FOUND, None).await;
        assert!(!body.to_string().contains("alices"), "{body}");
    }
    let r = client
        .delete(server.url(&format!("/api/v1/datasets/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("bob deletes");
    problem(r, StatusCode::NOT_FOUND, None).await;
    let r = client
        .put(server.url(&format!("/api/v1/datasets/{id}/share")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("share");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(server.url(&format!("/api/v1/datasets/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("bob reads shared");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .delete(server.url(&format!("/api/v1/datasets/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("bob deletes shared");
    problem(r, StatusCode::FORBIDDEN, None).await;
    let r = client
        .get(server.url("/api/v1/datasets?scope=all"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("bob lists all");
    problem(r, StatusCode::FORBIDDEN, None).await;
    let r = client
        .get(server.url("/api/v1/audit"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("audit");
    let audit: Value = r.json().await.expect("JSON");
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|a| a["subject"] == "alice" && a["action"] == "dataset.share")
    );
    let r = client
        .delete(server.url(&format!("/api/v1/datasets/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("admin deletes");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    server.stop().await;
}

#[test]
fn openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = kiln_service::api::openapi_document();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "service/openapi.json is stale: run `cargo run -p kiln-cli -- openapi > service/openapi.json`"
    );
    let doc: Value = serde_json::from_str(&generated).expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    // Every operation documents its success and at least one error, with an
    // example or a schema that has one.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success response"
            );
            if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
                assert!(
                    responses.keys().any(|s| s.starts_with('4')),
                    "{method} {path}: no error response"
                );
            }
        }
    }
}

/// A fresh database on the test PostgreSQL server (`KILN_TEST_POSTGRES_URL`,
/// which `.ci/postgres start` prints), or None when there is none and it
/// is not required.
pub async fn fresh_postgres() -> Option<String> {
    let Ok(base) = std::env::var("KILN_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("KILN_REQUIRE_POSTGRES_TESTS").is_none(),
            "KILN_REQUIRE_POSTGRES_TESTS is set but KILN_TEST_POSTGRES_URL is not"
        );
        eprintln!(
            "skipped the PostgreSQL backend: set KILN_TEST_POSTGRES_URL (.ci/postgres start DIR)"
        );
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL server answers");
    tokio::spawn(connection);
    let name = format!("kiln_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("a database in the URL");
    Some(format!("{prefix}/{name}"))
}

fn queued_job(id: &str, owner: &str, max_attempts: i64) -> kiln_service::store::JobRecord {
    kiln_service::store::JobRecord {
        id: id.into(),
        owner: owner.into(),
        job_type: "generate".into(),
        params: json!({}),
        state: kiln_service::store::JobState::Queued,
        attempts: 0,
        max_attempts,
        time_limit_ms: 60_000,
        cancel_requested: false,
        progress: None,
        error: None,
        outputs: Vec::new(),
        created_ms: kiln_service::store::now_ms(),
        started_ms: None,
        finished_ms: None,
    }
}

async fn queue_semantics(db_url: &str) {
    use kiln_service::store::{DatasetRecord, JobState, Outcome, Progress, Store};
    let store = Store::new(kiln_service::db::open(db_url).await.expect("database"));
    // Exclusive leases under concurrent leasers.
    for i in 0..30 {
        store
            .insert_job(&queued_job(&format!("j{i:02}"), &format!("u{}", i % 3), 3))
            .await
            .expect("insert");
    }
    let mut leasers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        leasers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(lease) = store
                .lease(&format!("w{w}"), 60_000, 100)
                .await
                .expect("lease")
            {
                got.push(lease.job.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for l in leasers {
        all.extend(l.await.expect("leaser"));
    }
    all.sort();
    let expected: Vec<String> = (0..30).map(|i| format!("j{i:02}")).collect();
    assert_eq!(all, expected, "every job leased exactly once");

    // An expired lease is taken over; the old worker can no longer finish.
    store
        .insert_job(&queued_job("lost", "solo", 3))
        .await
        .expect("insert");
    let first = store
        .lease("dead-worker", 100, 100)
        .await
        .expect("lease")
        .expect("a job");
    assert_eq!(first.job.id, "lost");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = store
        .lease("live-worker", 60_000, 100)
        .await
        .expect("lease")
        .expect("taken over");
    assert_eq!((second.job.id.as_str(), second.job.attempts), ("lost", 2));
    assert_eq!(
        store
            .heartbeat(&first, 60_000, &Progress::default())
            .await
            .expect("heartbeat"),
        None
    );
    let output = DatasetRecord {
        id: "lost-0".into(),
        name: "out".into(),
        owner: "solo".into(),
        format: kiln_engine::io::FileFormat::Parquet,
        uri: "file:///tmp/none/".into(),
        rows: 1,
        bytes: 1,
        schema: Vec::new(),
        shared: false,
        source_job: Some("lost".into()),
        created_ms: 0,
    };
    assert!(
        !store
            .finish(
                &first,
                Outcome::Succeeded {
                    outputs: vec![output.clone()]
                },
                &Progress::default()
            )
            .await
            .expect("finish")
    );
    assert!(
        store
            .finish(
                &second,
                Outcome::Succeeded {
                    outputs: vec![output.clone()]
                },
                &Progress::default()
            )
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish(
                &second,
                Outcome::Succeeded {
                    outputs: vec![output]
                },
                &Progress::default()
            )
            .await
            .expect("finish twice")
    );
    let job = store.job("lost").await.expect("job").expect("exists");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.outputs.len(), 1);
    assert!(store.dataset("lost-0").await.expect("dataset").is_some());

    // Out of attempts: failed by the sweep, not leased again.
    store
        .insert_job(&queued_job("fragile", "solo", 1))
        .await
        .expect("insert");
    store
        .lease("dead", 50, 100)
        .await
        .expect("lease")
        .expect("a job");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        store
            .lease("other", 60_000, 100)
            .await
            .expect("lease")
            .is_none()
    );
    assert_eq!(store.sweep().await.expect("sweep"), 1);
    let job = store.job("fragile").await.expect("job").expect("exists");
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error.as_deref().is_some_and(|e| e.contains("lost")),
        "{job:?}"
    );

    // Cancel: queued at once, running at the next heartbeat.
    store
        .insert_job(&queued_job("c1", "solo", 3))
        .await
        .expect("insert");
    store
        .insert_job(&queued_job("c2", "solo", 3))
        .await
        .expect("insert");
    assert_eq!(
        store.request_cancel("c2").await.expect("cancel"),
        Some(JobState::Cancelled)
    );
    let running = store
        .lease("w", 60_000, 100)
        .await
        .expect("lease")
        .expect("c1");
    assert_eq!(running.job.id, "c1");
    assert_eq!(
        store.request_cancel("c1").await.expect("cancel"),
        Some(JobState::Running)
    );
    assert_eq!(
        store
            .heartbeat(&running, 60_000, &Progress::default())
            .await
            .expect("heartbeat"),
        Some(true)
    );
    assert!(
        store
            .finish(&running, Outcome::Cancelled, &Progress::default())
            .await
            .expect("finish")
    );

    // Retry with backoff: queued again, not before its time.
    store
        .insert_job(&queued_job("flaky", "solo", 3))
        .await
        .expect("insert");
    let lease = store
        .lease("w", 60_000, 100)
        .await
        .expect("lease")
        .expect("flaky");
    let later = kiln_service::store::now_ms() + 300;
    assert!(
        store
            .finish(
                &lease,
                Outcome::RetryAt {
                    not_before_ms: later,
                    error: "io".into()
                },
                &Progress::default()
            )
            .await
            .expect("retry")
    );
    assert!(
        store
            .lease("w", 60_000, 100)
            .await
            .expect("lease")
            .is_none(),
        "leased before its backoff"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store
            .lease("w", 60_000, 100)
            .await
            .expect("lease")
            .expect("again")
            .job
            .attempts,
        2
    );

    // One user's running jobs cap their own leases, not others'.
    store
        .insert_job(&queued_job("a1", "ann", 3))
        .await
        .expect("insert");
    store
        .insert_job(&queued_job("a2", "ann", 3))
        .await
        .expect("insert");
    store
        .insert_job(&queued_job("b1", "ben", 3))
        .await
        .expect("insert");
    let first = store
        .lease("w", 60_000, 1)
        .await
        .expect("lease")
        .expect("a1");
    assert_eq!(first.job.id, "a1");
    let next = store
        .lease("w", 60_000, 1)
        .await
        .expect("lease")
        .expect("b1");
    assert_eq!(next.job.id, "b1", "ann is at her limit");
    assert!(store.lease("w", 60_000, 1).await.expect("lease").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_leases_once_takes_over_expired_leases_and_guards_outputs_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    queue_semantics(&format!("sqlite:{}/queue.sqlite", dir.path().display())).await;
    if let Some(url) = fresh_postgres().await {
        queue_semantics(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_jobs_train_in_their_own_lake_and_their_models_are_listed() {
    let server = TestServer::start(None, |_| {}).await;
    let client = http();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/generators/indoor_outdoor.yaml");
    let config = format!(
        "name: tiny
storage: {{root: lake/}}
processing_tasks:
  - name: gen
    classname: RuleBasedGenerator
    initialization_parameters: {{rules: {rules}, rows: 20000, seed: 1}}
    transformation_parameters: {{path_output: raw/training/}}
  - name: extract
    depends_on: [gen]
    classname: ExtractorTraining
    initialization_parameters: {{path_raw_tables: raw/training/, format: parquet}}
    transformation_parameters: {{mode: save, path_df_extract: extraction/training/}}
  - name: features
    depends_on: [extract]
    classname: FeaturePipeline
    initialization_parameters:
      input: extraction/training/
      label_cols: [label_indoor]
      stages:
        - classname: VectorAssembler
          params: {{outputCol: features, handleInvalid: keep, inputCols: [gps_accuracy, rsrp, light_lux, wifi_rssi]}}
    transformation_parameters: {{mode: fit_transform, path_pipeline_model: models/features/, path_df_features: features/training/}}
  - name: train
    depends_on: [features]
    classname: ModelTraining
    initialization_parameters:
      input: features/training/
      path_pipeline_model: models/features/
      test_condition: \"sample_id % 5 = 0\"
      label_col: label_indoor
      features_col: features
      seed: 42
      estimators:
        - classname: GBTClassifier
          params: {{maxIter: 5, maxDepth: 3}}
    transformation_parameters: {{path_model_repository: models/tiny/}}
",
        rules = rules.display()
    );
    let r = client
        .post(server.url("/api/v1/jobs"))
        .json(&json!({"type": "pipeline", "params": {"config": config}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let id = r.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let job = wait_for_job(&client, &server, &id, None).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["stage"], "task train succeeded", "{job}");
    let events: Value = client
        .get(server.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("JSON");
    let result = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "result")
        .expect("a result event")
        .clone();
    let tasks: Vec<&str> = result["data"]["detail"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["task"].as_str())
        .collect();
    assert_eq!(tasks, ["gen", "extract", "features", "train"]);
    // The run wrote into the job's own directory of the lake.
    let job_lake = server
        .dir
        .path()
        .join(format!("lake/_kiln/service/jobs/{id}"));
    assert!(job_lake.join("models/tiny/LATEST").exists());

    let models: Value = client
        .get(server.url("/api/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("JSON");
    let repos = models["repositories"].as_array().expect("repositories");
    let tiny = repos
        .iter()
        .find(|r| {
            r["uri"]
                .as_str()
                .is_some_and(|u| u.ends_with("models/tiny/"))
        })
        .expect("the trained repository");
    assert_eq!(tiny["latest"], 1);
    let v1 = &tiny["versions"][0];
    assert_eq!(v1["kind"], "classifier");
    assert_eq!(v1["classname"], "GBTClassifier");
    let auc = v1["metrics"]["areaUnderROC"].as_f64().expect("AUC");
    assert!(auc > 0.5 && auc <= 1.0, "{v1}");
    assert!(
        repos
            .iter()
            .any(|r| r["versions"][0]["kind"] == "feature-pipeline"),
        "{models}"
    );
    server.stop().await;
}

/// The result detail a job reported.
async fn job_result(client: &reqwest::Client, server: &TestServer, id: &str) -> Value {
    let events: Value = client
        .get(server.url(&format!("/api/v1/jobs/{id}/events")))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("JSON");
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "result")
        .map(|e| e["data"]["detail"].clone())
        .unwrap_or(Value::Null)
}

/// The synthesis job types on the service: a generated dataset is
/// reproduced with both models, sampled under a condition, fused with its
/// source and evaluated; other users' private datasets and bad parameters
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthesis_jobs_reproduce_fuse_and_evaluate_datasets() {
    let server = TestServer::start(None, |_| {}).await;
    let client = http();
    let submit = |body: Value| {
        let client = client.clone();
        let url = server.url("/api/v1/jobs");
        async move { client.post(url).json(&body).send().await.expect("submit") }
    };
    let run = |body: Value| {
        let client = client.clone();
        let server = &server;
        async move {
            let r = client
                .post(server.url("/api/v1/jobs"))
                .json(&body)
                .send()
                .await
                .expect("submit");
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{body}");
            let id = r.json::<Value>().await.expect("JSON")["id"]
                .as_str()
                .expect("id")
                .to_string();
            let job = wait_for_job(&client, server, &id, None).await;
            (id, job)
        }
    };
    let (_, job) = run(json!({"type": "generate", "params": {"rules": RULES, "rows": 4000, "seed": 3, "name": "real"}})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let real = job["outputs"][0]["dataset_id"]
        .as_str()
        .expect("output")
        .to_string();

    for model in ["gaussian_copula", "chow_liu"] {
        let (train, job) = run(json!({"type": "reproduce-train", "params": {"dataset": real, "model": model, "seed": 1, "types": {"sample_id": "id"}}})).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let detail = job_result(&client, &server, &train).await;
        assert_eq!(detail["kind"], model, "{detail}");
        assert_eq!(detail["rows"], 4000, "{detail}");

        let (_, job) = run(json!({"type": "reproduce-generate", "params": {"model_job": train, "rows": 3000, "seed": 2, "where": "speed > 10"}})).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let sampled = job["outputs"][0]["dataset_id"]
            .as_str()
            .expect("output")
            .to_string();
        let dataset: Value = client
            .get(server.url(&format!("/api/v1/datasets/{sampled}/sample?n=3000")))
            .send()
            .await
            .expect("sample")
            .json()
            .await
            .expect("JSON");
        let rows = dataset["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3000, "{model}");
        assert!(
            rows.iter()
                .all(|r| r["speed"].as_f64().is_some_and(|s| s > 10.0)),
            "{model}"
        );

        let (eval, job) = run(json!({"type": "evaluate", "params": {"real": real, "synthetic": sampled, "types": {"sample_id": "id"}}})).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let detail = job_result(&client, &server, &eval).await;
        let overall = detail["quality"]["overall"].as_f64().expect("score");
        assert!((0.0..=1.0).contains(&overall), "{detail}");
        let report = detail["report"].as_str().expect("report uri");
        assert!(report.ends_with("/report.json"), "{report}");

        let (_, job) = run(json!({"type": "fuse", "params": {"inputs": [{"dataset": real, "name": "real"}, {"dataset": sampled, "name": "synthetic"}], "strategy": "union"}})).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let fused = job["outputs"][0]["dataset_id"].as_str().expect("output");
        let d: Value = client
            .get(server.url(&format!("/api/v1/datasets/{fused}")))
            .send()
            .await
            .expect("dataset")
            .json()
            .await
            .expect("JSON");
        assert_eq!(d["rows"], 7000, "{d}");
        assert!(d["schema"].to_string().contains("source_dataset"), "{d}");
    }

    // Bad parameters are refused at submission, naming the field.
    let r = submit(
        json!({"type": "fuse", "params": {"inputs": [{"dataset": real}], "strategy": "join"}}),
    )
    .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.strategy")).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("needs on"),
        "{body}"
    );
    let r = submit(json!({"type": "reproduce-generate", "params": {"model_job": "x", "rows": 0}}))
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, Some("params.rows")).await;
    // An unknown (or someone else's) dataset fails the job with a clear error.
    let (_, job) =
        run(json!({"type": "evaluate", "params": {"real": real, "synthetic": "no-such-dataset"}}))
            .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("params.synthetic: dataset 'no-such-dataset' not found"),
        "{job}"
    );
    server.stop().await;
}

/// A browser's requests: no redirects followed, a cookie carried by hand.
struct Browser {
    client: reqwest::Client,
    cookie: Option<String>,
    origin: String,
}

impl Browser {
    fn new(origin: &str) -> Self {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            cookie: None,
            origin: origin.to_string(),
        }
    }

    fn with_cookie(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let r = r.header("accept", "text/html");
        match &self.cookie {
            Some(c) => r.header("cookie", c),
            None => r,
        }
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.with_cookie(self.client.get(url))
            .send()
            .await
            .expect("GET")
    }

    /// A form post from a page of the server (its `Origin`).
    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.with_cookie(self.client.post(url))
            .header("origin", &self.origin)
            .form(form)
            .send()
            .await
            .expect("POST")
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The web UI of `kiln serve` as a researcher's browser uses it: sent to
/// sign in, the OIDC code flow with PKCE, the cookie; a dataset uploaded
/// and a job started from their forms (bad input answered on the form),
/// the job followed to its result and the result previewed; cross-site
/// posts refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researchers_sign_in_upload_and_run_jobs_from_the_pages() {
    let issuer = Issuer::start().await;
    let server = TestServer::start(Some(OidcSettings::new(&issuer.url, "kiln")), |_| {}).await;
    let mut browser = Browser::new(&server.base);

    // Not signed in: to /login and back.
    let r = browser.get(&server.url("/jobs")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?next=%2Fjobs");
    let r = browser.get(&server.url("/login?next=%2Fjobs")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The sign-in in progress travels in its own cookie (any replica can
    // finish it).
    let login_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        login_cookie.starts_with("kiln_login=") && login_cookie.contains("HttpOnly"),
        "{login_cookie}"
    );
    let to_issuer = location(&r);
    assert!(to_issuer.starts_with(&format!("{}/protocol/openid-connect/auth?", issuer.url)));
    assert!(to_issuer.contains("code_challenge="), "{to_issuer}");
    let r = browser.get(&to_issuer).await;
    let callback = location(&r);
    assert!(
        callback.starts_with(&server.url("/auth/callback?code=")),
        "{callback}"
    );
    // Without the sign-in's cookie (another browser), the callback fails.
    let r = browser.get(&callback).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    browser.cookie = login_cookie.split(';').next().map(str::to_string);
    let r = browser.get(&callback).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/jobs");
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.starts_with("kiln_token=") && cookie.contains("HttpOnly; SameSite=Lax"),
        "{cookie}"
    );
    let cleared: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("kiln_login=;") && c.contains("Max-Age=0")),
        "the sign-in's cookie is dropped: {cleared:?}"
    );
    // A callback is good once: the issuer's code is used up.
    let r = browser.get(&callback).await;
    assert!(
        r.status().is_client_error() || r.status().is_server_error(),
        "{}",
        r.status()
    );
    browser.cookie = cookie.split(';').next().map(str::to_string);
    let r = browser.get(&server.url("/jobs")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("page").contains("signed in as alice"));
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("kiln_refresh=refresh-first;")),
        "{cleared:?}"
    );

    // An expired access token with a refresh token: a new token before
    // the request is handled (a form posted late is not lost).
    let now = jsonwebtoken::get_current_timestamp();
    let mut old = issuer.claims("alice", &["user"]);
    old["exp"] = json!(now - 120);
    let expired = issuer.sign(&old);
    let late = Browser {
        cookie: Some(format!("kiln_token={expired}; kiln_refresh=refresh-first")),
        ..Browser::new(&server.base)
    };
    let r = late.get(&server.url("/jobs")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let renewed: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok().map(str::to_string))
        .collect();
    assert!(
        renewed
            .iter()
            .any(|c| c.starts_with("kiln_token=") && !c.starts_with("kiln_token=;"))
            && renewed
                .iter()
                .any(|c| c.starts_with("kiln_refresh=refresh-")),
        "{renewed:?}"
    );
    // A refresh token used up (rotated) or unknown: sent to sign in.
    let r = late.get(&server.url("/jobs")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login"), "{}", location(&r));
    // A renewed sign-in is still a cookie one: another site's form is
    // refused, not let through by the refresh.
    let fresh = renewed
        .iter()
        .find_map(|c| c.strip_prefix("kiln_refresh="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_default();
    let r = late
        .client
        .post(server.url("/jobs/new/generate"))
        .header(
            "cookie",
            format!("kiln_token={expired}; kiln_refresh={fresh}"),
        )
        .header("origin", "https://evil.example")
        .form(&[("rules", RULES), ("rows", "10")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The generated form of a job type.
    let form = browser
        .get(&server.url("/jobs/new/generate"))
        .await
        .text()
        .await
        .expect("form");
    for needle in [
        "<textarea id=\"field-rules\" name=\"rules\"",
        "name=\"rows\" type=\"number\"",
        "<option value=\"csv\">",
    ] {
        assert!(form.contains(needle), "'{needle}' not in the form:\n{form}");
    }
    // Bad input is answered on the form, naming the field.
    let r = browser
        .post_form(
            &server.url("/jobs/new/generate"),
            &[("rules", RULES), ("rows", "many")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .expect("page")
            .contains("rows must be a whole number, not 'many'")
    );
    let r = browser
        .post_form(
            &server.url("/jobs/new/generate"),
            &[("rules", "columns: [oops"), ("rows", "10")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.expect("page").contains("id=\"form-error\""));
    // Another site's form carrying the cookie is refused.
    let r = browser
        .with_cookie(browser.client.post(server.url("/jobs/new/generate")))
        .header("origin", "https://evil.example")
        .form(&[("rules", RULES), ("rows", "10")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A job from the form, followed to its dataset.
    let r = browser
        .post_form(
            &server.url("/jobs/new/generate"),
            &[
                ("rules", RULES),
                ("rows", "300"),
                ("seed", "3"),
                ("format", "csv"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job_page = location(&r);
    let job_id = job_page.trim_start_matches("/jobs/").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let page = loop {
        let page = browser
            .get(&server.url(&job_page))
            .await
            .text()
            .await
            .expect("job");
        // The job's badge (the style sheet names every state too).
        if page.contains("class=\"state state-succeeded\"") {
            break page;
        }
        assert!(!page.contains("class=\"state state-failed\""), "{page}");
        assert!(
            Instant::now() < deadline,
            "job {job_id} did not finish: {page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        !page.contains("EventSource"),
        "a finished job is not followed"
    );
    let at = page.find("href=\"/datasets/").expect("a result link");
    let dataset_link = page[at + 6..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string();
    let dataset = browser
        .get(&server.url(&dataset_link))
        .await
        .text()
        .await
        .expect("dataset");
    for needle in [
        "300 rows",
        "sample_id",
        "speed",
        "Preview (20 random rows)",
        "/content\" download",
    ] {
        assert!(
            dataset.contains(needle),
            "'{needle}' not on the dataset page:\n{dataset}"
        );
    }

    // An upload from the form: the dataset's page; a bad file: the form again.
    let csv = "a,b\n1,x\n2,y\n".as_bytes().to_vec();
    let upload = |name: &'static str, file: &'static str, bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new().text("name", name).part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file),
        );
        browser
            .with_cookie(browser.client.post(server.url("/datasets")))
            .header("origin", &browser.origin)
            .multipart(form)
            .send()
    };
    let r = upload("small", "small.csv", csv).await.expect("upload");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let uploaded = browser
        .get(&server.url(&location(&r)))
        .await
        .text()
        .await
        .expect("page");
    assert!(
        uploaded.contains("Dataset small") && uploaded.contains("2 rows"),
        "{uploaded}"
    );
    let r = upload("notes", "notes.txt", b"hello".to_vec())
        .await
        .expect("upload");
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(
        r.text()
            .await
            .expect("page")
            .contains("id=\"upload-error\"")
    );
    let list = browser
        .get(&server.url("/datasets"))
        .await
        .text()
        .await
        .expect("list");
    assert!(list.contains(">small<"), "{list}");

    // Signing out drops the cookie.
    let r = browser.get(&server.url("/logout")).await;
    assert!(
        location(&r) == "/"
            && r.headers()["set-cookie"]
                .to_str()
                .unwrap_or_default()
                .contains("Max-Age=0")
    );
    server.stop().await;
}
