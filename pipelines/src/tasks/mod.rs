//! Task classes: each `classname` binds its typed parameters and runs
//! against a session and the lake.

mod command;
mod extract;
mod features;
mod generate;
mod monitor;
mod passes;
mod predict;
mod synthesis;
mod train;

use crate::config::{LoadedConfig, TaskConfig, suggest};
use crate::task::Task;
use kiln_engine::{KilnError, Result};

pub use command::ShellCommand;
pub use extract::{ExtractorPrediction, ExtractorTraining, SaveMode};
pub use features::{FeaturePipeline, load_pipeline_model};
pub use generate::RuleBasedGenerator;
pub use predict::{BatchPrediction, load_model};
pub use synthesis::{Fusion, ReproductionSampling, ReproductionTraining, SyntheticEvaluation};
pub use train::ModelTraining;

/// Declares the task classes once: each `Classname => Type(Init, Output)`
/// line becomes a variant of [`TaskClass`], its binder and its parameter
/// blocks in `kiln schema`. Adding a task class is one module and one line
/// here.
macro_rules! task_classes {
    ($($class:ident => $ty:ty [$init:ty, $output:ty]),* $(,)?) => {
        /// Every task class, by its `classname`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum TaskClass {
            $($class),*
        }

        impl TaskClass {
            pub const ALL: &[TaskClass] = &[$(TaskClass::$class),*];

            /// The `classname` in configs.
            pub fn name(self) -> &'static str {
                match self {
                    $(TaskClass::$class => stringify!($class)),*
                }
            }

            fn bind(self, loaded: &LoadedConfig, task: &TaskConfig) -> Result<Box<dyn Task>> {
                match self {
                    $(TaskClass::$class => Ok(Box::new(<$ty>::bind(loaded, task)?))),*
                }
            }

            /// The JSON Schemas of the class's `initialization_parameters`
            /// and `transformation_parameters`.
            pub fn parameter_schemas(
                self,
                generator: &mut schemars::SchemaGenerator,
            ) -> (schemars::Schema, schemars::Schema) {
                match self {
                    $(TaskClass::$class => (
                        generator.subschema_for::<$init>(),
                        generator.subschema_for::<$output>(),
                    )),*
                }
            }
        }
    };
}

task_classes! {
    ExtractorTraining => ExtractorTraining [extract::TrainingInit, extract::ExtractOutput],
    ExtractorPrediction => ExtractorPrediction [extract::PredictionInit, extract::ExtractOutput],
    RuleBasedGenerator => RuleBasedGenerator [generate::Init, generate::Output],
    FeaturePipeline => FeaturePipeline [features::Init, features::Output],
    ModelTraining => ModelTraining [train::Init, train::Output],
    BatchPrediction => BatchPrediction [predict::Init, predict::Output],
    ShellCommand => ShellCommand [command::Init, NoParams],
    ReproductionTraining => ReproductionTraining [synthesis::TrainingInit, synthesis::TrainingOutput],
    ReproductionSampling => ReproductionSampling [synthesis::SamplingInit, synthesis::SamplingOutput],
    SyntheticEvaluation => SyntheticEvaluation [synthesis::EvaluationInit, synthesis::EvaluationOutput],
    Fusion => Fusion [synthesis::FusionInit, synthesis::FusionOutput],
}

/// A parameter block that takes no keys.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Every classname, in declaration order.
pub fn classnames() -> Vec<&'static str> {
    TaskClass::ALL.iter().map(|c| c.name()).collect()
}

/// Binds a task config to its class and typed parameters.
pub fn bind(loaded: &LoadedConfig, task: &TaskConfig) -> Result<Box<dyn Task>> {
    match TaskClass::ALL.iter().find(|c| c.name() == task.classname) {
        Some(class) => class.bind(loaded, task),
        None => {
            let names = classnames();
            Err(KilnError::Config {
                message: format!(
                    "{}: unknown classname '{}'",
                    loaded.at(task, "classname"),
                    task.classname
                ),
                fix: Some(match suggest(&task.classname, &names) {
                    Some(s) => format!("did you mean {s}?"),
                    None => format!("use one of: {}", names.join(", ")),
                }),
            })
        }
    }
}
