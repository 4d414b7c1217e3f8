//! A mergeable pass over a table, run as a DataFusion aggregate: each
//! partition folds its rows into a [`TablePass::State`], the states are
//! merged, and the driver gets the one merged state. Locally DataFusion runs
//! the partitions on its threads; on a Ballista cluster the executors do,
//! and a lost executor's partitions are run again. A pass whose merge is
//! exact (integer counts, bottom-k samples) gives the same state whatever
//! the partitioning.
//!
//! The pass's configuration travels in the plan as a CBOR literal in a
//! dictionary (one copy per batch, not per row; [`config_arg`], which
//! kiln's scalar UDFs with a configuration use too); the states travel as
//! CBOR.

use crate::error::{KilnError, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::{Expr, ident, lit};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// One kind of pass: its configuration, its state and how rows fold in.
pub trait TablePass: Send + Sync + 'static {
    /// The aggregate's name, registered on every kiln process.
    const NAME: &'static str;
    /// What every partition needs to know.
    type Config: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The summary of some rows.
    type State: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The state of no rows.
    fn start(config: &Self::Config) -> Self::State;
    /// Folds one batch in: `columns` are the pass's columns, in order.
    fn update(config: &Self::Config, state: &mut Self::State, columns: &[ArrayRef]) -> Result<()>;
    /// Folds another partition's state in.
    fn merge(config: &Self::Config, state: &mut Self::State, other: Self::State) -> Result<()>;
    /// Makes the state ready to send (e.g. trims a sample to its size).
    fn finish(_config: &Self::Config, _state: &mut Self::State) {}
    /// Approximate bytes the state holds.
    fn size(_state: &Self::State) -> usize {
        0
    }
}

/// Called with the rows of each batch folded in this process.
pub type RowsSeen = Arc<dyn Fn(u64) + Send + Sync>;

/// The aggregate `P::NAME(config, column, …)`.
pub struct PassUdaf<P> {
    signature: Signature,
    /// Only in the driver's own instance (local runs); executors have none.
    progress: Option<RowsSeen>,
    pass: PhantomData<fn() -> P>,
}

impl<P: TablePass> PassUdaf<P> {
    /// The aggregate as registered on every process.
    pub fn udaf() -> AggregateUDF {
        Self::with_progress(None)
    }

    fn with_progress(progress: Option<RowsSeen>) -> AggregateUDF {
        AggregateUDF::new_from_impl(PassUdaf::<P> {
            signature: Signature::variadic_any(Volatility::Immutable),
            progress,
            pass: PhantomData,
        })
    }
}

impl<P> std::fmt::Debug for PassUdaf<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassUdaf")
            .field("pass", &std::any::type_name::<P>())
            .finish()
    }
}

impl<P> PartialEq for PassUdaf<P> {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl<P> Eq for PassUdaf<P> {}

impl<P> std::hash::Hash for PassUdaf<P> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::any::type_name::<P>().hash(state);
    }
}

fn external(e: KilnError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn encode<T: Serialize>(value: &T) -> datafusion::common::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes)
        .map_err(|e| external(KilnError::internal("encoding CBOR", e)))?;
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> datafusion::common::Result<T> {
    ciborium::from_reader(bytes).map_err(|e| external(KilnError::internal("decoding CBOR", e)))
}

impl<P: TablePass> AggregateUDFImpl for PassUdaf<P> {
    fn name(&self) -> &str {
        P::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Binary)
    }
    fn state_fields(&self, args: StateFieldsArgs<'_>) -> datafusion::common::Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[state]", args.name),
            DataType::Binary,
            true,
        ))])
    }
    fn accumulator(
        &self,
        args: AccumulatorArgs<'_>,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        let config: P::Config = args
            .exprs
            .first()
            .and_then(|e| e.downcast_ref::<Literal>())
            .ok_or_else(|| {
                DataFusionError::Plan(format!("{} takes its configuration first", P::NAME))
            })
            .and_then(|l| config_of(l.value()))?;
        let state = P::start(&config);
        Ok(Box::new(PassAccumulator::<P> {
            config,
            state,
            progress: self.progress.clone(),
        }))
    }
}

struct PassAccumulator<P: TablePass> {
    config: P::Config,
    state: P::State,
    progress: Option<RowsSeen>,
}

impl<P: TablePass> std::fmt::Debug for PassAccumulator<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassAccumulator")
            .field("pass", &P::NAME)
            .finish()
    }
}

impl<P: TablePass> Accumulator for PassAccumulator<P> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        let Some((first, columns)) = values.split_first() else {
            return Ok(());
        };
        P::update(&self.config, &mut self.state, columns).map_err(external)?;
        if let Some(progress) = &self.progress {
            progress(first.len() as u64);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        let Some(states) = states.first().and_then(|a| a.as_binary_opt::<i32>()) else {
            return Err(DataFusionError::Internal(format!(
                "{}: the state column is not Binary",
                P::NAME
            )));
        };
        for r in 0..states.len() {
            if states.is_valid(r) {
                let other: P::State = decode(states.value(r))?;
                P::merge(&self.config, &mut self.state, other).map_err(external)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        P::finish(&self.config, &mut self.state);
        Ok(ScalarValue::Binary(Some(encode(&self.state)?)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + P::size(&self.state)
    }
}

/// `config` as a plan literal: CBOR bytes in a one-value dictionary, so a
/// batch holds one copy of it however many rows it has, and floats (NaN
/// included) arrive exactly.
pub fn config_arg<T: Serialize>(config: &T) -> Result<Expr> {
    let bytes = encode(config).map_err(|e| KilnError::internal("encoding a configuration", e))?;
    Ok(lit(ScalarValue::Dictionary(
        Box::new(DataType::Int32),
        Box::new(ScalarValue::Binary(Some(bytes))),
    )))
}

/// The configuration in a literal made by [`config_arg`].
pub fn config_of<T: DeserializeOwned>(value: &ScalarValue) -> datafusion::common::Result<T> {
    let inner = match value {
        ScalarValue::Dictionary(_, inner) => inner.as_ref(),
        v => v,
    };
    match inner {
        ScalarValue::Binary(Some(bytes))
        | ScalarValue::LargeBinary(Some(bytes))
        | ScalarValue::BinaryView(Some(bytes)) => decode(bytes),
        v => Err(DataFusionError::Plan(format!(
            "a kiln configuration literal is binary, not {}",
            v.data_type()
        ))),
    }
}

/// Runs pass `P` over `columns` of `df` and returns the merged state;
/// `progress` hears of the rows folded in this process (all of them
/// locally, none on a cluster).
pub async fn run<P: TablePass>(
    df: DataFrame,
    config: &P::Config,
    columns: &[&str],
    progress: Option<RowsSeen>,
) -> Result<P::State> {
    let config_arg = config_arg(config)?;
    let args = std::iter::once(config_arg)
        .chain(columns.iter().map(|c| ident(*c)))
        .collect();
    let what = format!("the pass {}", P::NAME);
    let batches = df
        .aggregate(
            vec![],
            vec![
                PassUdaf::<P>::with_progress(progress)
                    .call(args)
                    .alias("state"),
            ],
        )
        .map_err(|e| KilnError::execution(&what, e))?
        .collect()
        .await
        .map_err(|e| KilnError::execution(&what, e))?;
    let bytes = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column(0).as_binary_opt::<i32>())
        .filter(|a| a.is_valid(0))
        .map(|a| a.value(0).to_vec())
        .ok_or_else(|| KilnError::internal(&what, "no state came back"))?;
    decode(&bytes).map_err(|e| KilnError::execution(&what, e))
}
