//! `StringIndexer` with Spark semantics: labels ordered by `stringOrderType`
//! (frequency ties broken by ascending label under both frequency orders,
//! byte-wise comparison), nulls ignored at fit, and at transform null and
//! unseen labels are invalid (`keep` → numLabels, `skip` drops the row,
//! `error` fails the query). The index is a double.

use super::{HandleInvalid, require_columns, require_showing};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::dataframe::DataFrame;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::prelude::{Expr, cast, ident, lit, when};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum StringOrderType {
    #[default]
    #[serde(rename = "frequencyDesc")]
    FrequencyDesc,
    #[serde(rename = "frequencyAsc")]
    FrequencyAsc,
    #[serde(rename = "alphabetDesc")]
    AlphabetDesc,
    #[serde(rename = "alphabetAsc")]
    AlphabetAsc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringIndexerParams {
    #[serde(default)]
    pub input_col: Option<String>,
    #[serde(default)]
    pub output_col: Option<String>,
    #[serde(default)]
    pub input_cols: Vec<String>,
    #[serde(default)]
    pub output_cols: Vec<String>,
    #[serde(default)]
    pub string_order_type: StringOrderType,
    #[serde(default)]
    pub handle_invalid: HandleInvalid,
}

/// Fitted indexer: the labels of each column (index = position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StringIndexerModel {
    pub input_cols: Vec<String>,
    pub output_cols: Vec<String>,
    pub labels: Vec<Vec<String>>,
    pub handle_invalid: HandleInvalid,
}

impl StringIndexerParams {
    fn columns(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut inputs = self.input_cols.clone();
        let mut outputs = self.output_cols.clone();
        if let Some(c) = &self.input_col {
            inputs.push(c.clone());
            outputs.push(
                self.output_col
                    .clone()
                    .unwrap_or_else(|| format!("{c}_idx")),
            );
        }
        if outputs.is_empty() {
            outputs = inputs.iter().map(|c| format!("{c}_idx")).collect();
        }
        if inputs.is_empty() || inputs.len() != outputs.len() {
            return Err(KilnError::config(
                "StringIndexer: give inputCol/outputCol or inputCols/outputCols of equal length",
            ));
        }
        Ok((inputs, outputs))
    }

    pub async fn fit(&self, df: &DataFrame) -> Result<StringIndexerModel> {
        let (inputs, outputs) = self.columns()?;
        require_columns(df, "StringIndexer", &inputs)?;
        let err = |e| KilnError::execution("fitting StringIndexer", e);
        let mut labels = Vec::new();
        for c in &inputs {
            let v = cast(ident(c), DataType::Utf8);
            let batches = df
                .clone()
                .filter(v.clone().is_not_null())
                .and_then(|d| d.aggregate(vec![v.alias("label")], vec![count(lit(1)).alias("n")]))
                .map_err(err)?
                .collect()
                .await
                .map_err(err)?;
            let mut counts: Vec<(String, i64)> = Vec::new();
            for b in &batches {
                let l = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
                    .map_err(|e| KilnError::data(c, e.to_string()))?;
                let l = l.as_string::<i32>();
                let n = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    counts.push((l.value(i).to_string(), n.value(i)));
                }
            }
            match self.string_order_type {
                StringOrderType::FrequencyDesc => {
                    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_bytes().cmp(b.0.as_bytes())))
                }
                StringOrderType::FrequencyAsc => {
                    counts.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.as_bytes().cmp(b.0.as_bytes())))
                }
                StringOrderType::AlphabetAsc => {
                    counts.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()))
                }
                StringOrderType::AlphabetDesc => {
                    counts.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()))
                }
            }
            labels.push(counts.into_iter().map(|(l, _)| l).collect());
        }
        Ok(StringIndexerModel {
            input_cols: inputs,
            output_cols: outputs,
            labels,
            handle_invalid: self.handle_invalid,
        })
    }
}

impl StringIndexerModel {
    /// Index size each output can take (numLabels, +1 with `keep`).
    pub fn category_sizes(&self) -> Vec<usize> {
        self.labels
            .iter()
            .map(|l| l.len() + usize::from(self.handle_invalid == HandleInvalid::Keep))
            .collect()
    }

    pub fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let stage = "StringIndexer";
        require_columns(&df, stage, &self.input_cols)?;
        let err = |e| KilnError::execution(stage, e);
        let known = |c: &str, labels: &[String]| -> Expr {
            cast(ident(c), DataType::Utf8)
                .in_list(labels.iter().map(|l| lit(l.as_str())).collect(), false)
        };
        let mut df = df;
        if self.handle_invalid == HandleInvalid::Skip {
            let mut keep = lit(true);
            for (c, labels) in self.input_cols.iter().zip(&self.labels) {
                keep = keep.and(ident(c).is_not_null()).and(known(c, labels));
            }
            df = df.filter(keep).map_err(err)?;
        }
        for ((c, out), labels) in self
            .input_cols
            .iter()
            .zip(&self.output_cols)
            .zip(&self.labels)
        {
            let v = cast(ident(c), DataType::Utf8);
            let invalid = match self.handle_invalid {
                HandleInvalid::Keep => lit(labels.len() as f64),
                _ => lit(datafusion::common::ScalarValue::Float64(None)),
            };
            let index = if labels.is_empty() {
                invalid
            } else {
                let mut case = when(v.clone().eq(lit(labels[0].as_str())), lit(0.0));
                for (i, l) in labels.iter().enumerate().skip(1) {
                    case = case.when(v.clone().eq(lit(l.as_str())), lit(i as f64));
                }
                case.otherwise(invalid).map_err(err)?
            };
            let index = if self.handle_invalid == HandleInvalid::Error {
                // One check, so the error names the first invalid row (as Spark).
                let problem = when(
                    ident(c).is_null(),
                    lit("StringIndexer encountered NULL value. To handle or skip NULLS, set handleInvalid to keep or skip."),
                )
                .otherwise(concat(vec![lit("Unseen label: "), cast(ident(c), DataType::Utf8), lit(". To handle unseen labels, set handleInvalid to keep.")]))
                .map_err(err)?;
                require_showing(
                    index,
                    ident(c).is_not_null().and(known(c, labels)),
                    format!("{stage} (column '{c}'): {{}}"),
                    problem,
                )
            } else {
                index
            };
            df = df.with_column(out, index).map_err(err)?;
        }
        Ok(df)
    }
}

impl crate::stages::Stage for StringIndexerParams {
    type Fitted = StringIndexerModel;

    async fn fit(&self, df: &DataFrame, sizes: &mut crate::stages::Sizes) -> Result<Self::Fitted> {
        let m = StringIndexerParams::fit(self, df).await?;
        for (c, n) in m.output_cols.iter().zip(m.category_sizes()) {
            sizes.insert(c.clone(), n);
        }
        Ok(m)
    }
}

crate::stages::transform_by_expressions!(StringIndexerModel);
