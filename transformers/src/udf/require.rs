//! `kiln_require(value, ok, message [, shown])`: returns `value`, or fails the
//! query with `message` (where `{}` becomes the first offending row's `shown`,
//! by default `value`) when `ok` is false on any row. Lets lazy plans raise Spark's `handleInvalid=error`.

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Require {
    signature: Signature,
}

impl Default for Require {
    fn default() -> Self {
        Require {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

pub fn require_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Require::default())
}

impl ScalarUDFImpl for Require {
    fn name(&self) -> &str {
        "kiln_require"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        if !(3..=4).contains(&args.args.len()) {
            return Err(DataFusionError::Plan(
                "kiln_require takes (value, ok, message [, shown])".into(),
            ));
        }
        let message = match &args.args[2] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(m))) => m.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "kiln_require: message must be a string literal".into(),
                ));
            }
        };
        let ok = args.args[1].to_array(n)?;
        let ok = ok
            .as_boolean_opt()
            .ok_or_else(|| DataFusionError::Plan("kiln_require: ok must be boolean".into()))?;
        if let Some(bad) = (0..ok.len()).find(|&i| ok.is_valid(i) && !ok.value(i)) {
            let values = args.args[args.args.len().min(4) - 1].to_array(n)?;
            let values = if args.args.len() == 4 {
                values
            } else {
                args.args[0].to_array(n)?
            };
            let opts = FormatOptions::default().with_null("NULL");
            let shown = ArrayFormatter::try_new(values.as_ref(), &opts)
                .map(|f| f.value(bad).to_string())
                .unwrap_or_default();
            return Err(DataFusionError::Execution(message.replace("{}", &shown)));
        }
        Ok(args.args[0].clone())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::*;

    #[tokio::test]
    async fn fails_with_the_first_offending_value() -> datafusion::error::Result<()> {
        let ctx = SessionContext::new();
        ctx.register_udf(super::require_udf());
        let ok = ctx
            .sql("SELECT kiln_require(x, x < 5, 'bad {}') AS y FROM (VALUES (1), (2)) t(x)")
            .await?
            .collect()
            .await?;
        assert_eq!(ok[0].num_rows(), 2);
        let err = ctx
            .sql("SELECT kiln_require(x, x < 5, 'value {} too large') FROM (VALUES (1), (7), (9)) t(x)")
            .await?
            .collect()
            .await
            .expect_err("7 is invalid");
        assert!(err.to_string().contains("value 7 too large"), "{err}");
        Ok(())
    }
}
