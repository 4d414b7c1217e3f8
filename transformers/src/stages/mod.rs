//! The feature stages. Each stage has validated params (what YAML gives) and
//! a fitted form that extends a DataFusion plan lazily.

pub mod assembler;
pub mod bucketizer;
pub mod categorical;
pub mod geo;
pub mod imputer;
pub mod one_hot;
pub mod sql;
pub mod string_indexer;
pub mod time;
pub mod window;

use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use kiln_engine::{KilnError, Result};
use std::collections::HashMap;
use std::future::Future;

/// Category and vector sizes learned by earlier stages, by output column
/// (Spark's ML attribute metadata).
pub type Sizes = HashMap<String, usize>;

/// A stage's validated parameters: what `fit` starts from.
pub trait Stage {
    /// What fitting produces: the learned state, or the params themselves
    /// for a stateless stage.
    type Fitted: Transform
        + Clone
        + PartialEq
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned;

    /// Whether `fit` runs a query over the rows (false for stages whose
    /// params are their fitted form).
    const READS_DATA: bool = true;

    /// Fits on `df`, recording output sizes in `sizes` for later stages.
    fn fit(
        &self,
        df: &DataFrame,
        sizes: &mut Sizes,
    ) -> impl Future<Output = Result<Self::Fitted>> + Send;
}

/// A fitted stage: extends a plan lazily.
pub trait Transform {
    fn transform(&self, df: DataFrame) -> impl Future<Output = Result<DataFrame>> + Send;
}

/// Stateless stages are their own fitted form.
macro_rules! stateless_stage {
    ($($params:ty),* $(,)?) => {$(
        impl crate::stages::Stage for $params {
            type Fitted = $params;

            const READS_DATA: bool = false;

            async fn fit(
                &self,
                _df: &datafusion::dataframe::DataFrame,
                _sizes: &mut crate::stages::Sizes,
            ) -> kiln_engine::Result<$params> {
                Ok(self.clone())
            }
        }
    )*};
}
pub(crate) use stateless_stage;

/// [`Transform`] for types whose inherent `transform(&self, df)` is
/// synchronous (it only builds expressions).
macro_rules! transform_by_expressions {
    ($($fitted:ty),* $(,)?) => {$(
        impl crate::stages::Transform for $fitted {
            async fn transform(
                &self,
                df: datafusion::dataframe::DataFrame,
            ) -> kiln_engine::Result<datafusion::dataframe::DataFrame> {
                <$fitted>::transform(self, df)
            }
        }
    )*};
}
pub(crate) use transform_by_expressions;

/// Fails unless every column exists; the error names the stage and column.
pub(crate) fn require_columns(df: &DataFrame, stage: &str, cols: &[String]) -> Result<()> {
    for c in cols {
        if df.schema().field_with_unqualified_name(c).is_err() {
            let names: Vec<&str> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let hint = closest(c, &names)
                .map(|h| format!("did you mean '{h}'?"))
                .unwrap_or_else(|| "check inputCols against the data".into());
            return Err(KilnError::Data {
                location: format!("stage {stage}"),
                message: format!("unknown column '{c}'"),
                fix: Some(hint),
            });
        }
    }
    Ok(())
}

/// Every column of `df`, as expressions (to select them all and add more).
pub(crate) fn all_columns(df: &DataFrame) -> Vec<datafusion::prelude::Expr> {
    df.schema()
        .fields()
        .iter()
        .map(|f| datafusion::prelude::ident(f.name()))
        .collect()
}

/// The type of column `c` (which must exist).
pub(crate) fn column_type(df: &DataFrame, c: &str) -> Result<DataType> {
    df.schema()
        .field_with_unqualified_name(c)
        .map(|f| f.data_type().clone())
        .map_err(|e| KilnError::data(c, e.to_string()))
}

/// Fails unless column `c` is numeric.
pub(crate) fn require_numeric(df: &DataFrame, stage: &str, c: &str) -> Result<()> {
    let t = column_type(df, c)?;
    if t.is_numeric() {
        Ok(())
    } else {
        Err(KilnError::Data {
            location: format!("stage {stage}"),
            message: format!("column '{c}' has type {t}, but {stage} needs a numeric column"),
            fix: Some(
                "cast the column first (e.g. with a SQLTransformer) or pick a numeric column"
                    .into(),
            ),
        })
    }
}

pub(crate) use kiln_engine::suggest::closest;

/// Spark's handleInvalid.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HandleInvalid {
    #[default]
    Error,
    Skip,
    Keep,
}

/// `kiln_require(value, ok, message)`: `{}` in the message shows the value.
pub(crate) fn require(
    value: datafusion::prelude::Expr,
    ok: datafusion::prelude::Expr,
    message: String,
) -> datafusion::prelude::Expr {
    crate::udf::require_udf().call(vec![value, ok, datafusion::prelude::lit(message)])
}

/// Like [`require`], with `{}` showing `shown` instead of the value.
pub(crate) fn require_showing(
    value: datafusion::prelude::Expr,
    ok: datafusion::prelude::Expr,
    message: String,
    shown: datafusion::prelude::Expr,
) -> datafusion::prelude::Expr {
    crate::udf::require_udf().call(vec![value, ok, datafusion::prelude::lit(message), shown])
}
