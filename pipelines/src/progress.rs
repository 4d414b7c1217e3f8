//! A running task's line in the live progress display: what it is doing and
//! how many rows it has handled. Without a display (not a TTY, JSON logs)
//! the handle does nothing.

use indicatif::ProgressBar;
use std::sync::{Arc, Mutex};

/// A task's progress handle, cheap to clone.
#[derive(Clone, Default)]
pub struct TaskProgress {
    bar: Option<ProgressBar>,
    state: Arc<Mutex<(String, u64)>>,
}

impl TaskProgress {
    /// A handle that draws on `bar`.
    pub fn on(bar: ProgressBar) -> Self {
        TaskProgress {
            bar: Some(bar),
            state: Arc::default(),
        }
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
        if let Some(bar) = &self.bar {
            bar.set_message(if *rows > 0 {
                format!("{stage} · {rows} rows")
            } else {
                stage.clone()
            });
        }
    }
}
