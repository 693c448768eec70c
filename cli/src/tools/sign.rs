//! `msign`: print presigned URLs that let anyone holding them make the named requests on an
//! object until they expire.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Parser;
use manta_auth::KeySigner;
use manta_client::MantaClient;

use super::common::{Conn, parse_and_run};

/// Make presigned URLs for Manta objects (valid for an hour unless -e/-E say otherwise).
#[derive(Debug, Parser)]
#[command(name = "msign", version)]
struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Expiry as seconds since the epoch.
    #[arg(short = 'e', long = "expires", value_name = "EXPIRATION",
          value_parser = clap::value_parser!(u64).range(1..))]
    expires: Option<u64>,
    /// Expiry from now: a number and a unit (s, m, h, d, w, y), e.g. 30m or 2d.
    #[arg(short = 'E', long = "expires-relative", value_name = "EXPIRATION")]
    expires_relative: Option<String>,
    /// Sign with this private key file instead of the usual search.
    #[arg(short = 'f', long = "file", value_name = "PRIVATE_KEY")]
    file: Option<PathBuf>,
    /// Accepted for compatibility: the algorithm always follows the key.
    #[arg(short = 'g', long = "algorithm", value_name = "ALGORITHM")]
    algorithm: Option<String>,
    /// HTTP method the URL allows (repeat for several; default GET).
    #[arg(short = 'm', long = "method", value_name = "METHOD")]
    method: Vec<String>,
    /// Not supported: refused (presigned URLs carry no role tags; tag the object with
    /// `mchmod` once it is uploaded).
    #[arg(long = "role-tag", value_name = "TAG,TAG...")]
    role_tag: Vec<String>,
    /// Objects to sign URLs for.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
}

/// `msign`.
pub fn main(args: Vec<String>) -> ExitCode {
    parse_and_run("msign", args, |a: Args| async move { msign(a).await })
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"];

/// Seconds in `5m`, `1h`, `2d`, ... (the original's `-E` forms); `None` when malformed.
pub fn parse_relative(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let num = &s[..s.len() - unit.len_utf8()];
    if num.is_empty() || num.starts_with('0') || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

async fn msign(a: Args) -> Result<ExitCode> {
    if !a.role_tag.is_empty() {
        bail!(
            "--role-tag is not supported: presigned URLs carry no role tags (tag the object \
             with mchmod once it is uploaded)"
        );
    }
    let mut methods = Vec::new();
    for m in if a.method.is_empty() {
        vec!["GET".to_owned()]
    } else {
        a.method.clone()
    } {
        let up = m.to_ascii_uppercase();
        if !METHODS.contains(&up.as_str()) {
            bail!("method invalid: {m}");
        }
        methods.push(up);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires = match (a.expires, &a.expires_relative) {
        (Some(_), Some(_)) => bail!("-e and -E cannot be specified together"),
        (Some(e), None) => e,
        (None, Some(r)) => {
            now + parse_relative(r).ok_or_else(|| anyhow::anyhow!("invalid expires: {r}"))?
        }
        (None, None) => now + 3600,
    };
    let paths = a.conn.resolve_all(&a.paths)?;
    let client = match &a.file {
        Some(key) => {
            let key = key.clone();
            let signer = manta_util::blocking(move || {
                KeySigner::from_file(&key).map_err(std::io::Error::other)
            })
            .await?;
            MantaClient::with_signer(a.conn.config()?, Some(Arc::new(signer)))?
        }
        None => a.conn.client().await?,
    };
    let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
    let when = UNIX_EPOCH + Duration::from_secs(expires);
    for p in &paths {
        println!("{}", client.sign_url(p, &methods, when).await?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn relative_expiry() {
        assert_eq!(parse_relative("30s"), Some(30));
        assert_eq!(parse_relative("5m"), Some(300));
        assert_eq!(parse_relative("1h"), Some(3600));
        assert_eq!(parse_relative("2d"), Some(172_800));
        assert_eq!(parse_relative("1w"), Some(604_800));
        assert_eq!(parse_relative("1y"), Some(31_536_000));
        for bad in ["", "h", "0h", "01h", "1", "1x", "-1h", "1.5h", "1hh"] {
            assert_eq!(parse_relative(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn relative_round_trip(n in 1u64..1_000_000, u in prop::sample::select(vec!['s', 'm', 'h', 'd', 'w', 'y'])) {
            let secs = parse_relative(&format!("{n}{u}")).unwrap();
            prop_assert_eq!(secs % n, 0);
        }

        #[test]
        fn relative_never_panics(s in "\\PC{0,12}") {
            let _ = parse_relative(&s);
        }
    }
}
