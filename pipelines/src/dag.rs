//! The task graph from `depends_on`: unknown names and cycles are
//! configuration errors; the order is topological and stable.

use crate::config::{LoadedConfig, suggest};
use kiln_engine::{KilnError, Result};
use std::collections::{HashMap, HashSet};

/// Task indices in a valid execution order, with each task's dependencies.
#[derive(Debug, Clone)]
pub struct TaskGraph {
    pub order: Vec<usize>,
    pub deps: Vec<Vec<usize>>,
}

impl TaskGraph {
    pub fn build(loaded: &LoadedConfig) -> Result<Self> {
        let tasks = &loaded.config.processing_tasks;
        if tasks.is_empty() {
            return Err(KilnError::config(format!(
                "{}: processing_tasks is empty",
                loaded.file
            )));
        }
        let mut index = HashMap::new();
        for (i, t) in tasks.iter().enumerate() {
            if index.insert(t.name.as_str(), i).is_some() {
                return Err(KilnError::config(format!(
                    "{}: two tasks are named '{}'",
                    loaded.locate(&t.name, "name"),
                    t.name
                )));
            }
        }
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let mut deps = Vec::with_capacity(tasks.len());
        for t in tasks {
            let mut d = Vec::new();
            for dep in &t.depends_on {
                match index.get(dep.as_str()) {
                    Some(&j) => d.push(j),
                    None => {
                        return Err(KilnError::Config {
                            message: format!(
                                "{}: task '{}' depends on unknown task '{dep}'",
                                loaded.locate(&t.name, "depends_on"),
                                t.name
                            ),
                            fix: suggest(dep, &names).map(|s| format!("did you mean '{s}'?")),
                        });
                    }
                }
            }
            deps.push(d);
        }
        // Kahn's algorithm, taking ready tasks in file order.
        let mut done = HashSet::new();
        let mut order = Vec::new();
        while order.len() < tasks.len() {
            let next = (0..tasks.len())
                .find(|i| !done.contains(i) && deps[*i].iter().all(|d| done.contains(d)));
            match next {
                Some(i) => {
                    done.insert(i);
                    order.push(i);
                }
                None => {
                    let cycle = find_cycle(&deps, &done);
                    let path: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
                    let first = cycle.first().map(|&i| names[i]).unwrap_or_default();
                    return Err(KilnError::config_fix(
                        format!(
                            "{}: dependency cycle: {} -> {first}",
                            loaded.locate(first, "depends_on"),
                            path.join(" -> ")
                        ),
                        "remove one of the depends_on entries in the cycle",
                    ));
                }
            }
        }
        Ok(TaskGraph { order, deps })
    }

    /// All tasks downstream of `start`, `start` included.
    pub fn downstream(&self, start: usize) -> HashSet<usize> {
        let mut out = HashSet::from([start]);
        for &i in &self.order {
            if self.deps[i].iter().any(|d| out.contains(d)) {
                out.insert(i);
            }
        }
        out
    }
}

fn find_cycle(deps: &[Vec<usize>], done: &HashSet<usize>) -> Vec<usize> {
    // Walk dependencies among unfinished tasks until a task repeats.
    let Some(mut cur) = (0..deps.len()).find(|i| !done.contains(i)) else {
        return Vec::new();
    };
    let mut seen: Vec<usize> = Vec::new();
    loop {
        if let Some(pos) = seen.iter().position(|&s| s == cur) {
            let mut cycle = seen[pos..].to_vec();
            cycle.reverse();
            return cycle;
        }
        seen.push(cur);
        match deps[cur].iter().find(|d| !done.contains(d)) {
            Some(&next) => cur = next,
            None => return seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tasks: &str) -> LoadedConfig {
        let text = format!("name: p\nstorage: {{root: /tmp/l}}\nprocessing_tasks:\n{tasks}");
        LoadedConfig::from_text(&text, "p.yaml").expect("parses")
    }

    #[test]
    fn orders_topologically() -> Result<()> {
        let c = config(
            "  - {name: b, classname: X, depends_on: [a]}\n  - {name: a, classname: X}\n  - {name: c, classname: X, depends_on: [a, b]}\n",
        );
        let g = TaskGraph::build(&c)?;
        assert_eq!(g.order, vec![1, 0, 2]);
        assert_eq!(g.downstream(0), HashSet::from([0, 2]));
        Ok(())
    }

    #[test]
    fn reports_cycles_and_unknown_dependencies() {
        let c = config(
            "  - name: a\n    classname: X\n    depends_on: [b]\n  - name: b\n    classname: X\n    depends_on: [a]\n",
        );
        let msg = TaskGraph::build(&c).expect_err("cycle").to_string();
        assert!(
            msg.contains("dependency cycle") && msg.contains("a -> b -> a")
                || msg.contains("b -> a -> b"),
            "{msg}"
        );
        assert!(
            msg.contains("p.yaml:6:5") || msg.contains("p.yaml:9:5"),
            "{msg}"
        );
        let c = config(
            "  - {name: extract, classname: X}\n  - {name: b, classname: X, depends_on: [extrct]}\n",
        );
        let msg = TaskGraph::build(&c).expect_err("unknown").to_string();
        assert!(
            msg.contains("unknown task 'extrct'") && msg.contains("did you mean 'extract'"),
            "{msg}"
        );
    }
}
