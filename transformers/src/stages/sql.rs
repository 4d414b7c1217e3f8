//! `SQLTransformer`: a `SELECT ... FROM __THIS__` statement as a stage.

use datafusion::catalog::view::ViewTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlParams {
    pub statement: String,
}

static NEXT_VIEW: AtomicU64 = AtomicU64::new(0);

impl SqlParams {
    pub async fn transform(&self, df: DataFrame) -> Result<DataFrame> {
        let stage = "SQLTransformer";
        if !self.statement.contains("__THIS__") {
            return Err(KilnError::config_fix(
                format!("{stage}: statement has no __THIS__: {}", self.statement),
                "write SELECT ... FROM __THIS__",
            ));
        }
        let name = format!("kiln_this_{}", NEXT_VIEW.fetch_add(1, Ordering::Relaxed));
        let (state, plan) = df.into_parts();
        let ctx = SessionContext::new_with_state(state);
        let view = ViewTable::new(plan, None);
        ctx.register_table(name.as_str(), Arc::new(view))
            .map_err(|e| KilnError::execution(stage, e))?;
        let result = ctx.sql(&self.statement.replace("__THIS__", &name)).await;
        // The view is private to this context; failing to drop it only
        // leaves a name behind.
        if let Err(e) = ctx.deregister_table(name.as_str()) {
            tracing::debug!("view {name} not dropped: {e}");
        }
        result
            .map_err(|e| KilnError::config(format!("{stage}: {e} (statement: {})", self.statement)))
    }
}

crate::stages::stateless_stage!(SqlParams);

impl crate::stages::Transform for SqlParams {
    async fn transform(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> kiln_engine::Result<datafusion::dataframe::DataFrame> {
        <SqlParams>::transform(self, df).await
    }
}
