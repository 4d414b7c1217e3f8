use super::*;
use crate::test_support::{frame_of as table, testdata};
use arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::sync::Arc;

async fn parquet(ctx: &SessionContext, name: &str) -> DataFrame {
    ctx.read_parquet(testdata(name), ParquetReadOptions::default())
        .await
        .expect("test table")
}

fn close(ours: Option<f64>, theirs: &serde_json::Value, what: &str) {
    match (ours, theirs.as_f64()) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-6, "{what}: kiln {a}, SDMetrics {b}"),
        (a, _) => panic!("{what}: kiln {a:?}, SDMetrics {theirs}"),
    }
}

/// kiln's quality scores equal SDMetrics' QualityReport on every pair of
/// testdata/synth/pairs.json (reference numbers from
/// testdata/synth/sdmetrics_reference.py), column by column and pair by pair.
#[tokio::test]
async fn quality_scores_equal_sdmetrics() {
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("pairs.json")).expect("pairs"))
            .expect("pairs.json");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata("sdmetrics_golden.json")).expect("golden"),
    )
    .expect("golden json");
    let ctx = SessionContext::new();
    let pairs = pairs.as_array().expect("list");
    assert!(pairs.len() >= 2);
    for pair in pairs {
        let name = pair["name"].as_str().expect("name");
        let expected = &golden["pairs"][name];
        let types: BTreeMap<String, SdType> =
            serde_json::from_value(pair["types"].clone()).expect("types");
        let params = EvaluationParams {
            types,
            privacy_rows: 1_000_000,
            ..EvaluationParams::default()
        };
        let real = parquet(&ctx, pair["real"].as_str().expect("real")).await;
        let synthetic = parquet(&ctx, pair["synthetic"].as_str().expect("synthetic")).await;
        let (report, _) = evaluate(real, synthetic, None, &params)
            .await
            .expect("evaluation");
        let q = &report.quality;
        close(q.overall, &expected["overall"], &format!("{name} overall"));
        close(
            q.column_shapes,
            &expected["column_shapes"],
            &format!("{name} column shapes"),
        );
        close(
            q.column_pair_trends,
            &expected["column_pair_trends"],
            &format!("{name} column pair trends"),
        );
        let columns = expected["columns"].as_object().expect("columns");
        assert_eq!(q.columns.len(), columns.len(), "{name}: columns scored");
        for (column, score) in columns {
            close(q.columns[column], score, &format!("{name} column {column}"));
        }
        let pairs = expected["pairs"].as_object().expect("pairs");
        assert_eq!(q.pairs.len(), pairs.len(), "{name}: pairs scored");
        let mut counted = 0;
        for p in &q.pairs {
            let key = format!("{}|{}", p.column_1, p.column_2);
            let e = &pairs[&key];
            assert_eq!(p.metric, e["metric"], "{name} {key}: metric");
            assert_eq!(
                p.meets_threshold,
                e["meets_threshold"].as_bool().expect("bool"),
                "{name} {key}: counted"
            );
            if p.meets_threshold {
                close(p.score, &e["score"], &format!("{name} pair {key}"));
                counted += 1;
            }
        }
        assert!(
            counted > 0,
            "{name}: no pair counted, the test would prove little"
        );
        if let Some(median) = expected.get("median_dcr_synthetic_to_real") {
            close(
                Some(report.privacy.dcr.median_synthetic_to_real),
                median,
                &format!("{name} median DCR"),
            );
        }
        // Undefined scores are null in the JSON, never NaN.
        let json = serde_json::to_string(&report).expect("json");
        assert!(!json.contains("NaN"), "{name}: {json}");
    }
}

#[tokio::test]
async fn a_perturbed_copy_scores_lower_than_the_table_itself() {
    let ctx = SessionContext::new();
    let params = EvaluationParams {
        types: [("sample_id".to_string(), SdType::Id)].into(),
        privacy_rows: 500,
        ..EvaluationParams::default()
    };
    // Every row compared: each synthetic row finds itself.
    let all_rows = EvaluationParams {
        privacy_rows: 10_000,
        ..params.clone()
    };
    let same = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_real.parquet").await,
        None,
        &all_rows,
    )
    .await
    .expect("evaluation")
    .0;
    assert_eq!(same.quality.overall, Some(1.0));
    assert_eq!(same.privacy.exact_copies, 1.0);
    assert_eq!(same.privacy.dcr.median_synthetic_to_real, 0.0);
    assert_eq!(same.validity.key_uniqueness["sample_id"], Some(1.0));
    let perturbed = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &params,
    )
    .await
    .expect("evaluation")
    .0;
    assert!(perturbed.quality.overall < Some(0.9));
    // Sampled with replacement: repeated keys; one new category; one value
    // far outside the range of rsrp.
    assert!(perturbed.validity.key_uniqueness["sample_id"] < Some(0.7));
    let adherence = perturbed.validity.category_adherence["network_type"].expect("score");
    assert!((adherence - 5999.0 / 6000.0).abs() < 1e-12, "{adherence}");
    assert!(perturbed.validity.boundary_adherence["rsrp"] < Some(1.0));
}

#[tokio::test]
async fn bad_inputs_are_clear_errors_or_documented_nulls() {
    let numbers = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let text = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    let params = EvaluationParams::default();

    // An empty table.
    let empty = table(vec![("x", numbers(vec![]))]);
    let err = evaluate(
        empty,
        table(vec![("x", numbers(vec![Some(1.0)]))]),
        None,
        &params,
    )
    .await
    .expect_err("empty real table")
    .to_string();
    assert!(
        err.contains("the real table") && err.contains("no rows"),
        "{err}"
    );

    // Mismatched schemas: a missing column and a type conflict, both named.
    let real = table(vec![
        ("x", numbers(vec![Some(1.0)])),
        ("c", text(vec!["a"])),
    ]);
    let synthetic = table(vec![("c", numbers(vec![Some(1.0)]))]);
    let err = evaluate(real, synthetic, None, &params)
        .await
        .expect_err("mismatch")
        .to_string();
    assert!(err.contains("column 'x' is missing"), "{err}");
    assert!(err.contains("fix:"), "{err}");
    let real = table(vec![("x", numbers(vec![Some(1.0)]))]);
    let synthetic = table(vec![("x", text(vec!["1"]))]);
    let err = evaluate(real, synthetic, None, &params)
        .await
        .expect_err("type conflict")
        .to_string();
    assert!(
        err.contains("column 'x' is numerical (Float64) in the real table but Utf8"),
        "{err}"
    );

    // A constant column, an all-null column: no NaN, the scores say why.
    let n = 50;
    let x: Vec<Option<f64>> = (0..n).map(|i| Some(i as f64)).collect();
    let make = || {
        table(vec![
            ("x", numbers(x.clone())),
            ("constant", numbers(vec![Some(3.0); n])),
            ("missing", numbers(vec![None; n])),
        ])
    };
    let (report, _) = evaluate(make(), make(), None, &params)
        .await
        .expect("report");
    assert_eq!(report.quality.columns["constant"], Some(1.0));
    assert_eq!(report.quality.columns["missing"], None);
    let constant_pair = report
        .quality
        .pairs
        .iter()
        .find(|p| p.column_1 == "x" && p.column_2 == "constant")
        .expect("pair");
    assert!(!constant_pair.meets_threshold && constant_pair.error.is_some());
    assert_eq!(report.validity.boundary_adherence["missing"], None);
    assert!(
        !serde_json::to_string(&report)
            .expect("json")
            .contains("NaN")
    );

    // Unknown column names in the options.
    let err = evaluate(
        make(),
        make(),
        None,
        &EvaluationParams {
            ignore: vec!["nope".into()],
            ..EvaluationParams::default()
        },
    )
    .await
    .expect_err("unknown column")
    .to_string();
    assert!(err.contains("'nope'"), "{err}");
}

/// A categorical column with 100,000 distinct values (an identifier typed
/// as text): scored in linear time, with a near-zero shape score for
/// disjoint values.
#[tokio::test]
async fn a_column_with_100000_distinct_values_is_scored() {
    let n = 100_000i64;
    let make = |offset: i64| {
        let ids: Vec<String> = (0..n).map(|i| format!("id-{}", i + offset)).collect();
        table(vec![
            ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
            (
                "group",
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| if i % 2 == 0 { "a" } else { "b" })
                        .collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())) as ArrayRef,
            ),
        ])
    };
    let params = EvaluationParams {
        privacy_rows: 300,
        ..EvaluationParams::default()
    };
    let (report, _) = evaluate(make(0), make(n), None, &params)
        .await
        .expect("report");
    assert!(report.quality.columns["id"].expect("score") < 1e-3);
    assert_eq!(report.quality.columns["group"], Some(1.0));
    assert_eq!(report.validity.category_adherence["id"], Some(0.0));
    assert!(matches!(
        report
            .quality
            .pairs
            .iter()
            .find(|p| p.column_1 == "id")
            .map(|p| p.metric),
        Some("ContingencySimilarity")
    ));
}

/// The filter keeps only rows within the real boundaries that meet the
/// rule and are far enough from real rows, and counts the others by reason.
#[tokio::test]
async fn the_filter_writes_only_passing_rows_and_says_why_others_were_dropped() {
    let session = kiln_engine::KilnSession::connect(
        &kiln_engine::Master::Local { partitions: 1 },
        &kiln_engine::session::KilnExtensions::default(),
    )
    .await
    .expect("session");
    let ctx = SessionContext::new();
    let params = EvaluationParams {
        types: [("sample_id".to_string(), SdType::Id)].into(),
        privacy_rows: 500,
        ..EvaluationParams::default()
    };
    let (_, loaded) = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &params,
    )
    .await
    .expect("evaluation");
    let dir = std::env::temp_dir().join(format!("kiln-filter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let target = url::Url::from_directory_path(dir.join("kept")).expect("url");
    let filter = FilterParams {
        rule: Some("rsrp IS NULL OR rsrp < -80".into()),
        min_distance: Some(0.02),
        real_rows: 500,
        seed: 0,
    };
    let summary = write_filtered(
        &session,
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        &loaded,
        &filter,
        &target,
        kiln_engine::io::FileFormat::Parquet,
    )
    .await
    .expect("filter");
    assert_eq!(summary.rows_in, 6000);
    assert_eq!(
        summary.rows_kept
            + summary.dropped_out_of_bounds
            + summary.dropped_by_rule
            + summary.dropped_too_close,
        6000,
        "{summary:?}"
    );
    // The new category and the value far out of range are among the drops.
    assert!(summary.dropped_out_of_bounds >= 2, "{summary:?}");
    assert!(
        summary.dropped_by_rule > 0 && summary.rows_kept > 0,
        "{summary:?}"
    );
    let kept = ctx
        .read_parquet(
            dir.join("kept").display().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("output");
    ctx.register_table("kept", kept.into_view())
        .expect("register");
    let bad = ctx
        .sql("SELECT count(*) FROM kept WHERE network_type = 'SATELLITE' OR rsrp >= -80")
        .await
        .expect("query")
        .collect()
        .await
        .expect("rows");
    let total = ctx
        .sql("SELECT count(*) FROM kept")
        .await
        .expect("query")
        .collect()
        .await
        .expect("rows");
    let n = |b: &[RecordBatch]| {
        b[0].column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    assert_eq!(n(&bad), 0);
    assert_eq!(n(&total) as u64, summary.rows_kept);

    // The distances the filter's UDF measured are the DCR computed here:
    // filter by the boundaries and the rule only, then measure those rows.
    let near = url::Url::from_directory_path(dir.join("near")).expect("url");
    let without_distance = write_filtered(
        &session,
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        &loaded,
        &FilterParams {
            min_distance: None,
            ..filter.clone()
        },
        &near,
        kiln_engine::io::FileFormat::Parquet,
    )
    .await
    .expect("filter");
    assert_eq!(without_distance.dropped_too_close, 0);
    assert_eq!(
        without_distance.rows_kept,
        summary.rows_kept + summary.dropped_too_close
    );
    let (_, passed) = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        ctx.read_parquet(
            dir.join("near").display().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("kept rows"),
        None,
        &params,
    )
    .await
    .expect("evaluation");
    let distances = super::privacy::distances_to(
        passed.view(&passed.real),
        passed.view(&passed.synthetic),
        filter.real_rows,
        filter.seed,
    );
    let too_close = distances.iter().filter(|&&d| d < 0.02).count() as u64;
    assert!(
        too_close > 0,
        "no row is too close: the check shows nothing"
    );
    assert_eq!(too_close, summary.dropped_too_close);

    // Evaluated on samples (max_rows): the boundaries still come from every
    // real row, and every synthetic row is filtered.
    let (_, sampled) = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &EvaluationParams {
            max_rows: 1500,
            ..params.clone()
        },
    )
    .await
    .expect("evaluation");
    assert!(sampled.real.rows < 3000 && sampled.synthetic.rows < 3000);
    let from_samples = write_filtered(
        &session,
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        &sampled,
        &FilterParams {
            min_distance: None,
            ..filter.clone()
        },
        &url::Url::from_directory_path(dir.join("from_samples")).expect("url"),
        kiln_engine::io::FileFormat::Parquet,
    )
    .await
    .expect("filter");
    assert_eq!(from_samples.rows_in, 6000);
    assert_eq!(
        from_samples.dropped_out_of_bounds,
        summary.dropped_out_of_bounds
    );
    assert_eq!(from_samples.rows_kept, without_distance.rows_kept);

    // A rule that is not a condition: a clear error, and nothing written.
    let err = write_filtered(
        &session,
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        &loaded,
        &FilterParams {
            rule: Some("rsrp + 1".into()),
            ..filter.clone()
        },
        &url::Url::from_directory_path(dir.join("never")).expect("url"),
        kiln_engine::io::FileFormat::Parquet,
    )
    .await
    .expect_err("not boolean")
    .to_string();
    assert!(err.contains("not a boolean expression"), "{err}");
    assert!(!dir.join("never").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Usefulness: kiln's GBT trained on synthetic rows, tested on real ones,
/// against the same model trained on real rows; a non-binary target is a
/// clear error.
#[tokio::test]
async fn usefulness_trains_on_synthetic_and_tests_on_real() {
    let ctx = SessionContext::new();
    let params = EvaluationParams {
        types: [("sample_id".to_string(), SdType::Id)].into(),
        privacy_rows: 300,
        target: Some("label_indoor".into()),
        ..EvaluationParams::default()
    };
    let (report, _) = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &params,
    )
    .await
    .expect("evaluation");
    let UsefulnessSection::Measured(u) = &report.usefulness else {
        panic!("usefulness was measured: {:?}", report.usefulness);
    };
    let real = u.train_on_real.expect("auc");
    let synthetic = u.train_on_synthetic.expect("auc");
    assert!(real > 0.8 && real <= 1.0, "{u:?}");
    assert!(synthetic > 0.5 && synthetic <= 1.0, "{u:?}");
    assert!((u.ratio.expect("ratio") - synthetic / real).abs() < 1e-12);
    assert_eq!(u.real_train_rows + u.real_test_rows, 6000);
    assert_eq!(u.positive, "1");

    let err = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &EvaluationParams {
            target: Some("activity".into()),
            ..params.clone()
        },
    )
    .await
    .expect_err("not binary")
    .to_string();
    assert!(err.contains("'activity' has 8 distinct values"), "{err}");
    let json = serde_json::to_value(&report).expect("json");
    assert!(
        json["usefulness"]["train_on_synthetic"].is_number(),
        "{json}"
    );
}

/// A table above `max_rows` is evaluated on a uniform sample of about that
/// many rows, the same sample whatever the partitioning, with scores close
/// to the whole table's; the report says which tables were sampled.
#[tokio::test]
async fn large_tables_are_evaluated_on_a_uniform_sample() {
    let ctx = SessionContext::new();
    let whole = EvaluationParams {
        types: [("sample_id".to_string(), SdType::Id)].into(),
        privacy_rows: 500,
        ..EvaluationParams::default()
    };
    let capped = EvaluationParams {
        max_rows: 1500,
        ..whole.clone()
    };
    let run = |params: EvaluationParams, partitions: usize| {
        let ctx = ctx.clone();
        async move {
            let real = parquet(&ctx, "generated_real.parquet")
                .await
                .repartition(datafusion::logical_expr::Partitioning::RoundRobinBatch(
                    partitions,
                ))
                .expect("repartition");
            let synthetic = parquet(&ctx, "generated_perturbed.parquet").await;
            evaluate(real, synthetic, None, &params)
                .await
                .expect("evaluation")
                .0
        }
    };
    let full = run(whole, 1).await;
    assert!(full.rows.sampled_from.is_empty(), "{:?}", full.rows);
    let one = run(capped.clone(), 1).await;
    let four = run(capped, 4).await;
    assert_eq!(one.rows.sampled_from.get("real"), Some(&full.rows.real));
    assert!(
        (1200..=1800).contains(&one.rows.real),
        "about 1500 of {} rows: {}",
        full.rows.real,
        one.rows.real
    );
    // The same rows, whatever the partitioning.
    assert_eq!(one.rows.real, four.rows.real);
    assert_eq!(one.quality.column_shapes, four.quality.column_shapes);
    let (sampled, all) = (
        one.quality.overall.expect("score"),
        full.quality.overall.expect("score"),
    );
    assert!(
        (sampled - all).abs() < 0.03,
        "sample {sampled} vs all {all}"
    );
    let json = serde_json::to_value(&one).expect("json");
    assert_eq!(json["rows"]["sampled_from"]["real"], full.rows.real);

    let none = EvaluationParams {
        max_rows: 0,
        ..EvaluationParams::default()
    };
    let err = evaluate(
        parquet(&ctx, "generated_real.parquet").await,
        parquet(&ctx, "generated_perturbed.parquet").await,
        None,
        &none,
    )
    .await
    .expect_err("max_rows 0")
    .to_string();
    assert!(err.contains("max_rows"), "{err}");
}
