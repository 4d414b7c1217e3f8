//! A running task's progress: what it is doing and how many rows it has
//! handled. It is drawn on the live progress display (a TTY) and posted on
//! the run's [`ProgressBoard`], which the event log writer publishes as
//! `_kiln/runs/RUN_ID/progress.json` for the web UI. Without either, the
//! handle does nothing.

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What one task is doing, as last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    pub stage: String,
    pub rows: u64,
    /// When it was reported, in milliseconds since the epoch.
    pub ts_ms: i64,
}

/// The file the board is published as: every task's latest snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressFile {
    pub ts_ms: i64,
    pub tasks: BTreeMap<String, TaskSnapshot>,
}

/// The progress of a run's tasks, shared by their handles and read by
/// whoever publishes it. `version` grows with every change.
#[derive(Clone, Default)]
pub struct ProgressBoard(Arc<Mutex<(u64, BTreeMap<String, TaskSnapshot>)>>);

impl ProgressBoard {
    fn post(&self, task: &str, stage: &str, rows: u64) {
        if let Ok(mut board) = self.0.lock() {
            board.0 += 1;
            board.1.insert(
                task.to_string(),
                TaskSnapshot {
                    stage: stage.to_string(),
                    rows,
                    ts_ms: chrono::Utc::now().timestamp_millis(),
                },
            );
        }
    }

    /// The change count and the file to publish.
    pub fn snapshot(&self) -> (u64, ProgressFile) {
        match self.0.lock() {
            Ok(board) => (
                board.0,
                ProgressFile {
                    ts_ms: chrono::Utc::now().timestamp_millis(),
                    tasks: board.1.clone(),
                },
            ),
            Err(_) => (0, ProgressFile::default()),
        }
    }
}

/// A task's progress handle, cheap to clone.
#[derive(Clone, Default)]
pub struct TaskProgress {
    bar: Option<ProgressBar>,
    board: Option<(ProgressBoard, Arc<str>)>,
    state: Arc<Mutex<(String, u64)>>,
}

impl TaskProgress {
    /// A handle that draws on `bar`.
    pub fn on(bar: ProgressBar) -> Self {
        TaskProgress {
            bar: Some(bar),
            ..TaskProgress::default()
        }
    }

    /// The same handle, also posting on `board` as `task`.
    pub fn posting_to(mut self, board: &ProgressBoard, task: &str) -> Self {
        self.board = Some((board.clone(), task.into()));
        self
    }

    /// Shows what the task is doing now.
    pub fn stage(&self, stage: impl Into<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = stage.into();
            self.redraw(&s);
        }
    }

    /// Adds `rows` to the rows processed.
    pub fn add_rows(&self, rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.1 += rows;
            self.redraw(&s);
        }
    }

    /// Sets the rows processed (a pass over the data that starts again).
    pub fn set_rows(&self, rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = rows;
            self.redraw(&s);
        }
    }

    fn redraw(&self, (stage, rows): &(String, u64)) {
        if let Some((board, task)) = &self.board {
            board.post(task, stage, *rows);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(if *rows > 0 {
                format!("{stage} · {rows} rows")
            } else {
                stage.clone()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_post_their_stage_and_rows_on_the_board() {
        let board = ProgressBoard::default();
        let a = TaskProgress::default().posting_to(&board, "a");
        let b = TaskProgress::default().posting_to(&board, "b");
        a.stage("reading");
        a.add_rows(10);
        a.add_rows(5);
        b.stage("fitting");
        let (version, file) = board.snapshot();
        assert_eq!(version, 4);
        assert_eq!(
            (file.tasks["a"].stage.as_str(), file.tasks["a"].rows),
            ("reading", 15)
        );
        assert_eq!(
            (file.tasks["b"].stage.as_str(), file.tasks["b"].rows),
            ("fitting", 0)
        );
        // A handle without a board or a bar does nothing, and never fails.
        TaskProgress::default().add_rows(1);
    }
}
