//! Streaming a DataFrame into binned training and test sets: a label column
//! and either a vector column (`List<Float64>`) or a list of numeric
//! columns, read batch by batch in the three passes of [`crate::data`].
//! No pass holds more than one batch of raw values.

use crate::data::{
    BinSample, CanonicalOrder, Encoder, RowHashes, RowScorer, Split, TrainingSet, infinite_feature,
};
use crate::drift::Reference;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{cast, ident};
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
    /// A DataFrame of their own (a test table or a test condition).
    Frame(DataFrame),
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

/// Reads the training and test rows in streamed passes and bins them for
/// each of `max_bins` (the test rows with the training boundaries).
/// `admit` sees the sizes after the first pass and may refuse them (the
/// memory check); `stage` hears which pass runs; `score_test`, when given,
/// scores every test row from its raw values (another model on the same
/// test rows).
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
    let train = Reader::new(train, label_col, source)?;
    stage("reading the training rows (pass 1 of 3: canonical order)");
    let train_order = train.order().await?;
    let (split, test) = match test {
        TestRows::Random { fraction, seed } => {
            (Split::random(train_order.len(), fraction, seed), None)
        }
        TestRows::Frame(df) => {
            let reader = Reader::new(df, label_col, source)?;
            stage("reading the test rows (pass 1 of 3: canonical order)");
            let order = reader.order().await?;
            (Split::none(train_order.len()), Some((reader, order)))
        }
    };
    let [train_rows, split_test_rows] = split.sizes();
    admit(Sizes {
        train_rows,
        test_rows: split_test_rows + test.as_ref().map_or(0, |(_, o)| o.len()),
        features,
        classes: train_order.classes(),
    })?;
    stage("sampling the training rows for bin boundaries (pass 2 of 3)");
    let mut sample = BinSample::new(&split, features);
    train
        .scan(|labels, columns| sample.add(&train_order, &split, labels, columns))
        .await?;
    sample.check_complete(&train_order)?;
    let reference = sample.reference();
    let bins = sample.fit(max_bins)?;
    stage("encoding the training rows (pass 3 of 3)");
    let mut encoder = Encoder::new(bins, &split, source.names());
    // Random test rows are set 1 of this pass; a test table is encoded below.
    let score_here = score_test.filter(|_| test.is_none());
    if score_here.is_some() {
        encoder = encoder.scoring(1);
    }
    train
        .scan(|labels, columns| match score_here {
            Some(scorer) => encoder.add_scored(&train_order, &split, labels, columns, scorer),
            None => encoder.add(&train_order, &split, labels, columns),
        })
        .await?;
    let test_scores = encoder.take_scores();
    let (train_set, random_test) = encoder.finish_checked(&train_order)?;
    drop(train_order);
    let Some((reader, order)) = test else {
        return Ok(Loaded {
            train: train_set,
            test: random_test,
            reference,
            test_scores,
        });
    };
    stage("encoding the test rows with the training boundaries");
    let split = Split::none(order.len());
    let mut encoder = Encoder::like(&train_set, &split);
    if score_test.is_some() {
        encoder = encoder.scoring(0);
    }
    reader
        .scan(|labels, columns| match score_test {
            Some(scorer) => encoder.add_scored(&order, &split, labels, columns, scorer),
            None => encoder.add(&order, &split, labels, columns),
        })
        .await?;
    let test_scores = encoder.take_scores();
    let (test_set, _) = encoder.finish_checked(&order)?;
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
}

impl<'a> Reader<'a> {
    /// Selects the label (as Float64) and the features; checks they exist.
    fn new(df: DataFrame, label_col: &'a str, source: &'a FeatureSource) -> Result<Self> {
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
        let df = df
            .select(exprs)
            .map_err(|e| KilnError::execution("selecting training columns", e))?;
        Ok(Reader {
            df,
            label_col,
            source,
        })
    }

    /// Pass 1: hashes every row into the canonical order.
    async fn order(&self) -> Result<CanonicalOrder> {
        let mut hashes = RowHashes::default();
        self.scan(|labels, columns| {
            hashes.add(labels, columns);
            Ok(())
        })
        .await?;
        Ok(hashes.finish())
    }

    /// Streams the input, handing each batch on as labels and column-major
    /// features (NaN = missing).
    async fn scan(&self, mut each: impl FnMut(&[u32], &[Vec<f64>]) -> Result<()>) -> Result<()> {
        let mut stream = self
            .df
            .clone()
            .execute_stream()
            .await
            .map_err(|e| KilnError::execution("reading training data", e))?;
        let mut row = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| KilnError::execution("reading training data", e))?;
            let labels = self.labels(&batch, row)?;
            let columns = self.features(&batch, row)?;
            each(&labels, &columns)?;
            row += batch.num_rows();
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
