//! A content checksum of a table that does not depend on row order.

use crate::error::{KilnError, Result};
use datafusion::dataframe::DataFrame;
use futures::StreamExt;

/// Counts rows and a content checksum that does not depend on row order:
/// the wrapping sum of a hash of every row's values.
pub async fn row_checksum(df: DataFrame) -> Result<(u64, u64)> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::fmt::Write;
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| KilnError::execution("checksumming", e))?;
    let (mut rows, mut sum) = (0u64, 0u64);
    let opts = FormatOptions::default().with_null("∅");
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| KilnError::execution("checksumming", e))?;
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| KilnError::data("checksum", e.to_string()))?;
        let mut h = crate::hash::StableHasher::new();
        let mut text = String::new();
        for r in 0..batch.num_rows() {
            h.reset();
            for f in &formatters {
                text.clear();
                write!(text, "{}", f.value(r))
                    .map_err(|e| KilnError::data("checksum", e.to_string()))?;
                h.str(&text);
            }
            sum = sum.wrapping_add(h.finish());
            rows += 1;
        }
    }
    Ok((rows, sum))
}
