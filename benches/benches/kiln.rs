//! Criterion benchmarks: generator rows/s, feature stage throughput on 1M
//! rows, GBT / RF fit and prediction rows/s. Run with
//! `cargo bench -p kiln-benches`; compare against the reference runs in
//! `benches/run_reference.sh` (same data, same session).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kiln_models::data::{Dataset, TrainingSet};
use kiln_models::gbt::GbtParams;
use kiln_models::rf::RfParams;
use kiln_synth::{Generator, Rules};
use kiln_transformers::{PipelineModel, StageSpec};
use std::sync::Arc;

const ROWS: usize = 1_000_000;

fn rules() -> Rules {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/generators/indoor_outdoor.yaml"
    ))
    .expect("rules");
    Rules::from_yaml(&text, "indoor_outdoor.yaml").expect("valid rules")
}

fn generate(rows: usize) -> Vec<arrow::record_batch::RecordBatch> {
    let g = Generator::new(rules(), 42, rows).expect("generator");
    let mut out = Vec::new();
    g.generate(|b| {
        out.push(b);
        Ok(())
    })
    .expect("generate");
    out
}

fn bench_generator(c: &mut Criterion) {
    let g = Generator::new(rules(), 42, ROWS).expect("generator");
    let mut group = c.benchmark_group("generator");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("indoor_outdoor_1M", |b| {
        b.iter(|| {
            let mut n = 0;
            g.generate(|batch| {
                n += batch.num_rows();
                Ok(())
            })
            .expect("generate");
            n
        })
    });
    group.finish();
}

fn stage(classname: &str, params: serde_json::Value) -> StageSpec {
    serde_json::from_value(serde_json::json!({"classname": classname, "params": params}))
        .expect("stage")
}

fn bench_features(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let batches = generate(ROWS);
    let schema = batches[0].schema();
    let table = Arc::new(MemTable::try_new(schema, vec![batches]).expect("table"));
    let ctx = SessionContext::new();
    for udf in kiln_transformers::udf::all() {
        ctx.register_udf(udf);
    }
    let window = serde_json::json!({"inputCols": ["rsrp", "gps_lat", "gps_lon"], "partitionCol": "device_id", "orderCol": "ts", "tieBreakCols": ["sample_id"]});
    let cases: Vec<(&str, Vec<StageSpec>)> = vec![
        ("lag", vec![stage("LagCalculator", window.clone())]),
        (
            "distance",
            vec![stage(
                "DistanceCalculator",
                serde_json::json!({"latCol": "gps_lat", "lonCol": "gps_lon", "prevLatCol": "gps_lon", "prevLonCol": "gps_lat"}),
            )],
        ),
        (
            "time",
            vec![stage(
                "TimeExtractor",
                serde_json::json!({"inputCol": "ts", "timeZone": "Europe/Berlin"}),
            )],
        ),
        (
            "bucketizer",
            vec![stage(
                "LevelCalculator",
                serde_json::json!({"inputCol": "rsrp", "outputCol": "lvl", "splits": ["-Infinity", -110, -100, -90, -80, "Infinity"], "handleInvalid": "keep"}),
            )],
        ),
        (
            "string_indexer",
            vec![stage(
                "StringIndexer",
                serde_json::json!({"inputCols": ["network_type", "activity"], "handleInvalid": "keep"}),
            )],
        ),
        (
            "imputer_median",
            vec![stage(
                "MedianImputer",
                serde_json::json!({"inputCols": ["rsrp", "pressure_hpa"]}),
            )],
        ),
        (
            "assembler",
            vec![stage(
                "VectorAssembler",
                serde_json::json!({"inputCols": ["rsrp", "rsrq", "sinr", "gps_accuracy", "wifi_connected", "battery_level"], "handleInvalid": "keep"}),
            )],
        ),
    ];
    let mut group = c.benchmark_group("features_1M");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(ROWS as u64));
    for (name, specs) in cases {
        group.bench_function(format!("{name}_fit_transform"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let df = ctx.read_table(table.clone()).expect("df");
                    let (_, out) = PipelineModel::fit(&specs, df).await.expect("fit");
                    out.count().await.expect("count")
                })
            })
        });
    }
    group.finish();
}

fn dataset(rows: usize) -> Dataset {
    // A nonlinear two-class problem with missing values.
    let mut columns: Vec<Vec<f64>> = (0..40).map(|_| Vec::with_capacity(rows)).collect();
    let mut labels = Vec::with_capacity(rows);
    let mut x = 0x1234_5678u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..rows {
        let v: Vec<f64> = (0..40).map(|_| next() * 2.0 - 1.0).collect();
        let score = v[0] * v[1] + v[2].sin() + 0.5 * v[3] - v[4] * v[4] + 0.3 * next();
        labels.push(u32::from(score > 0.0));
        for (c, val) in columns.iter_mut().zip(&v) {
            c.push(if next() < 0.05 { f64::NAN } else { *val });
        }
    }
    Dataset {
        columns,
        labels,
        feature_names: (0..40).map(|i| format!("f{i}")).collect(),
    }
}

fn bench_trees(c: &mut Criterion) {
    let data = dataset(200_000);
    let mut group = c.benchmark_group("trees_200k_x40");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(data.n_rows() as u64));
    group.bench_function("bin_3_passes", |b| {
        b.iter(|| TrainingSet::from_dataset(&data, &[32]).expect("bin"))
    });
    let set = TrainingSet::from_dataset(&data, &[32]).expect("bin");
    let rows = set.all_rows();
    group.bench_function("gbt_fit_20x_d5", |b| {
        b.iter(|| GbtParams::default().fit(&set, &rows).expect("fit"))
    });
    group.bench_function("rf_fit_20x_d5", |b| {
        b.iter(|| RfParams::default().fit(&set, &rows).expect("fit"))
    });
    let model = kiln_models::model::FittedModel::GBTClassifier(
        GbtParams::default().fit(&set, &rows).expect("fit"),
    );
    group.bench_function("gbt_predict", |b| b.iter(|| model.predict_dataset(&data)));
    group.finish();
}

criterion_group!(benches, bench_generator, bench_features, bench_trees);
criterion_main!(benches);
