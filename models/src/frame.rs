//! Turning a DataFrame into a training [`Dataset`]: a label column and
//! either a vector column (`List<Float64>`) or a list of numeric columns.

use crate::data::Dataset;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{cast, ident};
use kiln_engine::{KilnError, Result};

/// Where the features are.
#[derive(Debug, Clone)]
pub enum FeatureSource {
    Vector { column: String, names: Vec<String> },
    Columns(Vec<String>),
}

/// Collects `df` into memory as a dataset. Labels must be integral and >= 0.
pub async fn collect_dataset(
    df: DataFrame,
    label_col: &str,
    source: &FeatureSource,
) -> Result<Dataset> {
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
    let batches = df
        .select(exprs)
        .map_err(|e| KilnError::execution("selecting training columns", e))?;
    let batches = batches
        .collect()
        .await
        .map_err(|e| KilnError::execution("reading training data", e))?;
    let n_features = match source {
        FeatureSource::Vector { names, .. } => names.len(),
        FeatureSource::Columns(c) => c.len(),
    };
    let names = match source {
        FeatureSource::Vector { names, .. } => names.clone(),
        FeatureSource::Columns(c) => c.clone(),
    };
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); n_features];
    let mut labels = Vec::new();
    let mut row = 0usize;
    for b in &batches {
        let l = b.column(0).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if l.is_null(i) {
                return Err(KilnError::data(
                    "training input",
                    format!("label '{label_col}' is null in row {}", row + i),
                ));
            }
            let y = l.value(i);
            if y < 0.0 || y.fract() != 0.0 || !y.is_finite() {
                return Err(KilnError::Data {
                    location: "training input".into(),
                    message: format!(
                        "label '{label_col}' has value {y} in row {}; labels must be class indices 0, 1, ...",
                        row + i
                    ),
                    fix: Some("index the label first (StringIndexer) or fix the data".into()),
                });
            }
            labels.push(y as u32);
        }
        match source {
            FeatureSource::Vector { column, .. } => {
                let list = b.column(1).as_list_opt::<i32>().ok_or_else(|| {
                    KilnError::data(
                        "training input",
                        format!(
                            "'{column}' must be a List<Float64> vector column, got {}",
                            b.column(1).data_type()
                        ),
                    )
                })?;
                for i in 0..list.len() {
                    if list.is_null(i) {
                        columns.iter_mut().for_each(|c| c.push(f64::NAN));
                        continue;
                    }
                    let v = list.value(i);
                    let v = arrow::compute::cast(&v, &DataType::Float64)
                        .map_err(|e| KilnError::data(column, e.to_string()))?;
                    let v = v.as_primitive::<Float64Type>();
                    if v.len() != n_features {
                        return Err(KilnError::data(
                            "training input",
                            format!(
                                "'{column}' has {} values in row {}, expected {n_features}",
                                v.len(),
                                row + i
                            ),
                        ));
                    }
                    for (f, c) in columns.iter_mut().enumerate() {
                        c.push(if v.is_null(f) { f64::NAN } else { v.value(f) });
                    }
                }
            }
            FeatureSource::Columns(_) => {
                for (f, c) in columns.iter_mut().enumerate() {
                    let a = b.column(f + 1).as_primitive::<Float64Type>();
                    c.extend(
                        (0..a.len()).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) }),
                    );
                }
            }
        }
        row += b.num_rows();
    }
    let mut data = Dataset {
        columns,
        labels,
        feature_names: names,
    };
    data.canonicalize();
    Ok(data)
}
