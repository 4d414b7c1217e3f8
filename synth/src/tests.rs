use super::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use kiln_engine::io::FileFormat;

const RULES: &str = r#"
entity: { column: device_id, mean_rows: 200, sigma: 0.3 }
latent:
  - { name: state, states: [indoor, outdoor], weights: [0.6, 0.4], mean_run: [40, 20], keep: true }
columns:
  - name: sample_id
    gen: { unique_id: { start: 1 } }
  - name: ts
    gen: { timestamp_sequence: { start: "2023-06-01T00:00:00Z", end: "2023-06-30T00:00:00Z", min_gap_s: 5, max_gap_s: 120 } }
  - name: rsrp
    when:
      - if: { eq: [state, indoor] }
        gen: { normal: { mean: -105, std: 8 } }
    gen: { normal: { mean: -95, std: 8 } }
    null_fraction: 0.1
  - name: network
    gen: { categorical: { values: [LTE, NR, GSM], weights: [0.5, 0.3, 0.2] } }
  - name: wifi
    when:
      - if: { and: [{ eq: [state, indoor] }, { not: { eq: [network, GSM] } }] }
        gen: { bool: { p: 1.0 } }
    gen: { bool: { p: 0.0 } }
  - name: speed
    gen: { exponential: { rate: 0.5, max: 30, round: 2 } }
  - name: label
    type: int32
    sql: "CASE WHEN state = 'indoor' THEN 1 ELSE 0 END"
  - name: label_twice
    type: int64
    sql: "label * 2"
"#;

fn generate(rules: &str, rows: usize, seed: u64) -> Result<Vec<RecordBatch>> {
    let g = Generator::new(Rules::from_yaml(rules, "rules.yaml")?, seed, rows)?;
    let mut out = Vec::new();
    g.generate(|b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).expect("concat")
}

/// Kolmogorov-Smirnov statistic against the normal CDF.
fn ks_normal(mut xs: Vec<f64>, mean: f64, std: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    let cdf = |x: f64| 0.5 * (1.0 + erf((x - mean) / (std * std::f64::consts::SQRT_2)));
    xs.iter()
        .enumerate()
        .map(|(i, x)| {
            let c = cdf(*x);
            (c - i as f64 / n).abs().max(((i + 1) as f64 / n - c).abs())
        })
        .fold(0.0, f64::max)
}

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 (error < 1.5e-7).
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

#[test]
fn generated_data_follows_its_rules() -> Result<()> {
    let rows = 200_000;
    let b = concat(&generate(RULES, rows, 42)?);
    assert_eq!(b.num_rows(), rows);
    let state = b.column_by_name("state").expect("state").as_string::<i32>();
    let rsrp = b
        .column_by_name("rsrp")
        .expect("rsrp")
        .as_primitive::<Float64Type>();
    let net = b
        .column_by_name("network")
        .expect("network")
        .as_string::<i32>();
    let wifi = b.column_by_name("wifi").expect("wifi").as_boolean();
    let label = b.column_by_name("label").expect("label");
    let twice = b
        .column_by_name("label_twice")
        .expect("twice")
        .as_primitive::<Int64Type>();
    let ids = b
        .column_by_name("sample_id")
        .expect("id")
        .as_primitive::<Int64Type>();
    let dev = b
        .column_by_name("device_id")
        .expect("dev")
        .as_primitive::<Int64Type>();
    let ts = b
        .column_by_name("ts")
        .expect("ts")
        .as_primitive::<arrow::datatypes::TimestampMillisecondType>();

    // Null fraction within 3 sigma.
    let nulls = rsrp.null_count() as f64 / rows as f64;
    assert!((nulls - 0.1).abs() < 0.005, "null fraction {nulls}");
    // Conditional distributions: KS against the configured normals.
    let (mut ins, mut outs) = (Vec::new(), Vec::new());
    for i in 0..rows {
        if rsrp.is_valid(i) {
            if state.value(i) == "indoor" {
                ins.push(rsrp.value(i))
            } else {
                outs.push(rsrp.value(i))
            }
        }
    }
    assert!(ks_normal(ins, -105.0, 8.0) < 0.01);
    assert!(ks_normal(outs, -95.0, 8.0) < 0.01);
    // Category weights.
    for (v, w) in [("LTE", 0.5), ("NR", 0.3), ("GSM", 0.2)] {
        let f = (0..rows).filter(|&i| net.value(i) == v).count() as f64 / rows as f64;
        assert!((f - w).abs() < 0.01, "{v}: {f}");
    }
    // Compound conditions hold on every row; SQL columns follow their inputs.
    for i in 0..rows {
        let expect = state.value(i) == "indoor" && net.value(i) != "GSM";
        assert_eq!(wifi.value(i), expect, "row {i}");
        let l = arrow::compute::cast(label, &DataType::Int64).expect("cast");
        assert_eq!(twice.value(i), 2 * l.as_primitive::<Int64Type>().value(i));
        assert_eq!(ids.value(i), i as i64 + 1);
        if i > 0 && dev.value(i) == dev.value(i - 1) {
            let gap = ts.value(i) - ts.value(i - 1);
            assert!((5_000..=120_000).contains(&gap), "gap {gap}");
        }
    }
    // Markov runs: the expected run length 1/p(leave) per state, estimated
    // from the transitions within each entity (interior runs alone would be
    // biased toward short runs by entity ends).
    let mut stay_rows = [0usize; 2];
    let mut exits = [0usize; 2];
    for i in 0..rows - 1 {
        if dev.value(i) != dev.value(i + 1) {
            continue;
        }
        let s = usize::from(state.value(i) != "indoor");
        stay_rows[s] += 1;
        if state.value(i) != state.value(i + 1) {
            exits[s] += 1;
        }
    }
    for (k, expected) in [(0, 40.0), (1, 20.0)] {
        let mean = stay_rows[k] as f64 / exits[k] as f64;
        assert!(
            (mean - expected).abs() / expected < 0.08,
            "state {k}: mean run {mean}, expected {expected}"
        );
    }
    Ok(())
}

#[test]
fn output_is_deterministic_whatever_the_thread_count() -> Result<()> {
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| KilnError::config(e.to_string()))?;
    let a = one.install(|| generate(RULES, 150_000, 7))?;
    let b = generate(RULES, 150_000, 7)?;
    assert_eq!(concat(&a), concat(&b));
    let c = generate(RULES, 150_000, 8)?;
    assert_ne!(concat(&a), concat(&c));
    Ok(())
}

#[test]
fn invalid_rules_name_the_rule() {
    let cases = [
        (RULES.replace("{ eq: [state, indoor] }\n        gen: { normal", "{ eq: [stat, indoor] }\n        gen: { normal"), "rule for column 'rsrp': condition refers to unknown column 'stat'"),
        (RULES.replace("weights: [0.5, 0.3, 0.2]", "weights: [0.5, 0.3, 0.3]"), "rule for column 'network': categorical weights sum to 1.1"),
        (RULES.replace("rate: 0.5, max: 30", "rate: 0.5, min: 40, max: 30"), "rule for column 'speed': min 40 > max 30"),
        (RULES.replace("sql: \"label * 2\"", "sql: \"label * 2\"\n  - name: a\n    type: int64\n    sql: \"b + 1\"\n  - name: b\n    type: int64\n    sql: \"a + 1\""), "sql columns form a cycle: a -> b"),
    ];
    for (text, expected) in cases {
        let err = Rules::from_yaml(&text, "r.yaml")
            .and_then(|r| Generator::new(r, 1, 10).map(|_| ()))
            .expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "expected '{expected}' in: {err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}

const ENHANCE: &str = r#"
entity: { column: device_id, mean_rows: 1 }
latent:
  - { name: mood, states: [calm, busy], weights: [0.5, 0.5], mean_run: [30, 30], keep: true }
columns:
  - name: noise
    when:
      - if: { eq: [state, indoor] }
        gen: { normal: { mean: 100, std: 1 } }
    gen: { normal: { mean: -100, std: 1 } }
  - name: tag
    gen: { template: { pattern: "d{entity}-{upper:3}" } }
  - name: rsrp_plus
    type: float64
    sql: "rsrp + noise"
"#;

fn enhance_all(rules: &str, input: &[RecordBatch], seed: u64) -> Result<RecordBatch> {
    let g = Generator::enhance(
        Rules::parse(rules, "enhance.yaml")?,
        seed,
        input[0].schema().as_ref(),
    )?;
    let mut first = 0;
    let mut out = Vec::new();
    for b in input {
        out.push(g.enhance_batch(b, first)?);
        first += b.num_rows();
    }
    Ok(concat(&out))
}

#[test]
fn enhance_mode_adds_columns_that_follow_the_input() -> Result<()> {
    let input = generate(RULES, 60_000, 3)?;
    let base = concat(&input);
    let out = enhance_all(ENHANCE, &input, 9)?;
    assert_eq!(out.num_rows(), base.num_rows());
    // Input columns come first and are unchanged.
    for (i, f) in base.schema().fields().iter().enumerate() {
        assert_eq!(out.schema().field(i).name(), f.name());
        assert_eq!(out.column(i), base.column(i), "input column {}", f.name());
    }
    for c in ["mood", "noise", "tag", "rsrp_plus"] {
        assert!(out.schema().index_of(c).is_ok(), "{c} missing");
    }
    // The condition on an input column holds on every row.
    let state = out
        .column_by_name("state")
        .expect("state")
        .as_string::<i32>();
    let noise = out
        .column_by_name("noise")
        .expect("noise")
        .as_primitive::<Float64Type>();
    for r in 0..out.num_rows() {
        let indoor = state.value(r) == "indoor";
        assert_eq!(noise.value(r) > 0.0, indoor, "row {r}");
    }
    // Templates see the input's entity; sql sees input and new columns.
    let device = out
        .column_by_name("device_id")
        .expect("id")
        .as_primitive::<Int64Type>();
    let tag = out.column_by_name("tag").expect("tag").as_string::<i32>();
    assert!(tag.value(0).starts_with(&format!("d{}-", device.value(0))));
    let rsrp = out
        .column_by_name("rsrp")
        .expect("rsrp")
        .as_primitive::<Float64Type>();
    let plus = out
        .column_by_name("rsrp_plus")
        .expect("plus")
        .as_primitive::<Float64Type>();
    for r in 0..out.num_rows() {
        assert_eq!(plus.is_null(r), rsrp.is_null(r));
        if !rsrp.is_null(r) {
            assert_eq!(plus.value(r), rsrp.value(r) + noise.value(r));
        }
    }
    // The latent state keeps its runs within each device.
    let mood = out.column_by_name("mood").expect("mood").as_string::<i32>();
    let changes = (1..out.num_rows())
        .filter(|r| device.value(*r) == device.value(r - 1) && mood.value(*r) != mood.value(r - 1))
        .count();
    assert!(
        changes > 0 && changes < out.num_rows() / 10,
        "{changes} changes"
    );
    // Deterministic for a seed, different for another.
    assert_eq!(out, enhance_all(ENHANCE, &input, 9)?);
    assert_ne!(out, enhance_all(ENHANCE, &input, 10)?);
    Ok(())
}

#[test]
fn enhance_mode_rejects_clashing_or_missing_columns() -> Result<()> {
    let input = generate(RULES, 1_000, 3)?;
    let schema = input[0].schema();
    let cases = [
        (
            ENHANCE
                .replace("name: noise", "name: rsrp")
                .replace("rsrp + noise", "rsrp"),
            "rule for column 'rsrp': the input already has this column",
        ),
        (
            ENHANCE.replace("column: device_id", "column: phone_id"),
            "entity column 'phone_id' is not a column of the input",
        ),
        (
            ENHANCE.replace("eq: [state, indoor]", "eq: [stat, indoor]"),
            "condition refers to unknown column 'stat'",
        ),
    ];
    for (text, expected) in cases {
        let err = Rules::parse(&text, "enhance.yaml")
            .and_then(|r| Generator::enhance(r, 1, schema.as_ref()).map(|_| ()))
            .expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "expected '{expected}' in: {err}"
        );
    }
    Ok(())
}

#[test]
fn packed_bits_match_arrow() {
    let bits: Vec<bool> = (0..1_000).map(|i| i % 3 == 0 || i % 7 == 1).collect();
    assert_eq!(pack_bits(&bits), BooleanBuffer::from(bits.as_slice()));
    assert_eq!(pack_bits(&[]).len(), 0);
}

/// Encodings and statistics of each column chunk of the first file in `dir`.
fn column_layouts(dir: &std::path::Path) -> std::collections::HashMap<String, (Vec<String>, bool)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(dir.join("part-00000.parquet")).expect("output file");
    let reader = SerializedFileReader::new(file).expect("parquet");
    let group = reader.metadata().row_group(0);
    group
        .columns()
        .iter()
        .map(|c| {
            let encodings = c.encodings().map(|e| format!("{e:?}")).collect();
            let has_stats = c.statistics().is_some_and(|s| s.min_bytes_opt().is_some());
            (c.column_path().string(), (encodings, has_stats))
        })
        .collect()
}

#[tokio::test]
async fn generated_parquet_layout_follows_the_rules() -> Result<()> {
    let rules = r#"
columns:
  - name: sample_id
    gen: { unique_id: { start: 1 } }
  - name: cell_id
    gen: { int_range: { min: 1000, max: 900000 } }
  - name: lat
    gen: { walk: { start: 52.5, step_std: 0.001 } }
  - name: rsrp
    gen: { normal: { mean: -100, std: 8, round: 1 } }
  - name: network
    gen: { categorical: { values: [LTE, NR, GSM], weights: [0.5, 0.3, 0.2] } }
"#;
    let dir = std::env::temp_dir().join(format!("kiln-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = url::Url::from_directory_path(&dir).expect("absolute path");
    let session = kiln_engine::KilnSession::connect(
        &kiln_engine::Master::Local { partitions: 1 },
        &kiln_engine::session::KilnExtensions::default(),
    )
    .await?;
    let generator = Arc::new(Generator::new(
        Rules::from_yaml(rules, "layout.yaml")?,
        1,
        50_000,
    )?);
    // A caller's layout wins over the generator's choice.
    let mut options = kiln_engine::io::ParquetWriteOptions::default();
    options.columns.insert(
        "rsrp".into(),
        ColumnLayout {
            encoding: Some(ColumnEncoding::Plain),
            statistics: true,
        },
    );
    write_generated(&session, generator, &url, FileFormat::Parquet, &options).await?;
    let layouts = column_layouts(&dir);
    let uses = |column: &str, encoding: &str| layouts[column].0.iter().any(|e| e == encoding);
    assert!(uses("sample_id", "DELTA_BINARY_PACKED"), "{layouts:?}");
    assert!(uses("cell_id", "DELTA_BINARY_PACKED"), "{layouts:?}");
    assert!(
        uses("lat", "PLAIN") && !uses("lat", "RLE_DICTIONARY"),
        "{layouts:?}"
    );
    assert!(!uses("rsrp", "RLE_DICTIONARY"), "{layouts:?}");
    assert!(
        uses("network", "RLE_DICTIONARY") && !layouts["network"].1,
        "{layouts:?}"
    );
    assert!(layouts["sample_id"].1 && layouts["rsrp"].1, "{layouts:?}");

    // Layouts naming an unknown column, or delta on floats, are config errors.
    for (column, encoding, expected) in [
        ("rsrpp", ColumnEncoding::Plain, "did you mean 'rsrp'?"),
        (
            "lat",
            ColumnEncoding::Delta,
            "delta encoding needs an integer or timestamp column",
        ),
    ] {
        let mut options = kiln_engine::io::ParquetWriteOptions::default();
        options.columns.insert(
            column.into(),
            ColumnLayout {
                encoding: Some(encoding),
                statistics: true,
            },
        );
        let generator = Arc::new(Generator::new(
            Rules::from_yaml(rules, "layout.yaml")?,
            1,
            1_000,
        )?);
        let err = write_generated(&session, generator, &url, FileFormat::Parquet, &options)
            .await
            .expect_err("bad layout")
            .to_string();
        assert!(err.contains(column) && err.contains(expected), "{err}");
    }
    // The failed writes left the first output in place.
    assert!(dir.join("part-00000.parquet").exists());

    // Partitioned by a category: its generated layout does not apply, since
    // the column is a directory name, not a file column.
    let options = kiln_engine::io::ParquetWriteOptions {
        partition_by: vec!["network".into()],
        ..Default::default()
    };
    let generator = Arc::new(Generator::new(
        Rules::from_yaml(rules, "layout.yaml")?,
        1,
        5_000,
    )?);
    write_generated(&session, generator, &url, FileFormat::Parquet, &options).await?;
    assert!(dir.join("network=LTE/part-00000.parquet").is_file());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
