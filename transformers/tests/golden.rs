//! Spark 4 parity: every case in `testdata/golden` (inputs, Spark's outputs
//! and params) is run through kiln's stages and compared by `row_id`.
//! Exact for deterministic stages; relative 1e-12 for the haversine distance
//! and mean surrogates (math library / summation order); the median is exact
//! here (Spark's is approximate), so it is checked against the exact numpy
//! median instead of Spark's output.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches, sort_to_indices, take};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kiln_transformers::{PipelineModel, StageSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/golden")
}

fn ctx() -> SessionContext {
    let ctx = SessionContext::new();
    for udf in kiln_transformers::udf::all() {
        ctx.register_udf(udf);
    }
    ctx
}

async fn read(
    ctx: &SessionContext,
    case: &str,
    file: &str,
) -> Result<datafusion::dataframe::DataFrame, Box<dyn std::error::Error>> {
    let path = golden().join(case).join(file);
    Ok(ctx
        .read_parquet(
            path.to_string_lossy().to_string(),
            ParquetReadOptions::default(),
        )
        .await?)
}

fn params(case: &str) -> Result<Value, Box<dyn std::error::Error>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        golden().join(case).join("params.json"),
    )?)?)
}

fn spec(classname: &str, params: Value) -> Result<StageSpec, Box<dyn std::error::Error>> {
    Ok(serde_json::from_value(
        json!({"classname": classname, "params": params}),
    )?)
}

/// Our classname and params for a Spark stage entry of params.json.
fn spark_stage(stage: &Value) -> Result<StageSpec, Box<dyn std::error::Error>> {
    let class = stage["class"]
        .as_str()
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default();
    let mut p = stage["params"].clone();
    let name = match class {
        "Imputer" => "NumericalImputer",
        "Bucketizer" => "LevelCalculator",
        "SQLTransformer" => "SQLTransformer",
        other => other,
    };
    if let Some(obj) = p.as_object_mut() {
        obj.remove("relativeError");
    }
    spec(name, p)
}

fn sorted(batches: &[RecordBatch]) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let b = concat_batches(&batches[0].schema(), batches)?;
    let idx = sort_to_indices(b.column_by_name("row_id").ok_or("no row_id")?, None, None)?;
    let cols: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &idx, None))
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(b.schema(), cols)?)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || a.to_bits() == b.to_bits()
        || (rel > 0.0 && ((a - b).abs() <= rel * a.abs().max(b.abs())))
}

fn compare_column(
    case: &str,
    name: &str,
    ours: &ArrayRef,
    expected: &ArrayRef,
    rel: f64,
) -> Result<(), String> {
    if ours.len() != expected.len() {
        return Err(format!(
            "{case}.{name}: {} rows, expected {}",
            ours.len(),
            expected.len()
        ));
    }
    match expected.data_type() {
        DataType::Float64 | DataType::Float32 => {
            let o = cast(ours, &DataType::Float64).map_err(|e| e.to_string())?;
            let e = cast(expected, &DataType::Float64).map_err(|e| e.to_string())?;
            if expected.data_type() == &DataType::Float32 && ours.data_type() != &DataType::Float32
            {
                return Err(format!(
                    "{case}.{name}: type {}, Spark gives float",
                    ours.data_type()
                ));
            }
            let (o, e) = (
                o.as_primitive::<Float64Type>(),
                e.as_primitive::<Float64Type>(),
            );
            for i in 0..e.len() {
                let ok = match (o.is_null(i), e.is_null(i)) {
                    (true, true) => true,
                    (false, false) => close(o.value(i), e.value(i), rel),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "{case}.{name}[{i}]: ours {:?}, Spark {:?}",
                        (!o.is_null(i)).then(|| o.value(i)),
                        (!e.is_null(i)).then(|| e.value(i))
                    ));
                }
            }
            Ok(())
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let o = ours
                .as_list_opt::<i32>()
                .ok_or(format!("{case}.{name}: not a list ({})", ours.data_type()))?;
            let e = cast(
                expected,
                &DataType::List(std::sync::Arc::new(
                    arrow::datatypes::Field::new_list_field(DataType::Float64, true),
                )),
            )
            .map_err(|e| e.to_string())?;
            let e = e.as_list::<i32>();
            for i in 0..e.len() {
                if o.is_null(i) != e.is_null(i) {
                    return Err(format!(
                        "{case}.{name}[{i}]: null mismatch (ours null: {})",
                        o.is_null(i)
                    ));
                }
                if !e.is_null(i) {
                    compare_column(case, &format!("{name}[{i}]"), &o.value(i), &e.value(i), rel)?;
                }
            }
            Ok(())
        }
        t => {
            let o = cast(ours, t).map_err(|e| {
                format!(
                    "{case}.{name}: cannot cast {} to {t}: {e}",
                    ours.data_type()
                )
            })?;
            if o.to_data() != expected.to_data() {
                for i in 0..expected.len() {
                    let (a, b) = (
                        arrow::util::display::array_value_to_string(&o, i).unwrap_or_default(),
                        arrow::util::display::array_value_to_string(expected, i)
                            .unwrap_or_default(),
                    );
                    if a != b || o.is_null(i) != expected.is_null(i) {
                        return Err(format!("{case}.{name}[{i}]: ours {a}, Spark {b}"));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Fits on fit.parquet (or the input) and transforms, then compares every
/// column of expected.parquet.
async fn run_case(case: &str, specs: &[StageSpec], skip_cols: &[&str], rel: f64) -> TestResult {
    let ctx = ctx();
    let dir = golden().join(case);
    let input = if dir.join("transform.parquet").exists() {
        "transform.parquet"
    } else {
        "input.parquet"
    };
    let fit_df = if dir.join("fit.parquet").exists() {
        read(&ctx, case, "fit.parquet").await?
    } else {
        read(&ctx, case, input).await?
    };
    let (model, _) = PipelineModel::fit(specs, fit_df).await?;
    let out = model
        .transform(read(&ctx, case, input).await?)
        .await?
        .collect()
        .await?;
    let ours = sorted(&out)?;
    let expected = sorted(
        &read(&ctx, case, "expected.parquet")
            .await?
            .collect()
            .await?,
    )?;
    let ids = |b: &RecordBatch| -> Result<Vec<i64>, String> {
        let c = b.column_by_name("row_id").ok_or("no row_id")?;
        Ok(c.as_primitive::<Int64Type>().values().to_vec())
    };
    assert_eq!(ids(&ours)?, ids(&expected)?, "{case}: row ids differ");
    for field in expected.schema().fields() {
        if skip_cols.contains(&field.name().as_str()) || field.name() == "local_time" {
            continue;
        }
        let o = ours
            .column_by_name(field.name())
            .ok_or(format!("{case}: we produce no column '{}'", field.name()))?;
        let e = expected.column_by_name(field.name()).ok_or("missing")?;
        compare_column(case, field.name(), o, e, rel)?;
    }
    Ok(())
}

/// Fits, then expects transforming the invalid rows to fail with `needle`.
async fn expect_error(case: &str, specs: &[StageSpec], invalid: &str, needle: &str) -> TestResult {
    let ctx = ctx();
    let dir = golden().join(case);
    let fit = if dir.join("fit.parquet").exists() {
        "fit.parquet"
    } else {
        invalid
    };
    let (model, _) = PipelineModel::fit(specs, read(&ctx, case, fit).await?).await?;
    let result = match model.transform(read(&ctx, case, invalid).await?).await {
        Ok(df) => df.collect().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let err = result
        .err()
        .ok_or(format!("{case}: transforming {invalid} should fail"))?;
    assert!(err.contains(needle), "{case}: '{needle}' not in: {err}");
    Ok(())
}

/// The golden case folders whose names start with `prefix`. A missing
/// folder or no matching case is an error: a parity test that finds nothing
/// to compare must not pass.
fn cases(prefix: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    cases_in(&golden(), prefix)
}

fn cases_in(dir: &Path, prefix: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("golden files not found at {}: {e}", dir.display()))?;
    let mut v: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if v.is_empty() {
        return Err(format!("no golden case '{prefix}*' in {}", dir.display()).into());
    }
    v.sort();
    Ok(v)
}

#[test]
fn a_missing_or_empty_golden_folder_fails() {
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no/such/golden");
    assert!(cases_in(&missing, "string_indexer_").is_err());
    assert!(cases_in(&golden(), "no_such_stage_").is_err());
    assert!(cases("string_indexer_").is_ok_and(|c| c.len() >= 10));
}

#[tokio::test]
async fn string_indexer_matches_spark() -> TestResult {
    for case in cases("string_indexer_")? {
        let p = params(&case)?;
        let s = spark_stage(&p["stage"])?;
        if case.ends_with("_error") {
            expect_error(&case, &[s], "transform.parquet", "Unseen label").await?;
        } else {
            run_case(&case, &[s], &[], 0.0).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn one_hot_encoder_matches_spark() -> TestResult {
    for case in cases("one_hot_encoder_")? {
        let p = params(&case)?;
        let specs: Vec<StageSpec> = match p.get("stages") {
            Some(Value::Array(stages)) => {
                stages.iter().map(spark_stage).collect::<Result<_, _>>()?
            }
            _ => vec![spark_stage(&p["stage"])?],
        };
        run_case(&case, &specs, &[], 0.0).await?;
        if case.ends_with("_error") {
            expect_error(
                &case,
                &specs,
                "transform_invalid.parquet",
                "invalid category index",
            )
            .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn imputer_matches_spark() -> TestResult {
    for case in [
        "imputer_mean",
        "imputer_mode",
        "imputer_mean_missing_value_sentinel",
    ] {
        let p = params(case)?;
        run_case(case, &[spark_stage(&p["stage"])?], &[], 1e-12).await?;
    }
    // Median: exact here, approximate in Spark; check against the exact median.
    let ctx = ctx();
    let p = params("imputer_median")?;
    let spec = spark_stage(&p["stage"])?;
    let (model, _) = PipelineModel::fit(
        std::slice::from_ref(&spec),
        read(&ctx, "imputer_median", "fit.parquet").await?,
    )
    .await?;
    let surrogates = std::fs::read_to_string(golden().join("imputer_median/surrogates.csv"))?;
    let header: Vec<&str> = surrogates
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| h.trim_matches('"') == name);
    let (ci, ni) = (
        col("column").ok_or("column")?,
        col("numpy_reference").ok_or("numpy_reference")?,
    );
    let fitted = serde_json::to_value(&model.stages[0])?;
    let ours = fitted["state"]["surrogates"]
        .as_array()
        .ok_or("surrogates")?
        .clone();
    let names = fitted["state"]["input_cols"]
        .as_array()
        .ok_or("input_cols")?
        .clone();
    for line in surrogates.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let reference: f64 = f[ni].parse()?;
        let i = names
            .iter()
            .position(|n| n.as_str() == Some(f[ci].trim_matches('"')))
            .ok_or("column")?;
        let got = ours[i].as_f64().ok_or("number")?;
        assert!(
            close(got, reference, 1e-12),
            "median of {}: ours {got}, exact {reference}",
            f[ci]
        );
    }
    // All-missing column: fit fails naming the column.
    let p = params("imputer_mean_all_missing_error")?;
    let err = PipelineModel::fit(
        &[spark_stage(&p["stage"])?],
        read(&ctx, "imputer_mean_all_missing_error", "fit.parquet").await?,
    )
    .await
    .err()
    .ok_or("fit should fail")?
    .to_string();
    assert!(
        err.contains("wifi_rssi") && err.contains("surrogate cannot be computed"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn bucketizer_matches_spark() -> TestResult {
    for case in cases("bucketizer_")? {
        let p = params(&case)?;
        let s = spark_stage(&p["stage"])?;
        run_case(&case, std::slice::from_ref(&s), &[], 0.0).await?;
        if case.ends_with("_error") {
            expect_error(&case, &[s], "input_invalid.parquet", "NaN").await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn vector_assembler_matches_spark() -> TestResult {
    for case in cases("vector_assembler_")? {
        let p = params(&case)?;
        let s = spark_stage(&p["stage"])?;
        run_case(&case, std::slice::from_ref(&s), &[], 0.0).await?;
        if case.ends_with("_error") {
            expect_error(
                &case,
                &[s],
                "input_invalid.parquet",
                "handleInvalid = error",
            )
            .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn sql_and_categorical_filter_match_spark() -> TestResult {
    let p = params("sql_transformer")?;
    run_case("sql_transformer", &[spark_stage(&p["stage"])?], &[], 0.0).await?;
    let filter = spec(
        "CategoricalFilter",
        json!({"replacement": "other", "columns": [{"inputCol": "network_type", "outputCol": "network_type_filtered", "values": ["LTE", "NR", "NR_NSA", "UMTS", "GSM"]}]}),
    )?;
    run_case("categorical_filter_sql", &[filter], &[], 0.0).await
}

#[tokio::test]
async fn time_extraction_matches_spark() -> TestResult {
    for case in ["time_extract_utc", "time_extract_europe_berlin"] {
        let tz = params(case)?["time_zone"]
            .as_str()
            .ok_or("time_zone")?
            .to_string();
        let specs = [
            spec(
                "TimeExtractor",
                json!({"inputCol": "ts", "timeZone": tz, "hourCol": "hour", "minuteCol": "minute", "dayOfWeekCol": "dayofweek", "dayOfMonthCol": "dayofmonth", "monthCol": "month"}),
            )?,
            spec(
                "WeekendExtractor",
                json!({"inputCol": "ts", "timeZone": tz, "outputCol": "is_weekend"}),
            )?,
        ];
        run_case(case, &specs, &["ts"], 0.0).await?;
    }
    Ok(())
}

#[tokio::test]
async fn window_distance_and_delay_match_spark() -> TestResult {
    let window = |class: &str, cols: Value, outs: Value| {
        spec(
            class,
            json!({"inputCols": cols, "outputCols": outs, "partitionCol": "device_id", "orderCol": "ts", "tieBreakCols": ["row_id"], "offset": 1}),
        )
    };
    let specs = [
        window(
            "LagCalculator",
            json!(["rsrp", "network_type", "ts", "gps_lat", "gps_lon"]),
            json!([
                "rsrp_lag1",
                "network_type_lag1",
                "ts_lag1",
                "gps_lat_prev",
                "gps_lon_prev"
            ]),
        )?,
        window(
            "LeadCalculator",
            json!(["rsrp", "network_type", "ts"]),
            json!(["rsrp_lead1", "network_type_lead1", "ts_lead1"]),
        )?,
        spec(
            "DistanceCalculator",
            json!({"latCol": "gps_lat", "lonCol": "gps_lon", "prevLatCol": "gps_lat_prev", "prevLonCol": "gps_lon_prev", "outputCol": "distance_m"}),
        )?,
        spec(
            "GpsDelayCalculator",
            json!({"timestampCol": "ts", "fixTimestampCol": "gps_fix_ts", "outputCol": "gps_delay_s"}),
        )?,
    ];
    run_case("window_lag_lead_distance_delay", &specs, &[], 1e-12).await
}
