//! Writing generated data: streamed from parallel generators into the
//! engine's staged, atomically committed writer.

use crate::{Generator, Rules};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use kiln_engine::io::{FileFormat, ParquetWriteOptions, WriteSummary, read_table, write_streams};
use kiln_engine::{KilnError, KilnSession, Result};
use std::sync::Arc;
use url::Url;

/// Generates into `target` (atomic commit), streaming: one file per
/// [`crate::ROWS_PER_FILE`] rows, as many files at a time as there are
/// threads, each holding at most a wave of chunks in memory. Columns the
/// caller gave no Parquet layout get the one their rule suggests.
pub async fn write_generated(
    session: &KilnSession,
    generator: Arc<Generator>,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    let schema = generator.schema();
    let options = with_generated_layouts(options, &generator);
    let permits = Arc::new(tokio::sync::Semaphore::new(
        rayon::current_num_threads().max(1),
    ));
    let mut producers = Vec::new();
    let mut streams = Vec::new();
    for range in generator.file_ranges() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let generator = Arc::clone(&generator);
        let permits = Arc::clone(&permits);
        producers.push(tokio::spawn(async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|e| KilnError::internal("waiting for a generator slot", e))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let result = generator.generate_range(range, |batch| {
                    tx.blocking_send(Ok(batch))
                        .map_err(|_| KilnError::io("generator", "the writer stopped"))
                });
                if let Err(e) = result {
                    // The writer may have stopped first; its error wins.
                    let _unsent = tx.blocking_send(Err(e));
                }
            })
            .await
            .map_err(|e| KilnError::internal("generating rows", e))
        }));
        streams.push(kiln_engine::io::receiver_stream(rx));
    }
    let summary = write_streams(session, schema, streams, target, format, &options).await;
    for p in producers {
        p.await
            .map_err(|e| KilnError::internal("generating rows", e))??;
    }
    summary
}

/// Writes `input` with the generator's columns added to `target` (enhance
/// mode; atomic commit). Input partitions are read in order, so the output
/// is deterministic for a seed.
pub async fn write_enhanced(
    session: &KilnSession,
    rules: Rules,
    seed: u64,
    input: DataFrame,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    let input_schema: Schema = input.schema().as_arrow().clone();
    let generator = Arc::new(Generator::enhance(rules, seed, &input_schema)?);
    let schema = generator.schema();
    let options = with_generated_layouts(options, &generator);
    let partitions = input
        .execute_stream_partitioned()
        .await
        .map_err(|e| KilnError::execution("reading the input to enhance", e))?;
    let batches = futures::stream::iter(partitions).flatten();
    let first_row = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stream = batches
        .map(move |batch| {
            let generator = Arc::clone(&generator);
            let batch = batch.map_err(|e| KilnError::execution("reading the input to enhance", e));
            let rows = batch.as_ref().map(|b| b.num_rows()).unwrap_or(0);
            let first = first_row.fetch_add(rows, std::sync::atomic::Ordering::SeqCst);
            tokio::task::spawn_blocking(move || generator.enhance_batch(&batch?, first))
        })
        .buffered(rayon::current_num_threads().max(2))
        .map(|joined| {
            joined
                .map_err(|e| KilnError::internal("enhancing rows", e))
                .and_then(|r| r)
        })
        .boxed();
    write_streams(session, schema, vec![stream], target, format, &options).await
}

/// Where generated rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `rows` new rows from scratch.
    Rows(usize),
    /// The rows of an existing table, with the rules' columns added.
    Enhance { input: Url, format: FileFormat },
}

/// Generates from `rules` into `target`: the one entry point of the
/// `RuleBasedGenerator` task and `kiln generate`.
pub async fn generate(
    session: &KilnSession,
    rules: Rules,
    seed: u64,
    source: &Source,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    match source {
        Source::Rows(rows) => {
            let generator = Arc::new(Generator::new(rules, seed, *rows)?);
            write_generated(session, generator, target, format, options).await
        }
        Source::Enhance {
            input,
            format: input_format,
        } => {
            let df = read_table(session, input, *input_format).await?;
            write_enhanced(session, rules, seed, df, target, format, options)
                .await
                .map_err(|e| e.context(format!("enhancing {input}")))
        }
    }
}

/// `options` with the generator's column layouts added where the caller
/// set none.
fn with_generated_layouts(
    options: &ParquetWriteOptions,
    generator: &Generator,
) -> ParquetWriteOptions {
    let mut options = options.clone();
    for (column, layout) in generator.parquet_layouts() {
        // Partition columns are directory names, not file columns.
        if !options.partition_by.contains(&column) {
            options.columns.entry(column).or_insert(layout);
        }
    }
    options
}
