//! Stage specs from YAML, fitted stages, and the pipeline model: a fitted
//! chain saved as a versioned artifact and applied again at inference.

use crate::stages::assembler::AssemblerParams;
use crate::stages::bucketizer::BucketizerParams;
use crate::stages::categorical::CategoricalFilterParams;
use crate::stages::geo::{DistanceParams, GpsDelayParams};
use crate::stages::imputer::{MedianImputerParams, NumericalImputerParams};
use crate::stages::one_hot::OneHotParams;
use crate::stages::sql::SqlParams;
use crate::stages::string_indexer::StringIndexerParams;
use crate::stages::time::{TimeParams, WeekendParams};
use crate::stages::window::{LagParams, LeadParams};
use crate::stages::{Sizes, Stage, Transform};
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use kiln_engine::schema::ReferenceSchema;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

/// Declares the stages once: each `Classname(Params)` line becomes a
/// variant of [`StageSpec`] (what YAML gives: `classname` + `params`) and of
/// [`FittedStage`] (what a saved pipeline model holds: `classname` +
/// `state`, the params type's [`Stage::Fitted`]). A new stage is one module
/// implementing [`Stage`] and one line here.
macro_rules! stages {
    ($($(#[alias = $alias:literal])* $class:ident($params:ty)),* $(,)?) => {
        /// One stage as written in YAML, with validated parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "classname", content = "params", try_from = "RawStage")]
        pub enum StageSpec {
            $($(#[serde(alias = $alias)])* $class($params)),*
        }

        /// A fitted stage: stateless params or learned state.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "classname", content = "state")]
        pub enum FittedStage {
            $($class(<$params as Stage>::Fitted)),*
        }

        /// The same enum as [`StageSpec`], deserialized by derive; the
        /// public type adds names and suggestions to its errors.
        #[derive(Deserialize, schemars::JsonSchema)]
        #[serde(tag = "classname", content = "params")]
        enum TypedStage {
            $($(#[serde(alias = $alias)])* $class($params)),*
        }

        /// Every stage classname (aliases not included).
        pub const STAGE_CLASSNAMES: &[&str] = &[$(stringify!($class)),*];

        impl From<TypedStage> for StageSpec {
            fn from(t: TypedStage) -> Self {
                match t {
                    $(TypedStage::$class(p) => StageSpec::$class(p)),*
                }
            }
        }

        impl StageSpec {
            pub fn classname(&self) -> &'static str {
                match self {
                    $(StageSpec::$class(_) => stringify!($class)),*
                }
            }

            /// Fits the stage on `df`. `sizes` carries category / vector
            /// sizes learned by earlier stages (Spark's ML attribute metadata).
            pub async fn fit(&self, df: &DataFrame, sizes: &mut Sizes) -> Result<FittedStage> {
                Ok(match self {
                    $(StageSpec::$class(p) => FittedStage::$class(Stage::fit(p, df, sizes).await?)),*
                })
            }

            /// Whether fitting runs a query over the rows.
            pub fn reads_data(&self) -> bool {
                match self {
                    $(StageSpec::$class(_) => <$params as Stage>::READS_DATA),*
                }
            }
        }

        impl FittedStage {
            pub fn classname(&self) -> &'static str {
                match self {
                    $(FittedStage::$class(_) => stringify!($class)),*
                }
            }

            pub async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
                match self {
                    $(FittedStage::$class(m) => Transform::transform(m, df).await),*
                }
            }
        }
    };
}

stages! {
    LagCalculator(LagParams),
    LeadCalculator(LeadParams),
    DistanceCalculator(DistanceParams),
    GpsDelayCalculator(GpsDelayParams),
    WeekendExtractor(WeekendParams),
    TimeExtractor(TimeParams),
    #[alias = "Bucketizer"]
    LevelCalculator(BucketizerParams),
    CategoricalFilter(CategoricalFilterParams),
    MedianImputer(MedianImputerParams),
    #[alias = "Imputer"]
    NumericalImputer(NumericalImputerParams),
    StringIndexer(StringIndexerParams),
    OneHotEncoder(OneHotParams),
    VectorAssembler(AssemblerParams),
    SQLTransformer(SqlParams),
}

/// The schema of [`StageSpec`] is that of its variants (one branch per
/// classname, with that stage's params).
impl schemars::JsonSchema for StageSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StageSpec".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TypedStage::json_schema(generator);
        // `params` may be left out when the stage needs none of its keys.
        let needs_keys = |params: &serde_json::Value| {
            // Follow references (a newtype's schema is its inner type's).
            let mut def = params;
            while let Some(next) = def
                .get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.rsplit('/').next())
                .and_then(|n| generator.definitions().get(n))
            {
                def = next;
            }
            def.get("required")
                .and_then(|r| r.as_array())
                .is_some_and(|r| !r.is_empty())
        };
        if let Some(branches) = schema.get_mut("oneOf").and_then(|b| b.as_array_mut()) {
            for branch in branches {
                let optional = branch
                    .pointer("/properties/params")
                    .is_some_and(|p| !needs_keys(p));
                if let (true, Some(required)) = (
                    optional,
                    branch.get_mut("required").and_then(|r| r.as_array_mut()),
                ) {
                    required.retain(|k| k != "params");
                }
            }
        }
        schema
    }
}

/// A stage before its classname is checked: `params` may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    classname: String,
    #[serde(default)]
    params: serde_yaml_ng::Value,
}

impl TryFrom<RawStage> for StageSpec {
    type Error = String;

    fn try_from(raw: RawStage) -> std::result::Result<Self, String> {
        let params = match raw.params {
            serde_yaml_ng::Value::Null => serde_yaml_ng::Value::Mapping(Default::default()),
            other => other,
        };
        let mut tagged = serde_yaml_ng::Mapping::new();
        tagged.insert("classname".into(), raw.classname.clone().into());
        tagged.insert("params".into(), params);
        serde_yaml_ng::from_value::<TypedStage>(serde_yaml_ng::Value::Mapping(tagged))
            .map(StageSpec::from)
            .map_err(|e| {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                if msg.starts_with("unknown variant") {
                    let hint = crate::stages::closest(&raw.classname, STAGE_CLASSNAMES)
                        .map(|h| format!("did you mean {h}?"))
                        .unwrap_or_else(|| format!("use one of: {}", STAGE_CLASSNAMES.join(", ")));
                    format!("unknown stage classname '{}'; {hint}", raw.classname)
                } else {
                    format!("stage {}: params: {msg}", raw.classname)
                }
            })
    }
}

/// The artifact format version of saved pipeline models.
pub const PIPELINE_FORMAT_VERSION: u32 = 1;

/// A fitted feature pipeline with the metadata to apply it safely later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineModel {
    pub format_version: u32,
    pub kiln_version: String,
    pub input_schema: ReferenceSchema,
    pub stages: Vec<FittedStage>,
}

impl PipelineModel {
    /// Fits `specs` in order on `df`; returns the model and the transformed
    /// DataFrame (still lazy).
    pub async fn fit(specs: &[StageSpec], df: DataFrame) -> Result<(PipelineModel, DataFrame)> {
        let mut fitter = PipelineFitter::new(df);
        for spec in specs {
            fitter.fit(spec).await?;
        }
        Ok(fitter.finish())
    }

    /// Applies the fitted stages. Input columns the model was fitted with
    /// must be present with the same types.
    pub async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let actual = df.schema().as_arrow();
        let mut problems = Vec::new();
        for c in &self.input_schema.columns {
            let fitted = c.data_type.parse::<DataType>().map(|t| same_encoding(&t));
            match actual.field_with_name(&c.name) {
                Err(_) => problems.push(format!("missing column '{}' ({})", c.name, c.data_type)),
                Ok(f) if fitted.as_ref().ok() != Some(&same_encoding(f.data_type())) => problems
                    .push(format!(
                        "column '{}' has type {}, the model was fitted on {}",
                        c.name,
                        f.data_type(),
                        c.data_type
                    )),
                Ok(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(KilnError::Data {
                location: "pipeline model input".into(),
                message: format!(
                    "the data does not match the saved pipeline model's input schema: {}",
                    problems.join("; ")
                ),
                fix: Some("extract the same columns as at training time".into()),
            });
        }
        let mut df = df;
        for (i, s) in self.stages.iter().enumerate() {
            df = s
                .transform(df)
                .await
                .map_err(|e| e.context(format!("stage {}", i + 1)))?;
        }
        Ok(df)
    }

    /// The columns the window stages (lag / lead) partition by: rows of
    /// different values never meet, so a batch split by one of them gives
    /// the same features pass by pass.
    pub fn window_partition_cols(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter_map(FittedStage::window_partition_col)
            .collect()
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| KilnError::internal("serializing a pipeline model", e))
    }

    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| KilnError::data(location, format!("invalid pipeline model: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if version != u64::from(PIPELINE_FORMAT_VERSION) {
            return Err(KilnError::data(
                location,
                format!(
                    "pipeline model format version {version} is not supported (this kiln reads version {PIPELINE_FORMAT_VERSION}); refit the pipeline"
                ),
            ));
        }
        serde_json::from_value(value)
            .map_err(|e| KilnError::data(location, format!("invalid pipeline model: {e}")))
    }
}

impl StageSpec {
    /// The column a window stage (lag / lead) partitions by; `None` for
    /// row-wise stages.
    pub fn window_partition_col(&self) -> Option<&str> {
        match self {
            StageSpec::LagCalculator(p) => Some(&p.0.partition_col),
            StageSpec::LeadCalculator(p) => Some(&p.0.partition_col),
            _ => None,
        }
    }
}

impl FittedStage {
    /// The column a window stage (lag / lead) partitions by; `None` for
    /// row-wise stages.
    pub fn window_partition_col(&self) -> Option<&str> {
        match self {
            FittedStage::LagCalculator(p) => Some(&p.0.partition_col),
            FittedStage::LeadCalculator(p) => Some(&p.0.partition_col),
            _ => None,
        }
    }
}

/// `t` with strings and binaries in their plain encoding: a Parquet column
/// read as `Utf8View` in-process and as `Utf8` on Ballista executors is the
/// same input to a pipeline model (its stages cast where they need to).
fn same_encoding(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// Fits a pipeline one stage at a time, what [`PipelineModel::fit`] does in
/// one call, so that a caller can swap the plan between two stages for an
/// equivalent one (the same rows written out and read back), and later
/// stages fit on a scan instead of re-running the windows before them.
pub struct PipelineFitter {
    model: PipelineModel,
    sizes: Sizes,
    df: DataFrame,
}

impl PipelineFitter {
    /// Starts from `df`, the pipeline's input.
    pub fn new(df: DataFrame) -> Self {
        let mut input_schema = ReferenceSchema {
            allow_extra_columns: true,
            ..ReferenceSchema::from_arrow(df.schema().as_arrow())
        };
        for (c, f) in input_schema
            .columns
            .iter_mut()
            .zip(df.schema().as_arrow().fields())
        {
            c.data_type = same_encoding(f.data_type()).to_string();
        }
        PipelineFitter {
            model: PipelineModel {
                format_version: PIPELINE_FORMAT_VERSION,
                kiln_version: env!("CARGO_PKG_VERSION").into(),
                input_schema,
                stages: Vec::new(),
            },
            sizes: Sizes::new(),
            df,
        }
    }

    /// Fits the next stage on the current plan and extends the plan with it.
    pub async fn fit(&mut self, spec: &StageSpec) -> Result<()> {
        let at = |e: KilnError| {
            e.context(format!(
                "stage {} ({})",
                self.model.stages.len() + 1,
                spec.classname()
            ))
        };
        let fitted = spec.fit(&self.df, &mut self.sizes).await.map_err(at)?;
        self.df = fitted.transform(self.df.clone()).await.map_err(at)?;
        self.model.stages.push(fitted);
        Ok(())
    }

    /// The stages fitted so far, as a model to apply to other inputs.
    pub fn model(&self) -> &PipelineModel {
        &self.model
    }

    /// Continues from `df`, the rows of the current plan computed elsewhere
    /// (written and read back). Columns must match by name; a type that the
    /// round trip changed (Parquet reads strings as views) is cast back.
    pub fn continue_from(&mut self, df: DataFrame) -> Result<()> {
        let expected = self.df.schema().as_arrow().clone();
        let actual = df.schema().as_arrow().clone();
        let names = |s: &datafusion::arrow::datatypes::Schema| {
            s.fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        };
        if names(&expected) != names(&actual) {
            return Err(KilnError::internal(
                "continuing a pipeline fit from stored rows",
                format!(
                    "the stored columns {:?} are not the plan's {:?}",
                    names(&actual),
                    names(&expected)
                ),
            ));
        }
        let columns = expected
            .fields()
            .iter()
            .zip(actual.fields())
            .map(|(want, got)| {
                let c = datafusion::prelude::ident(want.name());
                if want.data_type() == got.data_type() {
                    c
                } else {
                    datafusion::prelude::cast(c, want.data_type().clone()).alias(want.name())
                }
            })
            .collect::<Vec<_>>();
        self.df = df.select(columns).map_err(KilnError::from)?;
        Ok(())
    }

    /// The fitted model and the transformed plan (still lazy).
    pub fn finish(self) -> (PipelineModel, DataFrame) {
        (self.model, self.df)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn frame(sql: &str) -> DataFrame {
        let ctx = SessionContext::new();
        for udf in crate::udf::all() {
            ctx.register_udf(udf);
        }
        ctx.sql(sql).await.expect("sql")
    }

    fn spec(classname: &str, params: serde_json::Value) -> StageSpec {
        serde_json::from_value(serde_json::json!({"classname": classname, "params": params}))
            .expect("spec")
    }

    #[tokio::test]
    async fn a_fit_continued_from_stored_rows_is_the_fit_in_one_call() {
        let sql = "SELECT * FROM (VALUES (1, 'b', 2.0), (1, 'a', 3.0), (2, 'b', 1.0), (2, 'b', NULL)) t(d, net, x)";
        let specs = [
            spec(
                "LagCalculator",
                serde_json::json!({"inputCols": ["x"], "partitionCol": "d", "orderCol": "x"}),
            ),
            spec("StringIndexer", serde_json::json!({"inputCols": ["net"]})),
        ];
        let (whole, whole_df) = PipelineModel::fit(&specs, frame(sql).await)
            .await
            .expect("fit");
        let mut fitter = PipelineFitter::new(frame(sql).await);
        fitter.fit(&specs[0]).await.expect("lag");
        // The windowed rows as Parquet gives them back: strings as views.
        let rows = fitter
            .model()
            .transform(frame(sql).await)
            .await
            .expect("head");
        let rows = rows
            .select(vec![
                datafusion::prelude::ident("d"),
                datafusion::prelude::cast(
                    datafusion::prelude::ident("net"),
                    datafusion::arrow::datatypes::DataType::Utf8View,
                )
                .alias("net"),
                datafusion::prelude::ident("x"),
                datafusion::prelude::ident("x_lag1"),
            ])
            .expect("views");
        fitter.continue_from(rows).expect("continue");
        fitter.fit(&specs[1]).await.expect("indexer");
        let (model, df) = fitter.finish();
        assert_eq!(model, whole);
        assert_eq!(df.schema().as_arrow(), whole_df.schema().as_arrow());
        let sorted = |batches: Vec<datafusion::arrow::record_batch::RecordBatch>| {
            let mut lines: Vec<String> =
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .expect("format")
                    .to_string()
                    .lines()
                    .map(String::from)
                    .collect();
            lines.sort();
            lines
        };
        assert_eq!(
            sorted(df.collect().await.expect("rows")),
            sorted(whole_df.collect().await.expect("rows"))
        );
        // The same strings read as views (Parquet in-process; Ballista
        // executors read them plain) are the same input, recorded plain.
        let views = format!("SELECT d, arrow_cast(net, 'Utf8View') AS net, x FROM ({sql}) s");
        assert!(whole.transform(frame(&views).await).await.is_ok());
        let fitted_on_views = PipelineFitter::new(frame(&views).await);
        assert_eq!(
            fitted_on_views.model().input_schema.columns[1].data_type,
            "Utf8"
        );
        // Other columns are not the same rows.
        let mut fitter = PipelineFitter::new(frame(sql).await);
        fitter.fit(&specs[0]).await.expect("lag");
        let err = fitter
            .continue_from(frame("SELECT 1 AS d").await)
            .expect_err("columns")
            .to_string();
        assert!(err.contains("not the plan's"), "{err}");
    }

    #[tokio::test]
    async fn bad_input_names_stage_column_and_problem() {
        let df = frame(
            "SELECT * FROM (VALUES ('52.1', 13.0, 52.2, 13.1, 'LTE')) t(lat, lon, plat, plon, net)",
        )
        .await;
        let distance = spec(
            "DistanceCalculator",
            serde_json::json!({"latCol": "lat", "lonCol": "lon", "prevLatCol": "plat", "prevLonCol": "plon"}),
        );
        let err = PipelineModel::fit(&[distance], df.clone())
            .await
            .expect_err("string lat")
            .to_string();
        assert!(
            err.contains("DistanceCalculator")
                && err.contains("column 'lat' has type Utf8")
                && err.contains("numeric"),
            "{err}"
        );

        let unknown = spec("StringIndexer", serde_json::json!({"inputCols": ["nett"]}));
        let err = PipelineModel::fit(&[unknown], df.clone())
            .await
            .expect_err("unknown column")
            .to_string();
        assert!(
            err.contains("StringIndexer")
                && err.contains("unknown column 'nett'")
                && err.contains("did you mean 'net'?"),
            "{err}"
        );

        let err =
            serde_json::from_value::<StageSpec>(serde_json::json!({"classname": "StringIndexr"}))
                .expect_err("classname")
                .to_string();
        assert!(err.contains("did you mean StringIndexer?"), "{err}");

        // A saved model applied to data without one of its input columns.
        let indexer = spec(
            "StringIndexer",
            serde_json::json!({"inputCols": ["net"], "handleInvalid": "keep"}),
        );
        let (model, _) = PipelineModel::fit(&[indexer], df).await.expect("fit");
        let saved =
            PipelineModel::from_json(&model.to_json().expect("json"), "m.json").expect("load");
        assert_eq!(saved, model);
        let other = frame("SELECT 1.0 AS lat").await;
        let err = saved
            .transform(other)
            .await
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing column 'net'"), "{err}");
    }
}
