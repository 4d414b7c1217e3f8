//! `ExtractorTraining` (one table) and `ExtractorPrediction` (several
//! tables joined by key): read, validate against a reference schema, save.

use crate::config::{LoadedConfig, TaskConfig};
use crate::task::{Task, TaskContext, TaskFuture, TaskOutcome};
use datafusion::dataframe::DataFrame;
use datafusion::object_store::ObjectStoreExt;
use kiln_engine::io::{
    FileFormat, JoinSpec, ParquetWriteOptions, in_pass, join_on, key_range_filters,
    write_parquet_passes,
};
use kiln_engine::schema::ReferenceSchema;
use kiln_engine::storage::object_path;
use kiln_engine::{KilnError, Result};
use serde::Deserialize;

/// `save` writes the output to the lake; `return` hands it to downstream
/// tasks in the same run as `task:NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SaveMode {
    #[default]
    Save,
    Return,
}

/// One path or a list of paths.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Locations {
    One(String),
    Many(Vec<String>),
}

impl Locations {
    fn all(&self) -> Vec<String> {
        match self {
            Locations::One(p) => vec![p.clone()],
            Locations::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingInit {
    /// One location, or several unioned by column name (missing columns are null).
    path_raw_tables: Locations,
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    schema_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractOutput {
    #[serde(default)]
    mode: SaveMode,
    #[serde(default)]
    path_df_extract: Option<String>,
    #[serde(default)]
    parquet: ParquetWriteOptions,
}

impl ExtractOutput {
    fn outputs(&self) -> Vec<String> {
        match self.mode {
            SaveMode::Save => self.path_df_extract.iter().cloned().collect(),
            SaveMode::Return => Vec::new(),
        }
    }

    fn check(&self, loaded: &LoadedConfig, task: &TaskConfig) -> Result<()> {
        if self.mode == SaveMode::Save && self.path_df_extract.is_none() {
            return Err(KilnError::config_fix(
                format!(
                    "{}: mode save needs path_df_extract",
                    loaded.at(task, "mode")
                ),
                "add path_df_extract: extraction/NAME/ or use mode: return",
            ));
        }
        Ok(())
    }

    async fn finish(&self, ctx: &TaskContext, df: DataFrame) -> Result<TaskOutcome> {
        self.finish_passes(ctx, vec![df]).await
    }

    /// Saves (one pass after the other, one commit) or returns (unioned)
    /// the passes of a result.
    async fn finish_passes(
        &self,
        ctx: &TaskContext,
        passes: Vec<DataFrame>,
    ) -> Result<TaskOutcome> {
        match (self.mode, &self.path_df_extract) {
            (SaveMode::Save, Some(path)) => {
                let url = ctx.lake.resolve(path)?;
                let summary =
                    write_parquet_passes(&ctx.session, passes, &url, &self.parquet).await?;
                Ok(TaskOutcome {
                    rows_out: Some(summary.rows),
                    outputs: vec![url.to_string()],
                    summary: vec![format!(
                        "{} rows -> {url} ({} files)",
                        summary.rows, summary.files
                    )],
                    ..Default::default()
                })
            }
            _ => {
                let mut passes = passes.into_iter();
                let first = passes
                    .next()
                    .ok_or_else(|| KilnError::config("no tables"))?;
                let df = passes.try_fold(first, |all, pass| all.union(pass))?;
                ctx.returned
                    .lock()
                    .map_err(|_| KilnError::poisoned("the returned DataFrames"))?
                    .insert(ctx.task_name.clone(), df);
                Ok(TaskOutcome {
                    summary: vec![format!("returned as task:{}", ctx.task_name)],
                    ..Default::default()
                })
            }
        }
    }
}

async fn validate(
    ctx: &TaskContext,
    df: &DataFrame,
    schema_path: &Option<String>,
    what: &str,
) -> Result<()> {
    let Some(path) = schema_path else {
        return Ok(());
    };
    let url = ctx.lake.resolve(path)?;
    let store = ctx.session.stores().store_for(&url)?;
    let bytes = store
        .get(&object_path(&url)?)
        .await
        .map_err(|e| {
            KilnError::config_fix(
                format!("cannot read reference schema {url}: {e}"),
                "check schema_path",
            )
        })?
        .bytes()
        .await
        .map_err(|e| KilnError::io(&url, e))?;
    let reference = ReferenceSchema::from_json(&String::from_utf8_lossy(&bytes), url.as_str())?;
    reference.validate(df.schema().as_arrow(), what)
}

/// Reads one table (file, directory or glob).
#[derive(Debug, Clone)]
pub struct ExtractorTraining {
    init: TrainingInit,
    output: ExtractOutput,
}

impl ExtractorTraining {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (TrainingInit, ExtractOutput) = loaded.task_params(task)?;
        output.check(loaded, task)?;
        Ok(ExtractorTraining { init, output })
    }
}

impl Task for ExtractorTraining {
    fn inputs(&self) -> Vec<String> {
        self.init.path_raw_tables.all()
    }

    fn outputs(&self) -> Vec<String> {
        self.output.outputs()
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            ctx.progress.stage("reading and validating");
            let paths = self.init.path_raw_tables.all();
            let mut df: Option<DataFrame> = None;
            for p in &paths {
                let next = ctx.input(p, self.init.format).await?;
                df = Some(match df {
                    None => next,
                    Some(acc) => acc.union_by_name(next).map_err(|e| {
                        KilnError::execution(format!("aligning {p} with the other sources"), e)
                    })?,
                });
            }
            let df = df.ok_or_else(|| {
                KilnError::config(format!(
                    "task '{}': path_raw_tables is empty",
                    ctx.task_name
                ))
            })?;
            validate(ctx, &df, &self.init.schema_path, &paths.join(", ")).await?;
            self.output.finish(ctx, df).await
        })
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    name: String,
    path: String,
    /// This table's format (default: the task's `format`).
    #[serde(default)]
    format: Option<FileFormat>,
    /// How this table joins onto the previous ones; absent for the first.
    #[serde(default)]
    join: Option<JoinSpec>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionInit {
    tables: Vec<TableSpec>,
    /// The format of every table that names none.
    #[serde(default)]
    format: FileFormat,
    #[serde(default)]
    schema_path: Option<String>,
    /// Join in this many passes over ranges of the first join key (an
    /// integer key every join uses), each written before the next starts:
    /// the joins then hold about 1/N of the tables at a time (DataFusion's
    /// hash joins cannot spill). Tables sorted or clustered by the key read
    /// only their pass's row groups. Default 1; `mode: return` unions the
    /// passes instead.
    #[serde(default = "one_pass")]
    join_passes: usize,
}

fn one_pass() -> usize {
    1
}

/// Reads several tables and joins them in order by their configured keys.
#[derive(Debug, Clone)]
pub struct ExtractorPrediction {
    init: PredictionInit,
    output: ExtractOutput,
}

impl ExtractorPrediction {
    pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Self> {
        let (init, output): (PredictionInit, ExtractOutput) = loaded.task_params(task)?;
        output.check(loaded, task)?;
        if init.tables.is_empty() {
            return Err(KilnError::config(format!(
                "{}: tables is empty",
                loaded.at(task, "tables")
            )));
        }
        for (i, t) in init.tables.iter().enumerate() {
            if i > 0 && t.join.is_none() {
                return Err(KilnError::config_fix(
                    format!(
                        "{}: table '{}' has no join",
                        loaded.at(task, &t.name),
                        t.name
                    ),
                    "add join: {on: [key], how: left}",
                ));
            }
        }
        if init.join_passes == 0 {
            return Err(KilnError::config_fix(
                format!("{}: join_passes is 0", loaded.at(task, "join_passes")),
                "give 1 (one pass, the default) or more",
            ));
        }
        if init.join_passes > 1 {
            pass_key(&init.tables).map_err(|e| e.context(loaded.at(task, "join_passes")))?;
        }
        Ok(ExtractorPrediction { init, output })
    }
}

/// The key the join passes split on: the first join's first key, which
/// every join must use.
fn pass_key(tables: &[TableSpec]) -> Result<&str> {
    let joins: Vec<(&str, &JoinSpec)> = tables
        .iter()
        .filter_map(|t| t.join.as_ref().map(|j| (t.name.as_str(), j)))
        .collect();
    let Some(key) = joins.first().and_then(|(_, j)| j.on.first()) else {
        return Err(KilnError::config("join_passes needs at least one join"));
    };
    match joins.iter().find(|(_, j)| !j.on.contains(key)) {
        Some((name, _)) => Err(KilnError::config_fix(
            format!(
                "join_passes splits on the key '{key}', but table '{name}' does not join on it"
            ),
            format!("join every table on '{key}', or set join_passes: 1"),
        )),
        None => Ok(key),
    }
}

impl Task for ExtractorPrediction {
    fn inputs(&self) -> Vec<String> {
        self.init.tables.iter().map(|t| t.path.clone()).collect()
    }

    fn outputs(&self) -> Vec<String> {
        self.output.outputs()
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> TaskFuture<'a> {
        Box::pin(async move {
            ctx.progress
                .stage(format!("joining {} table(s)", self.init.tables.len()));
            let mut tables = Vec::new();
            for spec in &self.init.tables {
                tables.push(
                    ctx.input(&spec.path, spec.format.unwrap_or(self.init.format))
                        .await?,
                );
            }
            let filters = match (self.init.join_passes, tables.first()) {
                (n, Some(first)) if n > 1 => {
                    key_range_filters(first, pass_key(&self.init.tables)?, n).await?
                }
                _ => vec![None],
            };
            let mut passes = Vec::new();
            for filter in &filters {
                let mut joined: Option<DataFrame> = None;
                for (spec, df) in self.init.tables.iter().zip(&tables) {
                    let df = in_pass(df, filter)?;
                    joined = Some(match (joined, &spec.join) {
                        (None, _) => df,
                        (Some(left), Some(join)) => join_on(left, df, join, &spec.name)?,
                        (Some(left), None) => left,
                    });
                }
                passes.push(joined.ok_or_else(|| KilnError::config("no tables"))?);
            }
            if let Some(df) = passes.first() {
                validate(ctx, df, &self.init.schema_path, "joined tables").await?;
            }
            self.output.finish_passes(ctx, passes).await
        })
    }
}
