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
        let input_schema = ReferenceSchema {
            allow_extra_columns: true,
            ..ReferenceSchema::from_arrow(df.schema().as_arrow())
        };
        let mut sizes = Sizes::new();
        let mut stages = Vec::new();
        let mut df = df;
        for (i, spec) in specs.iter().enumerate() {
            let at = |e: KilnError| e.context(format!("stage {} ({})", i + 1, spec.classname()));
            let fitted = spec.fit(&df, &mut sizes).await.map_err(at)?;
            df = fitted.transform(df).await.map_err(at)?;
            stages.push(fitted);
        }
        let model = PipelineModel {
            format_version: PIPELINE_FORMAT_VERSION,
            kiln_version: env!("CARGO_PKG_VERSION").into(),
            input_schema,
            stages,
        };
        Ok((model, df))
    }

    /// Applies the fitted stages. Input columns the model was fitted with
    /// must be present with the same types.
    pub async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let actual = df.schema().as_arrow();
        let mut problems = Vec::new();
        for c in &self.input_schema.columns {
            match actual.field_with_name(&c.name) {
                Err(_) => problems.push(format!("missing column '{}' ({})", c.name, c.data_type)),
                Ok(f) if f.data_type().to_string() != c.data_type => problems.push(format!(
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
            .filter_map(|s| match s {
                FittedStage::LagCalculator(p) => Some(p.0.partition_col.as_str()),
                FittedStage::LeadCalculator(p) => Some(p.0.partition_col.as_str()),
                _ => None,
            })
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
