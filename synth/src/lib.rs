//! # kiln-synth
//!
//! Synthetic tabular data, above the data layer (`kiln-engine`) and beside
//! the learners: rule-based generation with column distributions,
//! conditions, per-entity sequences, sticky Markov latent states and
//! SQL-derived columns ([`Rules`] → [`Generator`]), written with the
//! engine's atomic commit ([`write_generated`], and [`write_enhanced`] to add
//! generated columns to an existing table).
//!
//! Evaluation of synthetic data against the real table ([`evaluate`]):
//! SDMetrics' quality scores, validity, privacy (distance to the closest
//! record), with SVG plots.
//!
//! Output is deterministic for a seed whatever the thread count: every
//! (entity, column) pair draws from its own RNG seeded from the seed, and
//! chunks are whole entities generated in parallel and emitted in order.

mod condition;
pub mod copula;
pub mod evaluate;
pub mod frame;
pub mod fusion;
mod rules;
mod sampler;
mod write;

pub use rules::{ColumnRule, ColumnType, Condition, Gen, Literal, Rules};
pub use write::{Source, generate, write_enhanced, write_generated};

/// The functions of synthesis every kiln process installs, so its work
/// runs on a cluster's executors: the copula's two passes and the Chow-Liu
/// tree's counting pass and the real boundaries (aggregates), and the
/// filter's boundary check and distances (scalar UDFs).
pub fn extensions() -> kiln_engine::KilnExtensions {
    use kiln_engine::config_udf::ConfigUdf;
    use kiln_engine::table_pass::PassUdaf;
    kiln_engine::KilnExtensions::default()
        .with_udf(ConfigUdf::<evaluate::InBounds>::udf())
        .with_udf(ConfigUdf::<evaluate::Dcr>::udf())
        .with_udaf(PassUdaf::<copula::fit::StatsPass>::udaf())
        .with_udaf(PassUdaf::<copula::fit::MomentsPass>::udaf())
        .with_udaf(PassUdaf::<copula::chow_liu::PairCountsPass>::udaf())
        .with_udaf(PassUdaf::<evaluate::BoundsPass>::udaf())
}

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    StringArray, TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use condition::CompiledCond;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use kiln_engine::error::{KilnError, Result};
use kiln_engine::io::{ColumnEncoding, ColumnLayout};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rayon::prelude::*;
use sampler::{Kind, Sampler, SeqState};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The generator's RNG: fast, portable and seedable (xoshiro256++).
type SynthRng = rand_xoshiro::Xoshiro256PlusPlus;

pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Rows per chunk (whole entities; a chunk can be larger by one entity).
const CHUNK_ROWS: usize = 16_384;

/// Rows per output file when generating from scratch.
pub const ROWS_PER_FILE: usize = 1 << 21;

/// Rows per run when the rules have no entity (sequences restart per run).
const RUN_ROWS: usize = 1024;

/// A generated or input column slot: its dictionary (for categories) and
/// output type.
struct Slot {
    name: String,
    dict: Vec<String>,
    out_type: ColumnType,
    hidden: bool,
}

/// A column rule compiled once: its conditions and branch samplers.
struct CompiledColumn {
    conditions: Vec<CompiledCond>,
    /// One sampler per `when` branch, then the default.
    branches: Vec<Sampler>,
    kind: Kind,
    /// An earlier column with the same conditions, whose per-row branch
    /// choice this column reuses instead of evaluating them again.
    same_conditions_as: Option<usize>,
}

/// Consecutive rows of one entity.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The entity id (`{entity}` in templates).
    id: i64,
    /// Global index of the run's first row; seeds the run's RNGs.
    first_row: usize,
    rows: usize,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("rows", &self.rows)
            .field("seed", &self.seed)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A compiled generator: from scratch ([`Generator::new`]) or adding columns
/// to an existing dataset ([`Generator::enhance`]).
pub struct Generator {
    rules: Rules,
    seed: u64,
    rows: usize,
    /// Entity runs (from-scratch mode).
    runs: Vec<Run>,
    /// Run index ranges per chunk (from-scratch mode).
    chunks: Vec<(usize, usize)>,
    /// Input columns at the front of `slots` (enhance mode).
    input_columns: usize,
    /// The input column that delimits entities (enhance mode).
    input_entity: Option<usize>,
    slots: Vec<Slot>,
    /// Per rule column; `None` for sql columns.
    columns: Vec<Option<CompiledColumn>>,
    derived: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    full_schema: SchemaRef,
    output: Vec<usize>,
    schema: SchemaRef,
}

fn gen_type(g: &Gen) -> ColumnType {
    match g {
        Gen::Uniform { .. }
        | Gen::Normal { .. }
        | Gen::Lognormal { .. }
        | Gen::Exponential { .. }
        | Gen::Walk { .. } => ColumnType::Float64,
        Gen::IntRange { .. } | Gen::UniqueId { .. } => ColumnType::Int64,
        Gen::Categorical { .. } | Gen::Template { .. } => ColumnType::String,
        Gen::Bool { .. } => ColumnType::Bool,
        Gen::TimestampRange { .. } | Gen::TimestampSequence { .. } => ColumnType::Timestamp,
        Gen::Constant { value } => match value {
            Literal::Bool(_) => ColumnType::Bool,
            Literal::Number(_) => ColumnType::Float64,
            Literal::Text(_) => ColumnType::String,
        },
    }
}

fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::String => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

fn is_text(t: ColumnType) -> bool {
    t == ColumnType::String
}

/// Splits `rows` rows into entities with log-normal sizes.
fn entity_runs(rules: &Rules, seed: u64, rows: usize) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut rng = SynthRng::seed_from_u64(mix(seed, u64::MAX, 0));
    let size = match &rules.entity {
        Some(e) if e.sigma > 0.0 => {
            let mu = e.mean_rows.ln() - e.sigma * e.sigma / 2.0;
            Some(
                LogNormal::new(mu, e.sigma)
                    .map_err(|err| KilnError::config(format!("entity: {err}")))?,
            )
        }
        _ => None,
    };
    let mut first = 0usize;
    let mut id = 1i64;
    while first < rows {
        let n = match (&rules.entity, &size) {
            (Some(_), Some(d)) => (d.sample(&mut rng).round() as usize).max(1),
            (Some(e), None) => (e.mean_rows.round() as usize).max(1),
            (None, _) => RUN_ROWS,
        };
        let n = n.min(rows - first);
        runs.push(Run {
            id,
            first_row: first,
            rows: n,
        });
        first += n;
        id += 1;
    }
    Ok(runs)
}

impl Generator {
    /// Compiles `rules` to generate `rows` rows from scratch with `seed`.
    pub fn new(rules: Rules, seed: u64, rows: usize) -> Result<Self> {
        rules.validate()?;
        let runs = entity_runs(&rules, seed, rows)?;
        let mut chunks = Vec::new();
        let (mut start, mut acc) = (0usize, 0usize);
        for (i, run) in runs.iter().enumerate() {
            acc += run.rows;
            if acc >= CHUNK_ROWS {
                chunks.push((start, i + 1));
                start = i + 1;
                acc = 0;
            }
        }
        if start < runs.len() {
            chunks.push((start, runs.len()));
        }
        let mut g = Self::compile(rules, seed, None)?;
        g.rows = rows;
        g.runs = runs;
        g.chunks = chunks;
        Ok(g)
    }

    /// Compiles `rules` to add their columns to rows of `input` (enhance
    /// mode). Conditions and sql may use the input's columns; the entity
    /// column, if any, must be an input column, and each run of equal
    /// consecutive values of it is one entity.
    pub fn enhance(rules: Rules, seed: u64, input: &Schema) -> Result<Self> {
        let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        rules.validate_with_input(&names)?;
        Self::compile(rules, seed, Some(input))
    }

    fn compile(rules: Rules, seed: u64, input: Option<&Schema>) -> Result<Self> {
        let mut slots = Vec::new();
        let mut input_entity = None;
        if let Some(input) = input {
            for f in input.fields() {
                slots.push(Slot {
                    name: f.name().clone(),
                    dict: vec![],
                    out_type: ColumnType::Float64,
                    hidden: false,
                });
            }
            if let Some(e) = &rules.entity {
                input_entity = Some(input.index_of(&e.column).map_err(|_| {
                    KilnError::config_fix(
                        format!("entity column '{}' is not a column of the input", e.column),
                        "in enhance mode, entity.column names the input column whose runs of equal values are entities",
                    )
                })?);
            }
        } else if let Some(e) = &rules.entity {
            slots.push(Slot {
                name: e.column.clone(),
                dict: vec![],
                out_type: ColumnType::Int64,
                hidden: false,
            });
        }
        let input_columns = input.map(|s| s.fields().len()).unwrap_or(0);
        for l in &rules.latent {
            slots.push(Slot {
                name: l.name.clone(),
                dict: l.states.clone(),
                out_type: ColumnType::String,
                hidden: !l.keep,
            });
        }
        for c in &rules.columns {
            let inferred = c
                .generator
                .as_ref()
                .or(c.when.first().map(|w| &w.generator))
                .map(gen_type);
            let out_type = c.data_type.or(inferred).unwrap_or(ColumnType::Float64);
            let mut dict: Vec<String> = Vec::new();
            for g in c
                .generator
                .iter()
                .chain(c.when.iter().map(|w| &w.generator))
            {
                if let Gen::Categorical { values, .. } = g {
                    for v in values {
                        if !dict.contains(v) {
                            dict.push(v.clone());
                        }
                    }
                }
                let t = gen_type(g);
                let compatible = t == out_type
                    || (!is_text(t)
                        && !is_text(out_type)
                        && t != ColumnType::Bool
                        && out_type != ColumnType::Bool)
                    || (t == ColumnType::Bool && out_type == ColumnType::Bool);
                if c.sql.is_none() && !compatible {
                    return Err(KilnError::config(format!(
                        "rule for column '{}': a {t:?} generator cannot produce type {out_type:?}",
                        c.name
                    )));
                }
            }
            slots.push(Slot {
                name: c.name.clone(),
                dict,
                out_type,
                hidden: c.hidden,
            });
        }
        let mut fields: Vec<Field> = Vec::with_capacity(slots.len());
        if let Some(input) = input {
            fields.extend(input.fields().iter().map(|f| f.as_ref().clone()));
        }
        fields.extend(
            slots[fields.len()..]
                .iter()
                .map(|s| Field::new(&s.name, arrow_type(s.out_type), true)),
        );
        let full_schema: SchemaRef = Arc::new(Schema::new(fields));
        let offset = slots.len() - rules.columns.len();
        let columns = rules
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if c.sql.is_some() {
                    return Ok(None);
                }
                let dict = &slots[offset + i].dict;
                let branches: Vec<Sampler> = c
                    .when
                    .iter()
                    .map(|w| &w.generator)
                    .chain(c.generator.iter())
                    .map(|g| Sampler::compile(g, dict, &c.name))
                    .collect::<Result<_>>()?;
                if branches.len() > usize::from(u8::MAX) {
                    return Err(KilnError::config(format!(
                        "rule for column '{}': at most 254 when branches",
                        c.name
                    )));
                }
                let kind = branches.first().map(Sampler::kind).unwrap_or(Kind::Num);
                if branches.iter().any(|b| b.kind() != kind) {
                    return Err(KilnError::config(format!(
                        "rule for column '{}': branches produce different kinds of values",
                        c.name
                    )));
                }
                // Conditions see the input, entity, latent states and the
                // columns before this one.
                let visible = Schema::new(full_schema.fields()[..offset + i].to_vec());
                let conditions = c
                    .when
                    .iter()
                    .map(|w| CompiledCond::compile(&w.condition, &visible, &c.name))
                    .collect::<Result<_>>()?;
                let same_conditions_as = (!c.when.is_empty())
                    .then(|| {
                        rules.columns[..i]
                            .iter()
                            .position(|r| same_conditions(r, c))
                    })
                    .flatten();
                Ok(Some(CompiledColumn {
                    conditions,
                    branches,
                    kind,
                    same_conditions_as,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let derived = compile_derived(&rules, &slots, &full_schema)?;
        let output: Vec<usize> = (0..slots.len()).filter(|i| !slots[*i].hidden).collect();
        let schema = Arc::new(
            full_schema
                .project(&output)
                .map_err(|e| KilnError::internal("projecting the generator schema", e))?,
        );
        Ok(Generator {
            rules,
            seed,
            rows: 0,
            runs: Vec::new(),
            chunks: Vec::new(),
            input_columns,
            input_entity,
            slots,
            columns,
            derived,
            full_schema,
            output,
            schema,
        })
    }

    /// The output schema (input columns first in enhance mode).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The Parquet layout of each visible rule column, chosen from its rule
    /// (per-column encoder timings are in the README's generator section):
    /// - ids, timestamps, wide integer ranges and timestamp `sql` columns:
    ///   delta encoding, a few bits per value and cheaper than a dictionary;
    /// - walks, unrounded draws, templates and other `sql` columns: plain,
    ///   as their values rarely repeat and a dictionary only costs time;
    /// - categories: a dictionary without min/max statistics, since every
    ///   row group holds nearly every category and min/max prune nothing;
    /// - the rest (rounded draws, narrow ranges, booleans): the default.
    pub fn parquet_layouts(&self) -> BTreeMap<String, ColumnLayout> {
        let offset = self.slots.len() - self.rules.columns.len();
        let mut layouts = BTreeMap::new();
        for (i, rule) in self.rules.columns.iter().enumerate() {
            let slot = &self.slots[offset + i];
            if slot.hidden {
                continue;
            }
            let integral = matches!(
                slot.out_type,
                ColumnType::Int64 | ColumnType::Int32 | ColumnType::Timestamp
            );
            let mut gens = rule
                .generator
                .iter()
                .chain(rule.when.iter().map(|w| &w.generator));
            let (encoding, statistics) = if rule.sql.is_some() {
                let delta = slot.out_type == ColumnType::Timestamp;
                (
                    Some(if delta {
                        ColumnEncoding::Delta
                    } else {
                        ColumnEncoding::Plain
                    }),
                    true,
                )
            } else if integral
                && gens.clone().any(|g| match g {
                    Gen::UniqueId { .. }
                    | Gen::TimestampRange { .. }
                    | Gen::TimestampSequence { .. } => true,
                    Gen::IntRange { min, max } => max - min >= 256,
                    _ => false,
                })
            {
                (Some(ColumnEncoding::Delta), true)
            } else if gens.clone().any(|g| match g {
                Gen::Walk { .. } | Gen::Template { .. } => true,
                Gen::Uniform { round, .. }
                | Gen::Normal { round, .. }
                | Gen::Lognormal { round, .. }
                | Gen::Exponential { round, .. } => round.is_none(),
                _ => false,
            }) {
                (Some(ColumnEncoding::Plain), true)
            } else if gens.all(|g| matches!(g, Gen::Categorical { .. })) {
                (None, false)
            } else {
                continue;
            };
            layouts.insert(
                slot.name.clone(),
                ColumnLayout {
                    encoding,
                    statistics,
                },
            );
        }
        layouts
    }

    /// Generates every chunk in order, handing each batch to `sink`.
    pub fn generate(&self, sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        self.generate_range(0..self.chunks.len(), sink)
    }

    /// Generates chunks `range` in order, a wave of chunks in parallel at a
    /// time. Memory stays bounded by one wave.
    pub fn generate_range(
        &self,
        range: std::ops::Range<usize>,
        mut sink: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let wave = rayon::current_num_threads().max(1) * 2;
        for start in range.clone().step_by(wave) {
            let end = (start + wave).min(range.end);
            let batches: Vec<Result<RecordBatch>> = (start..end)
                .into_par_iter()
                .map(|i| self.chunk(i))
                .collect();
            for b in batches {
                sink(b?)?;
            }
        }
        Ok(())
    }

    /// Chunk ranges of the output files: about [`ROWS_PER_FILE`] rows each,
    /// so the file layout depends on the row count only.
    pub fn file_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let per_file = (ROWS_PER_FILE / CHUNK_ROWS).max(1);
        (0..self.chunks.len())
            .step_by(per_file)
            .map(|s| s..(s + per_file).min(self.chunks.len()))
            .collect()
    }

    /// Generates chunk `index` (from-scratch mode).
    pub fn chunk(&self, index: usize) -> Result<RecordBatch> {
        let (r0, r1) = self.chunks[index];
        self.build(&self.runs[r0..r1], None, index as u64)
    }

    /// Adds the generated columns to `batch`, whose first row is row
    /// `first_row` of the input (enhance mode).
    pub fn enhance_batch(&self, batch: &RecordBatch, first_row: usize) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut runs = Vec::new();
        match self.input_entity {
            Some(col) => {
                let keys = arrow::compute::cast(batch.column(col), &DataType::Utf8)
                    .map_err(|e| KilnError::data("entity column", e.to_string()))?;
                let keys = keys.as_string::<i32>();
                let ids = arrow::compute::cast(batch.column(col), &DataType::Int64).ok();
                let mut start = 0;
                for r in 1..=n {
                    let boundary = r == n
                        || keys.is_null(r) != keys.is_null(r - 1)
                        || keys.value(r) != keys.value(r - 1);
                    if boundary {
                        let id = ids
                            .as_ref()
                            .map(|a| a.as_primitive::<arrow::datatypes::Int64Type>())
                            .filter(|a| a.is_valid(start))
                            .map(|a| a.value(start))
                            .unwrap_or((first_row + start) as i64);
                        runs.push(Run {
                            id,
                            first_row: first_row + start,
                            rows: r - start,
                        });
                        start = r;
                    }
                }
            }
            None => {
                for start in (0..n).step_by(RUN_ROWS) {
                    runs.push(Run {
                        id: (first_row + start) as i64,
                        first_row: first_row + start,
                        rows: RUN_ROWS.min(n - start),
                    });
                }
            }
        }
        self.build(&runs, Some(batch), first_row as u64)
    }

    fn build(&self, runs: &[Run], input: Option<&RecordBatch>, key: u64) -> Result<RecordBatch> {
        let n: usize = runs.iter().map(|r| r.rows).sum();
        let mut arrays: Vec<Option<ArrayRef>> = vec![None; self.slots.len()];
        let mut slot = 0usize;
        if let Some(input) = input {
            for (i, c) in input.columns().iter().enumerate() {
                arrays[i] = Some(Arc::clone(c));
            }
            slot = self.input_columns;
        } else if self.rules.entity.is_some() {
            let ids: Vec<i64> = runs
                .iter()
                .flat_map(|r| std::iter::repeat_n(r.id, r.rows))
                .collect();
            arrays[0] = Some(Arc::new(Int64Array::from(ids)));
            slot = 1;
        }
        for (li, l) in self.rules.latent.iter().enumerate() {
            let mut codes = Vec::with_capacity(n);
            for run in runs {
                let mut rng = SynthRng::seed_from_u64(mix(
                    self.seed,
                    run.first_row as u64,
                    1_000 + li as u64,
                ));
                let mut s = pick(&l.weights, rng.random::<f64>());
                for _ in 0..run.rows {
                    codes.push(s as u32);
                    if rng.random::<f64>() < 1.0 / l.mean_run[s] {
                        // Leave: choose among the other states by weight.
                        let total: f64 = 1.0 - l.weights[s];
                        s = if total > 0.0 {
                            let mut u = rng.random::<f64>() * total;
                            let mut next = (s + 1) % l.states.len();
                            for (j, w) in l.weights.iter().enumerate() {
                                if j == s {
                                    continue;
                                }
                                next = j;
                                if u < *w {
                                    break;
                                }
                                u -= w;
                            }
                            next
                        } else {
                            (s + 1) % l.states.len()
                        };
                    }
                }
            }
            arrays[slot] = Some(categories(&self.slots[slot].dict, codes, None));
            slot += 1;
        }
        // Each column's per-row branch, kept for columns with the same
        // conditions.
        let mut branch_of: Vec<Option<Arc<Vec<u8>>>> = vec![None; self.columns.len()];
        for (ci, rule) in self.rules.columns.iter().enumerate() {
            let s = slot + ci;
            let Some(column) = &self.columns[ci] else {
                continue;
            };
            let shared = column.same_conditions_as.and_then(|j| branch_of[j].clone());
            let branch = match shared {
                Some(branch) => branch,
                None => {
                    let default = (column.branches.len() - 1) as u8;
                    let mut branch = vec![default; n];
                    for (b, cond) in column.conditions.iter().enumerate().rev() {
                        let mask = cond.eval(&arrays, n)?;
                        for r in mask.values().set_indices() {
                            branch[r] = b as u8;
                        }
                    }
                    Arc::new(branch)
                }
            };
            let fill = ColumnFill {
                seed: self.seed,
                key: ci as u64 + 1,
                runs,
                branch: &branch,
                branches: &column.branches,
                per_entity: rule.per_entity,
                null_fraction: rule.null_fraction,
            };
            let slot_info = &self.slots[s];
            arrays[s] = Some(match column.kind {
                Kind::Num => {
                    let (v, ok) = fill.run(|g, rng, st, row, _| g.num(rng, st, row));
                    numbers(v, ok, slot_info.out_type)
                }
                Kind::Bool => {
                    let (v, ok) = fill.run(|g, rng, _, _, _| g.boolean(rng));
                    Arc::new(BooleanArray::new(pack_bits(&v), nulls(ok)))
                }
                Kind::Cat => {
                    let (v, ok) = fill.run(|g, rng, _, _, _| g.category(rng));
                    categories(&slot_info.dict, v, nulls(ok))
                }
                Kind::Text => {
                    let (v, ok) = fill.run(|g, rng, _, row, entity| g.text(rng, row, entity));
                    let valid = |i: usize| ok.is_empty() || ok[i];
                    Arc::new(StringArray::from_iter(
                        v.iter()
                            .enumerate()
                            .map(|(i, t)| valid(i).then_some(t.as_str())),
                    ))
                }
            });
            if !column.conditions.is_empty() {
                branch_of[ci] = Some(branch);
            }
        }
        let mut arrays: Vec<ArrayRef> = arrays
            .into_iter()
            .zip(self.full_schema.fields())
            .map(|(a, f)| a.unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), n)))
            .collect();
        if !self.derived.is_empty() {
            let mut batch = RecordBatch::try_new(Arc::clone(&self.full_schema), arrays.clone())
                .map_err(|e| KilnError::config(format!("generator: {e}")))?;
            for (s, expr) in &self.derived {
                let name = &self.slots[*s].name;
                let out = expr
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(n))
                    .map_err(|e| {
                        KilnError::config(format!("rule for column '{name}': sql failed: {e}"))
                    })?;
                let out = arrow::compute::cast(&out, &arrow_type(self.slots[*s].out_type))
                    .map_err(|e| KilnError::config(format!("rule for column '{name}': {e}")))?;
                let out = apply_nulls(
                    out,
                    self.rules.columns[*s - slot].null_fraction,
                    mix(self.seed, key, 7_000 + *s as u64),
                )?;
                arrays[*s] = out;
                batch = RecordBatch::try_new(Arc::clone(&self.full_schema), arrays.clone())
                    .map_err(|e| KilnError::config(format!("generator: {e}")))?;
            }
        }
        let out: Vec<ArrayRef> = self
            .output
            .iter()
            .map(|i| Arc::clone(&arrays[*i]))
            .collect();
        RecordBatch::try_new(self.schema(), out)
            .map_err(|e| KilnError::config(format!("generator: {e}")))
    }
}

/// Draws one column's values run by run: each run has its own RNG, so the
/// values do not depend on how runs are grouped into chunks or threads.
struct ColumnFill<'a> {
    seed: u64,
    key: u64,
    runs: &'a [Run],
    branch: &'a [u8],
    branches: &'a [Sampler],
    per_entity: bool,
    null_fraction: f64,
}

impl ColumnFill<'_> {
    /// Returns the values and, if the column has nulls, the validity.
    fn run<T: Clone>(
        &self,
        mut draw: impl FnMut(&Sampler, &mut SynthRng, &mut SeqState, i64, i64) -> T,
    ) -> (Vec<T>, Vec<bool>) {
        let n = self.branch.len();
        let mut values = Vec::with_capacity(n);
        let nullable = self.null_fraction > 0.0;
        let mut valid = Vec::with_capacity(if nullable { n } else { 0 });
        let mut r = 0usize;
        for run in self.runs {
            let mut rng = SynthRng::seed_from_u64(mix(self.seed, run.first_row as u64, self.key));
            let mut state = SeqState::default();
            let mut fixed: Option<T> = None;
            for k in 0..run.rows {
                let g = &self.branches[usize::from(self.branch[r])];
                let row = (run.first_row + k) as i64;
                let v = if self.per_entity {
                    fixed
                        .get_or_insert_with(|| draw(g, &mut rng, &mut state, row, run.id))
                        .clone()
                } else {
                    draw(g, &mut rng, &mut state, row, run.id)
                };
                values.push(v);
                if nullable {
                    valid.push(rng.random::<f64>() >= self.null_fraction);
                }
                r += 1;
            }
        }
        (values, valid)
    }
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.is_empty() {
        None
    } else {
        Some(NullBuffer::new(pack_bits(&valid))).filter(|n| n.null_count() > 0)
    }
}

/// Packs bools 64 at a time (`BooleanBuffer::from(&[bool])` goes bit by bit).
fn pack_bits(bits: &[bool]) -> BooleanBuffer {
    let words: Vec<u64> = bits
        .chunks(64)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |w, (i, b)| w | (u64::from(*b) << i))
        })
        .collect();
    BooleanBuffer::new(arrow::buffer::Buffer::from_vec(words), 0, bits.len())
}

fn numbers(values: Vec<f64>, valid: Vec<bool>, out_type: ColumnType) -> ArrayRef {
    let nulls = nulls(valid);
    match out_type {
        ColumnType::Int64 => Arc::new(Int64Array::new(
            values.iter().map(|x| *x as i64).collect(),
            nulls,
        )),
        ColumnType::Int32 => Arc::new(Int32Array::new(
            values.iter().map(|x| *x as i32).collect(),
            nulls,
        )),
        ColumnType::Float32 => Arc::new(Float32Array::new(
            values.iter().map(|x| *x as f32).collect(),
            nulls,
        )),
        ColumnType::Timestamp => Arc::new(
            TimestampMillisecondArray::new(values.iter().map(|x| *x as i64).collect(), nulls)
                .with_timezone("UTC"),
        ),
        _ => Arc::new(Float64Array::new(values.into(), nulls)),
    }
}

fn same_conditions(a: &ColumnRule, b: &ColumnRule) -> bool {
    a.when.len() == b.when.len()
        && a.when
            .iter()
            .zip(&b.when)
            .all(|(x, y)| x.condition == y.condition)
}

/// A string column from dictionary codes, built directly (cheaper than
/// `take` on the dictionary); null slots hold no bytes.
fn categories(dict: &[String], codes: Vec<u32>, nulls: Option<NullBuffer>) -> ArrayRef {
    let mut offsets = Vec::with_capacity(codes.len() + 1);
    let mut bytes = Vec::with_capacity(codes.len() * 8);
    offsets.push(0i32);
    for (i, code) in codes.iter().enumerate() {
        if nulls.as_ref().is_none_or(|n| n.is_valid(i)) {
            bytes.extend_from_slice(dict[*code as usize].as_bytes());
        }
        offsets.push(bytes.len() as i32);
    }
    Arc::new(StringArray::new(
        OffsetBuffer::new(offsets.into()),
        bytes.into(),
        nulls,
    ))
}

fn pick(weights: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1
}

fn apply_nulls(array: ArrayRef, fraction: f64, seed: u64) -> Result<ArrayRef> {
    if fraction <= 0.0 {
        return Ok(array);
    }
    let mut rng = SynthRng::seed_from_u64(seed);
    let keep =
        BooleanArray::from_iter((0..array.len()).map(|_| Some(rng.random::<f64>() >= fraction)));
    let nulls = arrow::array::new_null_array(array.data_type(), array.len());
    arrow::compute::kernels::zip::zip(&keep, &array, &nulls)
        .map_err(|e| KilnError::internal("applying a null rate", e))
}

/// Compiles the `sql` columns in dependency order; cycles are errors.
fn compile_derived(
    rules: &Rules,
    slots: &[Slot],
    schema: &SchemaRef,
) -> Result<Vec<(usize, Arc<dyn PhysicalExpr>)>> {
    let offset = slots.len() - rules.columns.len();
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(schema.as_ref().clone())
        .map_err(|e| KilnError::internal("building the generator schema", e))?;
    let mut exprs = Vec::new();
    for (i, c) in rules.columns.iter().enumerate() {
        if let Some(sql) = &c.sql {
            let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| {
                KilnError::config(format!(
                    "rule for column '{}': invalid sql '{sql}': {e}",
                    c.name
                ))
            })?;
            let refs: Vec<String> = expr.column_refs().iter().map(|c| c.name.clone()).collect();
            exprs.push((offset + i, expr, refs));
        }
    }
    let derived_names: Vec<&str> = exprs
        .iter()
        .map(|(s, _, _)| slots[*s].name.as_str())
        .collect();
    let mut order = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    while order.len() < exprs.len() {
        let next = exprs.iter().position(|(s, _, refs)| {
            !done.contains(&slots[*s].name.as_str())
                && refs
                    .iter()
                    .all(|r| !derived_names.contains(&r.as_str()) || done.contains(&r.as_str()))
        });
        match next {
            Some(i) => {
                done.push(slots[exprs[i].0].name.as_str());
                order.push(i);
            }
            None => {
                let stuck: Vec<&str> = derived_names
                    .iter()
                    .filter(|n| !done.contains(n))
                    .copied()
                    .collect();
                return Err(KilnError::config_fix(
                    format!("sql columns form a cycle: {}", stuck.join(" -> ")),
                    "a sql column may only use columns that do not depend on it",
                ));
            }
        }
    }
    order
        .into_iter()
        .map(|i| {
            let (s, expr, _) = &exprs[i];
            ctx.create_physical_expr(expr.clone(), &df_schema)
                .map(|p| (*s, p))
                .map_err(|e| {
                    KilnError::config(format!("rule for column '{}': {e}", slots[*s].name))
                })
        })
        .collect()
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
