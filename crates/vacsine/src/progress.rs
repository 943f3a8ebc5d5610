//! Progress display: a spinner on a terminal, plain timestamped lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Arc<Self> {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Arc::new(Progress {
            bar,
            start: Instant::now(),
        })
    }

    pub fn say(&self, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.println(format!(
                    "  {:>6.1}s  {msg}",
                    self.start.elapsed().as_secs_f64()
                ));
                b.set_message(msg.to_string());
            }
            None => eprintln!("[{:>6.1}s] {msg}", self.start.elapsed().as_secs_f64()),
        }
    }

    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
