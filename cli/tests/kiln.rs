//! End-to-end tests of the `kiln` binary: configuration and data errors
//! (exit codes, messages, no partial output), atomic commits, and a real
//! Ballista cluster (a scheduler and two executors on loopback) running the
//! same pipelines as `local[2]` with identical results.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(workspace());
    c
}

/// How long one `kiln` command of a test may run: a hang (a lost cluster,
/// a full disk) fails the test with the command's output instead of
/// holding CI until its own time limit.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// [`Command::output`] with a time limit: the command is killed after
/// `COMMAND_LIMIT` and the error carries what it printed so far.
trait OutputBounded {
    fn output_bounded(&mut self) -> Result<Output, std::io::Error>;
}

impl OutputBounded for Command {
    fn output_bounded(&mut self) -> Result<Output, std::io::Error> {
        use std::io::Read;
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > COMMAND_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (stdout, stderr) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(std::io::Error::other(format!(
                "{self:?} did not finish within {} s; its stderr:\n{}",
                COMMAND_LIMIT.as_secs(),
                String::from_utf8_lossy(&stderr)
            ))),
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under the system's temp dir (lakes of up to 2 GB),
/// removed when the test ends unless it panicked or `KILN_KEEP_TEST_DIRS`
/// is set (to read its logs and lakes).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("KILN_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tempdir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("kiln-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `kiln submit` on a config text; returns the output.
fn submit(dir: &Path, name: &str, config: &str, master: &str) -> Result<Output, std::io::Error> {
    let path = dir.join(name);
    std::fs::write(&path, config)?;
    kiln()
        .args(["submit", "--master", master])
        .arg(&path)
        .output_bounded()
}

fn generate(dir: &Path, rows: usize, seed: u64, out: &str) -> TestResult {
    let o = kiln()
        .args([
            "generate",
            "configs/generators/indoor_outdoor.yaml",
            "--rows",
            &rows.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(dir.join(out))
        .output_bounded()?;
    assert!(o.status.success(), "generate failed: {}", stderr(&o));
    Ok(())
}

fn extract_config(root: impl std::fmt::Display, input: &str, extra_init: &str) -> String {
    format!(
        "name: t\nstorage:\n  root: {root}\nprocessing_tasks:\n  - name: extract\n    classname: ExtractorTraining\n    initialization_parameters:\n      path_raw_tables: {input}\n{extra_init}    transformation_parameters:\n      mode: save\n      path_df_extract: out/\n"
    )
}

/// No staging leftovers anywhere under `dir`.
fn assert_no_staging(dir: &Path) {
    for entry in walk(dir) {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        assert!(
            !name.contains(".kiln-tmp-") && !name.contains(".kiln-old-"),
            "leftover {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn configuration_errors_exit_2_with_location_and_fix() -> TestResult {
    let dir = tempdir("config");
    let root = dir.display().to_string();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "malformed",
            "name: t\nstorage: [unclosed\n".into(),
            vec!["malformed.yaml:", "configuration error"],
        ),
        (
            "classname",
            format!(
                "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - name: a\n    classname: ExtractorTrainig\n"
            ),
            vec![
                "classname.yaml:5:5",
                "unknown classname 'ExtractorTrainig'",
                "did you mean ExtractorTraining?",
            ],
        ),
        (
            "parameter",
            format!(
                "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - name: a\n    classname: ExtractorTraining\n    initialization_parameters:\n      path_raw_tables: raw/\n      fromat: csv\n"
            ),
            vec![
                "parameter.yaml:8:7",
                "unknown field `fromat`",
                "did you mean `format`?",
            ],
        ),
        (
            "cycle",
            format!(
                "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - {{name: a, classname: ExtractorTraining, depends_on: [b], initialization_parameters: {{path_raw_tables: x/}}, transformation_parameters: {{mode: return}}}}\n  - {{name: b, classname: ExtractorTraining, depends_on: [a], initialization_parameters: {{path_raw_tables: x/}}, transformation_parameters: {{mode: return}}}}\n"
            ),
            vec!["dependency cycle", " -> "],
        ),
        (
            "missing_input",
            extract_config(dir.display(), "does/not/exist/", ""),
            vec!["input path not found", "does/not/exist"],
        ),
        (
            "fusion_strategy",
            format!(
                "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - name: f\n    classname: Fusion\n    initialization_parameters:\n      inputs: [{{name: a, path: a/}}, {{name: b, path: b/}}]\n      strategy: join\n    transformation_parameters: {{path_output: out/}}\n"
            ),
            vec![
                "fusion_strategy.yaml",
                "strategy Join needs on",
                "fix: set on",
            ],
        ),
        (
            "reproduction_parameter",
            format!(
                "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - name: r\n    classname: ReproductionTraining\n    initialization_parameters:\n      path_input: raw/\n      sample_row: 10\n    transformation_parameters: {{path_model_repository: m/}}\n"
            ),
            vec![
                "reproduction_parameter.yaml:8:7",
                "unknown field `sample_row`",
                "did you mean `sample_rows`?",
            ],
        ),
    ];
    for (name, text, needles) in cases {
        let o = submit(&dir, &format!("{name}.yaml"), &text, "local[1]")?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        for n in needles {
            assert!(err.contains(n), "{name}: '{n}' not in:\n{err}");
        }
        assert!(!dir.join("out").exists(), "{name}: partial output");
    }
    // validate catches the same without running.
    std::fs::write(
        dir.join("v.yaml"),
        format!(
            "name: t\nstorage: {{root: {root}}}\nprocessing_tasks:\n  - name: a\n    classname: Nope\n"
        ),
    )?;
    let o = kiln()
        .arg("validate")
        .arg(dir.join("v.yaml"))
        .output_bounded()?;
    assert_eq!(o.status.code(), Some(2));
    // A bad --master is a usage error (exit 2), reported for a config that
    // is itself valid, so the error can only come from parsing the master.
    std::fs::write(
        dir.join("ok.yaml"),
        extract_config(dir.display(), "raw/", ""),
    )?;
    let o = kiln()
        .arg("validate")
        .arg(dir.join("ok.yaml"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = kiln()
        .args(["submit", "--master", "yarn"])
        .arg(dir.join("ok.yaml"))
        .output_bounded()?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'yarn'") && err.contains("df://"), "{err}");
    Ok(())
}

#[test]
fn schema_mismatches_are_all_reported_and_runtime_errors_exit_1() -> TestResult {
    let dir = tempdir("schema");
    generate(&dir, 500, 1, "raw/")?;
    // Reference schema with a missing column, a wrong type and no room for extras.
    let o = kiln()
        .arg("infer-schema")
        .arg(dir.join("raw/"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let mut schema: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let cols = schema["columns"].as_array_mut().ok_or("columns")?;
    cols.retain(|c| c["name"] != "rsrq");
    for c in cols.iter_mut() {
        if c["name"] == "rsrp" {
            c["type"] = "Float64".into();
        }
    }
    cols.push(serde_json::json!({"name": "floor", "type": "Int32", "nullable": true}));
    std::fs::write(dir.join("schema.json"), serde_json::to_string(&schema)?)?;
    let o = submit(
        &dir,
        "s.yaml",
        &extract_config(dir.display(), "raw/", "      schema_path: schema.json\n"),
        "local[2]",
    )?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for n in [
        "3 schema mismatch(es)",
        "missing column 'floor'",
        "column 'rsrp' has type Float32, expected Float64",
        "unexpected column 'rsrq'",
    ] {
        assert!(err.contains(n), "'{n}' not in:\n{err}");
    }
    assert!(!dir.join("out").exists());

    // A good run, then a corrupt input: the error names the file, exit 1,
    // and the previous output stays intact with no staging leftovers.
    let ok = submit(
        &dir,
        "ok.yaml",
        &extract_config(dir.display(), "raw/", ""),
        "local[2]",
    )?;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before: Vec<PathBuf> = walk(&dir.join("out"));
    std::fs::create_dir_all(dir.join("bad"))?;
    std::fs::write(dir.join("bad/part-0.parquet"), b"PAR1 this is not parquet")?;
    let text = extract_config(dir.display(), "bad/", "");
    let o = submit(&dir, "bad.yaml", &text, "local[2]")?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad/") && (err.contains("Parquet") || err.contains("parquet")),
        "{err}"
    );
    assert_eq!(walk(&dir.join("out")), before, "previous output changed");
    assert_no_staging(&dir);

    // Training plans its memory after the first pass: a limit set low is
    // refused before anything is binned, with what to change; a bad size
    // is a configuration error at its line; a sufficient one trains.
    let train = |limit: &str| {
        format!(
            "name: t\nstorage:\n  root: {}\nprocessing_tasks:\n  - name: train\n    classname: ModelTraining\n    initialization_parameters:\n      input: out/\n      label_col: label_indoor\n      feature_cols: [rsrp, rsrq, sinr]\n      memory_limit: {limit}\n      estimators:\n        - classname: GBTClassifier\n          params: {{ maxIter: 2 }}\n    transformation_parameters:\n      path_model_repository: models/m/\n",
            dir.display()
        )
    };
    let o = submit(&dir, "low.yaml", &train("1KiB"), "local[2]")?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in [
        "training needs about",
        "memory_limit is 1.0 KiB",
        "memory plan: process ",
        " peak resident",
        "fix: raise memory_limit",
    ] {
        assert!(err.contains(n), "'{n}' not in:\n{err}");
    }
    assert!(
        !dir.join("models/m").exists(),
        "a refused training wrote a model"
    );
    let o = submit(&dir, "typo.yaml", &train("4 gigs"), "local[2]")?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("typo.yaml:11:7") && err.contains("memory_limit '4 gigs'"),
        "{err}"
    );
    let o = submit(&dir, "enough.yaml", &train("1GiB"), "local[2]")?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("memory plan: process "), "{err}");

    // An unreachable scheduler: exit 1, names the address and the fix.
    let o = submit(
        &dir,
        "ok.yaml",
        &extract_config(dir.display(), "raw/", ""),
        "df://127.0.0.1:9",
    )?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach the Ballista scheduler at df://127.0.0.1:9")
            && err.contains("kiln scheduler"),
        "{err}"
    );
    Ok(())
}

/// A scheduler and two executors on loopback, killed on drop.
struct Cluster {
    children: Vec<Child>,
    port: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, Box<dyn std::error::Error>> {
        let mut scheduler = kiln()
            .args(["scheduler", "--bind-host", "127.0.0.1", "--bind-port", "0"])
            .env("KILN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = scheduler.stdout.take().ok_or("stdout")?;
        let mut cluster = Cluster {
            children: vec![scheduler],
            port: 0,
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        cluster.port = line.trim().rsplit(':').next().ok_or("port")?.parse()?;
        for i in 0..2 {
            let work = dir.join(format!("executor{i}"));
            std::fs::create_dir_all(&work)?;
            let child = kiln()
                .args([
                    "executor",
                    "--scheduler-host",
                    "127.0.0.1",
                    "--scheduler-port",
                    &cluster.port.to_string(),
                ])
                .args([
                    "--bind-port",
                    &free_port()?.to_string(),
                    "--grpc-port",
                    &free_port()?.to_string(),
                    "--vcores",
                    "2",
                    "--work-dir",
                ])
                .arg(&work)
                .env("KILN_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    fn master(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }
}

fn checksum(dir: &Path) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    checksum_of(dir, false)
}

/// [`checksum`] with the columns in name order (partitioned reads put the
/// partition columns last).
fn checksum_by_name(dir: &Path) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    checksum_of(dir, true)
}

fn checksum_of(dir: &Path, by_name: bool) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let session = kiln_engine::KilnSession::connect(
            &kiln_engine::Master::Local { partitions: 2 },
            &kiln_engine::KilnExtensions::default(),
        )
        .await?;
        let url = kiln_engine::storage::parse_location(&format!("{}/", dir.display()), None)?;
        let mut df =
            kiln_engine::io::read_table(&session, &url, kiln_engine::io::FileFormat::Parquet)
                .await?;
        if by_name {
            let mut names: Vec<String> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            names.sort();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            df = df.select_columns(&names)?;
        }
        Ok(kiln_engine::io::row_checksum(df).await?)
    })
}

/// `text` with `from` replaced, which must occur (a config edited under a
/// test's feet fails the test instead of silently running the full size).
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "'{from}' is not in the text any more");
    text.replace(from, to)
}

/// The demo pipeline, small (6,000 training rows, 3,000 to predict, one
/// grid point per estimator), with its lake at `lake`.
fn small_demo(lake: &Path) -> Result<String, std::io::Error> {
    let demo = std::fs::read_to_string(workspace().join("configs/indoor_outdoor.yaml"))?;
    Ok([
        (
            "rows: ${KILN_TRAINING_ROWS:-544511}",
            "rows: 6000".to_string(),
        ),
        ("rows: ${KILN_INFERENCE_ROWS:-200000}", "rows: 3000".into()),
        (
            "grid: { maxDepth: [3, 5], stepSize: [0.1, 0.2] }",
            "grid: { maxDepth: [3] }".into(),
        ),
        (
            "grid: { maxDepth: [5, 8], impurity: [gini, entropy] }",
            "grid: { maxDepth: [5] }".into(),
        ),
        (
            "${KILN_LAKE:-file://./lake}",
            format!("file://{}", lake.display()),
        ),
    ]
    .iter()
    .fold(demo, |text, (from, to)| replaced(&text, from, to)))
}

#[test]
fn ballista_cluster_matches_local_execution() -> TestResult {
    let dir = tempdir("cluster");
    let cluster = Cluster::start(&dir)?;
    let started = Instant::now();

    // The demo pipeline, small: generation, a 7-table join, features
    // (window functions, UDFs, fitted stages), training and prediction.
    let mut outputs = Vec::new();
    for (name, master) in [
        ("local", "local[2]".to_string()),
        ("cluster", cluster.master()),
    ] {
        let lake = dir.join(name);
        let mut config = small_demo(&lake)?;
        if name == "cluster" {
            // The 7-table join in 3 passes over sample_id ranges must give
            // the rows of one pass.
            config = replaced(
                &config,
                "join_passes: ${KILN_JOIN_PASSES:-1}",
                "join_passes: 3",
            );
            // The features (windows, then fitted stages on the scratch
            // table) and the predictions in 3 passes over device_id ranges.
            config = replaced(&config, "passes: ${KILN_FEATURE_PASSES:-1}", "passes: 3");
            config = replaced(
                &config,
                "keep_cols: [sample_id, device_id, ts]",
                "keep_cols: [sample_id, device_id, ts]\n      passes: 3\n      pass_key: device_id",
            );
        }
        // Executors may still be registering: retry the first run briefly.
        let mut o = submit(&dir, &format!("{name}.yaml"), &config, &master)?;
        while !o.status.success()
            && name == "cluster"
            && started.elapsed() < Duration::from_secs(60)
            && stderr(&o).contains("executor")
        {
            std::thread::sleep(Duration::from_secs(2));
            o = submit(&dir, &format!("{name}.yaml"), &config, &master)?;
        }
        assert!(o.status.success(), "{name} run failed:\n{}", stderr(&o));
        assert!(stderr(&o).contains("run_id: indoor_outdoor-"));
        outputs.push(lake);
    }
    for table in [
        "extraction/training",
        "extraction/inference",
        "features/training",
        "predictions/indoor_outdoor",
    ] {
        let (a, b) = (
            checksum(&outputs[0].join(table))?,
            checksum(&outputs[1].join(table))?,
        );
        assert!(a.0 > 0, "{table}: no rows");
        assert_eq!(a, b, "{table}: local and cluster differ (rows, checksum)");
    }
    // Same seed, same data: bit-identical model artifacts.
    let model = |lake: &Path| std::fs::read(lake.join("models/indoor_outdoor/v1/model.json"));
    assert_eq!(
        model(&outputs[0])?,
        model(&outputs[1])?,
        "model artifacts differ"
    );
    let features =
        |lake: &Path| std::fs::read_to_string(lake.join("models/features/v1/pipeline_model.json"));
    assert_eq!(
        features(&outputs[0])?,
        features(&outputs[1])?,
        "feature pipeline models differ"
    );
    // The features' scratch table is gone with its task.
    for run in std::fs::read_dir(outputs[1].join("_kiln/runs"))? {
        for entry in std::fs::read_dir(run?.path())? {
            let path = entry?.path();
            assert!(
                !path.to_string_lossy().ends_with(".scratch"),
                "{} left behind",
                path.display()
            );
        }
    }
    // path_evaluation: one metrics.json per estimator, Spark's metric names.
    for estimator in ["GBTClassifier", "RandomForestClassifier"] {
        let metrics = |lake: &Path| {
            std::fs::read(lake.join(format!(
                "evaluation/indoor_outdoor/{estimator}/metrics.json"
            )))
        };
        let local: serde_json::Value = serde_json::from_slice(&metrics(&outputs[0])?)?;
        for name in [
            "areaUnderROC",
            "areaUnderPR",
            "accuracy",
            "weightedPrecision",
            "weightedRecall",
            "f1",
        ] {
            let v = local[name]
                .as_f64()
                .ok_or(format!("{estimator}: no {name}"))?;
            assert!((0.5..=1.0).contains(&v), "{estimator} {name} = {v}");
        }
        assert_eq!(metrics(&outputs[0])?, metrics(&outputs[1])?, "{estimator}");
    }
    assert_no_staging(&dir);
    // Orchestration on the cluster: retries, timeouts, hooks, the event
    // log, a killed run resumed, and schedules.
    let master = cluster.master();
    retries_scenario(&dir.join("retries"), &master)?;
    resume_scenario(&dir.join("resume"), &master)?;
    schedule_scenario(&dir.join("schedule"), &master)?;
    synthesis_scenario(&dir.join("synthesis"), &master)?;
    drop(cluster);
    Ok(())
}

/// Synthesis on `master` against `local[1]`: the copula's and the tree's
/// fits (aggregates whose partitions the executors fold) give the same
/// model files, and the filter (boundaries and distances measured on the
/// executors) keeps the same rows with the same counts.
fn synthesis_scenario(dir: &Path, master: &str) -> TestResult {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/synth");
    // Three files, so the cluster's executors share the partitions.
    let real = dir.join("real");
    std::fs::create_dir_all(&real)?;
    for part in ["a", "b", "c"] {
        std::fs::copy(
            testdata.join("generated_real.parquet"),
            real.join(format!("{part}.parquet")),
        )?;
    }
    let run = |args: &[&str]| -> Result<Output, Box<dyn std::error::Error>> {
        let o = kiln().args(args).output_bounded()?;
        assert!(o.status.success(), "kiln {args:?}:\n{}", stderr(&o));
        Ok(o)
    };
    let real_arg = real.display().to_string();
    for model in ["gaussian_copula", "chow_liu"] {
        let mut files = Vec::new();
        for (name, m) in [("local", "local[1]"), ("cluster", master)] {
            let out = dir.join(format!("{name}-{model}"));
            run(&[
                "reproduce",
                "fit",
                &real_arg,
                "--model",
                model,
                "--seed",
                "1",
                "--type",
                "sample_id=id",
                "--sample-rows",
                "5000",
                "--master",
                m,
                "--out",
                &out.display().to_string(),
            ])?;
            files.push(std::fs::read(out.join("v1/model.json"))?);
        }
        assert_eq!(
            files[0], files[1],
            "{model}: local and cluster models differ"
        );
    }
    let mut reports = Vec::new();
    for (name, m) in [("local", "local[1]"), ("cluster", master)] {
        let report = dir.join(format!("{name}-report"));
        let kept = dir.join(format!("{name}-kept"));
        run(&[
            "evaluate",
            &real_arg,
            &testdata
                .join("generated_perturbed.parquet")
                .display()
                .to_string(),
            "--type",
            "sample_id=id",
            "--privacy-rows",
            "500",
            "--filter-out",
            &kept.display().to_string(),
            "--rule",
            "rsrp IS NULL OR rsrp < -80",
            "--min-distance",
            "0.02",
            "--master",
            m,
            "--out",
            &report.display().to_string(),
        ])?;
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report.join("report.json"))?)?;
        reports.push((json, checksum(&kept)?));
    }
    let filter = &reports[0].0["filter"];
    assert!(
        filter["dropped_too_close"].as_u64() > Some(0) && filter["rows_kept"].as_u64() > Some(0),
        "{filter}"
    );
    for section in ["filter", "quality", "privacy"] {
        assert_eq!(
            reports[0].0[section], reports[1].0[section],
            "{section}: local and cluster differ"
        );
    }
    assert_eq!(reports[0].1, reports[1].1, "the kept rows differ");
    Ok(())
}

fn run_history(
    home: &Path,
    run_id: &str,
) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    let o = kiln()
        .args(["runs", "show", run_id, "--format", "json"])
        .env("KILN_HOME", home)
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    Ok(serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)?)
}

fn run_id_of(err: &str) -> Option<String> {
    err.lines()
        .find_map(|l| l.strip_prefix("run_id: "))
        .map(str::to_string)
}

fn task<'a>(tasks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    tasks
        .iter()
        .find(|t| t["task"] == name)
        .unwrap_or(&serde_json::Value::Null)
}

/// Accepts one HTTP request on loopback and returns its body.
fn webhook_receiver() -> Result<(String, std::sync::mpsc::Receiver<String>), std::io::Error> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let Ok(n) = stream.read(&mut buf) else { return };
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    let _ = tx.send(body.to_string());
                    return;
                }
            }
        }
    });
    Ok((url, rx))
}

fn events_of(
    root: &Path,
    run_id: &str,
) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(root.join(format!("_kiln/runs/{run_id}/events.jsonl")))?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()?)
}

#[test]
fn retries_timeouts_and_concurrent_tasks() -> TestResult {
    retries_scenario(&tempdir("retries"), "local[2]")
}

/// Retries, timeouts, error classes, overlap of independent tasks, the
/// event log, JSON logs and notification hooks, on `master`.
fn retries_scenario(dir: &Path, master: &str) -> TestResult {
    std::fs::create_dir_all(dir)?;
    let home = dir.join("home");
    let counter = dir.join("counter");
    let notified = dir.join("notified.json");
    let config = format!(
        r#"name: retries
storage: {{root: {root}}}
notify:
  on_success: [{{command: "{{ cat; echo; echo $KILN_RUN_STATE; }} > {notified}"}}]
processing_tasks:
  - name: flaky
    classname: ShellCommand
    retries: 2
    retry_delay: 0.1
    initialization_parameters:
      command: [sh, -c, 'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ] || {{ echo "attempt $n fails" >&2; exit 1; }}']
  - name: left
    classname: ShellCommand
    depends_on: [flaky]
    initialization_parameters: {{command: [sleep, "1"]}}
  - name: right
    classname: ShellCommand
    depends_on: [flaky]
    initialization_parameters: {{command: [sleep, "1"]}}
"#,
        root = dir.display(),
        counter = counter.display(),
        notified = notified.display()
    );
    std::fs::write(dir.join("r.yaml"), config)?;
    let o = kiln()
        .args(["submit", "--master", master])
        .arg(dir.join("r.yaml"))
        .env("KILN_HOME", &home)
        .output_bounded()?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let run_id = run_id_of(&err).ok_or("run id")?;
    let tasks = run_history(&home, &run_id)?;
    // The run's event log in the lake has every step, retries included.
    let events = events_of(dir, &run_id)?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_retrying").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "task_succeeded").count(),
        3,
        "{kinds:?}"
    );
    assert!(events.iter().all(|e| e["ts_ms"].as_u64().is_some()));
    // The success hook got the outcome on stdin and in the environment.
    let note = std::fs::read_to_string(&notified)?;
    let (json, state) = note.trim_end().rsplit_once('\n').ok_or("hook output")?;
    let json: serde_json::Value = serde_json::from_str(json)?;
    assert_eq!(
        (json["run_id"].as_str(), json["state"].as_str(), state),
        (Some(run_id.as_str()), Some("succeeded"), "succeeded")
    );
    assert_eq!(json["tasks"].as_array().map(Vec::len), Some(3));
    assert_eq!(task(&tasks, "flaky")["attempts"], 3, "{tasks:?}");
    assert_eq!(task(&tasks, "flaky")["state"], "succeeded");
    // Independent tasks overlap in time.
    let (l, r) = (task(&tasks, "left"), task(&tasks, "right"));
    let (ls, le, rs, re) = (
        l["start_ms"].as_i64().ok_or("l")?,
        l["end_ms"].as_i64().ok_or("l")?,
        r["start_ms"].as_i64().ok_or("r")?,
        r["end_ms"].as_i64().ok_or("r")?,
    );
    assert!(
        ls < re && rs < le,
        "left {ls}..{le} and right {rs}..{re} do not overlap"
    );

    // A timeout is retried, then fails the run (exit 1); the failure
    // webhook is called; --log-format json gives one JSON event per line.
    let (hook, received) = webhook_receiver()?;
    let slow = format!(
        "name: slow\nstorage: {{root: {}}}\nnotify: {{on_failure: [{{webhook: \"{hook}\"}}]}}\nprocessing_tasks:\n  - name: slow\n    classname: ShellCommand\n    retries: 1\n    retry_delay: 0.1\n    execution_timeout: 0.5\n    initialization_parameters: {{command: [sleep, \"5\"]}}\n",
        dir.display()
    );
    std::fs::write(dir.join("slow.yaml"), slow)?;
    let o = kiln()
        .args(["submit", "--log-format", "json", "--master", master])
        .arg(dir.join("slow.yaml"))
        .env("KILN_HOME", &home)
        .output_bounded()?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("timed out after 0.5s"), "{err}");
    let json_events: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let run_id = json_events
        .iter()
        .find(|e| e["event"] == "run_started")
        .and_then(|e| e["run_id"].as_str())
        .ok_or("no run_started event")?
        .to_string();
    assert!(
        json_events
            .iter()
            .any(|e| e["event"] == "task_failed" && e["attempts"] == 2),
        "{err}"
    );
    let posted: serde_json::Value =
        serde_json::from_str(&received.recv_timeout(Duration::from_secs(10))?)?;
    assert_eq!(posted["state"], "failed");
    assert_eq!(posted["run_id"].as_str(), Some(run_id.as_str()));
    assert!(
        posted["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{posted}"
    );
    let tasks = run_history(&home, &run_id)?;
    assert_eq!(task(&tasks, "slow")["attempts"], 2, "{tasks:?}");

    // A configuration / data error is not retried.
    generate(dir, 200, 3, "raw/")?;
    let bad = format!(
        "name: bad\nstorage: {{root: {}}}\nprocessing_tasks:\n  - name: features\n    classname: FeaturePipeline\n    retries: 3\n    initialization_parameters:\n      input: raw/\n      stages:\n        - {{classname: StringIndexer, params: {{inputCols: [no_such_column]}}}}\n    transformation_parameters: {{mode: fit_transform, path_pipeline_model: m/, path_df_features: f/}}\n",
        dir.display()
    );
    std::fs::write(dir.join("bad.yaml"), bad)?;
    let o = kiln()
        .args(["submit", "--master", master])
        .arg(dir.join("bad.yaml"))
        .env("KILN_HOME", &home)
        .output_bounded()?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage StringIndexer") && err.contains("unknown column 'no_such_column'"),
        "{err}"
    );
    let tasks = run_history(&home, &run_id_of(&err).ok_or("run id")?)?;
    assert_eq!(task(&tasks, "features")["attempts"], 1, "{tasks:?}");
    // kiln runs lists all three.
    let o = kiln()
        .args(["runs", "--format", "json"])
        .env("KILN_HOME", &home)
        .output_bounded()?;
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout)?;
    assert_eq!(runs.len(), 3);
    Ok(())
}

fn resume_pipeline(root: &Path) -> String {
    format!(
        r#"name: resume
storage: {{root: {root}}}
processing_tasks:
  - name: small
    classname: RuleBasedGenerator
    initialization_parameters: {{rules: configs/generators/indoor_outdoor.yaml, rows: 20000, seed: 1}}
    transformation_parameters: {{path_output: raw/small/}}
  - name: extract_small
    classname: ExtractorTraining
    depends_on: [small]
    initialization_parameters: {{path_raw_tables: raw/small/}}
    transformation_parameters: {{path_df_extract: ext/small/}}
  - name: big
    classname: RuleBasedGenerator
    depends_on: [extract_small]
    initialization_parameters: {{rules: configs/generators/indoor_outdoor.yaml, rows: 3000000, seed: 2}}
    transformation_parameters: {{path_output: raw/big/}}
  - name: extract_big
    classname: ExtractorTraining
    depends_on: [big]
    initialization_parameters: {{path_raw_tables: raw/big/}}
    transformation_parameters: {{path_df_extract: ext/big/}}
"#,
        root = root.display()
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok().map(|r| r.display().to_string()))
        .filter(|p| !p.starts_with("_kiln"))
        .collect();
    v.sort();
    v
}

#[test]
fn killed_run_resumes_to_identical_outputs() -> TestResult {
    resume_scenario(&tempdir("resume"), "local[2]")
}

/// SIGKILL in the middle of a long task, then `--resume`, on `master`.
fn resume_scenario(dir: &Path, master: &str) -> TestResult {
    std::fs::create_dir_all(dir)?;
    let home = dir.join("home");
    let (full, killed) = (dir.join("full"), dir.join("killed"));
    std::fs::write(dir.join("full.yaml"), resume_pipeline(&full))?;
    std::fs::write(dir.join("killed.yaml"), resume_pipeline(&killed))?;
    let o = kiln()
        .args(["submit", "--master", master])
        .arg(dir.join("full.yaml"))
        .env("KILN_HOME", &home)
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));

    // Kill with SIGKILL in the middle of the long task.
    let mut child = kiln()
        .args(["submit", "--master", master])
        .arg(dir.join("killed.yaml"))
        .env("KILN_HOME", &home)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().ok_or("stderr")?).lines();
    let mut run_id = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(id) = line.strip_prefix("run_id: ") {
            run_id = Some(id.to_string());
        }
        if line.contains("task big started") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill()?;
    child.wait()?;
    let run_id = run_id.ok_or("no run id")?;
    assert!(
        !killed.join("raw/big").exists(),
        "a killed write must not be visible"
    );

    let o = kiln()
        .args(["submit", "--master", master, "--resume", &run_id])
        .arg(dir.join("killed.yaml"))
        .env("KILN_HOME", &home)
        .output_bounded()?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("run_id: {run_id}")), "{err}");
    for done in ["small", "extract_small"] {
        assert!(
            err.contains(&format!("task {done} skipped")),
            "{done} was redone:\n{err}"
        );
    }
    assert!(
        err.contains("task big started") && err.contains("task extract_big started"),
        "{err}"
    );
    for table in ["raw/small", "ext/small", "raw/big", "ext/big"] {
        assert_eq!(
            checksum(&full.join(table))?,
            checksum(&killed.join(table))?,
            "{table} differs"
        );
    }
    assert_eq!(
        names(&full),
        names(&killed),
        "file sets differ (partial or duplicate files)"
    );
    assert_no_staging(dir);
    Ok(())
}

#[test]
fn schedule_starts_due_runs_and_respects_the_concurrency_policy() -> TestResult {
    schedule_scenario(&tempdir("schedule"), "local[1]")
}

/// `kiln schedule` with a schedule due every second, on `master`.
fn schedule_scenario(dir: &Path, master: &str) -> TestResult {
    std::fs::create_dir_all(dir)?;
    let home = dir.join("home");
    for (policy, expect_skips) in [("forbid", true), ("allow", false)] {
        let path = dir.join(format!("{policy}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: sched_{policy}\nschedule: \"* * * * * *\"\nconcurrency_policy: {policy}\nstorage: {{root: {}}}\nprocessing_tasks:\n  - name: wait\n    classname: ShellCommand\n    initialization_parameters: {{command: [sleep, \"30\"]}}\n",
                dir.display()
            ),
        )?;
        let o = kiln()
            .args(["schedule", "--for", "3.5", "--master", master])
            .arg(&path)
            .env("KILN_HOME", &home)
            .output_bounded()?;
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let started = err.matches(": started run ").count();
        let skipped = err
            .matches("skipped: the previous run is still going")
            .count();
        if expect_skips {
            assert_eq!(started, 1, "{err}");
            assert!(skipped >= 1, "{err}");
        } else {
            assert!(started >= 2, "{err}");
            assert_eq!(skipped, 0, "{err}");
        }
        // The schedule's record in the lake, for the web UI: the same
        // firings; the first started run (it ran for seconds) has its log.
        let record = json_file(&dir.join(format!("_kiln/schedules/sched_{policy}.json")))?;
        assert_eq!(record["schedule"], "* * * * * *", "{record}");
        assert_eq!(record["stopped"], true, "{record}");
        let firings = record["firings"].as_array().ok_or("firings")?;
        let of = |outcome: &str| firings.iter().filter(|f| f["outcome"] == outcome).count();
        assert_eq!(
            (of("started"), of("skipped")),
            (started, skipped),
            "{record}"
        );
        let first = firings
            .iter()
            .find(|f| f["outcome"] == "started")
            .and_then(|f| f["run_id"].as_str())
            .ok_or("no started run")?;
        assert!(
            dir.join(format!("_kiln/runs/{first}/events.jsonl"))
                .is_file(),
            "{first} has no event log"
        );
    }
    // No schedule at all is a configuration error.
    std::fs::write(
        dir.join("none.yaml"),
        format!(
            "name: n\nstorage: {{root: {}}}\nprocessing_tasks:\n  - {{name: a, classname: ShellCommand, initialization_parameters: {{command: [true]}}}}\n",
            dir.display()
        ),
    )?;
    let o = kiln()
        .args(["schedule", "--for", "1"])
        .arg(dir.join("none.yaml"))
        .output_bounded()?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    Ok(())
}

/// An S3-compatible server (moto) on loopback with one bucket, killed on
/// drop. `None` when no server is installed (`.ci/run` installs one).
struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUCKET: &str = "kiln-test";

impl S3Server {
    fn start() -> Result<Option<S3Server>, Box<dyn std::error::Error>> {
        let program = match std::env::var_os("KILN_TEST_S3_SERVER") {
            Some(p) => PathBuf::from(p),
            None => match std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("moto_server"))
                .find(|p| p.is_file())
            {
                Some(p) => p,
                None if std::env::var_os("KILN_REQUIRE_S3_TESTS").is_some() => {
                    return Err("KILN_REQUIRE_S3_TESTS is set but no moto_server was found".into());
                }
                None => return Ok(None),
            },
        };
        let mut child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stderr = child.stderr.take().ok_or("moto stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address, then keeps draining so the server never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://127.0.0.1:") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let mut server = S3Server {
            child,
            endpoint: String::new(),
        };
        server.endpoint = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "moto_server did not report its address within 60 s")?;
        let (status, _) = server.http("PUT", &format!("/{BUCKET}"), b"")?;
        assert!(status.contains("200"), "create bucket: {status}");
        Ok(Some(server))
    }

    /// One unauthenticated HTTP/1.0 request; returns the status line and body.
    fn http(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(String, String), Box<dyn std::error::Error>> {
        use std::io::{Read, Write};
        let host = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        ))
    }

    /// Keys and sizes under `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
        let (status, xml) = self.http(
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix={prefix}"),
            b"",
        )?;
        assert!(status.contains("200"), "list: {status}");
        let tag = |text: &str, name: &str| -> Vec<String> {
            text.split(&format!("<{name}>"))
                .skip(1)
                .filter_map(|p| {
                    p.split_once(&format!("</{name}>"))
                        .map(|(v, _)| v.to_string())
                })
                .collect()
        };
        let mut out: Vec<(String, u64)> = tag(&xml, "Contents")
            .iter()
            .map(|c| {
                let key = tag(c, "Key").into_iter().next().unwrap_or_default();
                let size = tag(c, "Size")
                    .first()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (key, size)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn kiln(&self) -> Command {
        let mut c = kiln();
        c.env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "kiln-test")
            .env("AWS_SECRET_ACCESS_KEY", "kiln-test-secret")
            .env("AWS_REGION", "us-east-1");
        c
    }
}

/// The lake on S3 (a MinIO-compatible server): generation, a pipeline that
/// reads and writes there, atomic commits and failed writes, with the same
/// rows as on the local file system.
#[test]
fn s3_lake_matches_local_files() -> TestResult {
    let Some(s3) = S3Server::start()? else {
        eprintln!(
            "skipped: no S3-compatible server; install moto[server] or set KILN_TEST_S3_SERVER \
             (.ci/run does)"
        );
        return Ok(());
    };
    let dir = tempdir("s3");
    let root = format!("s3://{BUCKET}/lake/");
    let run = |args: &[&str], config: Option<(&str, String)>| -> Result<Output, std::io::Error> {
        let mut c = s3.kiln();
        c.args(args);
        if let Some((name, text)) = config {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            c.arg(path);
        }
        c.output_bounded()
    };
    let gen_args = |out: &str| -> Vec<String> {
        [
            "generate",
            "configs/generators/indoor_outdoor.yaml",
            "--rows",
            "300000",
            "--seed",
            "11",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    // The same data generated to S3 and to a local directory.
    let remote = format!("{root}raw/");
    let args = gen_args(&remote);
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    assert!(o.status.success(), "generate to S3: {}", stderr(&o));
    let raw = s3.list("lake/raw/")?;
    assert!(
        raw.iter().any(|(k, _)| k == "lake/raw/_SUCCESS")
            && raw.iter().any(|(k, _)| k == "lake/raw/part-00000.parquet"),
        "{raw:?}"
    );
    let local = dir.join("local/raw/").display().to_string() + "/";
    let o = run(
        &gen_args(&local)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        None,
    )?;
    assert!(o.status.success(), "{}", stderr(&o));

    // `kiln submit` on local[2] that must succeed; `what` names the step.
    let submit_ok = |name: &str, config: String, what: &str| -> TestResult {
        let o = run(&["submit", "--master", "local[2]"], Some((name, config)))?;
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        Ok(())
    };
    // A pipeline whose lake is on S3, then a local one that copies its
    // output back: the rows match the same pipeline run on local files.
    submit_ok(
        "s3.yaml",
        extract_config(&root, "raw/", ""),
        "pipeline on S3",
    )?;
    let out_before = s3.list("lake/out/")?;
    assert!(
        out_before.iter().any(|(k, _)| k == "lake/out/_SUCCESS"),
        "{out_before:?}"
    );
    let back = dir.join("back");
    let copy = extract_config(back.display(), &format!("{root}out/"), "");
    submit_ok("back.yaml", copy, "read back from S3")?;
    submit_ok(
        "local.yaml",
        extract_config(dir.join("local").display(), "raw/", ""),
        "pipeline on local files",
    )?;
    assert_eq!(
        checksum(&back.join("out"))?,
        checksum(&dir.join("local/out"))?
    );

    // Hive-partitioned output on S3, read back with its partition column.
    let parted = format!(
        "name: parted\nstorage:\n  root: {root}\nprocessing_tasks:\n  - name: extract\n    classname: ExtractorTraining\n    initialization_parameters:\n      path_raw_tables: raw/\n    transformation_parameters:\n      mode: save\n      path_df_extract: parted/\n      parquet: {{ partition_by: [gps_provider] }}\n"
    );
    submit_ok("parted.yaml", parted, "partitioned write to S3")?;
    let keys = s3.list("lake/parted/")?;
    for key in [
        "gps_provider=gps/part-00000.parquet",
        "gps_provider=passive/part-00000.parquet",
        "_SUCCESS",
    ] {
        assert!(
            keys.iter().any(|(k, _)| k == &format!("lake/parted/{key}")),
            "{key} not in {keys:?}"
        );
    }
    let back2 = dir.join("back2");
    let copy = extract_config(back2.display(), &format!("{root}parted/"), "");
    submit_ok("back2.yaml", copy, "read partitions back from S3")?;
    assert_eq!(
        checksum_by_name(&back2.join("out"))?,
        checksum_by_name(&dir.join("local/out"))?
    );

    // A corrupt input on S3: exit 1 naming the file, and the previous output
    // is untouched, with no staging objects left behind.
    let (status, _) = s3.http(
        "PUT",
        &format!("/{BUCKET}/lake/bad/part-0.parquet"),
        b"PAR1 not parquet",
    )?;
    assert!(status.contains("200"), "{status}");
    let o = run(
        &["submit", "--master", "local[2]"],
        Some(("bad.yaml", extract_config(&root, "bad/", ""))),
    )?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad/"), "{err}");
    assert_eq!(s3.list("lake/out/")?, out_before, "previous output changed");
    let all = s3.list("lake/")?;
    assert!(
        !all.iter().any(|(k, _)| k.contains(".kiln-")),
        "staging left: {all:?}"
    );

    // The history server over the S3 lake, on a machine whose run history
    // (an empty KILN_HOME) knows none of its runs: the runs, a run's page,
    // its files, in a real browser too.
    let ui = listening(
        s3.kiln()
            .args(["ui", "--bind", "127.0.0.1:0", "--lake", &root])
            .env("KILN_HOME", dir.join("empty-home")),
        dir.join("ui.log"),
    )?;
    let port: u16 = ui.base.rsplit(':').next().ok_or("port")?.trim().parse()?;
    let runs = http_get(port, "/?pipeline=parted")?;
    let at = runs
        .find("href=\"/runs/parted-")
        .ok_or_else(|| format!("no run of the S3 lake on /: {runs}"))?;
    let run_id = runs[at + "href=\"/runs/".len()..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string();
    let run = http_get(port, &format!("/runs/{run_id}"))?;
    assert!(
        run.starts_with("HTTP/1.0 200") && run.contains("extract: succeeded"),
        "{run}"
    );
    let task = http_get(port, &format!("/runs/{run_id}/tasks/extract"))?;
    assert!(task.contains("href=\"/lake/parted/\""), "{task}");
    let files = http_get(port, "/lake/parted/")?;
    assert!(
        files.contains("gps_provider=gps/") && files.contains("_SUCCESS"),
        "{files}"
    );
    if let Some(chromium) = ui_tool("chromium") {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&shots)?;
        let page = browse(
            &chromium,
            &dir.join("chromium-profile"),
            &format!("{}/runs/{run_id}", ui.base),
            &shots.join("s3-lake-run.png"),
        )?;
        assert!(page.dom.contains("extract: succeeded"), "{}", page.dom);
        assert!(page.console.is_empty(), "{:?}", page.console);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Fault tolerance on the cluster: real processes killed, stopped and
// restarted mid-job (kiln's default recovery settings throughout).

/// One `kiln executor` process of a [`FaultCluster`].
struct Executor {
    child: Child,
    work: PathBuf,
    /// Stopped on purpose by the test (not to be restarted).
    retired: bool,
}

/// A scheduler and executors (1 vcore each) whose processes a test kills,
/// stops and restarts; everything left is killed on drop.
struct FaultCluster {
    dir: PathBuf,
    scheduler: Child,
    port: u16,
    executors: Vec<Executor>,
    started: usize,
    /// Environment of the executors started from now on.
    executor_env: Vec<(String, String)>,
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
        for e in &mut self.executors {
            signal(&e.child, "CONT");
            let _ = e.child.kill();
            let _ = e.child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
}

impl FaultCluster {
    fn start(dir: &Path, executors: usize) -> Result<FaultCluster, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cluster = FaultCluster {
            dir: dir.to_path_buf(),
            scheduler: Self::spawn_scheduler(dir, port)?,
            port,
            executors: Vec::new(),
            started: 0,
            executor_env: Vec::new(),
        };
        for _ in 0..executors {
            cluster.add_executor()?;
        }
        cluster.wait_ready(executors)?;
        Ok(cluster)
    }

    fn spawn_scheduler(dir: &Path, port: u16) -> Result<Child, std::io::Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("scheduler.log"))?;
        kiln()
            .args(["scheduler", "--bind-port", &port.to_string()])
            .env("KILN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
    }

    fn add_executor(&mut self) -> TestResult {
        self.started += 1;
        let work = self.dir.join(format!("executor{}", self.started));
        std::fs::create_dir_all(&work)?;
        let log = std::fs::File::create(self.dir.join(format!("executor{}.log", self.started)))?;
        let child = kiln()
            .args(["executor", "--scheduler-port", &self.port.to_string()])
            .args(["--bind-port", &free_port()?.to_string()])
            .args(["--grpc-port", &free_port()?.to_string()])
            .args(["--vcores", "1", "--work-dir"])
            .arg(&work)
            .envs(self.executor_env.iter().map(|(k, v)| (k, v)))
            .env("KILN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.executors.push(Executor {
            child,
            work,
            retired: false,
        });
        Ok(())
    }

    /// Starts again, on new ports, every executor that exited without the
    /// test stopping it: the ports `free_port` found can be taken by another
    /// process (another scenario's executor) before the executor binds them.
    fn restart_dead_executors(&mut self) -> TestResult {
        let mut dead = 0;
        for e in &mut self.executors {
            if !e.retired && e.child.try_wait()?.is_some() {
                e.retired = true;
                dead += 1;
            }
        }
        for _ in 0..dead {
            self.add_executor()?;
        }
        Ok(())
    }

    /// Waits until the scheduler's /readyz counts `n` executors.
    fn wait_ready(&mut self, n: usize) -> TestResult {
        let started = Instant::now();
        loop {
            let body = http_get(self.port, "/readyz").unwrap_or_default();
            // "ready: N executors registered", or for none
            // "not ready: 0/1 executors registered".
            if body.contains(&format!("{n} executors registered"))
                || body.contains(&format!(": {n}/"))
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(90) {
                let logs: Vec<String> = (1..=self.started)
                    .map(|i| {
                        let log =
                            std::fs::read_to_string(self.dir.join(format!("executor{i}.log")))
                                .unwrap_or_default();
                        format!(
                            "executor{i}: {}",
                            log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                        )
                    })
                    .collect();
                return Err(format!("cluster not ready: {body}\n{}", logs.join("\n")).into());
            }
            self.restart_dead_executors()?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn restart_scheduler(&mut self) -> TestResult {
        self.scheduler = Self::spawn_scheduler(&self.dir, self.port)?;
        Ok(())
    }

    fn master(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn scheduler_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("scheduler.log")).unwrap_or_default()
    }
}

/// A plain HTTP/1.0 GET on loopback; the response text.
fn http_get(port: u16, path: &str) -> Result<String, std::io::Error> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// What a fault scenario does to the cluster once the job runs.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL one executor.
    KillExecutor,
    /// SIGKILL every executor, then start two fresh ones.
    KillAllExecutors,
    /// SIGKILL the scheduler, then start it again on the same port.
    KillScheduler,
    /// SIGSTOP one executor (a hung process that keeps its sockets).
    StopExecutor,
}

/// The file names and sizes under `dir` (empty when it does not exist).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p.display().to_string(), size)
        })
        .collect();
    files.sort();
    files
}

/// `kiln submit --only extract_inference` of `config` (its `LAKE_ROOT` set
/// to `dir/lake`) on `master`, with its own run history; and that lake.
fn extraction(
    dir: &Path,
    config: &str,
    master: &str,
) -> Result<(Command, PathBuf), std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let lake = dir.join("lake");
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        config.replace("LAKE_ROOT", &format!("file://{}", lake.display())),
    )?;
    let mut command = kiln();
    command
        .args(["submit", "--master", master, "--only", "extract_inference"])
        .arg(&path)
        .env("KILN_HOME", dir.join("home"));
    Ok((command, lake))
}

/// Runs the 7-table extraction on a fresh cluster, applies `fault` while
/// its first stages run, and checks the job completes with the same rows
/// as `local[2]`, that a reader never saw partial output, and that the
/// fault really hit the job. Returns the wall time.
fn fault_scenario(
    dir: &Path,
    config: &str,
    fault: Fault,
    reference: (u64, u64),
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut cluster = FaultCluster::start(dir, 2)?;
    let (mut command, lake) = extraction(dir, config, &cluster.master())?;
    let out = lake.join("extraction/inference");
    let started = Instant::now();
    let mut client = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("client.log"))?)
        .spawn()?;

    // A reader polling the output: it must only ever see nothing or the
    // final files.
    let stop_reader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (out, stop) = (out.clone(), stop_reader.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = listing(&out);
                if !now.is_empty() && seen.last() != Some(&now) {
                    seen.push(now);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };

    // The fault lands on the first live executor that holds shuffle output
    // of the job (one that died at start, its ports taken, was replaced and
    // never gets any).
    let victim = loop {
        let holding = cluster
            .executors
            .iter()
            .position(|e| !e.retired && walk(&e.work).iter().any(|p| p.is_file()));
        if let Some(i) = holding {
            break i;
        }
        if client.try_wait()?.is_some() {
            return Err(format!("{fault:?}: the job ended before the fault").into());
        }
        cluster.restart_dead_executors()?;
        std::thread::sleep(Duration::from_millis(20));
    };
    match fault {
        Fault::KillExecutor => {
            cluster.executors[victim].retired = true;
            cluster.executors[victim].child.kill()?
        }
        Fault::StopExecutor => signal(&cluster.executors[victim].child, "STOP"),
        Fault::KillAllExecutors => {
            for e in &mut cluster.executors {
                e.retired = true;
                e.child.kill()?;
            }
            std::thread::sleep(Duration::from_secs(2));
            cluster.add_executor()?;
            cluster.add_executor()?;
            // A replacement that could not bind its ports is replaced too.
            for _ in 0..15 {
                std::thread::sleep(Duration::from_millis(200));
                cluster.restart_dead_executors()?;
            }
        }
        Fault::KillScheduler => {
            cluster.scheduler.kill()?;
            cluster.scheduler.wait()?;
            std::thread::sleep(Duration::from_secs(3));
            cluster.restart_scheduler()?;
        }
    }
    assert!(
        client.try_wait()?.is_none(),
        "{fault:?}: the job ended before the fault landed"
    );

    // Bounded: a hang is a failure, not a stuck test.
    let status = loop {
        if let Some(status) = client.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let _ = client.kill();
            break client.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    stop_reader.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().map_err(|_| "reader panicked")?;
    let log = std::fs::read_to_string(dir.join("client.log"))?;
    assert!(
        status.success(),
        "{fault:?}: the job failed after {seconds:.0} s:\n{log}\nscheduler:\n{}",
        cluster.scheduler_log()
    );
    assert_eq!(
        checksum(&out)?,
        reference,
        "{fault:?}: output differs from local[2]"
    );
    let last = listing(&out);
    assert!(
        seen.iter().all(|s| *s == last),
        "{fault:?}: a reader saw partial output: {seen:?}"
    );
    assert_no_staging(&lake);
    // The fault hit the job: the scheduler gave up on an executor, or the
    // client retried after losing the scheduler.
    let evidence = match fault {
        Fault::KillScheduler => log.contains("attempt 1 of task extract_inference failed"),
        _ => cluster.scheduler_log().contains("heartbeat timed out"),
    };
    assert!(
        evidence,
        "{fault:?}: no sign of recovery:\n{log}\nscheduler:\n{}",
        cluster.scheduler_log()
    );
    Ok(seconds)
}

#[test]
fn cluster_survives_lost_executors_and_a_restarted_scheduler() -> TestResult {
    let dir = tempdir("faults");
    // The demo's 7-table inference extraction over 300k generated rows.
    let demo = std::fs::read_to_string(workspace().join("configs/indoor_outdoor.yaml"))?;
    let raw = dir.join("raw-lake");
    let generate = replaced(
        &demo,
        "rows: ${KILN_INFERENCE_ROWS:-200000}",
        "rows: 300000",
    )
    .replace(
        "${KILN_LAKE:-file://./lake}",
        &format!("file://{}", raw.display()),
    );
    let path = dir.join("generate.yaml");
    std::fs::write(&path, generate)?;
    let o = kiln()
        .args([
            "submit",
            "--master",
            "local[2]",
            "--only",
            "generate_inference",
        ])
        .arg(&path)
        .env("KILN_HOME", dir.join("home"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let config = demo
        .replace("${KILN_LAKE:-file://./lake}", "LAKE_ROOT")
        .replace(
            "path: raw/inference/",
            &format!("path: file://{}/raw/inference/", raw.display()),
        )
        .replace(
            "  - name: extract_inference\n",
            "  - name: extract_inference\n    retries: 2\n    retry_delay: 1\n",
        );
    assert!(config.contains("retries: 2") && config.contains(&raw.display().to_string()));

    // The reference: local[2], and the same job on an undisturbed cluster.
    let (mut command, local) = extraction(&dir.join("local"), &config, "local[2]")?;
    let o = command.output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = checksum(&local.join("extraction/inference"))?;
    assert_eq!(reference.0, 300_000);

    // A cluster without executors: the run says it waits, then gives up
    // with what to do (instead of waiting silently for ever); once an
    // executor registers, the same run goes.
    {
        let mut empty = FaultCluster::start(&dir.join("empty"), 0)?;
        let noop = dir.join("noop.yaml");
        std::fs::write(
            &noop,
            format!(
                "name: noop\nstorage: {{root: {}}}\nprocessing_tasks:\n  - {{name: a, classname: ShellCommand, initialization_parameters: {{command: [\"true\"]}}}}\n",
                dir.join("empty-lake").display()
            ),
        )?;
        let master = empty.master();
        let run = |wait: &str| {
            kiln()
                .args(["submit", "--master", &master, "--conf"])
                .arg(format!("kiln.cluster.executor_wait_seconds={wait}"))
                .arg(&noop)
                .env("KILN_HOME", dir.join("home"))
                .output_bounded()
        };
        let o = run("2")?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("waiting for executors")
                && err.contains("has no live executor after 2 s")
                && err.contains("kiln executor --scheduler-host"),
            "{err}"
        );
        empty.add_executor()?;
        empty.wait_ready(1)?;
        let o = run("60")?;
        assert!(o.status.success(), "{}", stderr(&o));
        // Asked to stop (SIGTERM, as Kubernetes does), an executor drains
        // and exits 0: a clean stop, unlike a failed service.
        let executor = &mut empty.executors[0];
        executor.retired = true;
        signal(&executor.child, "TERM");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = executor.child.try_wait()? {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the executor did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "SIGTERM: the executor exited with {status}"
        );
        // A misspelt kiln setting is a configuration error.
        let o = kiln()
            .args([
                "submit",
                "--master",
                "local[1]",
                "--conf",
                "kiln.cluster.executor_wait=5",
            ])
            .arg(&noop)
            .env("KILN_HOME", dir.join("home"))
            .output_bounded()?;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("did you mean kiln.cluster.executor_wait_seconds"),
            "{err}"
        );
    }

    let undisturbed = {
        let cluster = FaultCluster::start(&dir.join("undisturbed"), 2)?;
        let (mut command, lake) = extraction(&dir.join("undisturbed"), &config, &cluster.master())?;
        let started = Instant::now();
        let o = command.output_bounded()?;
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(checksum(&lake.join("extraction/inference"))?, reference);
        started.elapsed().as_secs_f64()
    };

    // The four faults, each on its own cluster, concurrently (most of each
    // scenario is the scheduler waiting out the executor timeout).
    let faults = [
        Fault::KillExecutor,
        Fault::KillAllExecutors,
        Fault::KillScheduler,
        Fault::StopExecutor,
    ];
    let results: Vec<(Fault, Result<f64, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = faults
            .iter()
            .map(|&fault| {
                let (dir, config) = (dir.join(format!("{fault:?}")), &config);
                scope.spawn(move || {
                    fault_scenario(&dir, config, fault, reference).map_err(|e| e.to_string())
                })
            })
            .collect();
        faults
            .iter()
            .zip(handles)
            .map(|(&f, h)| (f, h.join().unwrap_or_else(|_| Err("panicked".into()))))
            .collect()
    });
    eprintln!("undisturbed cluster run: {undisturbed:.1} s");
    for (fault, result) in &results {
        match result {
            Ok(s) => eprintln!(
                "{fault:?}: {s:.1} s ({:+.1} s against undisturbed)",
                s - undisturbed
            ),
            Err(e) => eprintln!("{fault:?}: FAILED: {e}"),
        }
    }
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(f, r)| r.err().map(|e| format!("{f:?}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    Ok(())
}

/// `ModelTraining` on generated rows with `distribution: MODE`: a grid
/// tuned with 3-fold CV (GBT and forest), or one untuned GBT (over 3
/// partitions when data-parallel) for `data_parallel` and `auto`.
/// `mode` is a `distribution`, or `forest_` and one: a random forest alone.
fn training_config(lake: &Path, raw: &Path, mode: &str) -> String {
    let estimators = if let Some(distribution) = mode.strip_prefix("forest_") {
        return training_config(lake, raw, distribution).replace(
            "GBTClassifier\n          params: { maxIter: 8, maxDepth: 4, subsamplingRate: 0.8, minInstancesPerNode: 5 }",
            "RandomForestClassifier\n          params: { numTrees: 5, maxDepth: 5, subsamplingRate: 0.8, minInstancesPerNode: 3 }",
        );
    } else if mode == "data_parallel" || mode == "auto" || mode == "local" {
        "      data_parallel_partitions: 3\n      estimators:\n        - classname: GBTClassifier\n          params: { maxIter: 8, maxDepth: 4, subsamplingRate: 0.8, minInstancesPerNode: 5 }\n"
    } else {
        "      cross_validation: { num_folds: 3, parallelism: 2 }\n      estimators:\n        - classname: GBTClassifier\n          params: { maxIter: 6 }\n          grid: { maxDepth: [2, 4], stepSize: [0.1, 0.3] }\n        - classname: RandomForestClassifier\n          params: { numTrees: 6 }\n          grid: { maxDepth: [3, 6], numTrees: [3, 6] }\n"
    };
    format!(
        "name: train_{mode}\nstorage:\n  root: file://{}\nprocessing_tasks:\n  - name: train\n    classname: ModelTraining\n    initialization_parameters:\n      input: file://{}/\n      label_col: label_indoor\n      feature_cols: [rsrp, rsrq, rssi, sinr, gps_accuracy, gps_speed, wifi_rssi, light_lux]\n      test_fraction: 0.25\n      seed: 3\n      distribution: {mode}\n{estimators}    transformation_parameters:\n      path_model_repository: models/m/\n",
        lake.display(),
        raw.display()
    )
}

/// Trains `mode` into a fresh lake under `dir` on `master`; the model
/// artifact's bytes and the report's distribution mode and reason.
fn train_model(
    dir: &Path,
    raw: &Path,
    mode: &str,
    master: &str,
) -> Result<(Vec<u8>, String, String), Box<dyn std::error::Error>> {
    let lake = dir.join("lake");
    let _ = std::fs::remove_dir_all(&lake);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{mode}.yaml"));
    std::fs::write(&path, training_config(&lake, raw, mode))?;
    let o = kiln()
        .args(["submit", "--master", master])
        .arg(&path)
        .env("KILN_HOME", dir.join("home"))
        .output_bounded()?;
    if !o.status.success() {
        return Err(format!("{mode} on {master}: {}", stderr(&o)).into());
    }
    let model = std::fs::read(lake.join("models/m/v1/model.json"))?;
    let cache = listing(&lake.join("_kiln/cache/training"));
    assert!(
        cache.is_empty(),
        "{mode}: training cache left behind: {cache:?}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lake.join("models/m/v1/report.json"))?)?;
    let said = |key: &str| {
        report["distribution"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Ok((model, said("mode"), said("reason")))
}

#[test]
fn distributed_training_matches_local_on_1_2_and_3_executors_and_survives_a_killed_executor()
-> TestResult {
    let dir = tempdir("distributed-training");
    generate(&dir, 20_000, 5, "raw")?;
    let raw = dir.join("raw");
    let modes = ["tuning", "data_parallel", "forest_data_parallel"];
    let mut reference = Vec::new();
    for mode in modes {
        let (model, used, _) = train_model(&dir.join("local"), &raw, mode, "local[2]")?;
        let expected = if mode == "tuning" {
            "local"
        } else {
            "data_parallel"
        };
        assert_eq!(used, expected, "{mode} on local[2]");
        reference.push(model);
    }
    // A data-parallel forest is the forest a local fit grows, node for node.
    let (forest, used, _) = train_model(&dir.join("local"), &raw, "forest_local", "local[2]")?;
    assert_eq!(used, "local");
    assert!(
        forest == reference[2],
        "the data-parallel forest differs from the local one"
    );
    let mut cluster = FaultCluster::start(&dir.join("cluster"), 1)?;
    // Executors keep at most about one partition's codes: tasks that land
    // on an executor without their partition read it again and recompute
    // its scores from the trees.
    cluster.executor_env = vec![("KILN_TRAINING_CACHE_MEMORY".into(), "250KB".into())];
    for executors in 1..=3 {
        if executors > 1 {
            cluster.add_executor()?;
            cluster.wait_ready(executors)?;
        }
        for (mode, expected) in modes.iter().zip(&reference) {
            let run = dir.join(format!("{mode}-{executors}"));
            let (model, used, _) = train_model(&run, &raw, mode, &cluster.master())?;
            assert_eq!(
                used,
                mode.trim_start_matches("forest_"),
                "{mode} on {executors} executor(s)"
            );
            assert!(
                model == *expected,
                "{mode} on {executors} executor(s): the model differs from local[2]"
            );
        }
    }
    // `auto` for an untuned GBT on three 1-vcore executors: the cost model
    // (read from the scheduler's /api/executors) keeps the fit in this
    // process, and the report says what it weighed.
    let (_, used, reason) = train_model(&dir.join("auto-3"), &raw, "auto", &cluster.master())?;
    assert_eq!(used, "local", "{reason}");
    assert!(reason.contains("3 vcores"), "{reason}");
    // A forest is weighed by rows × trees, here far below its break-even.
    let (_, used, reason) =
        train_model(&dir.join("auto-3"), &raw, "forest_auto", &cluster.master())?;
    assert_eq!(used, "local", "{reason}");
    assert!(
        reason.contains("rows × trees") && reason.contains("pays from"),
        "{reason}"
    );
    // SIGKILL one executor while both modes train: Ballista runs its tasks
    // again elsewhere, and the models are the same.
    let started = Instant::now();
    let runs: Vec<_> = modes
        .iter()
        .map(|mode| {
            let (run, raw, master) = (
                dir.join(format!("{mode}-fault")),
                raw.clone(),
                cluster.master(),
            );
            let mode = mode.to_string();
            std::thread::spawn(move || {
                train_model(&run, &raw, &mode, &master).map_err(|e| e.to_string())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&cluster.executors[1].child, "KILL");
    for ((mode, expected), run) in modes.iter().zip(&reference).zip(runs) {
        let (model, _, _) = run.join().map_err(|_| "panicked")??;
        assert!(
            model == *expected,
            "{mode} after a killed executor: the model differs"
        );
    }
    eprintln!(
        "both modes with an executor killed after 1.5 s: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `kiln serve` as a child process; its stderr goes to `log` once the
/// server said where it listens.
struct ServeProcess {
    child: Child,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(
    dir: &Path,
    db: &str,
    log: &str,
) -> Result<ServeProcess, Box<dyn std::error::Error>> {
    let mut command = kiln();
    command
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--master",
            "local[2]",
        ])
        .args([
            "--lease-seconds",
            "2",
            "--per-user-running",
            "4",
            "--db",
            db,
        ])
        .arg("--lake")
        .arg(format!("{}/lake/", dir.display()))
        .env("KILN_HOME", dir.join("home"));
    listening(&mut command, dir.join(log))
}

/// Starts a `kiln` server command and waits for its `listening on URL`
/// line; the rest of its stderr goes to `log_path`.
fn listening(
    command: &mut Command,
    log_path: PathBuf,
) -> Result<ServeProcess, Box<dyn std::error::Error>> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let shown = log_path.display().to_string();
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(log_path).ok();
        let mut told = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = std::io::Write::write_all(f, format!("{line}\n").as_bytes());
            }
            if !told && let Some(address) = line.strip_prefix("listening on ") {
                let _ = tx.send(address.to_string());
                told = true;
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| format!("the server did not start; see {shown}"))?;
    Ok(ServeProcess { child, base })
}

/// A fresh database on the test PostgreSQL server (`.ci/postgres start`).
fn fresh_postgres(runtime: &tokio::runtime::Runtime) -> Option<String> {
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
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("the test PostgreSQL server answers");
        tokio::spawn(connection);
        let name = format!("kiln_{}", std::process::id());
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client.batch_execute(&sql).await.expect("create database");
        }
        let (prefix, _) = base.rsplit_once('/').expect("a database in the URL");
        Some(format!("{prefix}/{name}"))
    })
}

const SERVICE_RULES: &str = "name: t
entity: { column: device_id, mean_rows: 50, sigma: 0.5 }
columns:
  - name: sample_id
    gen: { unique_id: { start: 1 } }
  - name: speed
    gen: { lognormal: { mu: 2.0, sigma: 0.5, max: 500, round: 1 } }
";

/// 50 jobs queued and running, the server killed with SIGKILL and started
/// again: every job completes once in effect (one committed output each,
/// with all its rows, no staging left), on SQLite and on PostgreSQL.
#[test]
fn service_jobs_survive_a_killed_server_exactly_once_in_effect() -> TestResult {
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempdir("serve-kill");
    let mut backends = vec![(
        "sqlite",
        format!("sqlite:{}/sqlite/service.sqlite", dir.display()),
    )];
    if let Some(url) = fresh_postgres(&runtime) {
        backends.push(("postgres", url));
    }
    for (name, db) in backends {
        let root = dir.join(name);
        std::fs::create_dir_all(&root)?;
        runtime.block_on(kill_scenario(&root, &db))?;
    }
    Ok(())
}

async fn kill_scenario(root: &Path, db: &str) -> TestResult {
    const JOBS: usize = 50;
    const ROWS: u64 = 100_000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut server = start_serve(root, db, "serve-1.log")?;
    let mut ids = Vec::new();
    for seed in 0..JOBS {
        let r = client
            .post(format!("{}/api/v1/jobs", server.base))
            .json(&serde_json::json!({"type": "generate", "params": {"rules": SERVICE_RULES, "rows": ROWS, "seed": seed}}))
            .send()
            .await?;
        assert_eq!(r.status(), 202, "{}", r.text().await?);
        let v: serde_json::Value = r.json().await?;
        ids.push(v["id"].as_str().ok_or("id")?.to_string());
    }
    let jobs = |base: String| {
        let client = client.clone();
        async move {
            let v: serde_json::Value = client
                .get(format!("{base}/api/v1/jobs?limit=1000"))
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(v["jobs"].as_array().cloned().unwrap_or_default())
        }
    };
    // Kill once some jobs are done and others are running.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = jobs(server.base.clone()).await?;
        let done = all.iter().filter(|j| j["state"] == "succeeded").count();
        let running = all.iter().filter(|j| j["state"] == "running").count();
        if done >= 3 && running >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill()?; // SIGKILL
    server.child.wait()?;
    server = start_serve(root, db, "serve-2.log")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let all = loop {
        let all = jobs(server.base.clone()).await?;
        if all.len() == JOBS
            && all
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rerun = all
        .iter()
        .filter(|j| j["attempts"].as_i64() > Some(1))
        .count();
    eprintln!("{db}: {JOBS} jobs, {rerun} ran again after the kill");
    assert!(rerun >= 1, "no job was interrupted by the kill");
    let datasets: serde_json::Value = client
        .get(format!(
            "{}/api/v1/datasets?limit=1000&scope=all",
            server.base
        ))
        .send()
        .await?
        .json()
        .await?;
    let datasets = datasets["datasets"].as_array().cloned().unwrap_or_default();
    assert_eq!(datasets.len(), JOBS, "one output dataset per job");
    for job in &all {
        assert_eq!(job["state"], "succeeded", "{job}");
        let id = job["id"].as_str().ok_or("id")?;
        let outputs = job["outputs"].as_array().ok_or("outputs")?;
        assert_eq!(outputs.len(), 1, "{job}");
        let out = outputs[0]["dataset_id"].as_str().ok_or("dataset")?;
        assert_eq!(out, format!("{id}-0"));
        let record = datasets
            .iter()
            .find(|d| d["id"] == out)
            .ok_or("output not listed")?;
        assert_eq!(record["rows"], ROWS);
        // The files hold exactly the rows: no duplicate or partial file.
        let dir = root.join(format!("lake/_kiln/service/datasets/{out}"));
        let mut rows = 0usize;
        for file in walk(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&file)?,
            )?
            .build()?;
            for batch in reader {
                rows += batch?.num_rows();
            }
        }
        assert_eq!(rows as u64, ROWS, "{}", dir.display());
    }
    let mut listed: Vec<String> = ids.iter().map(|i| format!("{i}-0")).collect();
    listed.sort();
    let mut found: Vec<String> = datasets
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    found.sort();
    assert_eq!(listed, found);
    assert_no_staging(&root.join("lake"));
    Ok(())
}

/// A tool the web UI's tests need (`KILN_TEST_<NAME>` or `/usr/bin/<name>`);
/// `None` skips those checks, unless `KILN_REQUIRE_UI_TOOLS` is set (as
/// `.ci/run` does after installing Debian's chromium and prometheus).
fn ui_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os(format!("KILN_TEST_{}", name.to_uppercase()))
        .map_or_else(|| Path::new("/usr/bin").join(name), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("KILN_REQUIRE_UI_TOOLS").is_none(),
        "KILN_REQUIRE_UI_TOOLS is set, but {} is missing",
        path.display()
    );
    eprintln!("skipping the {name} checks: {} is missing", path.display());
    None
}

/// A page as headless Chromium shows it: the DOM after its scripts ran and
/// the console messages it logged (errors included).
struct BrowsedPage {
    dom: String,
    console: Vec<String>,
}

/// Loads `url` in headless Chromium twice: once for the DOM, once for a
/// screenshot at `screenshot` (a test artefact under the target dir).
fn browse(
    chromium: &Path,
    profile: &Path,
    url: &str,
    screenshot: &Path,
) -> Result<BrowsedPage, Box<dyn std::error::Error>> {
    let run = |extra: &str| -> Result<Output, std::io::Error> {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1366,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(url)
            .output_bounded()
    };
    let dom = run("--dump-dom")?;
    assert!(dom.status.success(), "chromium {url}: {}", stderr(&dom));
    let shot = run(&format!("--screenshot={}", screenshot.display()))?;
    assert!(shot.status.success(), "chromium {url}: {}", stderr(&shot));
    assert!(
        std::fs::metadata(screenshot).is_ok_and(|m| m.len() > 1000),
        "no screenshot of {url}"
    );
    Ok(BrowsedPage {
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
        console: stderr(&dom)
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_string)
            .collect(),
    })
}

/// `kiln ui` over a lake with a run that retried and ran two tasks side by
/// side, a run that failed, a resumed run and a running one: the runs list
/// and its filters, a run's graph, timeline, tasks and configuration,
/// errors escaped, unknown runs and bad filters answered with their status,
/// the pages in headless Chromium, and Prometheus metrics (promtool).
#[test]
fn ui_history_server_shows_runs_graphs_timelines_and_metrics() -> TestResult {
    let dir = tempdir("ui");
    let lake = dir.join("lake");
    std::fs::create_dir_all(&lake)?;
    let counter = dir.join("counter");
    let good = format!(
        r#"name: ui
storage: {{root: {lake}}}
processing_tasks:
  - name: flaky
    classname: ShellCommand
    retries: 2
    retry_delay: 0.1
    initialization_parameters:
      command: [sh, -c, 'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ] || exit 1']
  - {{name: left, classname: ShellCommand, depends_on: [flaky], initialization_parameters: {{command: ["true"]}}}}
  - {{name: right, classname: ShellCommand, depends_on: [flaky], initialization_parameters: {{command: ["true"]}}}}
"#,
        lake = lake.display(),
        counter = counter.display()
    );
    let bad = format!(
        "name: broken\nstorage: {{root: {}}}\nprocessing_tasks:\n  - name: fails\n    classname: ShellCommand\n    initialization_parameters: {{command: [sh, -c, 'echo \"disk <full>\" >&2; exit 3']}}\n",
        lake.display()
    );
    let o = submit(&dir, "good.yaml", &good, "local[2]")?;
    assert!(o.status.success(), "{}", stderr(&o));
    let good_id = run_id_of(&stderr(&o)).ok_or("run id")?;
    let o = submit(&dir, "bad.yaml", &bad, "local[2]")?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let bad_id = run_id_of(&stderr(&o)).ok_or("run id")?;

    // The demo, small: its DAG, its training report, its predictions.
    let demo = replaced(
        &small_demo(&lake)?,
        "grid: { maxDepth: [3] }",
        "grid: { maxDepth: [2, 3] }",
    );
    let o = submit(&dir, "demo.yaml", &demo, "local[2]")?;
    assert!(o.status.success(), "{}", stderr(&o));
    let demo_id = run_id_of(&stderr(&o)).ok_or("run id")?;
    // The last progress of each task, published beside the event log.
    let progress = json_file(&lake.join(format!("_kiln/runs/{demo_id}/progress.json")))?;
    for task in ["generate_training", "features", "train"] {
        assert!(
            progress["tasks"][task]["stage"].is_string(),
            "no progress of {task}: {progress}"
        );
    }
    // A schedule, recorded in the lake by `kiln schedule`.
    let nightly = format!(
        "name: nightly\nschedule: \"* * * * * *\"\nstorage: {{root: {}}}\nprocessing_tasks:\n  - {{name: noop, classname: ShellCommand, initialization_parameters: {{command: [\"true\"]}}}}\n",
        lake.display()
    );
    std::fs::write(dir.join("nightly.yaml"), nightly)?;
    let o = kiln()
        .args(["schedule", "--for", "2.5", "--master", "local[1]"])
        .arg(dir.join("nightly.yaml"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));

    let ui = listening(
        kiln()
            .args(["ui", "--bind", "127.0.0.1:0", "--lake"])
            .arg(&lake),
        dir.join("ui.log"),
    )?;
    let port: u16 = ui.base.rsplit(':').next().ok_or("port")?.trim().parse()?;
    let get = |path: &str| -> Result<(u16, String), Box<dyn std::error::Error>> {
        let text = http_get(port, path)?;
        let status = text
            .split_whitespace()
            .nth(1)
            .ok_or("no status line")?
            .parse()?;
        Ok((status, text))
    };

    let (status, page) = get("/")?;
    assert_eq!(status, 200, "{page}");
    for needle in [
        &good_id,
        &bad_id,
        "class=\"state state-succeeded\"",
        "class=\"state state-failed\"",
    ] {
        assert!(page.contains(needle), "'{needle}' not on /:\n{page}");
    }
    let (_, failed) = get("/?state=failed")?;
    assert!(
        failed.contains(&bad_id) && !failed.contains(&format!("/runs/{good_id}")),
        "{failed}"
    );
    let (_, only_ui) = get("/?pipeline=ui&state=")?;
    assert!(
        only_ui.contains(&good_id) && !only_ui.contains(&format!("/runs/{bad_id}")),
        "{only_ui}"
    );
    // The time window: a day long ago shows nothing; a bad day is a 400.
    let (_, old) = get("/?since=2000-01-01&until=2000-01-02")?;
    assert!(
        old.contains("No run matches.") && !old.contains(&good_id),
        "{old}"
    );
    let today = Command::new("date").args(["-u", "+%Y-%m-%d"]).output()?;
    let today = String::from_utf8_lossy(&today.stdout).trim().to_string();
    let (_, recent) = get(&format!("/?since=2000-01-01&until={today}"))?;
    assert!(recent.contains(&good_id), "{recent}");
    let (status, page) = get("/?since=yesterday")?;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("write it as YYYY-MM-DD"), "{page}");
    let (status, page) = get("/?state=bogus")?;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("use running, succeeded or failed"), "{page}");
    let (status, _) = get("/?page=9")?;
    assert_eq!(status, 404);

    let (status, run) = get(&format!("/runs/{good_id}"))?;
    assert_eq!(status, 200, "{run}");
    assert!(
        run.contains("class=\"dag\"") && run.contains("class=\"timeline\""),
        "{run}"
    );
    // Two edges from flaky; three attempts of flaky, two of them retried.
    assert_eq!(run.matches("marker-end=").count(), 2, "{run}");
    assert_eq!(run.matches("(retried: ").count(), 2, "{run}");
    assert!(
        run.contains("href=\"#task-left\"") && run.contains("id=\"task-right\""),
        "{run}"
    );
    assert!(
        run.contains("retries: 2"),
        "the configuration is shown: {run}"
    );

    let (status, broken) = get(&format!("/runs/{bad_id}"))?;
    assert_eq!(status, 200);
    assert!(
        broken.contains("disk &lt;full&gt;") && !broken.contains("disk <full>"),
        "{broken}"
    );

    for missing in ["/runs/nope", "/runs/..%2F..%2Fetc"] {
        let (status, page) = get(missing)?;
        assert_eq!(status, 404, "{missing}: {page}");
    }
    let (status, events) = get(&format!("/runs/{good_id}/events.jsonl"))?;
    assert_eq!(status, 200);
    assert!(events.contains("\"event\":\"run_finished\""), "{events}");

    // A training task's page: the competing models, curves, matrices,
    // importances and CV scores; its files in the lake.
    let (status, train) = get(&format!("/runs/{demo_id}/tasks/train"))?;
    assert_eq!(status, 200, "{train}");
    for needle in [
        "Model selection",
        "GBTClassifier",
        "RandomForestClassifier",
        " ★",
        "Confusion matrix",
        "Feature importances",
        "Cross-validation: 2 grid point(s)",
        "href=\"/lake/models/indoor_outdoor/v1/\"",
        "task_succeeded",
    ] {
        assert!(
            train.contains(needle),
            "'{needle}' not on the train page:\n{train}"
        );
    }
    assert_eq!(
        train.matches("class=\"curves\"").count(),
        2,
        "ROC and PR: {train}"
    );
    let (status, files) = get("/lake/models/indoor_outdoor/v1/")?;
    assert_eq!(status, 200, "{files}");
    assert!(
        files.contains("report.json") && files.contains("roc_GBTClassifier.svg"),
        "{files}"
    );
    let (status, svg) = get("/lake/models/indoor_outdoor/v1/roc_GBTClassifier.svg")?;
    assert_eq!(status, 200, "{svg}");
    let head = svg
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-type: image/svg+xml")
            && head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    for outside in [
        "/lake/models/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/lake/nothing-here/",
    ] {
        let (status, page) = get(outside)?;
        assert_eq!(status, 404, "{outside}: {page}");
    }
    // Jobs and datasets belong to `kiln serve`: the history server says so.
    let (status, page) = get("/jobs")?;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("part of the job service"), "{page}");
    let (status, page) = get(&format!("/runs/{demo_id}/tasks/nope"))?;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("its tasks are generate_training"), "{page}");
    let (_, demo) = get(&format!("/runs/{demo_id}"))?;
    assert!(
        demo.contains(&format!("href=\"/runs/{demo_id}/tasks/train\""))
            && demo.contains("href=\"/lake/predictions/"),
        "{demo}"
    );

    // The schedule: its cron, that it stopped, its started runs.
    let (status, schedules) = get("/schedules")?;
    assert_eq!(status, 200, "{schedules}");
    for needle in ["nightly", "* * * * * *", "stopped", "href=\"/runs/nightly-"] {
        assert!(
            schedules.contains(needle),
            "'{needle}' not on /schedules:\n{schedules}"
        );
    }

    let (status, models) = get("/models")?;
    assert_eq!(status, 200, "{models}");
    let report = json_file(&lake.join("models/indoor_outdoor/v1/report.json"))?;
    let winner = report["winner"].as_str().ok_or("no winner")?;
    assert!(train.contains(&format!("{winner} ★")), "{train}");
    let trained_by = format!("href=\"/runs/{demo_id}/tasks/train\"");
    for needle in [
        "models/indoor_outdoor/",
        trained_by.as_str(),
        winner,
        "areaUnderROC",
        "champion (deployed)",
        "rows=",
    ] {
        assert!(
            models.contains(needle),
            "'{needle}' not on /models:\n{models}"
        );
    }

    // A finished run's stream is its log, then the end; its page has no script.
    let (status, stream) = get(&format!("/runs/{good_id}/stream"))?;
    assert_eq!(status, 200, "{stream}");
    assert_eq!(
        stream.matches("data: {").count(),
        events.lines().filter(|l| l.starts_with('{')).count(),
        "{stream}"
    );
    assert!(!run.contains("EventSource"), "{run}");

    // A running run: its page follows the stream from the lines it showed,
    // and the stream delivers the rest as they are written.
    let live = format!(
        "name: live\nstorage: {{root: {}}}\nprocessing_tasks:\n  - {{name: wait, classname: ShellCommand, initialization_parameters: {{command: [sleep, \"3\"]}}}}\n",
        lake.display()
    );
    std::fs::write(dir.join("live.yaml"), live)?;
    let mut running = kiln()
        .args(["submit", "--master", "local[1]"])
        .arg(dir.join("live.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let live_id = loop {
        let (_, page) = get("/?pipeline=live")?;
        if let Some(at) = page.find("href=\"/runs/live-") {
            let id = &page[at + "href=\"/runs/".len()..];
            break id[..id.find('"').ok_or("quote")?].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the live run never appeared: {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, page) = get(&format!("/runs/{live_id}"))?;
    let shown = followed_from(&page)?;
    assert!(page.contains("class=\"state state-running\""), "{page}");
    let (status, rest) = get(&format!("/runs/{live_id}/stream?after={shown}"))?;
    assert_eq!(status, 200);
    assert!(running.wait()?.success());
    assert!(rest.contains("\"event\":\"run_finished\""), "{rest}");
    assert!(!rest.contains("\"event\":\"run_started\""), "{rest}");
    // The task's progress came as it ran, before the end.
    let progress_at = rest
        .find("event: progress")
        .ok_or_else(|| format!("no progress: {rest}"))?;
    assert!(rest[progress_at..].contains("running sleep"), "{rest}");
    assert!(
        progress_at < rest.find("run_finished").unwrap_or(0),
        "{rest}"
    );

    // A resumed run: its first attempt failed in `second`; the resume
    // skips `first` and runs `second` again.
    let flag = dir.join("second-ran");
    let resumable = format!(
        "name: resumable\nstorage: {{root: {}}}\nprocessing_tasks:\n  - {{name: first, classname: ShellCommand, initialization_parameters: {{command: [\"true\"]}}}}\n  - {{name: second, classname: ShellCommand, depends_on: [first], initialization_parameters: {{command: [sh, -c, 'test -e {flag} || {{ touch {flag}; exit 1; }}']}}}}\n",
        lake.display(),
        flag = flag.display()
    );
    let o = submit(&dir, "resumable.yaml", &resumable, "local[1]")?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let resumed_id = run_id_of(&stderr(&o)).ok_or("run id")?;
    let o = kiln()
        .args(["submit", "--master", "local[1]", "--resume", &resumed_id])
        .arg(dir.join("resumable.yaml"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));

    // The pages in a real browser: what a person sees, no console errors,
    // a screenshot of each (target/tmp/ui-screenshots/).
    if let Some(chromium) = ui_tool("chromium") {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&shots)?;
        let profile = dir.join("chromium-profile");
        let page = |path: &str, name: &str| {
            browse(
                &chromium,
                &profile,
                &format!("{}{path}", ui.base),
                &shots.join(format!("{name}.png")),
            )
        };
        let runs = page("/", "runs")?;
        for id in [&good_id, &bad_id, &live_id, &resumed_id] {
            assert!(
                runs.dom.contains(id.as_str()),
                "{id} not on /: {}",
                runs.dom
            );
        }
        let good = page(&format!("/runs/{good_id}"), "run-with-retries")?;
        for node in ["flaky: succeeded", "left: succeeded", "right: succeeded"] {
            assert!(good.dom.contains(node), "DAG node '{node}': {}", good.dom);
        }
        // One bar per attempt: flaky's three, left's and right's one each.
        assert_eq!(
            good.dom.matches("class=\"attempt\"").count(),
            5,
            "{}",
            good.dom
        );
        assert_eq!(good.dom.matches("(retried: ").count(), 2);
        let broken = page(&format!("/runs/{bad_id}"), "failed-run")?;
        assert!(
            broken.dom.contains("fails: failed") && broken.dom.contains("disk &lt;full&gt;"),
            "{}",
            broken.dom
        );
        let resumed = page(&format!("/runs/{resumed_id}"), "resumed-run")?;
        assert!(
            resumed.dom.contains("first skipped: ")
                && resumed.dom.contains("second: succeeded")
                && !resumed.dom.contains("could not be read"),
            "{}",
            resumed.dom
        );
        let train = page(&format!("/runs/{demo_id}/tasks/train"), "train-task")?;
        assert!(
            train.dom.contains(" ★") && train.dom.contains("Confusion matrix"),
            "{}",
            train.dom
        );
        let demo = page(&format!("/runs/{demo_id}"), "demo-run")?;
        for node in [
            "extract: succeeded",
            "features: succeeded",
            "train: succeeded",
        ] {
            assert!(demo.dom.contains(node), "DAG node '{node}': {}", demo.dom);
        }
        let schedules = page("/schedules", "schedules")?;
        assert!(schedules.dom.contains("nightly"), "{}", schedules.dom);
        let models = page("/models", "models")?;
        assert!(
            models.dom.contains("champion (deployed)") && models.dom.contains(winner),
            "{}",
            models.dom
        );
        for (name, p) in [
            ("/", &runs),
            ("run", &good),
            ("failed run", &broken),
            ("resumed run", &resumed),
            ("train task", &train),
            ("demo run", &demo),
            ("/schedules", &schedules),
            ("/models", &models),
        ] {
            assert!(
                p.console.is_empty(),
                "console messages on {name}: {:?}",
                p.console
            );
        }
    }

    let (status, metrics) = get("/metrics")?;
    assert_eq!(status, 200, "{metrics}");
    if let Some(promtool) = ui_tool("promtool") {
        let body = metrics.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(check.stdin.as_mut().ok_or("stdin")?, body.as_bytes())?;
        drop(check.stdin.take());
        let o = check.wait_with_output()?;
        assert!(
            o.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
    for line in [
        "kiln_runs{pipeline=\"ui\",state=\"succeeded\"} 1",
        "kiln_runs{pipeline=\"broken\",state=\"failed\"} 1",
        "kiln_tasks{pipeline=\"ui\",state=\"succeeded\"} 3",
        "kiln_task_retries_total{pipeline=\"ui\"} 2",
        "kiln_run_duration_seconds_count{pipeline=\"ui\"} 1",
        "# TYPE kiln_task_retries_total counter",
        "# TYPE kiln_http_requests_total counter",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "'{line}' not in:\n{metrics}"
        );
    }
    // This server's own requests, by route pattern: the unknown runs above.
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "kiln_http_requests_total{method=\"GET\",route=\"/runs/{run_id}\",status=\"404\"} "
        )),
        "{metrics}"
    );
    Ok(())
}

/// The `after=N` a live run page follows its stream from.
fn followed_from(page: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let at = page
        .find("stream?after=")
        .ok_or("the page does not follow the run")?;
    let digits: String = page[at + "stream?after=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok(digits.parse()?)
}

/// A training pipeline for the lifecycle test: a few raw columns and the
/// activity index as features, GBT of the given size, champion/challenger.
fn lifecycle_training(lake: &Path, max_iter: u32, max_depth: u32) -> String {
    format!(
        r#"name: lifecycle_training
storage: {{root: {lake}}}
processing_tasks:
  - name: features
    classname: FeaturePipeline
    initialization_parameters:
      input: raw/train/
      label_cols: [label_indoor]
      stages:
        - classname: StringIndexer
          params: {{inputCols: [activity], outputCols: [activity_idx], stringOrderType: frequencyDesc, handleInvalid: keep}}
        - classname: VectorAssembler
          params: {{outputCol: features, handleInvalid: keep, inputCols: [rsrp, rsrq, sinr, gps_accuracy, light_lux, wifi_rssi, activity_idx]}}
    transformation_parameters:
      mode: fit_transform
      path_pipeline_model: models/features/
      path_df_features: features/train/
  - name: train
    depends_on: [features]
    classname: ModelTraining
    initialization_parameters:
      input: features/train/
      path_pipeline_model: models/features/
      label_col: label_indoor
      features_col: features
      seed: 7
      champion_challenger: {{margin: 0.0}}
      estimators:
        - classname: GBTClassifier
          params: {{maxIter: {max_iter}, maxDepth: {max_depth}}}
    transformation_parameters:
      path_model_repository: models/io/
"#,
        lake = lake.display()
    )
}

/// One `BatchPrediction` task with drift monitoring.
fn lifecycle_prediction(name: &str, input: &str, retrain: Option<&Path>) -> String {
    let on_drift = retrain
        .map(|p| format!(", on_drift: {{retrain: {}}}", p.display()))
        .unwrap_or_default();
    format!(
        r#"  - name: {name}
    classname: BatchPrediction
    initialization_parameters:
      input: {input}
      path_model_repository: models/io/
      keep_cols: [sample_id]
      monitor_drift: {{psi: 0.2, ks: 0.1{on_drift}}}
    transformation_parameters:
      path_predictions: predictions/{name}/
"#
    )
}

fn json_file(path: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(
        &std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    )?)
}

/// The drifted feature names of a drift report.
fn drifted_features(report: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = report["features"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, e)| e["drifted"] == true)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn models_json(repo: &Path) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    let o = kiln()
        .args(["models", "list", "--format", "json"])
        .arg(repo)
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    Ok(serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)?)
}

fn champion_of(versions: &[serde_json::Value]) -> Option<u64> {
    versions
        .iter()
        .find(|v| {
            v["aliases"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "champion"))
        })
        .and_then(|v| v["version"].as_u64())
}

#[test]
fn drift_triggers_retraining_and_promotion_follows_the_champion() -> TestResult {
    let dir = tempdir("lifecycle");
    let lake = dir.join("lake");
    let repo = lake.join("models/io");
    // The shifted rules: rsrp 12 dB lower, another activity mix.
    let rules =
        std::fs::read_to_string(workspace().join("configs/generators/indoor_outdoor.yaml"))?;
    let shifted = rules
        .replace("mean: -106, std: 10", "mean: -118, std: 10")
        .replace("mean: -96, std: 10", "mean: -108, std: 10")
        .replace(
            "weights: [0.52, 0.14, 0.0, 0.03, 0.22, 0.07, 0.015, 0.005]",
            "weights: [0.15, 0.15, 0.2, 0.25, 0.05, 0.1, 0.05, 0.05]",
        )
        .replace(
            "weights: [0.2, 0.38, 0.09, 0.22, 0.02, 0.05, 0.03, 0.01]",
            "weights: [0.1, 0.1, 0.3, 0.3, 0.05, 0.05, 0.05, 0.05]",
        );
    assert_ne!(shifted, rules);
    let shifted_rules = dir.join("shifted.yaml");
    std::fs::write(&shifted_rules, shifted)?;
    generate(&lake, 20_000, 1, "raw/train")?;
    let o = kiln()
        .args(["generate"])
        .arg(&shifted_rules)
        .args(["--rows", "10000", "--seed", "2", "--out"])
        .arg(lake.join("raw/shifted"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let weak = dir.join("weak.yaml");
    let strong = dir.join("strong.yaml");
    std::fs::write(&weak, lifecycle_training(&lake, 2, 1))?;
    std::fs::write(&strong, lifecycle_training(&lake, 20, 4))?;

    // v1: the first winner becomes the champion.
    let o = kiln().arg("submit").arg(&weak).output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let v1 = json_file(&repo.join("v1/report.json"))?;
    assert_eq!(v1["champion_challenger"]["promoted"], true, "{v1}");
    assert!(repo.join("v1/profile.json").exists());

    // A shifted batch: drift on exactly rsrp and activity, retraining with
    // the stronger model, which beats the champion and is deployed.
    let predict = |name: &str, input: &str, retrain: Option<&Path>| {
        format!(
            "name: lifecycle_prediction\nstorage: {{root: {}}}\nprocessing_tasks:\n{}",
            lake.display(),
            lifecycle_prediction(name, input, retrain)
        )
    };
    let o = submit(
        &dir,
        "p1.yaml",
        &predict("shifted", "raw/shifted/", Some(&strong)),
        "local[2]",
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let run1 = run_id_of(&stderr(&o)).ok_or("run id")?;
    let report = json_file(&lake.join("predictions/drift/report.json"))?;
    assert_eq!(
        drifted_features(&report),
        ["activity_idx", "rsrp"],
        "{}",
        serde_json::to_string_pretty(&report["features"])?
    );
    for (name, entry) in report["features"].as_object().ok_or("features")? {
        for stat in ["psi", "ks", "js"] {
            assert!(entry[stat].is_f64(), "{name}.{stat}: {entry}");
        }
        if !["rsrp", "activity_idx"].contains(&name.as_str()) {
            assert!(
                entry["psi"].as_f64() < Some(0.2) && entry["ks"].as_f64() < Some(0.1),
                "{name}: {entry}"
            );
        }
    }
    assert_eq!(report["model"]["version"], 1);
    assert_eq!(report["rows"], 10_000);
    let retraining = &report["retraining"];
    assert_eq!(retraining["state"], "succeeded", "{report}");
    assert_eq!(retraining["promoted"], true, "{report}");
    assert!(lake.join("predictions/drift/drift.svg").exists());
    assert!(lake.join("predictions/drift/rsrp.svg").exists());
    // The same batch in 3 passes over sample_id ranges, against the same
    // model: every pass is counted into one report with the same statistics.
    let passes = format!(
        "name: lifecycle_prediction\nstorage: {{root: {}}}\nprocessing_tasks:\n  - name: shifted_passes\n    classname: BatchPrediction\n    initialization_parameters:\n      input: raw/shifted/\n      path_model_repository: models/io/\n      model_version: 1\n      keep_cols: [sample_id]\n      passes: 3\n      pass_key: sample_id\n      monitor_drift: {{psi: 0.2, ks: 0.1, path_report: drift/passes/}}\n    transformation_parameters:\n      path_predictions: predictions/shifted_passes/\n",
        lake.display()
    );
    let o = submit(&dir, "passes.yaml", &passes, "local[2]")?;
    assert!(o.status.success(), "{}", stderr(&o));
    let in_passes = json_file(&lake.join("drift/passes/report.json"))?;
    assert_eq!(in_passes["rows"], 10_000);
    for (name, entry) in report["features"].as_object().ok_or("features")? {
        for stat in ["psi", "ks", "js"] {
            let (a, b) = (
                entry[stat].as_f64(),
                in_passes["features"][name][stat].as_f64(),
            );
            assert!(
                matches!((a, b), (Some(a), Some(b)) if (a - b).abs() < 1e-12),
                "{name}.{stat}: one pass {a:?}, 3 passes {b:?}"
            );
        }
    }
    assert_eq!(drifted_features(&in_passes), ["activity_idx", "rsrp"]);
    assert_eq!(
        checksum(&lake.join("predictions/shifted_passes"))?.0,
        10_000
    );
    // The predictions have no monitoring column.
    let predictions = lake.join("predictions/shifted");
    assert!(
        walk(&predictions)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet"))
    );

    let versions = models_json(&repo)?;
    assert_eq!(versions.len(), 2);
    assert_eq!(champion_of(&versions), Some(2));
    let v2 = &versions[1];
    assert_eq!(v2["lineage"]["triggered_by"], format!("{run1}/shifted"));
    assert!(
        v2["metrics"]["areaUnderROC"].as_f64() > versions[0]["metrics"]["areaUnderROC"].as_f64()
    );
    assert!(v2["created"].is_string());

    // Now the weak model retrains: not better than the champion, so it is
    // only a challenger, and the batch was scored by the champion v2.
    let o = submit(
        &dir,
        "p2.yaml",
        &predict("again", "raw/shifted/", Some(&weak)),
        "local[2]",
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let report = json_file(&lake.join("predictions/drift/report.json"))?;
    assert_eq!(report["model"]["version"], 2);
    assert_eq!(report["retraining"]["promoted"], false, "{report}");
    let versions = models_json(&repo)?;
    assert_eq!(champion_of(&versions), Some(2));
    assert_eq!(versions[2]["aliases"], serde_json::json!(["challenger"]));
    let decision = json_file(&repo.join("v3/report.json"))?;
    assert_eq!(decision["champion_challenger"]["champion_version"], 2);

    // Rollback, promote, and their errors.
    let o = kiln()
        .args(["models", "rollback"])
        .arg(&repo)
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(champion_of(&models_json(&repo)?), Some(1));
    let o = submit(
        &dir,
        "p3.yaml",
        &predict("after_rollback", "raw/shifted/", None),
        "local[2]",
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_file(&lake.join("predictions/drift/report.json"))?["model"]["version"],
        1
    );
    let o = kiln()
        .args(["models", "rollback", "--to", "9"])
        .arg(&repo)
        .output_bounded()?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("version 9 does not exist"),
        "{}",
        stderr(&o)
    );
    let o = kiln()
        .args(["models", "promote"])
        .arg(&repo)
        .arg("challenger")
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(champion_of(&models_json(&repo)?), Some(3));
    let o = kiln()
        .args(["models", "diff"])
        .arg(&repo)
        .args(["1", "2"])
        .output_bounded()?;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("params.maxDepth"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A threshold for a feature the model does not have.
    let typo = predict("typo", "raw/shifted/", None).replace(
        "monitor_drift: {",
        "monitor_drift: {features: {rsrpp: {ks: 0.2}}, ",
    );
    let o = submit(&dir, "typo.yaml", &typo, "local[2]")?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("monitor_drift.features.rsrpp: the model has no feature 'rsrpp'")
            && stderr(&o).contains("rsrp, rsrq"),
        "{}",
        stderr(&o)
    );
    assert!(!lake.join("predictions/typo").exists());

    // A batch without one of the model's raw columns.
    let start = rules.find("  - name: rsrp\n").ok_or("rsrp rule")?;
    let end = start + 1 + rules[start + 1..].find("  - name: ").ok_or("next rule")?;
    let without = dir.join("without_rsrp.yaml");
    std::fs::write(&without, format!("{}{}", &rules[..start], &rules[end..]))?;
    let o = kiln()
        .arg("generate")
        .arg(&without)
        .args(["--rows", "500", "--seed", "3", "--out"])
        .arg(lake.join("raw/no_rsrp"))
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = submit(
        &dir,
        "p5.yaml",
        &predict("no_rsrp", "raw/no_rsrp/", None),
        "local[2]",
    )?;
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("rsrp"), "{}", stderr(&o));
    assert!(!lake.join("predictions/no_rsrp").exists());

    // An older artifact has no profile: a clear error before any work.
    std::fs::remove_file(repo.join("v3/profile.json"))?;
    let o = submit(
        &dir,
        "p4.yaml",
        &predict("old", "raw/shifted/", None),
        "local[2]",
    )?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has no reference profile"),
        "{}",
        stderr(&o)
    );
    assert!(!lake.join("predictions/old").exists());
    let o = kiln()
        .args(["models", "promote"])
        .arg(&repo)
        .arg("2")
        .output_bounded()?;
    assert!(o.status.success(), "{}", stderr(&o));

    // Unshifted batches from 20 other seeds: count the false alarms.
    let mut config = format!(
        "name: lifecycle_false_alarms\nstorage: {{root: {}}}\nprocessing_tasks:\n",
        lake.display()
    );
    for seed in 0..20 {
        config.push_str(&format!(
            "  - {{name: gen{seed}, classname: RuleBasedGenerator, initialization_parameters: {{rules: configs/generators/indoor_outdoor.yaml, rows: 10000, seed: {}}}, transformation_parameters: {{path_output: raw/clean{seed}/}}}}\n",
            100 + seed
        ));
        config.push_str(
            &lifecycle_prediction(
                &format!("clean{seed}"),
                &format!("raw/clean{seed}/"),
                Some(&strong),
            )
            .replace(
                "    classname: BatchPrediction\n",
                &format!("    classname: BatchPrediction\n    depends_on: [gen{seed}]\n"),
            )
            .replace(
                "      monitor_drift: {",
                &format!("      monitor_drift: {{path_report: drift/clean{seed}/, "),
            ),
        );
    }
    let o = submit(&dir, "clean.yaml", &config, "local[2]")?;
    assert!(o.status.success(), "{}", stderr(&o));
    let mut alarms = 0;
    let mut worst: (f64, f64) = (0.0, 0.0);
    for seed in 0..20 {
        let report = json_file(&lake.join(format!("drift/clean{seed}/report.json")))?;
        if !report["drifted"].as_array().is_some_and(|d| d.is_empty()) {
            alarms += 1;
        }
        assert!(report["retraining"].is_null(), "seed {seed}: {report}");
        for entry in report["features"].as_object().ok_or("features")?.values() {
            worst.0 = worst.0.max(entry["psi"].as_f64().unwrap_or(0.0));
            worst.1 = worst.1.max(entry["ks"].as_f64().unwrap_or(0.0));
        }
    }
    eprintln!(
        "false alarms: {alarms} of 20 unshifted batches (largest PSI {:.4}, KS {:.4})",
        worst.0, worst.1
    );
    assert_eq!(alarms, 0);
    assert_eq!(models_json(&repo)?.len(), 3, "no retraining started");
    Ok(())
}

/// A W3C WebDriver session of headless Chromium (Debian's
/// `chromium-driver`), ended and its driver killed on drop.
struct WebDriver {
    driver: Child,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    session: String,
}

/// The key W3C WebDriver gives element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = self.call(reqwest::Method::DELETE, "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl WebDriver {
    fn start(
        chromedriver: &Path,
        chromium: &Path,
        profile: &Path,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let port = free_port()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut webdriver = WebDriver {
            driver,
            runtime,
            http,
            session: format!("http://127.0.0.1:{port}"),
        };
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1366,900",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            match webdriver.call(reqwest::Method::POST, "/session", Some(&capabilities)) {
                Ok(v) => break v,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => return Err(e),
            }
        };
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {created}"))?;
        webdriver.session = format!("{}/session/{id}", webdriver.session);
        Ok(webdriver)
    }

    /// One WebDriver command; its `value`.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        // Before the session exists, `session` is the driver's address.
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = match body {
            Some(b) => request.json(b),
            None => request,
        };
        let answer: serde_json::Value = self
            .runtime
            .block_on(async { request.send().await?.json().await })?;
        if answer["value"]["error"].is_string() {
            return Err(format!("webdriver {path}: {}", answer["value"]).into());
        }
        Ok(answer["value"].clone())
    }

    fn open(&self, url: &str) -> Result<(), Box<dyn std::error::Error>> {
        self.call(
            reqwest::Method::POST,
            "/url",
            Some(&serde_json::json!({"url": url})),
        )?;
        Ok(())
    }

    fn url(&self) -> Result<String, Box<dyn std::error::Error>> {
        Ok(self
            .call(reqwest::Method::GET, "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    fn source(&self) -> Result<String, Box<dyn std::error::Error>> {
        Ok(self
            .call(reqwest::Method::GET, "/source", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    fn element(&self, css: &str) -> Result<String, Box<dyn std::error::Error>> {
        let found = self.call(
            reqwest::Method::POST,
            "/element",
            Some(&serde_json::json!({"using": "css selector", "value": css})),
        )?;
        Ok(found[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element {css}"))?
            .to_string())
    }

    /// Types `text` into the element `css` (a file input takes a path).
    fn type_into(&self, css: &str, text: &str) -> Result<(), Box<dyn std::error::Error>> {
        let element = self.element(css)?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(&serde_json::json!({"text": text})),
        )?;
        Ok(())
    }

    fn click(&self, css: &str) -> Result<(), Box<dyn std::error::Error>> {
        let element = self.element(css)?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(&serde_json::json!({})),
        )?;
        Ok(())
    }

    /// Waits until the page's source contains `needle`; the source.
    fn wait_for(
        &self,
        needle: &str,
        limit: Duration,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + limit;
        loop {
            let source = self.source()?;
            if source.contains(needle) {
                return Ok(source);
            }
            if Instant::now() > deadline {
                return Err(format!("'{needle}' never appeared:\n{source}").into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().ok_or("no screenshot")?)?;
        std::fs::write(path, bytes)?;
        Ok(())
    }

    /// The browser's console messages so far (warnings and errors).
    fn console_problems(&self) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        let log = self.call(
            reqwest::Method::POST,
            "/se/log",
            Some(&serde_json::json!({"type": "browser"})),
        )?;
        Ok(log
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
                    .map(|e| e["message"].to_string())
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The platform's pages of `kiln serve` driven in headless Chromium over
/// WebDriver, as a researcher uses them: a CSV uploaded from the upload
/// form, a generate job started from its generated form, the job's page
/// following the job live until its result, the result's preview; no
/// console errors; screenshots.
#[test]
fn researchers_upload_and_run_jobs_in_a_real_browser() -> TestResult {
    let (Some(chromium), Some(chromedriver)) = (ui_tool("chromium"), ui_tool("chromedriver"))
    else {
        return Ok(());
    };
    let dir = tempdir("browser");
    let server = start_serve(
        &dir,
        &format!("sqlite:{}/serve.sqlite", dir.display()),
        "serve.log",
    )?;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots)?;
    let browser = WebDriver::start(&chromedriver, &chromium, &dir.join("profile"))?;

    let csv = dir.join("readings.csv");
    std::fs::write(&csv, "device,rsrp\na,-95.5\nb,-101\nc,-87.25\n")?;
    browser.open(&format!("{}/datasets", server.base))?;
    browser.type_into("#upload-name", "readings")?;
    browser.type_into("#upload-file", &csv.display().to_string())?;
    browser.click("form.upload button")?;
    let dataset = browser.wait_for("Dataset readings", Duration::from_secs(30))?;
    assert!(
        dataset.contains("3 rows") && dataset.contains("-87.25"),
        "{dataset}"
    );
    browser.screenshot(&shots.join("dataset.png"))?;

    browser.open(&format!("{}/jobs/new/generate", server.base))?;
    browser.type_into(
        "#field-rules",
        "name: t\nentity: { column: device_id, mean_rows: 50, sigma: 0.5 }\ncolumns:\n  - name: sample_id\n    gen: { unique_id: { start: 1 } }\n",
    )?;
    browser.type_into("#field-rows", "20000")?;
    browser.click("#field-format option[value=csv]")?;
    browser.screenshot(&shots.join("job-form.png"))?;
    browser.click("form.job button")?;
    // The job's page, reloaded by its live stream until the job is done.
    let job = browser.wait_for("class=\"state state-succeeded\"", Duration::from_secs(120))?;
    assert!(browser.url()?.contains("/jobs/"), "{job}");
    browser.screenshot(&shots.join("job.png"))?;
    browser.click("a[href^=\"/datasets/\"]")?;
    let result = browser.wait_for("Preview (20 random rows)", Duration::from_secs(30))?;
    assert!(
        result.contains("20000 rows") && result.contains("sample_id"),
        "{result}"
    );
    browser.screenshot(&shots.join("job-result.png"))?;
    let generated = browser.url()?;
    let generated = generated.rsplit('/').next().unwrap_or_default().to_string();

    // An evaluate job whose datasets are picked from lists, not typed.
    browser.open(&format!("{}/jobs/new/evaluate", server.base))?;
    browser.click(&format!("#field-real option[value=\"{generated}\"]"))?;
    browser.click(&format!("#field-synthetic option[value=\"{generated}\"]"))?;
    browser.screenshot(&shots.join("evaluate-form.png"))?;
    browser.click("form.job button")?;
    let evaluated =
        browser.wait_for("class=\"state state-succeeded\"", Duration::from_secs(120))?;
    assert!(
        evaluated.contains(&format!("\"real\": \"{generated}\"")),
        "{evaluated}"
    );

    // A run in progress: its page shows the task's progress in place (no
    // reload), then reloads into the finished run when it ends.
    let live = format!(
        "name: live\nstorage: {{root: {}/lake/}}\nprocessing_tasks:\n  - {{name: wait, classname: ShellCommand, initialization_parameters: {{command: [sleep, \"4\"]}}}}\n",
        dir.display()
    );
    std::fs::write(dir.join("live.yaml"), live)?;
    let mut running = kiln()
        .args([
            "submit",
            "--master",
            "local[1]",
            "--run-id",
            "live-in-browser",
        ])
        .arg(dir.join("live.yaml"))
        .env("KILN_HOME", dir.join("home"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir
        .join("lake/_kiln/runs/live-in-browser/events.jsonl")
        .exists()
    {
        assert!(Instant::now() < deadline, "the live run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.open(&format!("{}/runs/live-in-browser", server.base))?;
    let during = browser.wait_for("running sleep", Duration::from_secs(30))?;
    assert!(during.contains("class=\"state state-running\""), "{during}");
    browser.screenshot(&shots.join("live-run.png"))?;
    let after = browser.wait_for("wait: succeeded", Duration::from_secs(60))?;
    assert!(after.contains("class=\"state state-succeeded\""), "{after}");
    assert!(running.wait()?.success());

    let problems = browser.console_problems()?;
    assert!(problems.is_empty(), "console: {problems:?}");
    drop(server);
    Ok(())
}
