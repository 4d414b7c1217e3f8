//! Drift monitoring of `BatchPrediction` (`monitor_drift:`): the feature
//! vectors and scores are counted against the model's reference profile
//! while the predictions stream to the writer (no second pass over the
//! batch), then a report (JSON and SVG plots) is written next to the
//! predictions, and a drifted batch can start a training run.

use crate::task::TaskContext;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use futures::StreamExt;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::io::{BatchStream, write_files};
use kiln_engine::{KilnError, Result};
use kiln_models::drift::{
    BatchCounts, DriftResult, PROFILE_FILE, ProfileIndex, ReferenceProfile, ThresholdSet,
    Thresholds,
};
use kiln_models::report::{drift_svg, shares_svg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `monitor_drift:` of `BatchPrediction`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorDrift {
    /// A feature drifts when its population stability index exceeds this
    /// (0.1 moderate, 0.2 significant).
    #[serde(default)]
    psi: Option<f64>,
    /// … or its Kolmogorov–Smirnov statistic exceeds this.
    #[serde(default)]
    ks: Option<f64>,
    /// … or its Jensen–Shannon distance (base 2) exceeds this.
    #[serde(default)]
    js: Option<f64>,
    /// … or its share of missing values grew by more than this.
    #[serde(default)]
    missing: Option<f64>,
    /// Thresholds for single features (or `prediction`), replacing the
    /// ones above for them, e.g. `light_lux: {ks: 0.15}` for a feature that
    /// moves with the time of day.
    #[serde(default)]
    features: BTreeMap<String, Thresholds>,
    /// Where the report goes (default: `drift/` beside the predictions
    /// directory, i.e. `<parent of path_predictions>/drift/`).
    #[serde(default)]
    path_report: Option<String>,
    /// Fail the task when anything drifted (after writing the report).
    #[serde(default)]
    fail_on_drift: bool,
    /// What to start when anything drifted.
    #[serde(default)]
    on_drift: Option<OnDrift>,
}

/// `on_drift:`: a training run started when the thresholds are crossed.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnDrift {
    /// The training pipeline config to submit (`kiln submit`), with this
    /// run's master and `--conf` settings.
    retrain: String,
    /// Wait for the training run and record its outcome in the drift
    /// report (default true); false starts it and goes on.
    #[serde(default = "yes")]
    wait: bool,
    /// More `--conf key=value` settings for the training run.
    #[serde(default)]
    conf: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl MonitorDrift {
    pub fn thresholds(&self) -> ThresholdSet {
        ThresholdSet {
            default: Thresholds {
                psi: self.psi,
                ks: self.ks,
                js: self.js,
                missing: self.missing,
            },
            features: self.features.clone(),
        }
    }

    pub fn fail_on_drift(&self) -> bool {
        self.fail_on_drift
    }

    pub fn on_drift(&self) -> Option<&OnDrift> {
        self.on_drift.as_ref()
    }

    /// Checks the thresholds and that the retraining config exists.
    pub fn validate(&self, at: &str) -> Result<()> {
        self.thresholds().default.validate(at)?;
        for (name, t) in &self.features {
            t.validate(&format!("{at}.features.{name}"))?;
        }
        if let Some(on) = &self.on_drift
            && !std::path::Path::new(&on.retrain).is_file()
        {
            return Err(KilnError::config_fix(
                format!("{at}.on_drift.retrain: no config file '{}'", on.retrain),
                "give the path of a training pipeline config (relative to the directory kiln runs in)",
            ));
        }
        Ok(())
    }

    /// The report directory for predictions written to `predictions`.
    pub fn report_dir(&self, ctx: &TaskContext, predictions: &str) -> Result<url::Url> {
        let path = match &self.path_report {
            Some(p) => format!("{}/", p.trim_end_matches('/')),
            None => {
                let trimmed = predictions.trim_end_matches('/');
                match trimmed.rsplit_once('/') {
                    Some((parent, _)) => format!("{parent}/drift/"),
                    None => "drift/".into(),
                }
            }
        };
        ctx.lake.resolve(&path)
    }
}

/// The reference profile stored with a model version.
pub async fn load_profile(repo: &ArtifactRepo, version: u64) -> Result<ReferenceProfile> {
    let url = repo.url(version, PROFILE_FILE);
    if !repo
        .files(version)
        .await?
        .iter()
        .any(|f| f.ends_with(PROFILE_FILE))
    {
        return Err(KilnError::config_fix(
            format!(
                "model v{version} of {} has no reference profile ({PROFILE_FILE}): it was trained by an older kiln",
                repo.base()
            ),
            "retrain the model with this kiln (ModelTraining writes the profile), or drop monitor_drift",
        ));
    }
    let bytes = repo.read(version, PROFILE_FILE).await?;
    ReferenceProfile::from_json(&bytes, &url)
}

/// Counts every batch of the prediction streams against the profile on
/// its way to the writer, and drops the feature column from what is
/// written.
pub struct Tap {
    profile: Arc<ReferenceProfile>,
    index: Arc<ProfileIndex>,
    features: usize,
    score: usize,
    partitions: Mutex<Vec<Arc<Mutex<BatchCounts>>>>,
}

impl Tap {
    /// Counts batches that carry the feature vector at `features` and the
    /// score at `score`.
    pub fn new(profile: ReferenceProfile, features: usize, score: usize) -> Self {
        let index = Arc::new(ProfileIndex::new(&profile));
        Tap {
            profile: Arc::new(profile),
            index,
            features,
            score,
            partitions: Mutex::new(Vec::new()),
        }
    }

    /// Wraps `streams` (one pass's, when a batch is written in passes):
    /// their batches are counted, and come out without the feature column.
    pub fn wrap(&self, streams: Vec<BatchStream>) -> Result<Vec<BatchStream>> {
        let mut partitions = self
            .partitions
            .lock()
            .map_err(|_| KilnError::poisoned("drift counts"))?;
        let (features, score) = (self.features, self.score);
        Ok(streams
            .into_iter()
            .map(|stream| {
                let counts = Arc::new(Mutex::new(BatchCounts::new(&self.profile)));
                partitions.push(Arc::clone(&counts));
                let index = Arc::clone(&self.index);
                stream
                    .map(move |batch| {
                        let batch = batch?;
                        count_batch(&index, &counts, &batch, features, score)?;
                        let keep: Vec<usize> = (0..batch.num_columns())
                            .filter(|i| *i != features)
                            .collect();
                        batch.project(&keep).map_err(|e| {
                            KilnError::internal("dropping the monitored feature column", e)
                        })
                    })
                    .boxed()
            })
            .collect())
    }

    /// The statistics of everything that streamed through.
    pub fn result(&self, thresholds: &ThresholdSet) -> Result<DriftResult> {
        let mut total = BatchCounts::new(&self.profile);
        let partitions = self
            .partitions
            .lock()
            .map_err(|_| KilnError::poisoned("drift counts"))?;
        for p in partitions.iter() {
            let counts = p.lock().map_err(|_| KilnError::poisoned("drift counts"))?;
            total.merge(&counts);
        }
        Ok(DriftResult::compute(&self.profile, &total, thresholds))
    }
}

fn count_batch(
    index: &ProfileIndex,
    counts: &Mutex<BatchCounts>,
    batch: &RecordBatch,
    features: usize,
    score: usize,
) -> Result<()> {
    let column = batch.column(features);
    let list = column.as_list_opt::<i32>().ok_or_else(|| {
        KilnError::data(
            "the prediction batch",
            format!("the feature column is {}, not a vector", column.data_type()),
        )
    })?;
    let values = arrow::compute::cast(list.values(), &DataType::Float64)
        .map_err(|e| KilnError::data("the feature vectors", e.to_string()))?;
    // Null elements count as missing, like NaN (a copy only when there are nulls).
    let values = values.as_primitive::<Float64Type>();
    let flat: std::borrow::Cow<'_, [f64]> = if values.null_count() == 0 {
        std::borrow::Cow::Borrowed(&values.values()[..])
    } else {
        std::borrow::Cow::Owned(with_nan_for_null(values))
    };
    let offsets = list.value_offsets();
    let rows: Vec<Option<&[f64]>> = (0..list.len())
        .map(|i| (!list.is_null(i)).then(|| &flat[offsets[i] as usize..offsets[i + 1] as usize]))
        .collect();
    let scores = arrow::compute::cast(batch.column(score), &DataType::Float64)
        .map_err(|e| KilnError::internal("reading the scores", e))?;
    let scores = with_nan_for_null(scores.as_primitive::<Float64Type>());
    let mut counts = counts
        .lock()
        .map_err(|_| KilnError::poisoned("drift counts"))?;
    counts.add_rows(index, &rows, &scores)
}

/// The values, NaN where null.
fn with_nan_for_null(array: &arrow::array::Float64Array) -> Vec<f64> {
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                f64::NAN
            } else {
                array.value(i)
            }
        })
        .collect()
}

/// The drift report, as written to `report.json`.
#[derive(Debug, Serialize)]
pub struct DriftReport {
    pub run_id: String,
    pub task: String,
    pub created: String,
    pub model: ModelUsed,
    pub predictions: String,
    pub rows: u64,
    pub thresholds: ThresholdSet,
    /// One entry per feature, by name.
    pub features: serde_json::Map<String, serde_json::Value>,
    pub prediction: Option<kiln_models::drift::DriftEntry>,
    /// The drifted features (and `prediction`), in profile order.
    pub drifted: Vec<String>,
    /// Why nothing was compared (an empty batch).
    pub note: Option<String>,
    pub retraining: Option<Retraining>,
}

/// The model a batch was scored with.
#[derive(Debug, Clone, Serialize)]
pub struct ModelUsed {
    pub repository: String,
    pub version: u64,
    pub classname: String,
}

impl DriftReport {
    pub fn new(
        ctx: &TaskContext,
        model: ModelUsed,
        predictions: String,
        result: DriftResult,
        thresholds: ThresholdSet,
    ) -> Result<Self> {
        let mut features = serde_json::Map::new();
        for e in &result.features {
            let value =
                serde_json::to_value(e).map_err(|e| KilnError::internal("serializing drift", e))?;
            features.insert(e.feature.clone(), value);
        }
        Ok(DriftReport {
            run_id: ctx.run.run_id.clone(),
            task: ctx.task_name.clone(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            model,
            predictions,
            rows: result.rows,
            thresholds,
            note: (result.rows == 0)
                .then(|| "the batch is empty: nothing was compared and nothing drifted".into()),
            features,
            prediction: result.prediction.clone(),
            drifted: result.drifted.clone(),
            retraining: None,
        })
    }

    /// Writes `report.json`, `drift.svg` and one `<feature>.svg` per
    /// drifted feature, atomically (the whole directory is replaced).
    pub async fn write(
        &self,
        ctx: &TaskContext,
        dir: &url::Url,
        result: &DriftResult,
    ) -> Result<()> {
        let mut files = vec![(
            "report.json".to_string(),
            serde_json::to_vec_pretty(self)
                .map_err(|e| KilnError::internal("serializing the drift report", e))?,
        )];
        files.push((
            "drift.svg".into(),
            drift_svg(result, &self.thresholds.default).into_bytes(),
        ));
        for e in result.features.iter().chain(&result.prediction) {
            if e.drifted {
                files.push((
                    format!("{}.svg", file_name(&e.feature)),
                    shares_svg(e).into_bytes(),
                ));
            }
        }
        write_files(&ctx.session, dir, &files).await
    }
}

/// A feature name as a file name (`gps[0]` → `gps_0_`).
fn file_name(feature: &str) -> String {
    feature
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The training run a drifted batch started.
#[derive(Debug, Clone, Serialize)]
pub struct Retraining {
    pub config: String,
    pub run_id: String,
    /// `succeeded`, `failed`, or `started` (not waited for).
    pub state: String,
    /// The model version the run published.
    pub model: Option<String>,
    /// Whether champion/challenger deployed it.
    pub promoted: Option<bool>,
    pub error: Option<String>,
}

impl OnDrift {
    /// Starts `kiln submit` on the retraining config as a child process
    /// (this kiln binary, or `KILN_EXE`), with this run's master and
    /// settings and `--triggered-by RUN/TASK`; waits unless `wait: false`.
    pub async fn retrain(&self, ctx: &TaskContext) -> Result<Retraining> {
        let exe = match std::env::var_os("KILN_EXE") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::env::current_exe().map_err(|e| KilnError::io("the kiln executable", e))?,
        };
        let run_id = format!("{}-retrain-{}", ctx.run.run_id, ctx.task_name);
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("submit")
            .arg("--master")
            .arg(&ctx.run.master)
            .arg("--run-id")
            .arg(&run_id)
            .arg("--triggered-by")
            .arg(format!("{}/{}", ctx.run.run_id, ctx.task_name))
            .arg("--log-format")
            .arg("json");
        for (k, v) in ctx
            .run
            .conf
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(self.conf.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            command.arg("--conf").arg(format!("{k}={v}"));
        }
        command.arg(&self.retrain);
        command.stdin(std::process::Stdio::null());
        ctx.progress
            .stage(format!("drift: starting the training run {run_id}"));
        tracing::info!(task = %ctx.task_name, "drift: starting {} submit {}", exe.display(), self.retrain);
        let mut retraining = Retraining {
            config: self.retrain.clone(),
            run_id: run_id.clone(),
            state: "started".into(),
            model: None,
            promoted: None,
            error: None,
        };
        if !self.wait {
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            command
                .spawn()
                .map_err(|e| KilnError::io(exe.display(), e))?;
            return Ok(retraining);
        }
        let output = command
            .output()
            .await
            .map_err(|e| KilnError::io(exe.display(), e))?;
        let events = String::from_utf8_lossy(&output.stderr);
        let succeeded: Vec<serde_json::Value> = events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e.get("event").and_then(|v| v.as_str()) == Some("task_succeeded"))
            .collect();
        retraining.state = if output.status.success() {
            "succeeded"
        } else {
            "failed"
        }
        .into();
        if !output.status.success() {
            let tail: Vec<&str> = events.lines().rev().take(5).collect();
            retraining.error = Some(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        // The training task's first output is the published model.json; its
        // report.json beside it holds the champion/challenger decision.
        let model = succeeded
            .iter()
            .filter_map(|t| t.pointer("/outputs/0")?.as_str())
            .find(|o| o.ends_with("/model.json"))
            .map(str::to_string);
        if let Some(model) = &model {
            let report_url = url::Url::parse(&model.replace("/model.json", "/report.json"))
                .map_err(|e| KilnError::data(model, e.to_string()))?;
            if let Some(bytes) = ctx.session.stores().read_object(&report_url).await? {
                let report: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| KilnError::data(&report_url, e.to_string()))?;
                retraining.promoted = report
                    .pointer("/champion_challenger/promoted")
                    .and_then(|v| v.as_bool());
            }
        }
        retraining.model = model;
        Ok(retraining)
    }
}
