//! Splitting a query into passes over ranges of an integer key, so that
//! each pass holds a fraction of the rows (see `write_parquet_passes`).

use crate::error::{KilnError, Result};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{Expr, ident, lit};

/// One filter per pass splitting the integer `key`'s values (taken from
/// `first`'s minimum and maximum) into `n` ranges; the first and last
/// ranges are open, and the last also holds null keys, so every row is in
/// exactly one pass whatever the other tables hold. `None` is the one pass
/// of everything (`n` ≤ 1, or no keys); apply a pass with [`in_pass`].
pub async fn key_range_filters(
    first: &DataFrame,
    key: &str,
    n: usize,
) -> Result<Vec<Option<Expr>>> {
    if n <= 1 {
        return Ok(vec![None]);
    }
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::functions_aggregate::expr_fn::{max, min};
    use datafusion::prelude::cast;
    let field = first
        .schema()
        .field_with_unqualified_name(key)
        .map_err(|_| {
            KilnError::config(format!(
                "passes: no key column '{key}' in the (first) input"
            ))
        })?;
    if !field.data_type().is_integer() {
        return Err(KilnError::config_fix(
            format!(
                "passes split on ranges of '{key}', which is {}, not an integer",
                field.data_type()
            ),
            "use one pass (or an integer key)",
        ));
    }
    let err = |e| KilnError::execution(format!("finding the range of '{key}'"), e);
    let batches = first
        .clone()
        .aggregate(
            vec![],
            vec![
                min(cast(ident(key), DataType::Int64)).alias("lo"),
                max(cast(ident(key), DataType::Int64)).alias("hi"),
            ],
        )
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let bound = |c: usize| {
        batches.first().and_then(|b| {
            b.column(c)
                .as_any()
                .downcast_ref::<Int64Array>()
                .filter(|a| a.len() == 1 && a.is_valid(0))
                .map(|a| a.value(0))
        })
    };
    let (Some(lo), Some(hi)) = (bound(0), bound(1)) else {
        return Ok(vec![None]); // no keys: one pass
    };
    let span = i128::from(hi) - i128::from(lo) + 1;
    let cuts: Vec<i64> = (1..n)
        .map(|p| (i128::from(lo) + span * p as i128 / n as i128) as i64)
        .collect();
    let k = || ident(key);
    Ok((0..n)
        .map(|p| match (p.checked_sub(1).map(|i| cuts[i]), cuts.get(p)) {
            (None, Some(&to)) => Some(k().lt(lit(to))),
            (Some(from), Some(&to)) => Some(k().gt_eq(lit(from)).and(k().lt(lit(to)))),
            (Some(from), None) => Some(k().gt_eq(lit(from)).or(k().is_null())),
            (None, None) => None,
        })
        .collect())
}

/// `df` restricted to one pass of [`key_range_filters`].
pub fn in_pass(df: &DataFrame, filter: &Option<Expr>) -> Result<DataFrame> {
    match filter {
        Some(f) => df.clone().filter(f.clone()).map_err(KilnError::from),
        None => Ok(df.clone()),
    }
}

/// The window functions in `df`'s plan that are not partitioned by `key`:
/// split into passes over ranges of `key`, they would see only the rows of
/// a pass (a lag at a pass's edge would come out null). Empty when a pass
/// split gives the rows of one pass.
pub fn windows_not_partitioned_by(df: &DataFrame, key: &str) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let mut found = Vec::new();
    // The closure never fails, so neither does the walk.
    let _ = df.logical_plan().apply(|plan| {
        if let LogicalPlan::Window(window) = plan {
            for e in &window.window_expr {
                if let Expr::WindowFunction(f) = e.clone().unalias()
                    && !f
                        .params
                        .partition_by
                        .iter()
                        .any(|p| matches!(p, Expr::Column(c) if c.name == key))
                {
                    found.push(e.schema_name().to_string());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn windows_not_partitioned_by_the_key_are_named() -> Result<()> {
        let ctx = SessionContext::new();
        let rows =
            "(VALUES (1, 10, 1, 0.5), (1, 11, 2, 0.7), (2, 10, 1, 0.1)) t(device, user_id, ts, x)";
        let sql =
            |over: &str| format!("SELECT x, lag(x) OVER ({over} ORDER BY ts) AS prev FROM {rows}");
        let by_device = ctx.sql(&sql("PARTITION BY device")).await?;
        assert!(windows_not_partitioned_by(&by_device, "device").is_empty());
        let found = windows_not_partitioned_by(&by_device, "user_id");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("lag") && found[0].contains("device"),
            "{found:?}"
        );
        // A window over everything is cut by any pass split.
        let whole = ctx.sql(&sql("")).await?;
        assert_eq!(windows_not_partitioned_by(&whole, "device").len(), 1);
        let plain = ctx.sql(&format!("SELECT x FROM {rows}")).await?;
        assert!(windows_not_partitioned_by(&plain, "device").is_empty());
        Ok(())
    }
}
