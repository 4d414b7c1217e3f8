//! Stage specs from YAML, fitted stages, and the pipeline model: a fitted
//! chain saved as a versioned artifact and applied again at inference.

use crate::stages::assembler::{AssemblerModel, AssemblerParams};
use crate::stages::bucketizer::BucketizerParams;
use crate::stages::categorical::CategoricalFilterParams;
use crate::stages::geo::{DistanceParams, GpsDelayParams};
use crate::stages::imputer::{ImputerModel, ImputerParams, Strategy};
use crate::stages::one_hot::{OneHotModel, OneHotParams};
use crate::stages::sql::SqlParams;
use crate::stages::string_indexer::{StringIndexerModel, StringIndexerParams};
use crate::stages::time::{TimeParams, WeekendParams};
use crate::stages::window::{Direction, ShiftParams};
use datafusion::dataframe::DataFrame;
use kiln_engine::schema::ReferenceSchema;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One stage as written in YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub classname: String,
    #[serde(default)]
    pub params: serde_yaml_ng::Mapping,
}

/// Validated stage parameters (what `fit` starts from).
#[derive(Debug, Clone, PartialEq)]
pub enum StageParams {
    Lag(ShiftParams),
    Lead(ShiftParams),
    Distance(DistanceParams),
    GpsDelay(GpsDelayParams),
    Weekend(WeekendParams),
    Time(TimeParams),
    Level(BucketizerParams),
    CategoricalFilter(CategoricalFilterParams),
    MedianImputer(ImputerParams),
    NumericalImputer(ImputerParams),
    StringIndexer(StringIndexerParams),
    OneHotEncoder(OneHotParams),
    VectorAssembler(AssemblerParams),
    Sql(SqlParams),
}

/// Every stage classname.
pub const STAGE_CLASSNAMES: &[&str] = &[
    "LagCalculator",
    "LeadCalculator",
    "DistanceCalculator",
    "GpsDelayCalculator",
    "WeekendExtractor",
    "TimeExtractor",
    "LevelCalculator",
    "CategoricalFilter",
    "MedianImputer",
    "NumericalImputer",
    "StringIndexer",
    "OneHotEncoder",
    "VectorAssembler",
    "SQLTransformer",
];

fn parse<T: serde::de::DeserializeOwned>(spec: &StageSpec, index: usize) -> Result<T> {
    serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(spec.params.clone())).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        KilnError::config(format!(
            "stage {} ({}): params: {msg}",
            index + 1,
            spec.classname
        ))
    })
}

impl StageSpec {
    /// Validates the parameters for the classname.
    pub fn params(&self, index: usize) -> Result<StageParams> {
        Ok(match self.classname.as_str() {
            "LagCalculator" => StageParams::Lag(parse(self, index)?),
            "LeadCalculator" => StageParams::Lead(parse(self, index)?),
            "DistanceCalculator" => StageParams::Distance(parse(self, index)?),
            "GpsDelayCalculator" => StageParams::GpsDelay(parse(self, index)?),
            "WeekendExtractor" => StageParams::Weekend(parse(self, index)?),
            "TimeExtractor" => StageParams::Time(parse(self, index)?),
            "LevelCalculator" | "Bucketizer" => StageParams::Level(parse(self, index)?),
            "CategoricalFilter" => StageParams::CategoricalFilter(parse(self, index)?),
            "MedianImputer" => StageParams::MedianImputer(parse(self, index)?),
            "NumericalImputer" | "Imputer" => StageParams::NumericalImputer(parse(self, index)?),
            "StringIndexer" => StageParams::StringIndexer(parse(self, index)?),
            "OneHotEncoder" => StageParams::OneHotEncoder(parse(self, index)?),
            "VectorAssembler" => StageParams::VectorAssembler(parse(self, index)?),
            "SQLTransformer" => StageParams::Sql(parse(self, index)?),
            other => {
                let hint = crate::stages::closest(other, STAGE_CLASSNAMES)
                    .map(|h| format!("did you mean {h}?"))
                    .unwrap_or_else(|| format!("use one of: {}", STAGE_CLASSNAMES.join(", ")));
                return Err(KilnError::config_fix(
                    format!("stage {}: unknown classname '{other}'", index + 1),
                    hint,
                ));
            }
        })
    }
}

/// A stage ready to transform: stateless params or fitted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "classname", content = "state")]
pub enum FittedStage {
    LagCalculator(ShiftParams),
    LeadCalculator(ShiftParams),
    DistanceCalculator(DistanceParams),
    GpsDelayCalculator(GpsDelayParams),
    WeekendExtractor(WeekendParams),
    TimeExtractor(TimeParams),
    LevelCalculator(BucketizerParams),
    CategoricalFilter(CategoricalFilterParams),
    MedianImputer(ImputerModel),
    NumericalImputer(ImputerModel),
    StringIndexer(StringIndexerModel),
    OneHotEncoder(OneHotModel),
    VectorAssembler(AssemblerModel),
    SQLTransformer(SqlParams),
}

impl StageParams {
    /// Fits the stage on `df`. `sizes` carries category / vector sizes
    /// learned by earlier stages (Spark's ML attribute metadata).
    pub async fn fit(
        &self,
        df: &DataFrame,
        sizes: &mut HashMap<String, usize>,
    ) -> Result<FittedStage> {
        Ok(match self {
            StageParams::Lag(p) => FittedStage::LagCalculator(p.clone()),
            StageParams::Lead(p) => FittedStage::LeadCalculator(p.clone()),
            StageParams::Distance(p) => FittedStage::DistanceCalculator(p.clone()),
            StageParams::GpsDelay(p) => FittedStage::GpsDelayCalculator(p.clone()),
            StageParams::Weekend(p) => FittedStage::WeekendExtractor(p.clone()),
            StageParams::Time(p) => FittedStage::TimeExtractor(p.clone()),
            StageParams::Level(p) => FittedStage::LevelCalculator(p.clone()),
            StageParams::CategoricalFilter(p) => FittedStage::CategoricalFilter(p.clone()),
            StageParams::MedianImputer(p) => {
                FittedStage::MedianImputer(p.fit(df, "MedianImputer", Strategy::Median).await?)
            }
            StageParams::NumericalImputer(p) => {
                FittedStage::NumericalImputer(p.fit(df, "NumericalImputer", Strategy::Mean).await?)
            }
            StageParams::StringIndexer(p) => {
                let m = p.fit(df).await?;
                for (c, n) in m.output_cols.iter().zip(m.category_sizes()) {
                    sizes.insert(c.clone(), n);
                }
                FittedStage::StringIndexer(m)
            }
            StageParams::OneHotEncoder(p) => {
                let m = p.fit(df, sizes).await?;
                for (c, n) in m.output_cols.iter().zip(m.vector_sizes()) {
                    sizes.insert(c.clone(), n);
                }
                FittedStage::OneHotEncoder(m)
            }
            StageParams::VectorAssembler(p) => {
                let m = p.fit(df, sizes).await?;
                sizes.insert(m.output_col.clone(), m.size());
                FittedStage::VectorAssembler(m)
            }
            StageParams::Sql(p) => FittedStage::SQLTransformer(p.clone()),
        })
    }
}

impl FittedStage {
    pub async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        match self {
            FittedStage::LagCalculator(p) => p.transform(df, Direction::Lag),
            FittedStage::LeadCalculator(p) => p.transform(df, Direction::Lead),
            FittedStage::DistanceCalculator(p) => p.transform(df),
            FittedStage::GpsDelayCalculator(p) => p.transform(df),
            FittedStage::WeekendExtractor(p) => p.transform(df),
            FittedStage::TimeExtractor(p) => p.transform(df),
            FittedStage::LevelCalculator(p) => p.transform(df),
            FittedStage::CategoricalFilter(p) => p.transform(df),
            FittedStage::MedianImputer(m) => m.transform(df, "MedianImputer"),
            FittedStage::NumericalImputer(m) => m.transform(df, "NumericalImputer"),
            FittedStage::StringIndexer(m) => m.transform(df),
            FittedStage::OneHotEncoder(m) => m.transform(df),
            FittedStage::VectorAssembler(m) => m.transform(df),
            FittedStage::SQLTransformer(p) => p.transform(df).await,
        }
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
        let params: Vec<StageParams> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| s.params(i))
            .collect::<Result<_>>()?;
        let input_schema = ReferenceSchema {
            allow_extra_columns: true,
            ..ReferenceSchema::from_arrow(df.schema().as_arrow())
        };
        let mut sizes = HashMap::new();
        let mut stages = Vec::new();
        let mut df = df;
        for (i, p) in params.iter().enumerate() {
            let fitted = p
                .fit(&df, &mut sizes)
                .await
                .map_err(|e| e.context(format!("stage {} ({})", i + 1, specs[i].classname)))?;
            df = fitted
                .transform(df)
                .await
                .map_err(|e| e.context(format!("stage {} ({})", i + 1, specs[i].classname)))?;
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

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| KilnError::config(format!("serializing pipeline model: {e}")))
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

        let typo = StageSpec {
            classname: "StringIndexr".into(),
            params: Default::default(),
        };
        let err = PipelineModel::fit(&[typo], df.clone())
            .await
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
