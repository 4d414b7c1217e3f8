//! One shape for kiln's scalar UDFs that need more than their columns:
//! `name(config, column, …)`, where `config` is a literal made by
//! [`table_pass::config_arg`](crate::table_pass::config_arg) (CBOR in a
//! dictionary, one copy per batch). The function sees the decoded
//! configuration and the batch's columns, and returns one value per row.
//! Plans that call it serialize by name, so Ballista executors run it
//! where the rows are.

use crate::error::{KilnError, Result};
use crate::table_pass::{config_arg, config_of};
use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{Expr, ident};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// A row-wise function with a configuration.
pub trait ConfigFunction: Send + Sync + 'static {
    /// The UDF's name, registered on every kiln process.
    const NAME: &'static str;
    /// What it returns per row.
    const RETURNS: DataType;
    type Config: Serialize + DeserializeOwned;
    /// One value per row of `columns` (the call's columns, in order).
    fn run(config: &Self::Config, columns: &[ArrayRef], rows: usize) -> Result<ArrayRef>;
}

/// The scalar UDF of a [`ConfigFunction`].
pub struct ConfigUdf<F> {
    signature: Signature,
    function: PhantomData<fn() -> F>,
}

impl<F: ConfigFunction> ConfigUdf<F> {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(ConfigUdf::<F> {
            signature: Signature::variadic_any(Volatility::Immutable),
            function: PhantomData,
        })
    }

    /// `F::NAME(config, columns…)`.
    pub fn call(config: &F::Config, columns: &[&str]) -> Result<Expr> {
        let args = std::iter::once(config_arg(config)?)
            .chain(columns.iter().map(|c| ident(*c)))
            .collect();
        Ok(Self::udf().call(args))
    }
}

impl<F> std::fmt::Debug for ConfigUdf<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigUdf")
            .field("function", &std::any::type_name::<F>())
            .finish()
    }
}

impl<F> PartialEq for ConfigUdf<F> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl<F> Eq for ConfigUdf<F> {}

impl<F> std::hash::Hash for ConfigUdf<F> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::any::type_name::<F>().hash(state);
    }
}

impl<F: ConfigFunction> ScalarUDFImpl for ConfigUdf<F> {
    fn name(&self) -> &str {
        F::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(F::RETURNS)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some((first, columns)) = args.args.split_first() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes its configuration first",
                F::NAME
            )));
        };
        let config: F::Config = match first {
            ColumnarValue::Scalar(v) => config_of(v)?,
            ColumnarValue::Array(a) => config_of(&ScalarValue::try_from_array(a, 0)?)?,
        };
        let columns = columns
            .iter()
            .map(|c| c.to_array(rows))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let out = F::run(&config, &columns, rows)
            .map_err(|e: KilnError| DataFusionError::External(Box::new(e)))?;
        Ok(ColumnarValue::Array(out))
    }
}
