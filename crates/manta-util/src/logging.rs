//! Logging set-up, done once by each binary.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default on a terminal).
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plain" | "text" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected plain or json)"
            )),
        }
    }
}

/// The logging options every service takes, for its `Args` to flatten in.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: plain or json.
    #[arg(long, env = "MANTA_LOG_FORMAT", default_value = "plain")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber in the chosen format (see [`init`]).
    pub fn init(&self) {
        init(self.log_format);
    }
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), written to stderr,
/// with colours only when stderr is a terminal (a log file gets plain text that `grep` reads).
/// A second call is a no-op, so tests running several services in one process may all call it.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
