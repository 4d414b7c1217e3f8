//! Streaming a DataFrame into binned training and test sets: a label column
//! and either a vector column (`List<Float64>`) or a list of numeric
//! columns, read batch by batch in the three passes of [`crate::data`].
//! No pass holds more than one batch of raw values.

use crate::data::{
    BIN_SAMPLE_ROWS, Encoder, RowHashes, RowScorer, SampleCandidates, Split, TrainingSet,
    infinite_feature,
};
use crate::drift::Reference;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{Expr, cast, ident};
use futures::StreamExt;
use kiln_engine::{KilnError, Result};
use rayon::prelude::*;

/// Class indices above this are refused (they would size per-class arrays).
const MAX_CLASSES: u32 = 1 << 16;

/// Where the features are.
#[derive(Debug, Clone)]
pub enum FeatureSource {
    Vector { column: String, names: Vec<String> },
    Columns(Vec<String>),
}

impl FeatureSource {
    pub fn names(&self) -> &[String] {
        match self {
            FeatureSource::Vector { names, .. } => names,
            FeatureSource::Columns(c) => c,
        }
    }
}

/// Where the test rows come from.
#[derive(Debug)]
pub enum TestRows {
    /// A DataFrame of their own (a test table).
    Frame(DataFrame),
    /// The input's rows where this boolean expression is true; the rows
    /// where it is false train. Each pass reads the input once for both
    /// sets. Rows where it is null are in neither set, as with two filters.
    Condition(Expr),
    /// Each training row, in canonical order, with probability `fraction`.
    Random { fraction: f64, seed: u64 },
}

/// Row counts known after the first pass, before any codes are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub train_rows: usize,
    pub test_rows: usize,
    pub features: usize,
    /// One more than the largest training label.
    pub classes: usize,
}

/// What [`load_training`] read.
#[derive(Debug)]
pub struct Loaded {
    pub train: TrainingSet,
    pub test: TrainingSet,
    /// Each feature's distribution in the sampled training rows.
    pub reference: Vec<Reference>,
    /// The scorer's class probabilities for every test row, by position.
    pub test_scores: Option<Vec<Vec<f64>>>,
}

/// Reads the training and test rows in two streamed passes and bins them
/// for each of `max_bins` (the test rows with the training boundaries):
/// pass 1 hashes every row into the canonical order and keeps the bin
/// sample's candidates, pass 2 encodes. `admit` sees the sizes after the
/// first pass and may refuse them (the memory check); `stage` hears which
/// pass runs; `score_test`, when given, scores every test row from its raw
/// values (another model on the same test rows).
#[allow(clippy::too_many_arguments)]
pub async fn load_training(
    train: DataFrame,
    test: TestRows,
    label_col: &str,
    source: &FeatureSource,
    max_bins: &[usize],
    admit: impl FnOnce(Sizes) -> Result<()> + Send,
    stage: &(dyn Fn(&str) + Sync),
    score_test: Option<&RowScorer>,
) -> Result<Loaded> {
    let features = source.names().len();
    let (condition, test_frame, random) = match test {
        TestRows::Frame(df) => (None, Some(df), None),
        TestRows::Condition(e) => (Some(e), None, None),
        TestRows::Random { fraction, seed } => (None, None, Some((fraction, seed))),
    };
    let reader = Reader::new(train, label_col, source, condition)?;
    let test_reader = test_frame
        .map(|df| Reader::new(df, label_col, source, None))
        .transpose()?;

    stage("reading the rows (pass 1 of 2: canonical order and bin sample)");
    let cap = SampleCandidates::cap_for(BIN_SAMPLE_ROWS, random.map_or(0.0, |(f, _)| f));
    let mut hashes = [RowHashes::sampling(cap, features), RowHashes::default()];
    reader
        .scan(|set, labels, columns| {
            hashes[set].add(labels, columns);
            Ok(())
        })
        .await?;
    if let Some(r) = &test_reader {
        stage("reading the test rows (pass 1 of 2: canonical order)");
        r.scan(|_, labels, columns| {
            hashes[1].add(labels, columns);
            Ok(())
        })
        .await?;
    }
    let [train_hashes, test_hashes] = hashes;
    let (train_order, candidates) = train_hashes.finish_sampled();
    let test_order = test_hashes.finish();
    let split = match random {
        Some((fraction, seed)) => Split::random(train_order.len(), fraction, seed),
        None => Split::none(train_order.len()),
    };
    let [train_rows, split_test_rows] = split.sizes();
    admit(Sizes {
        train_rows,
        test_rows: split_test_rows + test_order.len(),
        features,
        classes: train_order.classes(),
    })?;
    let sample = candidates
        .ok_or_else(|| KilnError::internal("loading training data", "no bin sample was kept"))?
        .finish(&train_order, &split, BIN_SAMPLE_ROWS)?;
    let reference = sample.reference();
    let bins = sample.fit(max_bins)?;

    stage("encoding the rows (pass 2 of 2)");
    // Random test rows are set 1 of `encoder`; other test rows have their own.
    let own_test = random.is_none();
    let test_split = Split::none(test_order.len());
    let mut encoder = Encoder::new(bins.clone(), &split, source.names());
    let mut test_encoder = Encoder::new(bins, &test_split, source.names());
    if score_test.is_some() {
        if own_test {
            test_encoder = test_encoder.scoring(0);
        } else {
            encoder = encoder.scoring(1);
        }
    }
    let mut encode = |set: usize, labels: &[u32], columns: &[Vec<f64>]| {
        let (encoder, order, split) = if set == 0 {
            (&mut encoder, &train_order, &split)
        } else {
            (&mut test_encoder, &test_order, &test_split)
        };
        match score_test {
            Some(scorer) => encoder.add_scored(order, split, labels, columns, scorer),
            None => encoder.add(order, split, labels, columns),
        }
    };
    reader.scan(&mut encode).await?;
    if let Some(r) = &test_reader {
        stage("encoding the test rows with the training boundaries");
        r.scan(|_, labels, columns| encode(1, labels, columns))
            .await?;
    }
    let test_scores = if own_test {
        test_encoder.take_scores()
    } else {
        encoder.take_scores()
    };
    let (train_set, random_test) = encoder.finish_checked(&train_order)?;
    let test_set = if own_test {
        test_encoder.finish_checked(&test_order)?.0
    } else {
        random_test
    };
    Ok(Loaded {
        train: train_set,
        test: test_set,
        reference,
        test_scores,
    })
}

/// One input, re-read for every pass.
struct Reader<'a> {
    df: DataFrame,
    label_col: &'a str,
    source: &'a FeatureSource,
    /// The last column is the test condition: rows go to set 1 where it
    /// is true, to set 0 where it is false.
    split_by_condition: bool,
}

/// The test condition's column in a [`Reader`]'s selection.
const TEST_FLAG: &str = "__test";

impl<'a> Reader<'a> {
    /// Selects the label (as Float64), the features and the test
    /// condition; checks they exist and that the condition is boolean.
    fn new(
        df: DataFrame,
        label_col: &'a str,
        source: &'a FeatureSource,
        test_condition: Option<Expr>,
    ) -> Result<Self> {
        let schema = df.schema().clone();
        let need: Vec<&str> = match source {
            FeatureSource::Vector { column, .. } => vec![label_col, column.as_str()],
            FeatureSource::Columns(cols) => std::iter::once(label_col)
                .chain(cols.iter().map(String::as_str))
                .collect(),
        };
        for c in &need {
            if schema.field_with_unqualified_name(c).is_err() {
                return Err(KilnError::Data {
                    location: "training input".into(),
                    message: format!("column '{c}' not found"),
                    fix: Some("check label_col and features_col / feature_cols".into()),
                });
            }
        }
        let mut exprs = vec![cast(ident(label_col), DataType::Float64).alias("__label")];
        match source {
            FeatureSource::Vector { column, .. } => exprs.push(ident(column)),
            FeatureSource::Columns(cols) => exprs.extend(
                cols.iter()
                    .map(|c| cast(ident(c), DataType::Float64).alias(c)),
            ),
        }
        let split_by_condition = test_condition.is_some();
        if let Some(condition) = test_condition {
            exprs.push(condition.alias(TEST_FLAG));
        }
        let df = df
            .select(exprs)
            .map_err(|e| KilnError::execution("selecting training columns", e))?;
        if split_by_condition {
            let flag = df
                .schema()
                .field(df.schema().fields().len() - 1)
                .data_type();
            if flag != &DataType::Boolean {
                return Err(KilnError::config(format!(
                    "test_condition is {flag}, not a boolean expression; write a comparison such as \"sample_id % 5 = 0\""
                )));
            }
        }
        Ok(Reader {
            df,
            label_col,
            source,
            split_by_condition,
        })
    }

    /// Streams the input, handing each batch on as its set (0: training,
    /// 1: test), labels and column-major features (NaN = missing).
    async fn scan(
        &self,
        mut each: impl FnMut(usize, &[u32], &[Vec<f64>]) -> Result<()>,
    ) -> Result<()> {
        let failed = |e: datafusion::error::DataFusionError| {
            KilnError::execution("reading training data", e)
        };
        let mut stream = self.df.clone().execute_stream().await.map_err(failed)?;
        let mut rows = [0usize; 2];
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(failed)?;
            let parts = if self.split_by_condition {
                let flag = batch.column(batch.num_columns() - 1).as_boolean();
                let train = arrow::compute::not(flag).map_err(|e| failed(e.into()))?;
                let part = |mask| {
                    arrow::compute::filter_record_batch(&batch, mask).map_err(|e| failed(e.into()))
                };
                vec![(0, part(&train)?), (1, part(flag)?)]
            } else {
                vec![(0, batch)]
            };
            for (set, part) in parts.into_iter().filter(|(_, p)| p.num_rows() > 0) {
                let labels = self.labels(&part, rows[set])?;
                let columns = self.features(&part, rows[set])?;
                each(set, &labels, &columns)?;
                rows[set] += part.num_rows();
            }
        }
        Ok(())
    }

    fn labels(&self, batch: &RecordBatch, first_row: usize) -> Result<Vec<u32>> {
        let label_col = self.label_col;
        let l = batch.column(0).as_primitive::<Float64Type>();
        (0..l.len())
            .map(|i| {
                let row = first_row + i;
                if l.is_null(i) {
                    return Err(KilnError::data(
                        "training input",
                        format!("label '{label_col}' is null in row {row}"),
                    ));
                }
                let y = l.value(i);
                if !(y >= 0.0 && y.fract() == 0.0 && y < f64::from(MAX_CLASSES)) {
                    return Err(KilnError::Data {
                        location: "training input".into(),
                        message: format!(
                            "label '{label_col}' has value {y} in row {row}; labels must be class indices 0, 1, ... (below {MAX_CLASSES})"
                        ),
                        fix: Some("index the label first (StringIndexer) or fix the data".into()),
                    });
                }
                Ok(y as u32)
            })
            .collect()
    }

    fn features(&self, batch: &RecordBatch, first_row: usize) -> Result<Vec<Vec<f64>>> {
        let names = self.source.names();
        let n = batch.num_rows();
        let columns: Vec<Vec<f64>> = match self.source {
            FeatureSource::Columns(_) => (0..names.len())
                .map(|f| {
                    let a = batch.column(f + 1).as_primitive::<Float64Type>();
                    (0..n)
                        .map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) })
                        .collect()
                })
                .collect(),
            FeatureSource::Vector { column, .. } => {
                vector_columns(batch.column(1), column, names.len(), first_row)?
            }
        };
        let infinite = columns.par_iter().zip(names).find_map_first(|(c, name)| {
            let i = c.iter().position(|v| v.is_infinite())?;
            Some(infinite_feature(
                "training input",
                name,
                c[i],
                first_row + i,
            ))
        });
        match infinite {
            Some(err) => Err(err),
            None => Ok(columns),
        }
    }
}

/// A `List<numeric>` vector column as column-major f64 (null lists and
/// null elements are NaN).
fn vector_columns(
    array: &dyn Array,
    column: &str,
    n_features: usize,
    first_row: usize,
) -> Result<Vec<Vec<f64>>> {
    let list = array.as_list_opt::<i32>().ok_or_else(|| {
        KilnError::data(
            "training input",
            format!(
                "'{column}' must be a List<Float64> vector column, got {}",
                array.data_type()
            ),
        )
    })?;
    let values = arrow::compute::cast(list.values(), &DataType::Float64)
        .map_err(|e| KilnError::data(column, e.to_string()))?;
    let values = values.as_primitive::<Float64Type>();
    let offsets = list.value_offsets();
    for i in 0..list.len() {
        let len = (offsets[i + 1] - offsets[i]) as usize;
        if !list.is_null(i) && len != n_features {
            return Err(KilnError::data(
                "training input",
                format!(
                    "'{column}' has {len} values in row {}, expected {n_features}",
                    first_row + i
                ),
            ));
        }
    }
    // One rayon job per feature: a strided gather from the flat values.
    let (raw, has_nulls) = (values.values(), values.null_count() > 0);
    let columns = (0..n_features)
        .into_par_iter()
        .map(|f| {
            (0..list.len())
                .map(|i| {
                    let j = offsets[i] as usize + f;
                    if list.is_null(i) || (has_nulls && values.is_null(j)) {
                        f64::NAN
                    } else {
                        raw[j]
                    }
                })
                .collect()
        })
        .collect();
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use std::ops::Not;

    /// 100 rows; `k` is null in every tenth row.
    async fn table() -> Result<DataFrame> {
        let ctx = SessionContext::new();
        Ok(ctx
            .sql(
                "SELECT CAST(value % 2 AS DOUBLE) AS label, CAST(value AS DOUBLE) AS x, \
                 CASE WHEN value % 10 = 0 THEN NULL ELSE value END AS k \
                 FROM generate_series(0, 99)",
            )
            .await?)
    }

    async fn load(df: DataFrame, test: TestRows) -> Result<Loaded> {
        let source = FeatureSource::Columns(vec!["x".into()]);
        load_training(df, test, "label", &source, &[32], |_| Ok(()), &|_| {}, None).await
    }

    #[tokio::test]
    async fn a_test_condition_splits_one_read_like_two_filters() -> Result<()> {
        let df = table().await?;
        let condition = df.parse_sql_expr("k % 5 = 0")?;
        let one_read = load(df.clone(), TestRows::Condition(condition.clone())).await?;
        // True for k = 5, 15, ..., 95; null where k is null (neither set).
        assert_eq!(one_read.train.n_rows(), 80);
        assert_eq!(one_read.test.n_rows(), 10);
        let filters = load(
            df.clone().filter(condition.clone().not())?,
            TestRows::Frame(df.clone().filter(condition)?),
        )
        .await?;
        for (a, b) in [
            (&one_read.train, &filters.train),
            (&one_read.test, &filters.test),
        ] {
            assert_eq!(a.fingerprint(), b.fingerprint());
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.binned(32)?.codes, b.binned(32)?.codes);
            assert_eq!(a.binned(32)?.bins, b.binned(32)?.bins);
        }
        let not_boolean = df.parse_sql_expr("k + 1")?;
        let err = load(df, TestRows::Condition(not_boolean))
            .await
            .expect_err("a number is not a condition")
            .to_string();
        assert!(err.contains("not a boolean expression"), "{err}");
        Ok(())
    }
}
