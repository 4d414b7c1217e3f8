//! Hive-style partitioned directories (`column=value/`), as Spark's
//! `partitionBy` writes them: on write, rows are split by the partition
//! columns, which leave the files; on read, the columns come back from the
//! directory names.
//!
//! Null and empty values go to `column=__HIVE_DEFAULT_PARTITION__/` and read
//! back as nulls. Other values are written as displayed (`2023-06-01`,
//! `42`, `LTE`), with the object store's percent-escaping of `/` and the
//! like. On read, a partition column whose values are all integers is
//! `Int64`, any other is `Utf8`.

use crate::error::{KilnError, Result};
use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{cast, col, lit, when};
use datafusion::scalar::ScalarValue;
use object_store::ObjectStore;
use object_store::path::Path;
use std::collections::HashMap;
use std::sync::Arc;

/// The directory value of null (and empty) partition values.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Splits batches by the values of the partition columns.
#[derive(Debug)]
pub struct Partitioner {
    /// Index and name of each partition column, outermost first.
    by: Vec<(usize, String)>,
    /// Columns that stay in the files.
    keep: Vec<usize>,
    file_schema: SchemaRef,
}

impl Partitioner {
    /// Partitions rows of `schema` by `by` (empty: one unpartitioned part).
    pub fn new(schema: &SchemaRef, by: &[String]) -> Result<Partitioner> {
        let mut columns = Vec::new();
        for name in by {
            let i = schema.index_of(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                KilnError::config_fix(
                    format!("partition_by: no column '{name}' in the output"),
                    crate::suggest::closest(name, &names)
                        .map(|c| format!("did you mean '{c}'?"))
                        .unwrap_or_else(|| {
                            format!("the output's columns are: {}", names.join(", "))
                        }),
                )
            })?;
            let t = schema.field(i).data_type();
            let allowed = t.is_integer()
                || matches!(
                    t,
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Boolean
                        | DataType::Date32
                        | DataType::Date64
                );
            if !allowed {
                return Err(KilnError::config_fix(
                    format!(
                        "partition_by: column '{name}' is {t}, which makes poor directory names"
                    ),
                    "partition by an integer, string, boolean or date column (derive one, e.g. a day, first)",
                ));
            }
            if columns.iter().any(|(j, _)| *j == i) {
                return Err(KilnError::config(format!(
                    "partition_by: column '{name}' is listed twice"
                )));
            }
            columns.push((i, name.clone()));
        }
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !columns.iter().any(|(j, _)| j == i))
            .collect();
        if keep.is_empty() {
            return Err(KilnError::config_fix(
                "partition_by names every column, so the files would have none",
                "leave at least one column out of partition_by",
            ));
        }
        let file_schema = Arc::new(
            schema
                .project(&keep)
                .map_err(|e| KilnError::internal("projecting the partitioned file schema", e))?,
        );
        Ok(Partitioner {
            by: columns,
            keep,
            file_schema,
        })
    }

    /// The schema of the files (without the partition columns).
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// Splits `batch` into (directory segments, rows without the partition
    /// columns), in order of each directory's first row.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(Vec<String>, RecordBatch)>> {
        let error =
            |e: arrow::error::ArrowError| KilnError::execution("partitioning the output", e.into());
        let kept = batch.project(&self.keep).map_err(error)?;
        if self.by.is_empty() {
            return Ok(vec![(Vec::new(), kept)]);
        }
        // Group rows by the partition columns' row-format bytes: no string
        // per row, only per group.
        let columns: Vec<_> = self
            .by
            .iter()
            .map(|(i, _)| Arc::clone(batch.column(*i)))
            .collect();
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )
        .map_err(error)?;
        let keys = converter.convert_columns(&columns).map_err(error)?;
        let mut first_rows: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut index: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
        for row in 0..batch.num_rows() {
            let g = *index.entry(keys.row(row)).or_insert_with(|| {
                first_rows.push((row, Vec::new()));
                first_rows.len() - 1
            });
            first_rows[g].1.push(row as u32);
        }
        let options = FormatOptions::default();
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(error)?;
        // Null and empty values share a directory, so groups may merge.
        let mut groups: Vec<(Vec<String>, Vec<u32>)> = Vec::new();
        for (first, rows) in first_rows {
            let dirs: Vec<String> = self
                .by
                .iter()
                .zip(&columns)
                .zip(&formatters)
                .map(|(((_, name), column), f)| {
                    let value = if column.is_null(first) {
                        String::new()
                    } else {
                        f.value(first).to_string()
                    };
                    let value = if value.is_empty() {
                        NULL_PARTITION
                    } else {
                        &value
                    };
                    format!("{name}={value}")
                })
                .collect();
            match groups.iter_mut().find(|(d, _)| *d == dirs) {
                Some((_, merged)) => {
                    merged.extend(rows);
                    merged.sort_unstable();
                }
                None => groups.push((dirs, rows)),
            }
        }
        groups
            .into_iter()
            .map(|(dirs, rows)| {
                arrow::compute::take_record_batch(&kept, &UInt32Array::from(rows))
                    .map(|b| (dirs, b))
                    .map_err(error)
            })
            .collect()
    }
}

/// The hive partition columns under `dir` with their types, outermost
/// first; empty when its subdirectories are not `column=value`.
pub async fn discover(store: &Arc<dyn ObjectStore>, dir: &Path) -> Result<Vec<(String, DataType)>> {
    let mut columns = Vec::new();
    let mut level = vec![dir.clone()];
    loop {
        let mut name: Option<String> = None;
        let mut values = Vec::new();
        let mut next = Vec::new();
        for d in &level {
            let listing = store
                .list_with_delimiter(Some(d))
                .await
                .map_err(|e| KilnError::io(d, e))?;
            for p in listing.common_prefixes {
                let segment = p.filename().unwrap_or_default().to_string();
                if segment.starts_with(['.', '_']) {
                    continue;
                }
                let Some((key, value)) = segment.split_once('=') else {
                    return Ok(columns);
                };
                match &name {
                    Some(n) if n != key => {
                        return Err(KilnError::data(
                            d,
                            format!(
                                "mixed partition directories '{n}=…' and '{key}=…' at one level"
                            ),
                        ));
                    }
                    _ => name = Some(key.to_string()),
                }
                values.push(value.to_string());
                next.push(p);
            }
        }
        let Some(name) = name else {
            return Ok(columns);
        };
        let integers = values
            .iter()
            .filter(|v| *v != NULL_PARTITION)
            .all(|v| v.parse::<i64>().is_ok());
        columns.push((
            name,
            if integers {
                DataType::Int64
            } else {
                DataType::Utf8
            },
        ));
        level = next;
    }
}

/// Turns partition columns read as text into their types, with
/// [`NULL_PARTITION`] as null.
pub fn restore_types(df: DataFrame, columns: &[(String, DataType)]) -> Result<DataFrame> {
    let mut df = df;
    for (name, data_type) in columns {
        let value = when(
            col(name.as_str()).eq(lit(NULL_PARTITION)),
            lit(ScalarValue::try_from(data_type)
                .map_err(|e| KilnError::internal("typing a partition column", e))?),
        )
        .otherwise(cast(col(name.as_str()), data_type.clone()))
        .map_err(|e| KilnError::internal("typing a partition column", e))?;
        df = df
            .with_column(name, value)
            .map_err(|e| KilnError::execution(format!("reading partition column {name}"), e))?;
    }
    Ok(df)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn splits_rows_by_partition_values_in_first_seen_order() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("x", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("b"),
                    None,
                    Some("b"),
                    Some("a/x"),
                    Some(""),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            ],
        )
        .map_err(|e| KilnError::config(e.to_string()))?;
        let p = Partitioner::new(&schema, &["day".to_string()])?;
        assert_eq!(p.file_schema().fields().len(), 1);
        let parts = p.split(&batch)?;
        let seen: Vec<(String, Vec<i64>)> = parts
            .iter()
            .map(|(dirs, b)| {
                let xs = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .map(|a| a.values().to_vec());
                (dirs.join("/"), xs.unwrap_or_default())
            })
            .collect();
        let null_dir = format!("day={NULL_PARTITION}");
        assert_eq!(
            seen,
            vec![
                ("day=b".to_string(), vec![1, 3]),
                (null_dir, vec![2, 5]),
                ("day=a/x".to_string(), vec![4]),
            ]
        );
        Ok(())
    }

    #[test]
    fn rejects_unknown_float_and_all_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("rsrp", DataType::Float32, true),
        ]));
        let err = |by: &[&str]| {
            let by: Vec<String> = by.iter().map(|s| s.to_string()).collect();
            Partitioner::new(&schema, &by)
                .expect_err("invalid")
                .to_string()
        };
        assert!(err(&["dya"]).contains("did you mean 'day'?"));
        assert!(err(&["rsrp"]).contains("column 'rsrp' is Float32"));
        assert!(err(&["day", "day"]).contains("listed twice"));
        let day_only = Arc::new(Schema::new(vec![Field::new("day", DataType::Utf8, true)]));
        assert!(
            Partitioner::new(&day_only, &["day".to_string()])
                .expect_err("all columns")
                .to_string()
                .contains("leave at least one column")
        );
    }

    /// Written partitioned, read back: the same rows, partition columns
    /// with their types and nulls, and a Spark-style directory layout.
    #[tokio::test]
    async fn partitioned_output_reads_back_to_the_same_rows() -> Result<()> {
        use crate::io::{FileFormat, ParquetWriteOptions, read_table, row_checksum, write_parquet};
        let session = crate::KilnSession::connect(
            &crate::Master::Local { partitions: 2 },
            &crate::session::KilnExtensions::default(),
        )
        .await?;
        let n = 1_000i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("network", DataType::Utf8, true),
            Field::new("band", DataType::Int64, true),
        ]));
        let networks: Vec<Option<&str>> = (0..n)
            .map(|i| [Some("LTE"), Some("NR"), None, Some("5G/SA")][(i % 4) as usize])
            .collect();
        let bands: Vec<Option<i64>> = (0..n).map(|i| (i % 7 != 0).then_some(i % 3)).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
                Arc::new(StringArray::from(networks)),
                Arc::new(Int64Array::from(bands)),
            ],
        )
        .map_err(|e| KilnError::config(e.to_string()))?;
        let df = session
            .context()
            .read_batch(batch)
            .map_err(|e| KilnError::execution("test input", e))?;
        let expected = row_checksum(df.clone()).await?;
        let dir = std::env::temp_dir().join(format!("kiln-hive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = url::Url::from_directory_path(&dir).map_err(|_| KilnError::config("path"))?;
        let options = ParquetWriteOptions {
            partition_by: vec!["network".into(), "band".into()],
            ..Default::default()
        };
        let summary = write_parquet(&session, df, &url, &options).await?;
        assert_eq!(summary.rows, n as u64);
        for file in [
            "network=LTE/band=0/part-00000.parquet".to_string(),
            format!("network={NULL_PARTITION}/band={NULL_PARTITION}/part-00000.parquet"),
            "network=5G%2FSA/band=1/part-00000.parquet".to_string(),
            "_SUCCESS".to_string(),
        ] {
            assert!(dir.join(&file).is_file(), "missing {file}");
        }
        let back = read_table(&session, &url, FileFormat::Parquet).await?;
        let fields: Vec<(String, DataType, bool)> = back
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            fields
                .iter()
                .map(|f| (f.0.as_str(), f.1.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("id", DataType::Int64),
                ("network", DataType::Utf8),
                ("band", DataType::Int64)
            ]
        );
        let back = back
            .select_columns(&["id", "network", "band"])
            .map_err(|e| KilnError::execution("select", e))?;
        assert_eq!(row_checksum(back).await?, expected);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
