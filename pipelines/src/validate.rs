//! `kiln validate`: everything that can be checked without running. The
//! config parses strictly, every task binds to its class, the graph has no
//! unknown dependency or cycle, no two tasks write one place; and every
//! input is written by an upstream task or already exists.

use crate::config::LoadedConfig;
use crate::runner::{Plan, plan};
use kiln_engine::storage::{Lake, local_path};
use kiln_engine::{KilnError, Result};
use std::collections::HashSet;

/// What validation found, short of an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    pub tasks: usize,
    pub warnings: Vec<String>,
}

/// Validates a parsed config; errors are configuration errors.
pub fn validate(loaded: &LoadedConfig) -> Result<Validation> {
    let plan = plan(loaded)?;
    let lake = Lake::new(&loaded.config.storage.root)?;
    let names: Vec<&str> = loaded
        .config
        .processing_tasks
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let outputs: Vec<Vec<String>> = plan
        .tasks
        .iter()
        .map(|t| t.outputs().iter().map(|o| normalize(o)).collect())
        .collect();
    // Two tasks writing one place would overwrite each other.
    for (i, a) in outputs.iter().enumerate() {
        for (j, b) in outputs.iter().enumerate().skip(i + 1) {
            if let Some(path) = a.iter().find(|p| b.contains(p)) {
                return Err(KilnError::config_fix(
                    format!(
                        "{}: tasks '{}' and '{}' both write {path}",
                        loaded.locate(names[j], "name"),
                        names[i],
                        names[j]
                    ),
                    "give each task its own output path",
                ));
            }
        }
    }
    let mut warnings = Vec::new();
    for &i in &plan.graph.order {
        let upstream = upstream_of(&plan, i);
        for input in plan.tasks[i].inputs() {
            if input.starts_with("task:") {
                continue;
            }
            let path = normalize(&input);
            let writers: Vec<usize> = (0..outputs.len())
                .filter(|&w| w != i && outputs[w].iter().any(|o| overlaps(o, &path)))
                .collect();
            if let Some(&w) = writers.iter().find(|w| !upstream.contains(w)) {
                warnings.push(format!(
                    "task '{}' reads {input}, which task '{}' writes, but does not depend on it; add depends_on: [{}]",
                    names[i], names[w], names[w]
                ));
            }
            if writers.is_empty() && !input.contains(['*', '?', '[']) {
                let url = lake.resolve(&input)?;
                if local_path(&url).is_some_and(|p| !p.exists()) {
                    warnings.push(format!(
                        "task '{}': input {url} does not exist and no task writes it",
                        names[i]
                    ));
                }
            }
        }
    }
    Ok(Validation {
        tasks: plan.graph.order.len(),
        warnings,
    })
}

fn normalize(path: &str) -> String {
    path.trim()
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_string()
}

/// One path is the other or contains it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

/// Every task `i` depends on, directly or not.
fn upstream_of(plan: &Plan, i: usize) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = plan.graph.deps[i].clone();
    while let Some(d) = stack.pop() {
        if seen.insert(d) {
            stack.extend(plan.graph.deps[d].iter().copied());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tasks: &str) -> LoadedConfig {
        let text = format!(
            "name: v\nstorage: {{root: file:///nonexistent/lake}}\nprocessing_tasks:\n{tasks}"
        );
        LoadedConfig::from_text(&text, "v.yaml").expect("config parses")
    }

    const GENERATE: &str = "  - {name: gen, classname: ShellCommand, initialization_parameters: {command: [\"true\"]}}\n";

    #[test]
    fn outputs_feed_inputs_and_collisions_are_errors() -> Result<()> {
        let extract = |name: &str, deps: &str, input: &str, out: &str| {
            format!(
                "  - {{name: {name}, classname: ExtractorTraining, depends_on: [{deps}], initialization_parameters: {{path_raw_tables: {input}}}, transformation_parameters: {{path_df_extract: {out}}}}}\n"
            )
        };
        // b reads what a writes and depends on it: no warning about a's output.
        let ok = config(&format!(
            "{GENERATE}{}{}",
            extract("a", "gen", "raw/", "ext/a/"),
            extract("b", "a", "ext/a", "ext/b/")
        ));
        let v = validate(&ok)?;
        assert_eq!(v.tasks, 3);
        assert!(v.warnings.iter().all(|w| !w.contains("ext/a")), "{v:?}");
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("raw/") && w.contains("no task writes it")),
            "{v:?}"
        );
        // Without depends_on the order is not guaranteed: a warning says so.
        let racy = config(&format!(
            "{}{}",
            extract("a", "", "raw/", "ext/a/"),
            extract("b", "", "ext/a/part", "ext/b/")
        ));
        let v = validate(&racy)?;
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("does not depend on it")),
            "{v:?}"
        );
        // Two writers of one place are an error.
        let clash = config(&format!(
            "{}{}",
            extract("a", "", "raw/", "ext/same/"),
            extract("b", "", "raw/", "ext/same")
        ));
        let err = validate(&clash).expect_err("clash").to_string();
        assert!(err.contains("both write ext/same"), "{err}");
        Ok(())
    }

    #[test]
    fn extractor_prediction_takes_a_task_level_format() -> Result<()> {
        let join = |format: &str| {
            config(&format!(
                "  - name: x\n    classname: ExtractorPrediction\n    initialization_parameters:\n      {format}\n      tables:\n        - {{name: a, path: a/}}\n        - {{name: b, path: b/, format: parquet, join: {{on: [id]}}}}\n    transformation_parameters: {{path_df_extract: out/}}\n"
            ))
        };
        assert_eq!(validate(&join("format: csv"))?.tasks, 1);
        let err = validate(&join("format: xlsx"))
            .expect_err("format")
            .to_string();
        assert!(
            err.contains("unknown variant `xlsx`") && err.contains("csv"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn join_passes_need_a_key_every_join_uses() -> Result<()> {
        let join = |passes: &str, c_key: &str| {
            config(&format!(
                "  - name: x\n    classname: ExtractorPrediction\n    initialization_parameters:\n      join_passes: {passes}\n      tables:\n        - {{name: a, path: a/}}\n        - {{name: b, path: b/, join: {{on: [id, day]}}}}\n        - {{name: c, path: c/, join: {{on: [{c_key}]}}}}\n    transformation_parameters: {{path_df_extract: out/}}\n"
            ))
        };
        assert_eq!(validate(&join("4", "id"))?.tasks, 1);
        // One pass needs no common key.
        assert_eq!(validate(&join("1", "day"))?.tasks, 1);
        let err = validate(&join("4", "day")).expect_err("key").to_string();
        assert!(
            err.contains("join_passes")
                && err.contains("'id'")
                && err.contains("table 'c' does not join on it"),
            "{err}"
        );
        let err = validate(&join("0", "id")).expect_err("zero").to_string();
        assert!(err.contains("join_passes is 0"), "{err}");
        Ok(())
    }

    #[test]
    fn feature_passes_need_the_key_every_window_partitions_by() -> Result<()> {
        let features = |passes: &str, key: &str| {
            config(&format!(
                "  - name: f\n    classname: FeaturePipeline\n    initialization_parameters:\n      input: in/\n      {passes}{key}\n      stages:\n        - {{classname: LagCalculator, params: {{inputCols: [x], partitionCol: device, orderCol: ts}}}}\n        - {{classname: StringIndexer, params: {{inputCols: [c], outputCols: [c_idx]}}}}\n    transformation_parameters: {{mode: fit_transform, path_pipeline_model: m/, path_df_features: out/}}\n"
            ))
        };
        assert_eq!(
            validate(&features("passes: 4", "\n      pass_key: device"))?.tasks,
            1
        );
        // One pass (the default) needs no key.
        assert_eq!(validate(&features("", ""))?.tasks, 1);
        let err = validate(&features("passes: 4", "\n      pass_key: user"))
            .expect_err("another key")
            .to_string();
        assert!(
            err.contains("passes split on 'user', but a window stage partitions by 'device'")
                && err.contains("set pass_key: device"),
            "{err}"
        );
        let err = validate(&features("passes: 4", ""))
            .expect_err("no key")
            .to_string();
        assert!(err.contains("passes needs pass_key"), "{err}");
        let err = validate(&features("passes: 0", ""))
            .expect_err("zero")
            .to_string();
        assert!(err.contains("passes is 0"), "{err}");
        Ok(())
    }
}
