//! `ModelTraining`: tunes competing estimators (grid × k-fold CV or a
//! train/validation split), evaluates the best of each on the test set,
//! writes reports and deploys the winner to the model repository.

use super::load_pipeline_model;
use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use datafusion::prelude::DataFrame;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::artifacts::CHAMPION;
use kiln_engine::io::FileFormat;
use kiln_engine::{KilnError, Result};
use kiln_models::data::RowScorer;
use kiln_models::distributed::data_parallel::{InProcess, SetSummary, check_estimator};
use kiln_models::distributed::{ClusterFits, ClusterPartitions, DataParallelFits};
use kiln_models::distribution::{Distribution, Mode, Target, Work, level_cost};
use kiln_models::drift::{
    FeatureReference, PROFILE_FILE, PROFILE_FORMAT_VERSION, Reference, ReferenceProfile, score_of,
};
use kiln_models::frame::{FeatureSource, Loaded, TestRows, load_training};
use kiln_models::jobs::{FitRunner, LocalFits};
use kiln_models::memory::MemoryPlan;
use kiln_models::metrics::{Metric, Metrics};
use kiln_models::model::{
    LINEAGE_FILE, Lineage, MODEL_FORMAT_VERSION, ModelArtifact, ModelParams, PipelineRef,
};
use kiln_models::registry::MODEL_FILE;
use kiln_models::report::roc_svg;
use kiln_models::selection::{Selection, SelectionPlan, evaluate_estimators};
use kiln_models::tuning::{CrossValidation, EstimatorSpec, TrainValidationSplit, Tuning};
use kiln_transformers::FittedStage;
use serde::Deserialize;
use std::sync::Arc;

fn test_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModelTrainingInit")]
pub struct Init {
    /// The feature table (lake path or `task:NAME`).
    input: String,
    #[serde(default)]
    format: FileFormat,
    /// A separate test table (else `test_condition` or a random split).
    #[serde(default)]
    test_input: Option<String>,
    /// SQL condition selecting test rows (e.g. `sample_id % 5 = 0`).
    #[serde(default)]
    test_condition: Option<String>,
    /// Share of rows held out at random when neither of the above is given.
    #[serde(default = "test_fraction")]
    test_fraction: f64,
    label_col: String,
    /// A vector column (from a VectorAssembler) holding the features.
    #[serde(default)]
    features_col: Option<String>,
    /// Or plain numeric feature columns.
    #[serde(default)]
    feature_cols: Option<Vec<String>>,
    #[serde(default)]
    seed: u64,
    /// The metric that tunes and selects (Spark's evaluator names).
    #[serde(default)]
    metric: Metric,
    /// Stratified k-fold tuning (the default: 3 folds).
    #[serde(default)]
    cross_validation: Option<CrossValidation>,
    /// One train/validation split instead of k folds.
    #[serde(default)]
    train_validation_split: Option<TrainValidationSplit>,
    /// The competing estimators, each with params and a grid.
    estimators: Vec<EstimatorSpec>,
    /// The fitted feature pipeline the features come from (recorded in the
    /// artifact so prediction can apply it).
    #[serde(default)]
    path_pipeline_model: Option<String>,
    /// Peak resident memory the process may reach while the task trains
    /// (`4GiB`, `512MiB`, `8GB`); by default what it holds plus the memory
    /// available when the task starts. The plan (the process's resident
    /// memory then, plus the binned sets and the fits) is checked after
    /// the first pass over the rows, before they are binned.
    #[serde(default)]
    memory_limit: Option<String>,
    /// Where the fits run: `auto` (on a Ballista master: fan-out tuning
    /// when there are fits to tune, data-parallel for an untuned binary GBT
    /// or forest large enough for the executors' vcores to pay, as the run
    /// report says), `local`, `tuning` or `data_parallel` (binary GBTs and any
    /// random forest, without a grid).
    #[serde(default)]
    distribution: Distribution,
    /// Row partitions of a data-parallel fit (default: the session's
    /// target partitions). The model does not depend on it.
    #[serde(default)]
    data_parallel_partitions: Option<usize>,
    /// Lake directory where the driver caches the binned training set for
    /// the executors (distributed modes), keyed by its checksum.
    #[serde(default = "training_cache")]
    training_cache: String,
    /// Deploy the new winner only if it beats the deployed model (the
    /// champion) on the same test rows; else register it as `challenger`.
    /// Without it, every new winner is deployed.
    #[serde(default)]
    champion_challenger: Option<ChampionChallenger>,
}

/// Champion/challenger promotion.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChampionChallenger {
    /// How much better, by the task's `metric`, the new winner must score
    /// than the champion on the same test rows to be deployed (default 0:
    /// strictly better).
    #[serde(default)]
    margin: f64,
}

/// The deployed model, as champion/challenger finds it.
enum Champion {
    /// Nothing is deployed: the first winner becomes the champion.
    Absent,
    /// It cannot be scored on this task's test rows (why).
    Incomparable(String),
    /// Loaded, to be scored on this task's test rows.
    Ready {
        version: u64,
        artifact: Box<ModelArtifact>,
    },
}

/// What champion/challenger decided, for the report.
#[derive(Debug, serde::Serialize)]
struct Decision {
    metric: Metric,
    margin: f64,
    champion_version: Option<u64>,
    champion_score: Option<f64>,
    challenger_score: f64,
    promoted: bool,
    reason: String,
}

impl Decision {
    /// A decision taken without scoring a champion.
    fn uncompared(
        metric: Metric,
        margin: f64,
        challenger_score: f64,
        promoted: bool,
        reason: String,
    ) -> Self {
        Decision {
            metric,
            margin,
            champion_version: None,
            champion_score: None,
            challenger_score,
            promoted,
            reason,
        }
    }
}

/// The alias of a new winner that did not beat the champion.
const CHALLENGER: &str = "challenger";

fn training_cache() -> String {
    "_kiln/cache/training/".into()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModelTrainingOutput")]
pub struct Output {
    /// Where the winner is published as a new version (with reports).
    path_model_repository: String,
    /// Per-estimator test metrics with Spark's names:
    /// `<path_evaluation>/<classname>/metrics.json`.
    #[serde(default)]
    path_evaluation: Option<String>,
}

#[derive(Debug)]
pub struct ModelTraining {
    init: Init,
    output: Output,
    memory_limit: Option<u64>,
}

impl ModelTraining {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (Init, Output) = loaded.task_params(task)?;
        let at = |k: &str| loaded.at(task, k);
        if init.cross_validation.is_some() && init.train_validation_split.is_some() {
            return Err(KilnError::config_fix(
                format!(
                    "{}: cross_validation and train_validation_split are both given",
                    at("train_validation_split")
                ),
                "keep one of them",
            ));
        }
        if init.estimators.is_empty() {
            return Err(KilnError::config(format!(
                "{}: estimators is empty",
                at("estimators")
            )));
        }
        if init.features_col.is_some() == init.feature_cols.is_some() {
            return Err(KilnError::config_fix(
                format!(
                    "{}: give exactly one of features_col and feature_cols",
                    at("label_col")
                ),
                "features_col: features (a vector column) or feature_cols: [a, b, c]",
            ));
        }
        if !(0.0..1.0).contains(&init.test_fraction) {
            return Err(KilnError::config(format!(
                "{}: test_fraction must be in [0, 1)",
                at("test_fraction")
            )));
        }
        for e in &init.estimators {
            e.candidates(init.seed)
                .map_err(|err| err.context(at("estimators")))?;
        }
        let memory_limit = init
            .memory_limit
            .as_deref()
            .map(|text| {
                text.parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|e| {
                        KilnError::config_fix(
                            format!("{}: memory_limit '{text}': {e}", at("memory_limit")),
                            "write a size such as 4GiB, 512MiB or 8GB",
                        )
                    })
            })
            .transpose()?;
        if let Some(cc) = &init.champion_challenger
            && !(cc.margin.is_finite() && cc.margin >= 0.0)
        {
            return Err(KilnError::config(format!(
                "{}: margin {} must be a number ≥ 0",
                at("champion_challenger"),
                cc.margin
            )));
        }
        if init.distribution == Distribution::DataParallel {
            for spec in &init.estimators {
                if spec.grid.values().any(|v| v.len() > 1) {
                    return Err(KilnError::config_fix(
                        format!(
                            "{}: distribution: data_parallel fits final models, but {} has a grid",
                            at("distribution"),
                            spec.classname
                        ),
                        "drop the grid (tune on a sample with distribution: tuning first), or use distribution: tuning",
                    ));
                }
            }
        }
        Ok(ModelTraining {
            init,
            output,
            memory_limit,
        })
    }

    /// Every estimator's candidates.
    fn candidates(&self) -> Result<Vec<Vec<ModelParams>>> {
        self.init
            .estimators
            .iter()
            .map(|e| e.candidates(self.init.seed))
            .collect()
    }

    /// The peak resident memory the plan must fit in, what set it, and
    /// what the process holds now.
    fn memory_limit(&self) -> (u64, &'static str, u64) {
        let mut system = sysinfo::System::new();
        let resident = sysinfo::get_current_pid().ok().and_then(|pid| {
            system.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[pid]),
                false,
                sysinfo::ProcessRefreshKind::nothing().with_memory(),
            );
            system.process(pid).map(|p| p.memory())
        });
        let resident = resident.unwrap_or(0);
        if let Some(limit) = self.memory_limit {
            return (limit, "memory_limit", resident);
        }
        system.refresh_memory();
        let available = system.available_memory();
        match system.cgroup_limits() {
            Some(cgroup) if cgroup.free_memory < available => (
                resident + cgroup.free_memory,
                "the memory free in this container (plus what the process holds)",
                resident,
            ),
            _ => (
                resident + available,
                "the memory available on this machine (plus what the process holds)",
                resident,
            ),
        }
    }

    async fn feature_source(
        &self,
        ctx: &TaskContext,
    ) -> Result<(FeatureSource, Option<PipelineRef>)> {
        if let Some(cols) = &self.init.feature_cols {
            return Ok((FeatureSource::Columns(cols.clone()), None));
        }
        let column = self.init.features_col.clone().unwrap_or_default();
        let Some(path) = &self.init.path_pipeline_model else {
            return Err(KilnError::config(format!(
                "task '{}': features_col needs path_pipeline_model (to name the features)",
                ctx.task_name
            )));
        };
        let (pipeline, version) = load_pipeline_model(ctx, path, None).await?;
        let names = pipeline
            .stages
            .iter()
            .rev()
            .find_map(|s| match s {
                FittedStage::VectorAssembler(m) if m.output_col == column => Some(
                    m.inputs
                        .iter()
                        .flat_map(|i| match i.vector_size {
                            None => vec![i.name.clone()],
                            Some(n) => (0..n).map(|k| format!("{}[{k}]", i.name)).collect(),
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .ok_or_else(|| {
                KilnError::config(format!(
                    "task '{}': the pipeline model has no VectorAssembler producing '{column}'",
                    ctx.task_name
                ))
            })?;
        Ok((
            FeatureSource::Vector { column, names },
            Some(PipelineRef {
                path: path.clone(),
                version,
            }),
        ))
    }

    /// The tuning the config asks for (3-fold CV by default).
    fn tuning(&self) -> Tuning {
        match (
            &self.init.cross_validation,
            &self.init.train_validation_split,
        ) {
            (None, Some(tv)) => Tuning::TrainValidationSplit(tv.clone()),
            (cv, _) => Tuning::CrossValidation(cv.clone().unwrap_or(CrossValidation {
                num_folds: 3,
                parallelism: 1,
            })),
        }
    }

    /// Writes `<path>/<classname>/metrics.json` for every estimator; returns
    /// the URLs written.
    async fn write_evaluation(
        &self,
        ctx: &TaskContext,
        path: &str,
        selection: &Selection,
    ) -> Result<Vec<String>> {
        use datafusion::object_store::ObjectStoreExt;
        let mut written = Vec::new();
        for c in &selection.candidates {
            let url = ctx.lake.resolve(&format!(
                "{}/{}/metrics.json",
                path.trim_end_matches('/'),
                c.classname()
            ))?;
            let body = serde_json::to_vec_pretty(&c.test_metrics)
                .map_err(|e| KilnError::internal("serializing evaluation metrics", e))?;
            let store = ctx.session.stores().store_for(&url)?;
            let location = kiln_engine::storage::object_path(&url)?;
            // One object per put: readers see the old file or the new one.
            store
                .put(&location, body.into())
                .await
                .map_err(|e| KilnError::io(&url, e))?;
            written.push(url.to_string());
        }
        Ok(written)
    }

    /// The deployed model, when champion/challenger is on and one can be
    /// scored on these features; else why not.
    async fn champion(&self, repo: &ArtifactRepo, features: &[String]) -> Result<Champion> {
        let Some(version) = repo.deployed().await? else {
            return Ok(Champion::Absent);
        };
        let bytes = repo.read(version, MODEL_FILE).await?;
        let artifact = match ModelArtifact::from_json(&bytes, &repo.url(version, MODEL_FILE)) {
            Ok(a) => a,
            Err(e) => {
                return Ok(Champion::Incomparable(format!(
                    "the champion v{version} cannot be read: {e}"
                )));
            }
        };
        if artifact.feature_names != features {
            return Ok(Champion::Incomparable(format!(
                "the champion v{version} was trained on other features ({} features; this task has {})",
                artifact.feature_names.len(),
                features.len()
            )));
        }
        Ok(Champion::Ready {
            version,
            artifact: Box::new(artifact),
        })
    }

    async fn split(&self, ctx: &TaskContext, df: DataFrame) -> Result<(DataFrame, TestRows)> {
        if let Some(test) = &self.init.test_input {
            let test = ctx.input(test, self.init.format).await?;
            return Ok((df, TestRows::Frame(test)));
        }
        if let Some(cond) = &self.init.test_condition {
            let e = df.parse_sql_expr(cond).map_err(|e| {
                KilnError::config(format!("task '{}': test_condition: {e}", ctx.task_name))
            })?;
            return Ok((df, TestRows::Condition(e)));
        }
        Ok((
            df,
            TestRows::Random {
                fraction: self.init.test_fraction,
                seed: self.init.seed,
            },
        ))
    }
}

impl Task for ModelTraining {
    fn inputs(&self) -> Vec<String> {
        std::iter::once(&self.init.input)
            .chain(&self.init.test_input)
            .chain(&self.init.path_pipeline_model)
            .cloned()
            .collect()
    }

    fn outputs(&self) -> Vec<String> {
        std::iter::once(&self.output.path_model_repository)
            .chain(&self.output.path_evaluation)
            .cloned()
            .collect()
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            let loading_started = std::time::Instant::now();
            let df = ctx.input(&self.init.input, self.init.format).await?;
            let (source, pipeline_ref) = self.feature_source(ctx).await?;
            let (train_df, test_rows) = self.split(ctx, df).await?;
            let label = &self.init.label_col;
            let metric = self.init.metric;
            let tuning = self.tuning();
            let per_estimator = self.candidates()?;
            let tuned = per_estimator.iter().any(|c| c.len() > 1);
            let all_candidates: Vec<ModelParams> = per_estimator.into_iter().flatten().collect();
            let max_bins: Vec<usize> = all_candidates.iter().map(ModelParams::max_bins).collect();
            let concurrent_fits = if tuned { tuning.parallelism() } else { 1 };
            let mut plan: Option<MemoryPlan> = None;
            let admit = |sizes| {
                // Measured now, after the first pass: what the process holds.
                let (limit, limit_source, resident) = self.memory_limit();
                let mut distinct = max_bins.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let p = MemoryPlan::new(sizes, &distinct, &all_candidates, concurrent_fits)
                    .in_process(resident);
                ctx.progress.stage(p.describe());
                tracing::info!(task = %ctx.task_name, "{}", p.describe());
                p.check(limit, limit_source)?;
                plan = Some(p);
                Ok(())
            };
            let stage = |s: &str| ctx.progress.stage(s);
            let base = ctx.lake.resolve(&format!(
                "{}/",
                self.output.path_model_repository.trim_end_matches('/')
            ))?;
            let repo = ArtifactRepo::open(&ctx.session, &base)?;
            let champion = match &self.init.champion_challenger {
                Some(_) => Some(self.champion(&repo, source.names()).await?),
                None => None,
            };
            let champion_model = match &champion {
                Some(Champion::Ready { artifact, .. }) => Some(artifact.model.clone()),
                _ => None,
            };
            let scorer = champion_model.map(|model| {
                move |row: &dyn Fn(usize) -> f64| -> Vec<f64> { model.predict_proba(row) }
            });
            let Loaded {
                train,
                test,
                reference,
                test_scores: champion_scores,
            } = load_training(
                train_df,
                test_rows,
                label,
                &source,
                &max_bins,
                admit,
                &stage,
                scorer.as_ref().map(|s| s as &RowScorer),
            )
            .await?;
            let loading_seconds = loading_started.elapsed().as_secs_f64();
            let classes = train.validate(false)?;
            ctx.progress
                .add_rows((train.n_rows() + test.n_rows()) as u64);
            if test.n_rows() == 0 {
                return Err(KilnError::data(
                    "test set",
                    "the test set is empty; raise test_fraction or check test_condition",
                ));
            }
            let (train, test) = (Arc::new(train), Arc::new(test));
            let seed = self.init.seed;
            let fits = SelectionPlan {
                estimators: &self.init.estimators,
                tuning: &tuning,
                metric,
                seed,
            }
            .tuning_fits()?;
            let on_cluster = !ctx.session.master().is_local();
            let rows = train.n_rows() as u64;
            let binary_gbts = classes == 2
                && all_candidates
                    .iter()
                    .all(|c| matches!(c, ModelParams::GBTClassifier(_)));
            let trees: Option<u64> = all_candidates
                .iter()
                .map(|c| match c {
                    ModelParams::RandomForestClassifier(p) => Some(p.num_trees as u64),
                    _ => None,
                })
                .sum();
            let work = Work {
                fits,
                data_parallel: match (binary_gbts, trees) {
                    (true, _) => Some((level_cost::BOOSTING, rows * train.n_features() as u64)),
                    (false, Some(trees)) => Some((level_cost::FOREST, rows * trees)),
                    (false, None) => None,
                },
            };
            let target = match (on_cluster, self.init.distribution) {
                (false, _) => Target::Local,
                // Only `auto` weighs the cluster's size.
                (true, Distribution::Auto) => {
                    let capacity = ctx.session.cluster_capacity().await?;
                    if let Some(c) = &capacity {
                        tracing::info!(
                            task = %ctx.task_name,
                            executors = c.executors,
                            vcores = c.vcores,
                            "the cluster, as the scheduler's /api/executors reports it"
                        );
                    }
                    Target::cluster(capacity.map(|c| c.vcores))
                }
                (true, _) => Target::cluster(None),
            };
            let placement = self.init.distribution.place(target, work);
            tracing::info!(task = %ctx.task_name, mode = ?placement.mode, "{}", placement.reason);
            let cache_dir = || {
                ctx.lake.resolve(&format!(
                    "{}/",
                    self.init.training_cache.trim_end_matches('/')
                ))
            };
            // Cache files written for the executors, deleted when the fits end.
            let mut cache_files = Vec::new();
            let runner: Arc<dyn FitRunner> = match placement.mode {
                Mode::Local => Arc::new(LocalFits {
                    parallelism: concurrent_fits,
                }),
                Mode::Tuning => {
                    ctx.progress
                        .stage("writing the binned training set for the executors");
                    let fits = ClusterFits::prepare(&ctx.session, &train, &cache_dir()?).await?;
                    cache_files.extend_from_slice(fits.written());
                    Arc::new(fits)
                }
                Mode::DataParallel => {
                    let summary = SetSummary::of(&train)?;
                    for c in &all_candidates {
                        check_estimator(c, summary.classes)?;
                    }
                    let partitions = self
                        .init
                        .data_parallel_partitions
                        .unwrap_or_else(|| {
                            ctx.session.context().copied_config().target_partitions()
                        })
                        .max(1);
                    if on_cluster {
                        ctx.progress.stage(format!(
                            "writing {partitions} partitions of the binned training set for the executors"
                        ));
                        let parts = ClusterPartitions::prepare(
                            &ctx.session,
                            &train,
                            &cache_dir()?,
                            partitions,
                        )
                        .await?;
                        cache_files.extend_from_slice(parts.written());
                        Arc::new(DataParallelFits {
                            summary,
                            backend: Box::new(parts),
                            location: "on the cluster's executors",
                        })
                    } else {
                        Arc::new(DataParallelFits {
                            summary,
                            backend: Box::new(InProcess::new(&train, partitions)),
                            location: "in this process",
                        })
                    }
                }
            };
            let candidates = {
                let (specs, train, test, tuning, progress) = (
                    self.init.estimators.clone(),
                    train.clone(),
                    test.clone(),
                    tuning.clone(),
                    ctx.progress.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let plan = SelectionPlan {
                        estimators: &specs,
                        tuning: &tuning,
                        metric,
                        seed,
                    };
                    evaluate_estimators(&plan, &train, &test, runner.as_ref(), &|stage| {
                        progress.stage(stage)
                    })
                })
                .await
            };
            for url in &cache_files {
                if let Err(e) = ctx.session.stores().delete_object(url).await {
                    tracing::warn!(task = %ctx.task_name, "could not delete the training cache file {url}: {e}");
                }
            }
            let candidates = candidates.map_err(|e| KilnError::internal("training", e))??;
            let selection = Selection::choose(metric, candidates)?;
            let winner = selection.winner();
            let artifact = ModelArtifact {
                format_version: MODEL_FORMAT_VERSION,
                kiln_version: env!("CARGO_PKG_VERSION").into(),
                classname: winner.classname().into(),
                params: winner.params.to_json(),
                label_col: label.clone(),
                feature_names: train.feature_names.clone(),
                feature_types: vec!["double".into(); train.n_features()],
                feature_pipeline: pipeline_ref,
                training_fingerprint: train.fingerprint(),
                metrics: winner.test_metrics.scalars(),
                model: winner.model.clone(),
            };
            let lineage = Lineage {
                created: Some(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                run_id: Some(ctx.run.run_id.clone()),
                pipeline: Some(ctx.run.pipeline.clone()),
                task: Some(ctx.task_name.clone()),
                triggered_by: ctx.run.triggered_by.clone(),
            };
            let winner_scores: Vec<f64> = winner
                .model
                .predict_binned(test.binned(winner.params.max_bins())?, &test.all_rows())
                .iter()
                .map(|p| score_of(p))
                .collect();
            let profile = ReferenceProfile {
                format_version: PROFILE_FORMAT_VERSION,
                features: train
                    .feature_names
                    .iter()
                    .zip(reference)
                    .map(|(name, reference)| FeatureReference {
                        name: name.clone(),
                        reference,
                    })
                    .collect(),
                scores: Some(Reference::from_values(&winner_scores)),
                training_rows: train.n_rows() as u64,
            };
            let challenger_score = winner.test_metrics.get(metric);
            let decision = self.init.champion_challenger.as_ref().map(|cc| {
                match (&champion, &champion_scores) {
                    (Some(Champion::Ready { version: champion_version, .. }), Some(scores)) => {
                        let champion_score = Metrics::compute(&test.labels, scores).get(metric);
                        let gain = if metric.larger_is_better() {
                            challenger_score - champion_score
                        } else {
                            champion_score - challenger_score
                        };
                        let promoted = gain > cc.margin;
                        Decision {
                            metric,
                            margin: cc.margin,
                            champion_version: Some(*champion_version),
                            champion_score: Some(champion_score),
                            challenger_score,
                            promoted,
                            reason: format!(
                                "{metric} {challenger_score:.6} against the champion v{champion_version}'s {champion_score:.6} on the same {} test rows: {} by {gain:+.6}, margin {}",
                                test.n_rows(),
                                if promoted { "better" } else { "not better" },
                                cc.margin
                            ),
                        }
                    }
                    (Some(Champion::Absent), _) => Decision::uncompared(
                        metric,
                        cc.margin,
                        challenger_score,
                        true,
                        "no model is deployed yet: the first winner becomes the champion".into(),
                    ),
                    (Some(Champion::Incomparable(why)), _) => Decision::uncompared(
                        metric,
                        cc.margin,
                        challenger_score,
                        false,
                        format!("{why}: not compared, kept the champion (promote by hand with `kiln models promote`)"),
                    ),
                    _ => Decision::uncompared(
                        metric,
                        cc.margin,
                        challenger_score,
                        false,
                        "the champion was not scored".into(),
                    ),
                }
            });
            let table = selection.table();
            let mut report = selection.report(train.n_rows(), test.n_rows(), &train.feature_names);
            report["distribution"] = serde_json::json!(placement);
            report["lineage"] = serde_json::json!(lineage);
            if let Some(d) = &decision {
                report["champion_challenger"] = serde_json::json!(d);
            }
            let report = serde_json::to_vec_pretty(&report)
                .map_err(|e| KilnError::internal("serializing the training report", e))?;
            let mut files: Vec<(String, Vec<u8>)> = vec![
                (MODEL_FILE.into(), artifact.to_json()?),
                (PROFILE_FILE.into(), profile.to_json()?),
                (
                    LINEAGE_FILE.into(),
                    serde_json::to_vec_pretty(&lineage)
                        .map_err(|e| KilnError::internal("serializing the lineage", e))?,
                ),
                ("report.json".into(), report),
                ("comparison.txt".into(), table.clone().into_bytes()),
            ];
            for c in &selection.candidates {
                files.push((
                    format!("roc_{}.svg", c.classname()),
                    roc_svg(c.classname(), &c.test_metrics).into_bytes(),
                ));
            }
            let mut outputs = Vec::new();
            if let Some(path) = &self.output.path_evaluation {
                outputs.extend(self.write_evaluation(ctx, path, &selection).await?);
            }
            let refs: Vec<(&str, Vec<u8>)> =
                files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            let version = match &decision {
                None => repo.publish(&refs).await?,
                Some(d) => {
                    let version = repo.publish_undeployed(&refs).await?;
                    let alias = if d.promoted { CHAMPION } else { CHALLENGER };
                    repo.promote(version, alias, &d.reason).await?;
                    version
                }
            };
            let mut summary = vec![format!(
                "train {} rows, test {} rows, {} features; read and binned in {loading_seconds:.1}s",
                train.n_rows(),
                test.n_rows(),
                train.n_features()
            )];
            if let Some(plan) = plan {
                summary.push(plan.describe());
            }
            summary.push(format!(
                "distribution: {} ({})",
                serde_json::json!(placement.mode)
                    .as_str()
                    .unwrap_or_default(),
                placement.reason
            ));
            summary.extend(table.lines().map(str::to_string));
            summary.push(format!(
                "winner by {metric}: {} -> {}",
                winner.classname(),
                repo.url(version, "model.json")
            ));
            summary.push(format!("reports and ROC plots: {}", repo.url(version, "")));
            if let Some(d) = &decision {
                summary.push(format!(
                    "champion/challenger: v{version} {} ({})",
                    if d.promoted {
                        "deployed as champion"
                    } else {
                        "registered as challenger"
                    },
                    d.reason
                ));
            }
            if let Some(path) = &self.output.path_evaluation {
                summary.push(format!("per-estimator metrics: {path}"));
            }
            outputs.insert(0, repo.url(version, "model.json"));
            Ok(TaskOutcome {
                rows_in: Some(train.n_rows() as u64),
                rows_out: None,
                outputs,
                metrics: serde_json::to_value(winner.test_metrics.scalars())
                    .map_err(|e| KilnError::internal("reporting metrics", e))?,
                summary,
            })
        })
    }
}
