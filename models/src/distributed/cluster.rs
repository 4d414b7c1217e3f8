//! [`ClusterFits`]: fit jobs as Ballista tasks. The driver writes the
//! binned training set to the lake once (a cache keyed by its checksum and
//! binnings); the job is a union of one-row `VALUES` (one partition, so
//! one task, per fit job, the largest first) projected through
//! [`kiln_fit`](super::fit_udf). Ballista places the tasks on executors and
//! retries those of a lost executor; every executor reads the set once.

use super::data_parallel::{LevelBackend, LevelWork, row_ranges, sum_histograms};
use super::fit_udf::{FitTask, WireOutcome, fit_udf};
use super::histogram_udf::{HistogramTask, PartFiles, histogram_udf};
use super::set_file::{encode, file_name};
use crate::data::TrainingSet;
use crate::jobs::{FitJob, FitOutcome, FitRunner, largest_first_order};
use arrow::array::{Array, AsArray, Int64Array};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, Union, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use kiln_engine::{KilnError, KilnSession, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// Runs fit jobs on the executors of a Ballista cluster.
pub struct ClusterFits {
    ctx: SessionContext,
    set_url: Url,
    checksum: u64,
    handle: tokio::runtime::Handle,
    written: Vec<Url>,
}

impl ClusterFits {
    /// Writes `set` under `cache_dir` (unless a file of the same set is
    /// there) and returns a runner for jobs against it.
    pub async fn prepare(
        session: &KilnSession,
        set: &TrainingSet,
        cache_dir: &Url,
    ) -> Result<Self> {
        let set_url = cache_dir
            .join(&file_name(set, None))
            .map_err(|e| KilnError::config(format!("cache directory {cache_dir}: {e}")))?;
        let mut written = Vec::new();
        if !session.stores().object_exists(&set_url).await? {
            let bytes = encode(set, 0..set.n_rows())?;
            session.stores().write_object(&set_url, bytes).await?;
            written.push(set_url.clone());
        }
        Ok(ClusterFits {
            ctx: task_context(session.context()),
            set_url,
            checksum: set.checksum,
            handle: tokio::runtime::Handle::current(),
            written,
        })
    }

    /// The cache files this runner wrote (the task deletes them when done).
    pub fn written(&self) -> &[Url] {
        &self.written
    }

    /// Where the executors read the set.
    pub fn set_url(&self) -> &Url {
        &self.set_url
    }

    async fn run_async(&self, jobs: &[FitJob]) -> Result<Vec<FitOutcome>> {
        let rows = largest_first_order(jobs)
            .into_iter()
            .map(|i| {
                let task = FitTask {
                    set_url: self.set_url.to_string(),
                    checksum: format!("{:016x}", self.checksum),
                    job: jobs[i].clone(),
                };
                let json = serde_json::to_string(&task)
                    .map_err(|e| KilnError::internal("serializing a fit task", e))?;
                Ok((i as i64, json))
            })
            .collect::<Result<Vec<_>>>()?;
        let batches = one_task_per_row(&self.ctx, rows, "kiln_fit", fit_udf()).await?;
        let mut outcomes: Vec<Option<FitOutcome>> = (0..jobs.len()).map(|_| None).collect();
        for (i, json) in batches {
            let wire: WireOutcome = serde_json::from_slice(&json)
                .map_err(|e| KilnError::internal("reading a fit outcome", e))?;
            if let Some(slot) = outcomes.get_mut(i as usize) {
                *slot = Some(wire.into());
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| {
                    KilnError::internal(
                        "distributed tuning",
                        format!("fit job {i} returned nothing"),
                    )
                })
            })
            .collect()
    }
}

impl FitRunner for ClusterFits {
    fn run_all(&self, _data: &TrainingSet, jobs: &[FitJob]) -> Result<Vec<FitOutcome>> {
        // Called from a blocking thread (the training task's), not a
        // runtime thread: blocking on the runtime is allowed here.
        self.handle.block_on(self.run_async(jobs))
    }

    fn describe(&self) -> String {
        "as Ballista tasks on the cluster's executors".into()
    }
}

/// A context for kiln's own task plans: without round-robin repartitioning,
/// so each one-row partition stays one task.
pub fn task_context(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state
        .config_mut()
        .options_mut()
        .optimizer
        .enable_round_robin_repartition = false;
    SessionContext::new_with_state(state)
}

/// Submissions of one task job before its cluster error is final.
const JOB_ATTEMPTS: usize = 4;

/// Runs `udf(text)` (returning Binary) over `rows` of (id, text), one
/// partition (so one Ballista task) per row, in the given order; returns
/// (id, result).
pub async fn one_task_per_row(
    ctx: &SessionContext,
    rows: Vec<(i64, String)>,
    what: &str,
    udf: datafusion::logical_expr::ScalarUDF,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let inputs = rows
        .into_iter()
        .map(|(id, text)| {
            LogicalPlanBuilder::values(vec![vec![lit(id), lit(text)]])
                .and_then(|b| b.build())
                .map(Arc::new)
        })
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let input = match inputs.len() {
        0 => return Ok(Vec::new()),
        1 => Arc::unwrap_or_clone(
            inputs
                .into_iter()
                .next()
                .ok_or_else(|| KilnError::internal(what, "no input"))?,
        ),
        _ => LogicalPlan::Union(Union::try_new(inputs)?),
    };
    let plan = LogicalPlanBuilder::from(input)
        .project(vec![
            col("column1").alias("id"),
            udf.call(vec![col("column2")]).alias("result"),
        ])?
        .build()?;
    // Ballista re-runs the tasks of an executor lost while they run; one
    // lost after its task finished fails the client's fetch of the result,
    // and only a new job recovers. The tasks are deterministic, so the
    // job is submitted again (a lost executor takes no new tasks).
    let mut attempt = 1;
    let batches = loop {
        match DataFrame::new(ctx.state(), plan.clone()).collect().await {
            Ok(batches) => break batches,
            Err(e) => {
                let err = KilnError::from(e).context(what);
                if !matches!(err, KilnError::Cluster { .. }) || attempt >= JOB_ATTEMPTS {
                    return Err(err);
                }
                tracing::warn!(
                    "{what}: attempt {attempt} of {JOB_ATTEMPTS} failed, submitting again: {err}"
                );
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| KilnError::internal(what, "id is not Int64"))?;
        let results = batch
            .column(1)
            .as_binary_opt::<i32>()
            .ok_or_else(|| KilnError::internal(what, "result is not Binary"))?;
        for r in 0..batch.num_rows() {
            if results.is_null(r) {
                return Err(KilnError::internal(what, "a task returned null"));
            }
            out.push((ids.value(r), results.value(r).to_vec()));
        }
    }
    Ok(out)
}

/// The partitions of a data-parallel fit as files in the lake, computed by
/// Ballista tasks (one per partition and tree level).
pub struct ClusterPartitions {
    ctx: SessionContext,
    part_urls: Vec<Url>,
    checksum: u64,
    handle: tokio::runtime::Handle,
    written: Vec<Url>,
}

impl ClusterPartitions {
    /// Writes `set` under `cache_dir` as `partitions` row ranges (unless
    /// the files are there).
    pub async fn prepare(
        session: &KilnSession,
        set: &TrainingSet,
        cache_dir: &Url,
        partitions: usize,
    ) -> Result<Self> {
        let (mut part_urls, mut written) = (Vec::new(), Vec::new());
        for range in row_ranges(set.n_rows(), partitions) {
            let url = cache_dir
                .join(&file_name(set, Some(range.clone())))
                .map_err(|e| KilnError::config(format!("cache directory {cache_dir}: {e}")))?;
            if !session.stores().object_exists(&url).await? {
                session
                    .stores()
                    .write_object(&url, encode(set, range)?)
                    .await?;
                written.push(url.clone());
            }
            part_urls.push(url);
        }
        Ok(ClusterPartitions {
            ctx: task_context(session.context()),
            part_urls,
            checksum: set.checksum,
            handle: tokio::runtime::Handle::current(),
            written,
        })
    }

    /// The cache files this backend wrote (the task deletes them when done).
    pub fn written(&self) -> &[Url] {
        &self.written
    }

    /// One level: every partition's histograms, summed. A boosting task
    /// may compute another partition than its own (see
    /// [`super::histogram_udf`]); the partitions no reply covered run
    /// again, each exactly.
    async fn level(&self, req: &LevelWork) -> Result<Vec<i64>> {
        let all: Vec<usize> = (0..self.part_urls.len()).collect();
        let swap = matches!(req, LevelWork::Boosting(_));
        let mut computed = self.run_tasks(req, &all, swap).await?;
        let missing: Vec<usize> = all
            .iter()
            .copied()
            .filter(|p| !computed.contains_key(p))
            .collect();
        if !missing.is_empty() {
            tracing::debug!(
                ?missing,
                "a data-parallel level: partitions no task computed run again"
            );
            computed.extend(self.run_tasks(req, &missing, false).await?);
        }
        if computed.len() != all.len() {
            return Err(KilnError::internal(
                "a data-parallel tree level",
                format!("{} partitions, {} computed", all.len(), computed.len()),
            ));
        }
        sum_histograms(computed.into_values())
    }

    /// One task per partition in `partitions` (which may `swap`): the
    /// histograms of each partition computed (one reply per partition).
    async fn run_tasks(
        &self,
        req: &LevelWork,
        partitions: &[usize],
        swap: bool,
    ) -> Result<BTreeMap<usize, Vec<i64>>> {
        const WHAT: &str = "a data-parallel tree level";
        let urls: Vec<String> = self.part_urls.iter().map(Url::to_string).collect();
        let rows = partitions
            .iter()
            .map(|&p| {
                let task = HistogramTask {
                    partition: p,
                    files: if swap {
                        PartFiles::Swappable(urls.clone())
                    } else {
                        PartFiles::Exactly(urls[p].clone())
                    },
                    checksum: format!("{:016x}", self.checksum),
                    request: req.clone(),
                };
                serde_json::to_string(&task)
                    .map(|json| (p as i64, json))
                    .map_err(|e| KilnError::internal("serializing a histogram task", e))
            })
            .collect::<Result<Vec<_>>>()?;
        let replies = one_task_per_row(&self.ctx, rows, WHAT, histogram_udf()).await?;
        let mut computed = BTreeMap::new();
        for (_, bytes) in replies {
            if bytes.len() < 8 || bytes.len() % 8 != 0 {
                return Err(KilnError::internal(
                    WHAT,
                    format!("a reply of {} bytes", bytes.len()),
                ));
            }
            let mut words = bytes
                .chunks_exact(8)
                .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            let partition = words.next().map(u64::from_le_bytes).unwrap_or(u64::MAX) as usize;
            if partition >= urls.len() {
                return Err(KilnError::internal(
                    WHAT,
                    format!("a reply for partition {partition} of {}", urls.len()),
                ));
            }
            computed
                .entry(partition)
                .or_insert_with(|| words.map(i64::from_le_bytes).collect());
        }
        Ok(computed)
    }
}

impl LevelBackend for ClusterPartitions {
    fn histograms(&self, req: &LevelWork) -> Result<Vec<i64>> {
        // Called from the training task's blocking thread.
        self.handle.block_on(self.level(req))
    }

    fn partitions(&self) -> usize {
        self.part_urls.len()
    }
}
