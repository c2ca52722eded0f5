//! Progress reporting for long work: bars and spinners on a terminal, plain
//! lines otherwise (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// A line on stderr describing a step.
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Runs one step of work and notes what it did and how long it took:
    /// `msg` describes the result, the duration is added.
    pub fn timed<T, E>(
        &self,
        work: impl FnOnce() -> Result<T, E>,
        msg: impl FnOnce(&T) -> String,
    ) -> Result<T, E> {
        let t = std::time::Instant::now();
        let out = work()?;
        self.note(&format!(
            "{} ({:.1}s)",
            msg(&out),
            t.elapsed().as_secs_f64()
        ));
        Ok(out)
    }

    /// A spinner whose message follows a long-running tool's output.
    pub fn spinner(&self, prefix: &str) -> ProgressBar {
        if self.quiet || !self.tty {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("  {spinner} {prefix} [{elapsed}] {wide_msg}").unwrap(),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// A byte-counting bar (compression, splicing, flashing).
    pub fn bytes(&self, prefix: &str, total: u64) -> ProgressBar {
        if self.quiet || !self.tty {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "  {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        pb.set_prefix(prefix.to_string());
        pb
    }
}
