//! What every command-line tool of the project shares.
//!
//! A tool whose output is cut short by its reader (`manta-adm status | head`, `mls | head -1`)
//! must end quietly, the way Unix tools do, instead of panicking on the failed write or
//! printing an error about it.

use std::io;

/// Makes a write to a closed stdout end the process quietly.
///
/// Rust ignores `SIGPIPE`, so a closed pipe shows up as an `EPIPE` error: `println!` panics on
/// it and `write!` returns it. Call this first thing in `main`: a panic caused by a closed
/// stdout then exits with the status a shell reports for `SIGPIPE` (141) and prints nothing;
/// every other panic is reported as before. Errors returned by `write!` are for the caller to
/// test with [`is_broken_pipe`].
pub fn exit_quietly_on_closed_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE_STATUS);
        }
        previous(info);
    }));
}

/// The exit status for a reader that went away: 128 + `SIGPIPE`, what shells show for it.
pub const CLOSED_PIPE_STATUS: i32 = 141;

/// True when `e` (or anything in its chain of sources) is a write to a closed pipe.
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Parses a size given on a command line: bytes, or a number with a binary unit (`512KiB`,
/// `64MiB`, `4GiB`, `1TiB`; `K`, `M`, `G`, `T` mean the same).
///
/// # Errors
/// A message naming what was given, for clap to show.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size (bytes, or a number with KiB, MiB, GiB or TiB)"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!("{s:?} is not a size (bytes, or a number with KiB, MiB, GiB or TiB)")
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        assert_eq!(parse_bytes("1 TiB"), Ok(1 << 40));
        for bad in ["", "MiB", "4GB", "-1", "1.5GiB", "99999999999TiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn broken_pipe_is_found_through_the_chain() {
        #[derive(Debug)]
        struct Wrap(io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "copy to stdout")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrap(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&e));
        let other = Wrap(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }
}
