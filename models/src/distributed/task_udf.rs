//! One UDF shape for kiln's work on executors: `name(task)` takes a task
//! as JSON text (`Utf8`), runs it where Ballista placed the row, and returns
//! its result as bytes (`Binary`). [`FitTask`](super::fit_udf::FitTask) is
//! `kiln_fit`, [`HistogramTask`](super::histogram_udf::HistogramTask) is
//! `kiln_histograms`.
//!
//! Volatile, so no optimizer folds a call into a constant on the client;
//! the work runs off the executor's runtime threads (heartbeats and task
//! polling share them).

use super::loaded::off_runtime;
use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// Work an executor runs for one row.
pub trait RemoteTask: DeserializeOwned + 'static {
    /// The UDF's name.
    const NAME: &'static str;
    fn run(&self) -> kiln_engine::Result<Vec<u8>>;
}

/// The UDF running tasks of type `T`.
pub struct TaskUdf<T> {
    signature: Signature,
    task: PhantomData<fn() -> T>,
}

impl<T: RemoteTask> TaskUdf<T> {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(TaskUdf::<T> {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Volatile),
            task: PhantomData,
        })
    }
}

impl<T> std::fmt::Debug for TaskUdf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskUdf")
            .field("task", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> PartialEq for TaskUdf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl<T> Eq for TaskUdf<T> {}

impl<T> std::hash::Hash for TaskUdf<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::any::type_name::<T>().hash(state);
    }
}

impl<T: RemoteTask> ScalarUDFImpl for TaskUdf<T> {
    fn name(&self) -> &str {
        T::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tasks = args.args[0].to_array(args.number_rows)?;
        let tasks = tasks
            .as_string_opt::<i32>()
            .ok_or_else(|| DataFusionError::Execution(format!("{} takes a Utf8 task", T::NAME)))?;
        let mut out = BinaryBuilder::new();
        for i in 0..tasks.len() {
            if tasks.is_null(i) {
                out.append_null();
                continue;
            }
            let task: T = serde_json::from_str(tasks.value(i))
                .map_err(|e| DataFusionError::Execution(format!("{} task: {e}", T::NAME)))?;
            let bytes = off_runtime(|| task.run())
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            out.append_value(bytes);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}
