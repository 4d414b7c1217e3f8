use super::sample::{Sampler, produce};
use super::*;
use crate::test_support::{frame_of as frame, testdata};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::sync::Arc;

async fn real() -> DataFrame {
    SessionContext::new()
        .read_parquet(
            testdata("generated_real.parquet"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("test table")
}

fn params() -> CopulaParams {
    CopulaParams {
        seed: 1,
        types: [("sample_id".to_string(), SdType::Id)].into(),
        ..CopulaParams::default()
    }
}

async fn fitted() -> Arc<Reproduction> {
    Arc::new(Reproduction::GaussianCopula(
        fit(real().await, "generated_real", &params(), &|_| {})
            .await
            .expect("fit"),
    ))
}

fn draw(
    model: &Arc<Reproduction>,
    rows: usize,
    seed: u64,
    sql: Option<&str>,
) -> Result<Vec<RecordBatch>> {
    let sampler = Sampler::new(
        Arc::clone(model),
        &Conditions {
            sql: sql.map(str::to_string),
        },
        seed,
    )?;
    let mut out = Vec::new();
    produce(&sampler, rows, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

async fn table_of(batches: Vec<RecordBatch>) -> DataFrame {
    SessionContext::new().read_batches(batches).expect("frame")
}

async fn count(df: DataFrame, sql_filter: &str) -> usize {
    let ctx = SessionContext::new();
    ctx.register_table("t", df.into_view()).expect("register");
    let batches = ctx
        .sql(&format!("SELECT count(*) FROM t WHERE {sql_filter}"))
        .await
        .expect("query")
        .collect()
        .await
        .expect("rows");
    batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0) as usize
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Samples keep the source's types, null rates, categories and ranges.
#[tokio::test]
async fn samples_keep_types_null_rates_categories_and_ranges() {
    let model = fitted().await;
    let source = real().await;
    let source_schema = source.schema().as_arrow().clone();
    let source_batches = source.collect().await.expect("rows");
    let batches = draw(&model, 30_000, 7, None).expect("sample");
    assert_eq!(rows(&batches), 30_000);
    let schema = batches[0].schema();
    assert_eq!(schema.fields().len(), source_schema.fields().len());
    for (f, g) in schema.fields().iter().zip(source_schema.fields()) {
        assert_eq!(f.name(), g.name());
        // Text is written as Utf8 whichever string layout the reader chose.
        let expected = match g.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => &DataType::Utf8,
            t => t,
        };
        assert_eq!(f.data_type(), expected, "column {}", f.name());
    }
    let sample = arrow::compute::concat_batches(&schema, &batches).expect("concat");
    let real = arrow::compute::concat_batches(&source_batches[0].schema(), &source_batches)
        .expect("concat");
    for (c, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let (s, r) = (sample.column(c), real.column_by_name(name).expect("column"));
        let null_rate = |a: &ArrayRef| a.null_count() as f64 / a.len() as f64;
        assert!(
            (null_rate(s) - null_rate(r)).abs() < 0.015,
            "{name}: null rate {} vs {}",
            null_rate(s),
            null_rate(r)
        );
        if name == "sample_id" {
            let keys = arrow::compute::cast(s, &DataType::Int64).expect("ints");
            let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
            let distinct: std::collections::HashSet<i64> = keys.values().iter().copied().collect();
            assert_eq!(distinct.len(), keys.len(), "keys are unique");
            continue;
        }
        let as_number = |a: &ArrayRef| match a.data_type() {
            DataType::Timestamp(..) => arrow::compute::cast(
                &arrow::compute::cast(a, &DataType::Int64).expect("ints"),
                &DataType::Float64,
            )
            .expect("f64"),
            _ => arrow::compute::cast(a, &DataType::Float64).expect("f64"),
        };
        match field.data_type() {
            t if t.is_numeric() || matches!(t, DataType::Timestamp(..)) => {
                let (s, r) = (as_number(s), as_number(r));
                let (s, r) = (
                    s.as_primitive::<Float64Type>(),
                    r.as_primitive::<Float64Type>(),
                );
                let (lo, hi) = (
                    arrow::compute::min(r).expect("min"),
                    arrow::compute::max(r).expect("max"),
                );
                for v in s.iter().flatten() {
                    assert!(v >= lo && v <= hi, "{name}: {v} outside [{lo}, {hi}]");
                    if t.is_integer() {
                        assert_eq!(v.fract(), 0.0);
                    }
                }
            }
            _ => {
                let (s, r) = (
                    arrow::compute::cast(s, &DataType::Utf8).expect("text"),
                    arrow::compute::cast(r, &DataType::Utf8).expect("text"),
                );
                let known: std::collections::HashSet<&str> =
                    r.as_string::<i32>().iter().flatten().collect();
                for v in s.as_string::<i32>().iter().flatten() {
                    assert!(known.contains(v), "{name}: unknown value {v}");
                }
            }
        }
    }
}

/// The same seed gives the same rows with 1 or 3 threads; the model does
/// not depend on the order of the input rows.
#[tokio::test]
async fn output_depends_on_the_seed_only() {
    let model = fitted().await;
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    };
    let one = pool(1)
        .install(|| draw(&model, 40_000, 3, None))
        .expect("sample");
    let three = pool(3)
        .install(|| draw(&model, 40_000, 3, None))
        .expect("sample");
    let cat =
        |b: &[RecordBatch]| arrow::compute::concat_batches(&b[0].schema(), b).expect("concat");
    assert_eq!(cat(&one), cat(&three));
    let other = draw(&model, 40_000, 4, None).expect("sample");
    assert_ne!(cat(&one), cat(&other));

    // Reversed row order, in small batches: the same model.
    let batches = real().await.collect().await.expect("rows");
    let all = cat(&batches);
    let reversed: Vec<RecordBatch> = (0..all.num_rows())
        .rev()
        .collect::<Vec<_>>()
        .chunks(777)
        .map(|idx| {
            let idx =
                arrow::array::UInt32Array::from(idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
            arrow::compute::take_record_batch(&all, &idx).expect("take")
        })
        .collect();
    let refit = fit(
        table_of(reversed).await,
        "generated_real",
        &params(),
        &|_| {},
    )
    .await
    .expect("fit");
    let Reproduction::GaussianCopula(model) = model.as_ref() else {
        panic!("a copula was fitted");
    };
    assert_eq!(refit.columns, model.columns);
    assert_eq!(refit.correlation, model.correlation);
    assert_eq!(refit.source.fingerprint, model.source.fingerprint);
}

/// `batches` split round-robin into `partitions` partitions, read by a
/// context that runs that many at once.
fn partitioned(batches: Vec<RecordBatch>, partitions: usize) -> DataFrame {
    let schema = batches[0].schema();
    let mut parts = vec![Vec::new(); partitions];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % partitions].push(b);
    }
    let table = datafusion::datasource::MemTable::try_new(schema, parts).expect("table");
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(partitions),
    );
    ctx.read_table(Arc::new(table)).expect("frame")
}

/// The passes run as aggregates over partitions: counts, bottom-k samples
/// (here smaller than the table, so partitions' samples are cut and
/// merged) and integer moments merge exactly, so one partition and seven,
/// in another row order, give the same models to the bit.
#[tokio::test]
async fn fits_do_not_depend_on_partitioning() {
    let batches = real().await.collect().await.expect("rows");
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    let reversed: Vec<RecordBatch> = (0..all.num_rows())
        .rev()
        .collect::<Vec<_>>()
        .chunks(311)
        .map(|idx| {
            let idx =
                arrow::array::UInt32Array::from(idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
            arrow::compute::take_record_batch(&all, &idx).expect("take")
        })
        .collect();
    let p = CopulaParams {
        sample_rows: 700,
        ..params()
    };
    let one = partitioned(vec![all.clone()], 1);
    let seven = partitioned(reversed, 7);
    let copula = |df| async { fit(df, "real", &p, &|_| {}).await.expect("fit").to_json() };
    assert_eq!(
        copula(one.clone()).await.expect("json"),
        copula(seven.clone()).await.expect("json")
    );
    let tree = |df| async {
        let model = Reproduction::ChowLiu(fit_tree(df, "real", &p, &|_| {}).await.expect("fit"));
        model.to_json().expect("json")
    };
    assert_eq!(tree(one).await, tree(seven).await);

    // Categories past max_categories in the merged counts only: still the
    // error that names the column and the fix.
    let words = |w: [&str; 2]| {
        RecordBatch::try_from_iter(vec![(
            "word",
            Arc::new(StringArray::from(vec![w[0], w[1], w[0]])) as ArrayRef,
        )])
        .expect("batch")
    };
    let df = partitioned(vec![words(["a", "b"]), words(["c", "d"])], 2);
    let limited = CopulaParams {
        max_categories: 3,
        ..CopulaParams::default()
    };
    let err = fit(df, "words", &limited, &|_| {})
        .await
        .expect_err("four categories")
        .to_string();
    assert!(
        err.contains("column 'word'") && err.contains("more than 3 distinct values"),
        "{err}"
    );
}

/// Values, ranges (a rare one included), lists and null tests hold on
/// every row without rejection; the rest is met by drawing more rows.
#[tokio::test]
async fn conditional_samples_satisfy_their_conditions() {
    let model = fitted().await;
    let source = real().await;
    // The rare range: under 1% of the real rows.
    let rare = "rsrp BETWEEN -139 AND -135";
    let share = count(source.clone(), rare).await as f64 / 6000.0;
    assert!(share > 0.0 && share < 0.01, "{share}");
    for condition in [
        "activity = 'still'",
        rare,
        "rsrp BETWEEN -139 AND -135 AND activity IN ('in_vehicle', 'on_bicycle') AND wifi_connected = true",
        "gps_lat IS NULL AND network_type = 'NR'",
        "gps_accuracy < 5 AND os_version >= 13 AND battery_level = 50",
        "light_lux > 1000 OR rsrp < -120",
        "rsrq > -6 AND rsrp > rsrq * 20",
        "ts >= TIMESTAMP '2023-06-20 00:00:00'",
    ] {
        let batches =
            draw(&model, 5000, 9, Some(condition)).unwrap_or_else(|e| panic!("{condition}: {e}"));
        assert_eq!(rows(&batches), 5000, "{condition}");
        let failing = count(
            table_of(batches).await,
            &format!("({condition}) IS NOT TRUE"),
        )
        .await;
        assert_eq!(failing, 0, "{condition}");
    }
    // An exact value of a continuous column is the value itself.
    let batches = draw(&model, 100, 1, Some("gps_lat = 52.5")).expect("sample");
    assert_eq!(count(table_of(batches).await, "gps_lat = 52.5").await, 100);

    // Impossible conditions are clear errors.
    for (condition, column) in [
        ("activity = 'flying'", "activity"),
        ("rsrp > -10", "rsrp"),
        ("label_indoor = 3", "label_indoor"),
        ("device_model IS NULL", "device_model"),
    ] {
        let err = draw(&model, 10, 1, Some(condition))
            .expect_err(condition)
            .to_string();
        assert!(
            err.contains("no row can satisfy") && err.contains(column),
            "{err}"
        );
    }
    let err = draw(&model, 10, 1, Some("rsrp < rsrq * 100"))
        .expect_err("rare residual")
        .to_string();
    assert!(err.contains("too rare"), "{err}");
    let err = draw(&model, 10, 1, Some("nope = 1"))
        .expect_err("unknown column")
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test]
async fn bad_inputs_are_clear_errors_or_documented_behaviour() {
    let p = CopulaParams::default();
    let empty = frame(vec![(
        "x",
        Arc::new(Float64Array::from(Vec::<f64>::new())) as ArrayRef,
    )]);
    let err = fit(empty, "empty", &p, &|_| {})
        .await
        .expect_err("empty")
        .to_string();
    assert!(err.contains("no rows"), "{err}");

    // A constant column stays constant, an all-null one null.
    let n = 500;
    let x: Vec<f64> = (0..n).map(|i| (i % 97) as f64 * 1.5).collect();
    let df = frame(vec![
        ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        (
            "constant",
            Arc::new(Float64Array::from(vec![4.0; n])) as ArrayRef,
        ),
        (
            "missing",
            Arc::new(Float64Array::from(vec![None::<f64>; n])) as ArrayRef,
        ),
        (
            "word",
            Arc::new(StringArray::from(vec!["same"; n])) as ArrayRef,
        ),
    ]);
    let model = Arc::new(Reproduction::GaussianCopula(
        fit(df, "t", &p, &|_| {}).await.expect("fit"),
    ));
    assert_eq!(model.dimensions().len(), 1);
    let batches = draw(&model, 1000, 1, Some("constant = 4")).expect("sample");
    let df = table_of(batches).await;
    assert_eq!(
        count(
            df.clone(),
            "constant = 4 AND missing IS NULL AND word = 'same'"
        )
        .await,
        1000
    );
    let err = draw(&model, 10, 1, Some("constant = 5"))
        .expect_err("never 5")
        .to_string();
    assert!(err.contains("no row can satisfy"), "{err}");

    // 100,000 distinct text values: an error that says to declare a key.
    let ids: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let df = || {
        frame(vec![(
            "user",
            Arc::new(StringArray::from(ids.clone())) as ArrayRef,
        )])
    };
    let err = fit(df(), "t", &p, &|_| {})
        .await
        .expect_err("too many")
        .to_string();
    assert!(err.contains("column 'user'") && err.contains("id"), "{err}");
    let keyed = CopulaParams {
        types: [("user".to_string(), SdType::Id)].into(),
        ..CopulaParams::default()
    };
    let model = Arc::new(Reproduction::GaussianCopula(
        fit(df(), "t", &keyed, &|_| {}).await.expect("fit"),
    ));
    let batches = draw(&model, 10, 1, None).expect("sample");
    let keys = arrow::compute::cast(batches[0].column(0), &DataType::Utf8).expect("text");
    assert_eq!(keys.as_string::<i32>().value(0), "1");

    // A model file from elsewhere is refused with its location.
    let err = GaussianCopula::from_json(b"{\"kind\": \"ctgan\"}", "m.json")
        .expect_err("kind")
        .to_string();
    assert!(err.contains("m.json") && err.contains("ctgan"), "{err}");
}

/// The Chow-Liu tree: conditions hold on every row (exact evidence
/// propagation, no rejection), output depends on the seed only, and it keeps
/// pair structure the copula loses (SDMetrics' column-pair score, computed
/// by kiln's evaluation, which equals SDMetrics').
#[tokio::test]
async fn chow_liu_tree_meets_conditions_and_keeps_more_pair_structure() {
    let tree = Arc::new(Reproduction::ChowLiu(
        fit_tree(real().await, "generated_real", &params(), &|_| {})
            .await
            .expect("fit"),
    ));
    for condition in [
        "activity = 'still'",
        "rsrp BETWEEN -139 AND -135 AND activity IN ('in_vehicle', 'on_bicycle') AND gps_lat IS NULL",
        "gps_lat = 52.5",
        "light_lux > 1000 OR rsrp < -120",
    ] {
        let batches =
            draw(&tree, 3000, 9, Some(condition)).unwrap_or_else(|e| panic!("{condition}: {e}"));
        assert_eq!(rows(&batches), 3000, "{condition}");
        let failing = count(
            table_of(batches).await,
            &format!("({condition}) IS NOT TRUE"),
        )
        .await;
        assert_eq!(failing, 0, "{condition}");
    }
    let err = draw(&tree, 10, 1, Some("activity = 'flying'"))
        .expect_err("impossible")
        .to_string();
    assert!(err.contains("no row can satisfy"), "{err}");

    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    };
    let cat =
        |b: &[RecordBatch]| arrow::compute::concat_batches(&b[0].schema(), b).expect("concat");
    let one = pool(1)
        .install(|| draw(&tree, 20_000, 3, None))
        .expect("sample");
    let three = pool(3)
        .install(|| draw(&tree, 20_000, 3, None))
        .expect("sample");
    assert_eq!(cat(&one), cat(&three));

    let copula = fitted().await;
    let quality = |batches: Vec<RecordBatch>| async move {
        let params = crate::evaluate::EvaluationParams {
            types: [("sample_id".to_string(), SdType::Id)].into(),
            privacy_rows: 200,
            ..Default::default()
        };
        crate::evaluate::evaluate(real().await, table_of(batches).await, None, &params)
            .await
            .expect("evaluation")
            .0
            .quality
    };
    let q_tree = quality(draw(&tree, 6000, 5, None).expect("sample")).await;
    let q_copula = quality(draw(&copula, 6000, 5, None).expect("sample")).await;
    let (t, c) = (
        q_tree.column_pair_trends.expect("score"),
        q_copula.column_pair_trends.expect("score"),
    );
    assert!(t > c + 0.1, "pair trends: tree {t}, copula {c}");
    assert!(q_tree.overall > q_copula.overall);
}

#[tokio::test]
async fn parametric_marginals_keep_ranges_and_meet_conditions() {
    let settings = CopulaParams {
        default_distribution: DistributionKind::Auto,
        numerical_distributions: [("rsrp".to_string(), DistributionKind::Norm)].into(),
        ..params()
    };
    let model = fit(real().await, "generated_real", &settings, &|_| {})
        .await
        .expect("fit");
    let parametric: Vec<(String, parametric::Distribution, f64, f64)> = model
        .columns
        .iter()
        .filter_map(|c| match c.marginal {
            Marginal::Parametric {
                distribution,
                min,
                max,
                ..
            } => Some((c.name.clone(), distribution, min, max)),
            _ => None,
        })
        .collect();
    let rsrp = parametric
        .iter()
        .find(|(name, ..)| name == "rsrp")
        .expect("rsrp is parametric");
    assert!(
        matches!(rsrp.1, parametric::Distribution::Norm { .. }),
        "{rsrp:?}"
    );
    assert!(
        parametric.len() >= 3,
        "auto fits the continuous columns: {parametric:?}"
    );
    // Columns with few values stay exact.
    assert!(
        model
            .columns
            .iter()
            .any(|c| matches!(c.marginal, Marginal::Discrete { .. }))
    );

    let model = Arc::new(Reproduction::GaussianCopula(model));
    let batches = draw(&model, 5000, 3, None).expect("sample");
    let sample = table_of(batches).await;
    for (name, _, min, max) in &parametric {
        let column = |n: &str| model.columns().iter().find(|c| c.name == n).cloned();
        if column(name).is_some_and(|c| c.sdtype == SdType::Datetime) {
            // Its bounds are numbers in its time unit; the clamp is the same.
            continue;
        }
        let outside = count(sample.clone(), &format!("{name} < {min} OR {name} > {max}")).await;
        assert_eq!(outside, 0, "{name} leaves [{min}, {max}]");
    }
    let rare = "rsrp BETWEEN -139 AND -135";
    let batches = draw(&model, 2000, 4, Some(rare)).expect("conditional sample");
    assert_eq!(rows(&batches), 2000);
    let failing = count(table_of(batches).await, &format!("({rare}) IS NOT TRUE")).await;
    assert_eq!(failing, 0);

    // A column named but absent, or a family that cannot fit it: errors
    // naming the column.
    for (column, kind, needle) in [
        (
            "nope",
            DistributionKind::Norm,
            "numerical_distributions names 'nope'",
        ),
        ("rsrp", DistributionKind::LogNorm, "column 'rsrp'"),
    ] {
        let bad = CopulaParams {
            numerical_distributions: [(column.to_string(), kind)].into(),
            ..params()
        };
        let err = fit(real().await, "generated_real", &bad, &|_| {})
            .await
            .expect_err(column)
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}
