//! tracing setup: warnings by default, more with -v, `RUST_LOG` wins.

pub fn init(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Set by the memory-bound tests: at exit, print this process's peak RSS.
pub const PEAK_RSS_ENV: &str = "EDGEIMG_TEST_REPORT_PEAK_RSS";

/// With [`PEAK_RSS_ENV`] set, prints `edgeimg: peak-rss-kib N` (the kernel's
/// VmHWM) on stderr. The process reports it itself because its parent cannot
/// measure it: `ru_maxrss` carries the spawning test process's own peak
/// across the fork and exec.
pub fn report_peak_rss() {
    if std::env::var_os(PEAK_RSS_ENV).is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        eprintln!("edgeimg: peak-rss-kib {kib}");
    }
}
