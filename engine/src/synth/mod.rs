//! Rule-based synthetic data: column distributions, conditions, per-entity
//! sequences, sticky Markov latent states and SQL-derived columns.
//!
//! Output is deterministic for a seed whatever the thread count: every
//! (entity, column) pair draws from its own RNG seeded from the seed, and
//! chunks are whole entities generated in parallel and emitted in order.

mod rules;

pub use rules::{ColumnRule, ColumnType, Condition, Gen, Literal, Rules};

use crate::error::{KilnError, Result};
use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, Normal, StandardNormal};
use rayon::prelude::*;
use std::sync::Arc;

pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .iter()
        .map(|c| (dist(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut x =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Rows per chunk (whole entities; a chunk can be larger by one entity).
const CHUNK_ROWS: usize = 65_536;

/// Column values while a chunk is built.
enum Values {
    Num(Vec<f64>),
    Bool(Vec<bool>),
    Cat(Vec<u32>),
    Text(Vec<String>),
}

/// A generated column slot: its dictionary (for categories) and output type.
struct Slot {
    name: String,
    dict: Vec<String>,
    out_type: ColumnType,
    hidden: bool,
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

/// A compiled generator.
pub struct Generator {
    rules: Rules,
    seed: u64,
    rows: usize,
    /// (entity id, first row, row count) per entity.
    entities: Vec<(i64, usize, usize)>,
    /// Entity index ranges per chunk.
    chunks: Vec<(usize, usize)>,
    slots: Vec<Slot>,
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

impl Generator {
    /// Compiles `rules` for `rows` rows with `seed`.
    pub fn new(rules: Rules, seed: u64, rows: usize) -> Result<Self> {
        rules.validate()?;
        // Entity sizes, from their own RNG.
        let mut entities = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, u64::MAX, 0));
        let mut first = 0usize;
        let mut id = 1i64;
        while first < rows {
            let n = match &rules.entity {
                Some(e) if e.sigma > 0.0 => {
                    let mu = e.mean_rows.ln() - e.sigma * e.sigma / 2.0;
                    let d = LogNormal::new(mu, e.sigma)
                        .map_err(|err| KilnError::config(format!("entity: {err}")))?;
                    (d.sample(&mut rng).round() as usize).max(1)
                }
                Some(e) => (e.mean_rows.round() as usize).max(1),
                None => 1024,
            };
            let n = n.min(rows - first);
            entities.push((id, first, n));
            first += n;
            id += 1;
        }
        let mut chunks = Vec::new();
        let (mut start, mut acc) = (0usize, 0usize);
        for (i, e) in entities.iter().enumerate() {
            acc += e.2;
            if acc >= CHUNK_ROWS {
                chunks.push((start, i + 1));
                start = i + 1;
                acc = 0;
            }
        }
        if start < entities.len() {
            chunks.push((start, entities.len()));
        }
        // Slots: entity, latent states, then columns.
        let mut slots = Vec::new();
        if let Some(e) = &rules.entity {
            slots.push(Slot {
                name: e.column.clone(),
                dict: vec![],
                out_type: ColumnType::Int64,
                hidden: false,
            });
        }
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
        let full_schema: SchemaRef = Arc::new(Schema::new(
            slots
                .iter()
                .map(|s| Field::new(&s.name, arrow_type(s.out_type), true))
                .collect::<Vec<_>>(),
        ));
        let derived = compile_derived(&rules, &slots, &full_schema)?;
        let output: Vec<usize> = (0..slots.len()).filter(|i| !slots[*i].hidden).collect();
        let schema = Arc::new(
            full_schema
                .project(&output)
                .map_err(|e| KilnError::config(e.to_string()))?,
        );
        Ok(Generator {
            rules,
            seed,
            rows,
            entities,
            chunks,
            slots,
            derived,
            full_schema,
            output,
            schema,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Generates every chunk in order, `parallelism` chunks at a time,
    /// handing each batch to `sink`. Memory stays bounded by one wave.
    pub fn generate(&self, mut sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let wave = rayon::current_num_threads().max(1) * 2;
        for start in (0..self.chunks.len()).step_by(wave) {
            let end = (start + wave).min(self.chunks.len());
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

    /// Generates chunk `index`.
    pub fn chunk(&self, index: usize) -> Result<RecordBatch> {
        let (e0, e1) = self.chunks[index];
        let ents = &self.entities[e0..e1];
        let first_row = ents.first().map(|e| e.1).unwrap_or(0);
        let n: usize = ents.iter().map(|e| e.2).sum();
        let mut values: Vec<Values> = Vec::with_capacity(self.slots.len());
        let mut valid: Vec<Vec<bool>> = Vec::with_capacity(self.slots.len());
        let mut slot = 0usize;
        if self.rules.entity.is_some() {
            let mut v = Vec::with_capacity(n);
            for e in ents {
                v.extend(std::iter::repeat_n(e.0 as f64, e.2));
            }
            values.push(Values::Num(v));
            valid.push(vec![true; n]);
            slot += 1;
        }
        for (li, l) in self.rules.latent.iter().enumerate() {
            let mut v = Vec::with_capacity(n);
            for e in ents {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(mix(self.seed, e.0 as u64, 1_000 + li as u64));
                let mut s = pick(&l.weights, rng.random::<f64>());
                for _ in 0..e.2 {
                    v.push(s as u32);
                    if rng.random::<f64>() < 1.0 / l.mean_run[s] {
                        // Leave: choose among the other states by weight.
                        let w: Vec<f64> = l
                            .weights
                            .iter()
                            .enumerate()
                            .map(|(j, w)| if j == s { 0.0 } else { *w })
                            .collect();
                        let total: f64 = w.iter().sum();
                        s = if total > 0.0 {
                            pick(&w, rng.random::<f64>() * total)
                        } else {
                            (s + 1) % l.states.len()
                        };
                    }
                }
            }
            values.push(Values::Cat(v));
            valid.push(vec![true; n]);
            slot += 1;
        }
        for (ci, rule) in self.rules.columns.iter().enumerate() {
            let s = slot + ci;
            if rule.sql.is_some() {
                values.push(Values::Num(Vec::new()));
                valid.push(Vec::new());
                continue;
            }
            let (v, ok) = self.column(s, rule, ents, first_row, n, &values, &valid)?;
            values.push(v);
            valid.push(ok);
        }
        let mut arrays: Vec<ArrayRef> = values
            .into_iter()
            .zip(valid)
            .zip(&self.slots)
            .map(|((v, ok), slot)| to_array(v, ok, slot, n))
            .collect();
        if !self.derived.is_empty() {
            let mut batch = RecordBatch::try_new(Arc::clone(&self.full_schema), arrays.clone())
                .map_err(|e| KilnError::config(format!("generator: {e}")))?;
            for (s, expr) in &self.derived {
                let out = expr
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(n))
                    .map_err(|e| {
                        KilnError::config(format!(
                            "rule for column '{}': sql failed: {e}",
                            self.slots[*s].name
                        ))
                    })?;
                let out = arrow::compute::cast(&out, &arrow_type(self.slots[*s].out_type))
                    .map_err(|e| {
                        KilnError::config(format!("rule for column '{}': {e}", self.slots[*s].name))
                    })?;
                let out = apply_nulls(
                    out,
                    self.rules.columns[*s - slot].null_fraction,
                    mix(self.seed, index as u64, 7_000 + *s as u64),
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

    #[allow(clippy::too_many_arguments)]
    fn column(
        &self,
        s: usize,
        rule: &ColumnRule,
        ents: &[(i64, usize, usize)],
        first_row: usize,
        n: usize,
        values: &[Values],
        valid: &[Vec<bool>],
    ) -> Result<(Values, Vec<bool>)> {
        let slot = &self.slots[s];
        let conds: Vec<CompiledCond> = rule
            .when
            .iter()
            .map(|w| self.compile_cond(&w.condition))
            .collect::<Result<_>>()?;
        let branches: Vec<&Gen> = rule
            .when
            .iter()
            .map(|w| &w.generator)
            .chain(rule.generator.iter())
            .collect();
        let mut num = Vec::new();
        let mut boo = Vec::new();
        let mut cat = Vec::new();
        let mut txt = Vec::new();
        let mut ok = Vec::with_capacity(n);
        let cat_maps: Vec<Vec<u32>> = branches
            .iter()
            .map(|g| match g {
                Gen::Categorical { values, .. } => values
                    .iter()
                    .map(|v| slot.dict.iter().position(|d| d == v).unwrap_or(0) as u32)
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let cum: Vec<Vec<f64>> = branches
            .iter()
            .map(|g| match g {
                Gen::Categorical { weights, .. } => weights
                    .iter()
                    .scan(0.0, |a, w| {
                        *a += w;
                        Some(*a)
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut row = 0usize;
        for e in ents {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, e.0 as u64, s as u64 + 1));
            let mut walk: Option<f64> = None;
            let mut clock: Option<f64> = None;
            let mut entity_value: Option<Draw> = None;
            for k in 0..e.2 {
                let r = row + k;
                let b = conds
                    .iter()
                    .position(|c| c.eval(r, values, valid))
                    .unwrap_or(conds.len());
                let g = branches.get(b).or(branches.last()).ok_or_else(|| {
                    KilnError::config(format!("rule for column '{}': no generator", rule.name))
                })?;
                let b = b.min(branches.len() - 1);
                // A per-entity column draws once and repeats that value.
                let draw = match &entity_value {
                    Some(d) => d.clone(),
                    None => {
                        let d = draw(
                            g,
                            &mut rng,
                            &cum[b],
                            &cat_maps[b],
                            &mut walk,
                            &mut clock,
                            (first_row + r) as i64,
                            e.0,
                        )?;
                        if rule.per_entity {
                            entity_value = Some(d.clone());
                        }
                        d
                    }
                };
                ok.push(rule.null_fraction == 0.0 || rng.random::<f64>() >= rule.null_fraction);
                match draw {
                    Draw::Num(x) => num.push(x),
                    Draw::Bool(x) => boo.push(x),
                    Draw::Cat(x) => cat.push(x),
                    Draw::Text(x) => txt.push(x),
                }
            }
            row += e.2;
        }
        let v = if !txt.is_empty() {
            Values::Text(txt)
        } else if !cat.is_empty() {
            Values::Cat(cat)
        } else if !boo.is_empty() {
            Values::Bool(boo)
        } else {
            Values::Num(num)
        };
        let len = match &v {
            Values::Num(x) => x.len(),
            Values::Bool(x) => x.len(),
            Values::Cat(x) => x.len(),
            Values::Text(x) => x.len(),
        };
        if len != n && n > 0 {
            return Err(KilnError::config(format!(
                "rule for column '{}': branches produce different kinds of values",
                rule.name
            )));
        }
        Ok((v, ok))
    }

    fn compile_cond(&self, c: &Condition) -> Result<CompiledCond> {
        let slot_of = |name: &str| {
            self.slots
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| KilnError::config(format!("unknown column '{name}' in condition")))
        };
        let lit = |s: usize, l: &Literal| -> Lit {
            match l {
                Literal::Number(x) => Lit::Num(*x),
                Literal::Bool(b) => Lit::Bool(*b),
                Literal::Text(t) => match self.slots[s].dict.iter().position(|d| d == t) {
                    Some(i) => Lit::Cat(i as u32),
                    None => Lit::Text(t.clone()),
                },
            }
        };
        Ok(match c {
            Condition::Eq(col, l) => {
                let s = slot_of(col)?;
                CompiledCond::Eq(s, lit(s, l))
            }
            Condition::Ne(col, l) => {
                let s = slot_of(col)?;
                CompiledCond::Not(Box::new(CompiledCond::Eq(s, lit(s, l))))
            }
            Condition::Lt(col, x) => CompiledCond::Lt(slot_of(col)?, *x),
            Condition::Gt(col, x) => CompiledCond::Gt(slot_of(col)?, *x),
            Condition::In(col, ls) => {
                let s = slot_of(col)?;
                CompiledCond::Or(ls.iter().map(|l| CompiledCond::Eq(s, lit(s, l))).collect())
            }
            Condition::And(cs) => CompiledCond::And(
                cs.iter()
                    .map(|c| self.compile_cond(c))
                    .collect::<Result<_>>()?,
            ),
            Condition::Or(cs) => CompiledCond::Or(
                cs.iter()
                    .map(|c| self.compile_cond(c))
                    .collect::<Result<_>>()?,
            ),
            Condition::Not(c) => CompiledCond::Not(Box::new(self.compile_cond(c)?)),
        })
    }
}

#[derive(Clone)]
enum Draw {
    Num(f64),
    Bool(bool),
    Cat(u32),
    Text(String),
}

enum Lit {
    Num(f64),
    Bool(bool),
    Cat(u32),
    Text(String),
}

enum CompiledCond {
    Eq(usize, Lit),
    Lt(usize, f64),
    Gt(usize, f64),
    And(Vec<CompiledCond>),
    Or(Vec<CompiledCond>),
    Not(Box<CompiledCond>),
}

impl CompiledCond {
    fn eval(&self, r: usize, values: &[Values], valid: &[Vec<bool>]) -> bool {
        let present = |s: usize| valid[s].get(r).copied().unwrap_or(false);
        match self {
            CompiledCond::Eq(s, lit) => {
                present(*s)
                    && match (&values[*s], lit) {
                        (Values::Num(v), Lit::Num(x)) => v[r] == *x,
                        (Values::Bool(v), Lit::Bool(x)) => v[r] == *x,
                        (Values::Cat(v), Lit::Cat(x)) => v[r] == *x,
                        (Values::Text(v), Lit::Text(x)) => &v[r] == x,
                        _ => false,
                    }
            }
            CompiledCond::Lt(s, x) => {
                present(*s) && matches!(&values[*s], Values::Num(v) if v[r] < *x)
            }
            CompiledCond::Gt(s, x) => {
                present(*s) && matches!(&values[*s], Values::Num(v) if v[r] > *x)
            }
            CompiledCond::And(cs) => cs.iter().all(|c| c.eval(r, values, valid)),
            CompiledCond::Or(cs) => cs.iter().any(|c| c.eval(r, values, valid)),
            CompiledCond::Not(c) => !c.eval(r, values, valid),
        }
    }
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

fn shape(
    mut sample: impl FnMut() -> f64,
    min: Option<f64>,
    max: Option<f64>,
    round: Option<i32>,
) -> f64 {
    let inside = |x: f64| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m);
    let mut x = sample();
    for _ in 0..16 {
        if inside(x) {
            break;
        }
        x = sample();
    }
    if let Some(m) = min {
        x = x.max(m);
    }
    if let Some(m) = max {
        x = x.min(m);
    }
    match round {
        Some(d) => {
            let f = 10f64.powi(d);
            (x * f).round() / f
        }
        None => x,
    }
}

#[allow(clippy::too_many_arguments)]
fn draw(
    g: &Gen,
    rng: &mut ChaCha8Rng,
    cum: &[f64],
    cat_map: &[u32],
    walk: &mut Option<f64>,
    clock: &mut Option<f64>,
    row: i64,
    entity: i64,
) -> Result<Draw> {
    let bad = |e: String| KilnError::config(format!("generator: {e}"));
    Ok(match g {
        Gen::Uniform { min, max, round } => Draw::Num(shape(
            || min + (max - min) * rng.random::<f64>(),
            None,
            None,
            *round,
        )),
        Gen::Normal {
            mean,
            std,
            min,
            max,
            round,
        } => {
            let d = Normal::new(*mean, *std).map_err(|e| bad(e.to_string()))?;
            Draw::Num(shape(|| d.sample(rng), *min, *max, *round))
        }
        Gen::Lognormal {
            mu,
            sigma,
            min,
            max,
            round,
        } => {
            let d = LogNormal::new(*mu, *sigma).map_err(|e| bad(e.to_string()))?;
            Draw::Num(shape(|| d.sample(rng), *min, *max, *round))
        }
        Gen::Exponential {
            rate,
            min,
            max,
            round,
        } => {
            let d = Exp::new(*rate).map_err(|e| bad(e.to_string()))?;
            Draw::Num(shape(|| d.sample(rng), *min, *max, *round))
        }
        Gen::IntRange { min, max } => Draw::Num(rng.random_range(*min..=*max) as f64),
        Gen::Categorical { .. } => Draw::Cat(cat_map[pick_cum(cum, rng.random::<f64>())]),
        Gen::Bool { p } => Draw::Bool(rng.random::<f64>() < *p),
        Gen::Constant { value } => match value {
            Literal::Bool(b) => Draw::Bool(*b),
            Literal::Number(x) => Draw::Num(*x),
            Literal::Text(t) => Draw::Text(t.clone()),
        },
        Gen::TimestampRange { start, end } => {
            let (a, b) = (rules::parse_ts_ms(start, "")?, rules::parse_ts_ms(end, "")?);
            Draw::Num((a as f64 + (b - a) as f64 * rng.random::<f64>()).floor())
        }
        Gen::TimestampSequence {
            start,
            end,
            min_gap_s,
            max_gap_s,
        } => {
            let t = match *clock {
                None => {
                    let (a, b) = (rules::parse_ts_ms(start, "")?, rules::parse_ts_ms(end, "")?);
                    (a as f64 + (b - a) as f64 * rng.random::<f64>()).floor()
                }
                Some(prev) => {
                    prev + ((min_gap_s + (max_gap_s - min_gap_s) * rng.random::<f64>()) * 1000.0)
                        .round()
                }
            };
            *clock = Some(t);
            Draw::Num(t)
        }
        Gen::Walk { start, step_std } => {
            let x = match *walk {
                None => *start,
                Some(prev) => prev + step_std * rng.sample::<f64, _>(StandardNormal),
            };
            *walk = Some(x);
            Draw::Num(x)
        }
        Gen::Template { pattern } => Draw::Text(render_template(pattern, rng, row, entity)),
        Gen::UniqueId { start } => Draw::Num((start + row) as f64),
    })
}

fn pick_cum(cum: &[f64], u: f64) -> usize {
    cum.iter()
        .position(|c| u < *c)
        .unwrap_or(cum.len().saturating_sub(1))
}

fn render_template(pattern: &str, rng: &mut ChaCha8Rng, row: i64, entity: i64) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let spec = &rest[open + 1..open + close];
        let (kind, count) = spec
            .split_once(':')
            .map(|(k, n)| (k, n.parse::<usize>().unwrap_or(1)))
            .unwrap_or((spec, 1));
        let alphabet: &[u8] = match kind {
            "digits" => b"0123456789",
            "upper" => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "lower" => b"abcdefghijklmnopqrstuvwxyz",
            "hex" => b"0123456789abcdef",
            "row" => {
                out.push_str(&row.to_string());
                rest = &rest[open + close + 1..];
                continue;
            }
            "entity" => {
                out.push_str(&entity.to_string());
                rest = &rest[open + close + 1..];
                continue;
            }
            _ => {
                out.push_str(&rest[open..open + close + 1]);
                rest = &rest[open + close + 1..];
                continue;
            }
        };
        for _ in 0..count {
            out.push(alphabet[rng.random_range(0..alphabet.len())] as char);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn to_array(v: Values, ok: Vec<bool>, slot: &Slot, n: usize) -> ArrayRef {
    let valid = |i: usize| ok.get(i).copied().unwrap_or(false);
    match v {
        Values::Num(x) if x.len() == n => match slot.out_type {
            ColumnType::Int64 => Arc::new(Int64Array::from_iter(
                (0..n).map(|i| valid(i).then(|| x[i] as i64)),
            )),
            ColumnType::Int32 => Arc::new(Int32Array::from_iter(
                (0..n).map(|i| valid(i).then(|| x[i] as i32)),
            )),
            ColumnType::Float32 => Arc::new(Float32Array::from_iter(
                (0..n).map(|i| valid(i).then(|| x[i] as f32)),
            )),
            ColumnType::Timestamp => Arc::new(
                TimestampMillisecondArray::from_iter((0..n).map(|i| valid(i).then(|| x[i] as i64)))
                    .with_timezone("UTC"),
            ),
            _ => Arc::new(Float64Array::from_iter(
                (0..n).map(|i| valid(i).then(|| x[i])),
            )),
        },
        Values::Bool(x) => Arc::new(BooleanArray::from_iter(
            (0..n).map(|i| valid(i).then(|| x[i])),
        )),
        Values::Cat(x) => Arc::new(StringArray::from_iter(
            (0..n).map(|i| valid(i).then(|| slot.dict[x[i] as usize].as_str())),
        )),
        Values::Text(x) => Arc::new(StringArray::from_iter(
            (0..n).map(|i| valid(i).then(|| x[i].as_str())),
        )),
        // Placeholder for SQL columns, filled after generation.
        Values::Num(_) => arrow::array::new_null_array(&arrow_type(slot.out_type), n),
    }
}

fn apply_nulls(array: ArrayRef, fraction: f64, seed: u64) -> Result<ArrayRef> {
    if fraction <= 0.0 {
        return Ok(array);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep =
        BooleanArray::from_iter((0..array.len()).map(|_| Some(rng.random::<f64>() >= fraction)));
    let nulls = arrow::array::new_null_array(array.data_type(), array.len());
    arrow::compute::kernels::zip::zip(&keep, &array, &nulls)
        .map_err(|e| KilnError::config(e.to_string()))
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
        .map_err(|e| KilnError::config(e.to_string()))?;
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
mod tests;

/// Generates into `target` (atomic commit), streaming: at most a few waves
/// of chunks are in memory at any time.
pub async fn write_generated(
    session: &crate::session::KilnSession,
    generator: Arc<Generator>,
    target: &url::Url,
    format: &crate::io::OutputFormat,
) -> Result<crate::io::WriteSummary> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
    let schema = generator.schema();
    let producer = tokio::task::spawn_blocking(move || {
        let result = generator.generate(|batch| {
            tx.blocking_send(Ok(batch))
                .map_err(|_| KilnError::io("generator", "writer stopped"))
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .boxed();
    let summary = crate::io::write_streams(session, schema, vec![stream], target, format).await;
    producer.await.map_err(|e| KilnError::io("generator", e))?;
    summary
}
