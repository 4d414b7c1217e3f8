//! Sampling a fitted copula, optionally under a SQL condition.
//!
//! Conjuncts of the condition on single columns (`c = v`, `c < v`, `c
//! BETWEEN a AND b`, `c IN (…)`, `c IS [NOT] NULL`) become intervals of the
//! column's normal score; rows are then drawn from the truncated
//! multivariate normal (exact values by Gaussian conditioning, ranges by a
//! Gibbs sampler whose every step is an exact truncated draw, the other
//! columns from their conditional normal). Every row meets those conditions
//! by construction, however rare they are. Anything else in the condition
//! (an `OR` across columns, arithmetic between columns) is checked per row
//! and met by drawing more rows, which fails with a clear error when almost
//! no row passes.
//!
//! Rows come in chunks, each drawn from its own RNG seeded by (seed, chunk
//! index), and are emitted in chunk order: the output depends on the seed
//! only, not on the number of threads.

use super::chow_liu::TreeDraw;
use super::linalg::{Conditional, Matrix, cholesky, cholesky_inverse, condition};
use super::marginal::{Prepared, UInterval};
use super::{Reproduction, normal};
use crate::frame::SdType;
use crate::mix;
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, WriteSummary, write_streams};
use kiln_engine::{KilnError, KilnSession, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::str::FromStr;
use std::sync::Arc;
use url::Url;

type Rng = rand_xoshiro::Xoshiro256PlusPlus;

/// Rows per chunk (the unit of parallelism and of seeding).
const CHUNK_ROWS: usize = 8192;
/// Gibbs sweeps per row under range conditions.
const GIBBS_SWEEPS: usize = 20;
/// Rows drawn to test a residual condition before giving up on it.
const RESIDUAL_PROBE_ROWS: usize = 200_000;

/// What to sample.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// A SQL boolean expression over the model's columns.
    pub sql: Option<String>,
}

/// A column's allowed unit-line set.
#[derive(Debug, Clone)]
enum Allowed {
    /// Union of intervals of the unit line.
    Intervals(Vec<UInterval>),
    /// One exact value (a continuous column fixed to it).
    Exact { u: f64, value: f64 },
}

fn intersect(a: &[UInterval], b: &[UInterval]) -> Vec<UInterval> {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (lo, hi) = (a0.max(b0), a1.min(b1));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out
}

/// The sampler of one model under one condition.
pub struct Sampler {
    model: Arc<Reproduction>,
    schema: SchemaRef,
    types: Vec<DataType>,
    engine: Engine,
    /// Exact values that override the drawn ones (model column, value).
    exact: Vec<(usize, f64)>,
    residual: Option<Arc<dyn PhysicalExpr>>,
    seed: u64,
}

/// How a model's rows are drawn on the unit line.
enum Engine {
    Copula {
        correlation: Matrix,
        /// Lower Cholesky factor of the correlation (unconditioned draws).
        factor: Vec<f64>,
        gibbs: Option<Box<Gibbs>>,
    },
    Tree(TreeDraw),
}

/// Conditioned draws: dimensions fixed to points, dimensions restricted to
/// intervals (Gibbs), and free dimensions.
struct Gibbs {
    points: Vec<(usize, f64)>,
    /// Box dimensions with their z intervals, in the order of `cond.rest`
    /// restricted to them.
    boxes: Vec<(usize, Vec<(f64, f64)>)>,
    /// Mean of every non-point dimension given the points (indexed by dim).
    mean: Vec<f64>,
    /// Precision of the box dimensions given the points.
    precision: Vec<f64>,
    /// Free dimensions given points and boxes.
    free: Option<Conditional>,
    /// Box dimension index → position in `free.given` (dims).
    d: usize,
}

impl Sampler {
    pub fn new(model: Arc<Reproduction>, conditions: &Conditions, seed: u64) -> Result<Sampler> {
        let columns = model.columns();
        let types = columns
            .iter()
            .map(|c| {
                DataType::from_str(&c.data_type).map_err(|e| {
                    KilnError::data(
                        format!("model column '{}'", c.name),
                        format!("unknown data type {}: {e}", c.data_type),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .zip(&types)
                .map(|(c, t)| Field::new(&c.name, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let engine = match model.as_ref() {
            Reproduction::GaussianCopula(m) => {
                let d = m.dimensions.len();
                let correlation = Matrix {
                    n: d,
                    data: m.correlation.clone(),
                };
                let factor = cholesky(d, &correlation.data).ok_or_else(|| {
                    KilnError::data(
                        "the model",
                        "its correlation matrix is not positive definite",
                    )
                })?;
                Engine::Copula {
                    correlation,
                    factor,
                    gibbs: None,
                }
            }
            Reproduction::ChowLiu(t) => Engine::Tree(
                TreeDraw::plan(t, vec![None; t.dimensions.len()]).ok_or_else(|| {
                    KilnError::data("the model", "its tables hold no probability")
                })?,
            ),
        };
        let mut sampler = Sampler {
            model: Arc::clone(&model),
            schema,
            types,
            engine,
            exact: Vec::new(),
            residual: None,
            seed,
        };
        if let Some(sql) = conditions.sql.as_deref().filter(|s| !s.trim().is_empty()) {
            sampler.plan_condition(sql)?;
        }
        Ok(sampler)
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn plan_condition(&mut self, sql: &str) -> Result<()> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())
            .map_err(|e| KilnError::internal("building the model schema", e))?;
        let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| {
            KilnError::config_fix(
                format!("invalid condition '{sql}': {e}"),
                "write a SQL boolean expression over the model's columns, e.g. \"rsrp BETWEEN -120 AND -110 AND activity = 'still'\"",
            )
        })?;
        let model = Arc::clone(&self.model);
        let prepared: Vec<Prepared<'_>> = model
            .columns()
            .iter()
            .map(|c| c.marginal.prepare())
            .collect();
        let mut allowed: Vec<Option<Allowed>> = vec![None; self.model.columns().len()];
        let mut residual = Vec::new();
        for conjunct in split_conjunction(&expr) {
            match self.column_constraint(conjunct, &prepared)? {
                Some((c, a)) => {
                    let merged = match (allowed[c].take(), a) {
                        (None, a) => a,
                        (Some(Allowed::Intervals(x)), Allowed::Intervals(y)) => {
                            Allowed::Intervals(intersect(&x, &y))
                        }
                        (Some(Allowed::Exact { u, value }), Allowed::Intervals(y))
                        | (Some(Allowed::Intervals(y)), Allowed::Exact { u, value }) => {
                            if y.iter().any(|&(a, b)| a <= u && u <= b) {
                                Allowed::Exact { u, value }
                            } else {
                                Allowed::Intervals(Vec::new())
                            }
                        }
                        (Some(Allowed::Exact { u, value }), Allowed::Exact { value: v2, .. }) => {
                            if value == v2 {
                                Allowed::Exact { u, value }
                            } else {
                                Allowed::Intervals(Vec::new())
                            }
                        }
                    };
                    if matches!(&merged, Allowed::Intervals(v) if v.iter().all(|(a, b)| b < a || (a == b && !self.is_point_column(c))))
                    {
                        return Err(unsatisfiable(sql, &self.model.columns()[c].name));
                    }
                    allowed[c] = Some(merged);
                }
                None => residual.push(conjunct.clone()),
            }
        }
        // Constant columns (not dimensions) always take the same value: the
        // condition holds for every row or for none.
        for (c, a) in allowed.iter().enumerate() {
            if let Some(a) = a
                && !self.model.dimensions().contains(&c)
            {
                let u = constant_position(&self.model.columns()[c].marginal);
                let holds = match a {
                    Allowed::Exact { value, .. } => prepared[c].number_at(u) == Some(*value),
                    Allowed::Intervals(v) => v.iter().any(|&(lo, hi)| lo <= u && u <= hi),
                };
                if !holds {
                    return Err(unsatisfiable(sql, &self.model.columns()[c].name));
                }
            }
        }
        let dims = self.model.dimensions().to_vec();
        for &c in &dims {
            if let Some(Allowed::Exact { value, .. }) = &allowed[c] {
                self.exact.push((c, *value));
            }
        }
        match (&mut self.engine, self.model.as_ref()) {
            (
                Engine::Copula {
                    correlation, gibbs, ..
                },
                _,
            ) => {
                let mut points = Vec::new();
                let mut boxes = Vec::new();
                for (k, &c) in dims.iter().enumerate() {
                    match &allowed[c] {
                        None => {}
                        Some(Allowed::Exact { u, .. }) => {
                            points.push((k, normal::quantile(u.clamp(1e-12, 1.0 - 1e-12))));
                        }
                        Some(Allowed::Intervals(v)) => {
                            let z: Vec<(f64, f64)> = v
                                .iter()
                                .map(|&(a, b)| (normal::quantile(a), normal::quantile(b)))
                                .collect();
                            if z.iter().all(|(a, b)| a == b) {
                                points.push((k, z[0].0.clamp(-37.0, 37.0)));
                            } else {
                                boxes.push((k, z));
                            }
                        }
                    }
                }
                if !points.is_empty() || !boxes.is_empty() {
                    *gibbs = Some(Box::new(
                        Gibbs::plan(correlation, points, boxes).ok_or_else(|| {
                            KilnError::data(
                                "the model",
                                "its correlation matrix cannot be conditioned",
                            )
                        })?,
                    ));
                }
            }
            (Engine::Tree(draw), Reproduction::ChowLiu(tree)) => {
                let evidence: Vec<Option<Vec<(f64, f64)>>> = dims
                    .iter()
                    .map(|&c| match &allowed[c] {
                        None => None,
                        Some(Allowed::Exact { u, .. }) => Some(vec![(*u, *u)]),
                        Some(Allowed::Intervals(v)) => Some(v.clone()),
                    })
                    .collect();
                *draw = TreeDraw::plan(tree, evidence).ok_or_else(|| {
                    KilnError::config_fix(
                        format!("no row can satisfy the condition '{sql}' under this model"),
                        "loosen the condition: its columns' values never occur together in the data the model was fitted to",
                    )
                })?;
            }
            (Engine::Tree(_), _) => {}
        }
        if !residual.is_empty() {
            let rest = residual
                .into_iter()
                .reduce(|a, b| a.and(b))
                .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(true)), None));
            let physical = ctx
                .create_physical_expr(rest, &df_schema)
                .map_err(|e| KilnError::config(format!("invalid condition '{sql}': {e}")))?;
            self.residual = Some(physical);
        }
        Ok(())
    }

    fn is_point_column(&self, c: usize) -> bool {
        matches!(
            self.model.columns()[c].marginal,
            super::marginal::Marginal::Continuous { .. }
                | super::marginal::Marginal::Parametric { .. }
        )
    }

    /// A conjunct on a single column as its allowed set; `None` when the
    /// conjunct is of another form.
    fn column_constraint(
        &self,
        e: &Expr,
        prepared: &[Prepared<'_>],
    ) -> Result<Option<(usize, Allowed)>> {
        let column = |e: &Expr| match e {
            Expr::Column(c) => self.model.columns().iter().position(|m| m.name == c.name),
            _ => None,
        };
        let literal = |e: &Expr| match e {
            Expr::Literal(v, _) => Some(v.clone()),
            Expr::Negative(inner) => match inner.as_ref() {
                Expr::Literal(v, _) => v.arithmetic_negate().ok(),
                _ => None,
            },
            _ => None,
        };
        let (c, allowed) = match e {
            Expr::IsNull(inner) => match column(inner) {
                Some(c) => {
                    let n = prepared[c].null_interval().1;
                    (
                        c,
                        Allowed::Intervals((n > 0.0).then_some((0.0, n)).into_iter().collect()),
                    )
                }
                None => return Ok(None),
            },
            Expr::IsNotNull(inner) => match column(inner) {
                Some(c) => {
                    let n = prepared[c].null_interval().1;
                    (
                        c,
                        Allowed::Intervals((n < 1.0).then_some((n, 1.0)).into_iter().collect()),
                    )
                }
                None => return Ok(None),
            },
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (c, v, op) = match (column(left), literal(right), column(right), literal(left))
                {
                    (Some(c), Some(v), _, _) => (c, v, *op),
                    (_, _, Some(c), Some(v)) => match op.swap() {
                        Some(op) => (c, v, op),
                        None => return Ok(None),
                    },
                    _ => return Ok(None),
                };
                match op {
                    Operator::Eq => (c, self.equal(c, &v, prepared)?),
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                        let x = self.number(c, &v)?;
                        let (lo, hi) = match op {
                            Operator::Lt => (f64::NEG_INFINITY, x.next_down()),
                            Operator::LtEq => (f64::NEG_INFINITY, x),
                            Operator::Gt => (x.next_up(), f64::INFINITY),
                            _ => (x, f64::INFINITY),
                        };
                        (c, self.range(c, lo, hi, prepared))
                    }
                    _ => return Ok(None),
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => match (column(expr), literal(low), literal(high)) {
                (Some(c), Some(lo), Some(hi)) => {
                    let (lo, hi) = (self.number(c, &lo)?, self.number(c, &hi)?);
                    (c, self.range(c, lo, hi, prepared))
                }
                _ => return Ok(None),
            },
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) => {
                let Some(c) = column(expr) else {
                    return Ok(None);
                };
                let mut intervals = Vec::new();
                for item in list {
                    let Some(v) = literal(item) else {
                        return Ok(None);
                    };
                    match self.equal(c, &v, prepared)? {
                        Allowed::Intervals(v) => intervals.extend(v),
                        // A continuous value in a list: exact per row is not
                        // an interval; check it per row instead.
                        Allowed::Exact { .. } => return Ok(None),
                    }
                }
                (c, Allowed::Intervals(intervals))
            }
            _ => return Ok(None),
        };
        if self.model.columns()[c].sdtype == SdType::Id {
            return Ok(None);
        }
        Ok(Some((c, allowed)))
    }

    /// A literal as a number of column `c` (timestamps in microseconds).
    fn number(&self, c: usize, v: &ScalarValue) -> Result<f64> {
        let column = &self.model.columns()[c];
        let bad = |why: String| {
            KilnError::config_fix(
                format!("condition on column '{}': {why}", column.name),
                format!(
                    "compare '{}' with a {} value",
                    column.name,
                    sdtype_name(column.sdtype)
                ),
            )
        };
        let target = match column.sdtype {
            SdType::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
            SdType::Numerical => DataType::Float64,
            _ => return Err(bad("it is not numeric, so it has no order".into())),
        };
        let cast_value = v
            .cast_to(&target)
            .map_err(|e| bad(format!("cannot use {v} here: {e}")))?;
        match cast_value {
            ScalarValue::Float64(Some(x)) => Ok(x),
            ScalarValue::TimestampMicrosecond(Some(x), _) => Ok(x as f64),
            other => Err(bad(format!("cannot use {other} here"))),
        }
    }

    fn range(&self, c: usize, lo: f64, hi: f64, prepared: &[Prepared<'_>]) -> Allowed {
        let column = &self.model.columns()[c];
        // Integer columns are rounded on output: widen to the rounding cells.
        let (lo, hi) = if column.integer {
            (lo.ceil() - 0.49999, hi.floor() + 0.49999)
        } else {
            (lo, hi)
        };
        Allowed::Intervals(prepared[c].interval_of_range(lo, hi).into_iter().collect())
    }

    fn equal(&self, c: usize, v: &ScalarValue, prepared: &[Prepared<'_>]) -> Result<Allowed> {
        let column = &self.model.columns()[c];
        if column.sdtype.is_continuous() {
            let x = self.number(c, v)?;
            if column.integer || !self.is_point_column(c) {
                return Ok(self.range(c, x, x, prepared));
            }
            return Ok(match prepared[c].interval_of_number(x) {
                Some((a, b)) if a == b => Allowed::Exact { u: a, value: x },
                Some((a, b)) => Allowed::Intervals(vec![(a, b)]),
                None => Allowed::Intervals(Vec::new()),
            });
        }
        let text = match v {
            ScalarValue::Boolean(Some(b)) => b.to_string(),
            other => other
                .cast_to(&DataType::Utf8)
                .ok()
                .and_then(|s| match s {
                    ScalarValue::Utf8(Some(s)) => Some(s),
                    _ => None,
                })
                .ok_or_else(|| {
                    KilnError::config(format!(
                        "condition on column '{}': cannot compare it with {other}",
                        column.name
                    ))
                })?,
        };
        let intervals = match &column.marginal {
            super::marginal::Marginal::Categorical { categories, .. } => categories
                .iter()
                .position(|k| *k == text)
                .and_then(|k| prepared[c].interval_of_category(k))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        Ok(Allowed::Intervals(intervals))
    }

    /// Draws chunk `index` (`rows` rows whose first key is `first_row`),
    /// before the residual condition.
    fn draw(&self, index: u64, first_row: u64, rows: usize) -> Result<RecordBatch> {
        let model = self.model.as_ref();
        let (columns, dims) = (model.columns(), model.dimensions());
        let d = dims.len();
        let mut rng = Rng::seed_from_u64(mix(self.seed, index, 0x5EED));
        // Unit-line positions, row-major rows × dims.
        let mut units = vec![0.0f64; rows * d];
        let mut eps = vec![0.0f64; d];
        for r in 0..rows {
            let row = &mut units[r * d..(r + 1) * d];
            match (&self.engine, model) {
                (Engine::Copula { factor, gibbs, .. }, _) => {
                    match gibbs {
                        None => {
                            for e in eps.iter_mut() {
                                *e = StandardNormal.sample(&mut rng);
                            }
                            for (i, z) in row.iter_mut().enumerate() {
                                *z = (0..=i).map(|k| factor[i * d + k] * eps[k]).sum();
                            }
                        }
                        Some(g) => g.draw(&mut rng, row)?,
                    }
                    for z in row.iter_mut() {
                        *z = normal::cdf(*z);
                    }
                }
                (Engine::Tree(draw), Reproduction::ChowLiu(tree)) => draw.row(tree, &mut rng, row),
                (Engine::Tree(_), _) => {}
            }
        }
        let prepared: Vec<Prepared<'_>> = columns.iter().map(|c| c.marginal.prepare()).collect();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for (c, column) in columns.iter().enumerate() {
            let dim = dims.iter().position(|&x| x == c);
            let u_of = |r: usize| match dim {
                Some(k) => units[r * d + k],
                None => constant_position(&column.marginal),
            };
            let array: ArrayRef = if column.sdtype == SdType::Id {
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|r| (first_row + r as u64 + 1) as i64),
                ))
            } else if column.sdtype.is_continuous() {
                let exact = self.exact.iter().find(|(x, _)| *x == c).map(|(_, v)| *v);
                Arc::new(Float64Array::from_iter((0..rows).map(|r| {
                    let v = prepared[c].number_at(u_of(r))?;
                    let v = exact.unwrap_or(v);
                    Some(if column.integer { v.round() } else { v })
                })))
            } else {
                let categories = match &column.marginal {
                    super::marginal::Marginal::Categorical { categories, .. } => {
                        categories.as_slice()
                    }
                    _ => &[],
                };
                Arc::new(StringArray::from_iter((0..rows).map(|r| {
                    prepared[c]
                        .category_at(u_of(r))
                        .and_then(|k| categories.get(k).map(String::as_str))
                })))
            };
            arrays.push(output_array(
                array,
                column.sdtype,
                &self.types[c],
                &column.name,
            )?);
        }
        RecordBatch::try_new(self.schema(), arrays)
            .map_err(|e| KilnError::internal("assembling sampled rows", e))
    }

    fn apply_residual(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(expr) = &self.residual else {
            return Ok(batch);
        };
        let mask = expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| KilnError::execution("evaluating the condition", e))?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| KilnError::config("the condition is not a boolean expression"))?;
        filter_record_batch(&batch, mask).map_err(|e| KilnError::internal("filtering rows", e))
    }
}

/// Where a constant column (not a copula dimension) sits on the unit
/// line: the middle of its non-null mass, or 1 when it is all null.
fn constant_position(marginal: &super::marginal::Marginal) -> f64 {
    (marginal.null_rate() + 1.0) / 2.0
}

fn sdtype_name(t: SdType) -> &'static str {
    match t {
        SdType::Numerical => "numeric",
        SdType::Datetime => "timestamp",
        SdType::Categorical => "text",
        SdType::Boolean => "boolean",
        SdType::Id => "key",
    }
}

fn unsatisfiable(sql: &str, column: &str) -> KilnError {
    KilnError::config_fix(
        format!(
            "no row can satisfy the condition '{sql}': column '{column}' never takes such a value in the data the model was fitted to"
        ),
        format!(
            "use values or ranges of '{column}' that occur in the training data (`kiln reproduce show` lists them)"
        ),
    )
}

/// Numbers or text of a sampled column in the source column's Arrow type.
fn output_array(
    array: ArrayRef,
    sdtype: SdType,
    target: &DataType,
    name: &str,
) -> Result<ArrayRef> {
    let fail = |e: arrow::error::ArrowError| {
        KilnError::internal(format!("converting sampled column '{name}' to {target}"), e)
    };
    let array = match (sdtype, target) {
        (SdType::Datetime, DataType::Timestamp(_, tz)) => {
            let micros = cast(&array, &DataType::Int64).map_err(fail)?;
            cast(
                &micros,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )
            .map_err(fail)?
        }
        (SdType::Datetime, _) => {
            let micros = cast(&array, &DataType::Int64).map_err(fail)?;
            cast(&micros, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(fail)?
        }
        _ => array,
    };
    cast(&array, target).map_err(fail)
}

impl Gibbs {
    fn plan(
        sigma: &Matrix,
        points: Vec<(usize, f64)>,
        boxes: Vec<(usize, Vec<(f64, f64)>)>,
    ) -> Option<Gibbs> {
        let d = sigma.n;
        let point_dims: Vec<usize> = points.iter().map(|(k, _)| *k).collect();
        // The distribution of the other dimensions given the points.
        let (mean, sigma_p) = if point_dims.is_empty() {
            (vec![0.0; d], sigma.clone())
        } else {
            let cond = condition(sigma, &point_dims)?;
            let g = point_dims.len();
            let mut mean = vec![0.0; d];
            for (ri, &i) in cond.rest.iter().enumerate() {
                mean[i] = (0..g)
                    .map(|k| cond.regression[ri * g + k] * points[k].1)
                    .sum();
            }
            // Σ_P over all dims (point rows/cols unused).
            let r = cond.rest.len();
            let mut full = Matrix::identity(d);
            let l = &cond.factor;
            for a in 0..r {
                for b in 0..r {
                    let v: f64 = (0..r).map(|k| l[a * r + k] * l[b * r + k]).sum();
                    full.data[cond.rest[a] * d + cond.rest[b]] = v;
                }
            }
            (mean, full)
        };
        let box_dims: Vec<usize> = boxes.iter().map(|(k, _)| *k).collect();
        let precision = if box_dims.is_empty() {
            Vec::new()
        } else {
            let s = sigma_p.select(&box_dims, &box_dims);
            let l = cholesky(box_dims.len(), &s)?;
            cholesky_inverse(box_dims.len(), &l)
        };
        // Free dims given the boxes, within Σ_P (points already removed).
        let others: Vec<usize> = (0..d).filter(|k| !point_dims.contains(k)).collect();
        let free = if others.len() > box_dims.len() {
            let sub = Matrix {
                n: others.len(),
                data: sigma_p.select(&others, &others),
            };
            let given: Vec<usize> = box_dims
                .iter()
                .map(|b| others.iter().position(|o| o == b).unwrap_or(0))
                .collect();
            let mut cond = condition(&sub, &given)?;
            // Back to dimension indices.
            cond.rest = cond.rest.iter().map(|&i| others[i]).collect();
            cond.given = cond.given.iter().map(|&i| others[i]).collect();
            Some(cond)
        } else {
            None
        };
        Some(Gibbs {
            points,
            boxes,
            mean,
            precision,
            free,
            d,
        })
    }

    fn draw(&self, rng: &mut Rng, row: &mut [f64]) -> Result<()> {
        for &(k, z) in &self.points {
            row[k] = z;
        }
        let b = self.boxes.len();
        let sd = |i: usize| (1.0 / self.precision[i * b + i]).sqrt();
        // Start inside every interval, then sweep.
        for (i, (k, intervals)) in self.boxes.iter().enumerate() {
            row[*k] = normal::truncated(rng, self.mean[*k], sd(i), intervals)
                .ok_or_else(|| KilnError::config("a condition leaves no probability mass"))?;
        }
        if b > 1 {
            for _ in 0..GIBBS_SWEEPS {
                for (i, (k, intervals)) in self.boxes.iter().enumerate() {
                    let mut shift = 0.0;
                    for (j, (kj, _)) in self.boxes.iter().enumerate() {
                        if j != i {
                            shift += self.precision[i * b + j] * (row[*kj] - self.mean[*kj]);
                        }
                    }
                    let m = self.mean[*k] - shift / self.precision[i * b + i];
                    if let Some(z) = normal::truncated(rng, m, sd(i), intervals) {
                        row[*k] = z;
                    }
                }
            }
        }
        if let Some(free) = &self.free {
            let (g, r) = (free.given.len(), free.rest.len());
            let eps: Vec<f64> = (0..r).map(|_| StandardNormal.sample(rng)).collect();
            for (ri, &k) in free.rest.iter().enumerate() {
                let mut v = self.mean[k];
                for (gi, &kg) in free.given.iter().enumerate() {
                    v += free.regression[ri * g + gi] * (row[kg] - self.mean[kg]);
                }
                for (e, f) in eps.iter().zip(&free.factor[ri * r..ri * r + ri + 1]) {
                    v += f * e;
                }
                row[k] = v;
            }
        }
        debug_assert!(row.len() == self.d);
        Ok(())
    }
}

/// Samples `rows` rows into `target` (atomic commit), chunk by chunk in
/// parallel, in chunk order.
pub async fn write_sample(
    session: &KilnSession,
    sampler: Arc<Sampler>,
    rows: usize,
    target: &Url,
    format: FileFormat,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<WriteSummary> {
    let schema = sampler.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
    let producer = tokio::task::spawn_blocking(move || {
        let result = produce(&sampler, rows, |batch| {
            progress(batch.num_rows() as u64);
            tx.blocking_send(Ok(batch))
                .map_err(|_| KilnError::io("sampler", "the writer stopped"))
        });
        if let Err(e) = result {
            let _unsent = tx.blocking_send(Err(e));
        }
    });
    let stream = kiln_engine::io::receiver_stream(rx);
    let summary = write_streams(
        session,
        schema,
        vec![stream],
        target,
        format,
        &ParquetWriteOptions::default(),
    )
    .await;
    producer
        .await
        .map_err(|e| KilnError::internal("sampling rows", e))?;
    summary
}

/// Draws waves of chunks in parallel and hands their rows on in order
/// until `rows` have passed the condition.
pub fn produce(
    sampler: &Sampler,
    rows: usize,
    mut emit: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let wave = rayon::current_num_threads().max(1) * 2;
    let mut emitted = 0usize;
    let mut drawn = 0usize;
    let mut index = 0u64;
    while emitted < rows {
        let need = rows - emitted;
        // Without a residual condition every drawn row is kept.
        let chunks: Vec<(u64, u64, usize)> = if sampler.residual.is_none() {
            (0..wave)
                .scan(emitted, |done, i| {
                    (*done < rows).then(|| {
                        let n = CHUNK_ROWS.min(rows - *done);
                        let c = (index + i as u64, *done as u64, n);
                        *done += n;
                        c
                    })
                })
                .collect()
        } else {
            (0..wave)
                .map(|i| {
                    (
                        index + i as u64,
                        (drawn + i * CHUNK_ROWS) as u64,
                        CHUNK_ROWS,
                    )
                })
                .collect()
        };
        let batches: Vec<Result<RecordBatch>> = chunks
            .par_iter()
            .map(|&(i, first, n)| {
                sampler
                    .draw(i, first, n)
                    .and_then(|b| sampler.apply_residual(b))
            })
            .collect();
        index += chunks.len() as u64;
        drawn += chunks.iter().map(|c| c.2).sum::<usize>();
        for batch in batches {
            let batch = batch?;
            let keep = batch.num_rows().min(rows - emitted);
            if keep > 0 {
                emit(batch.slice(0, keep))?;
                emitted += keep;
            }
        }
        if sampler.residual.is_some() && drawn >= RESIDUAL_PROBE_ROWS && emitted * 1000 < drawn {
            return Err(KilnError::config_fix(
                format!(
                    "the condition is too rare to meet by drawing rows: {emitted} of {drawn} drawn rows passed (needed {need} more)"
                ),
                "express the rare part as values or ranges of single columns joined by AND (c = v, c BETWEEN a AND b, c IN (…)), which are met without rejection",
            ));
        }
    }
    Ok(())
}
