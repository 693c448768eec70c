//! Each account's share of a front door: how many of its requests may be in progress at once
//! (so that one account's slow uploads cannot take every slot of [`Config::max_concurrency`]),
//! and how many S3 buckets it may own. An account's own [`Limits`] (set with `manta-adm
//! account set-limits`) override the region's defaults in [`Config`].
//!
//! [`Config`]: crate::Config
//! [`Config::max_concurrency`]: crate::Config::max_concurrency

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use manta_auth::Account;

use crate::Config;
use crate::state::Frontdoor;

/// The requests `account` may have in progress on one front door: its own limit where set,
/// else the region's.
pub fn concurrent_requests(cfg: &Config, account: &Account) -> u32 {
    account
        .limits
        .concurrent_requests
        .unwrap_or(cfg.account_max_concurrency)
}

/// The S3 buckets `account` may own: its own limit where set, else the region's.
pub fn buckets(cfg: &Config, account: &Account) -> u32 {
    account.limits.buckets.unwrap_or(cfg.account_max_buckets)
}

/// A slot for one more request of `account` on `fd`, held while the request is served; when
/// the account has its limit in progress already, the refusal is counted and the limit given
/// (each API answers it in its own words).
///
/// # Errors
/// The account's limit, when it is reached.
pub fn enter(fd: &Frontdoor, account: &Account) -> Result<Slot, u32> {
    let most = concurrent_requests(&fd.cfg, account);
    fd.in_flight.enter(&account.uuid, most).ok_or_else(|| {
        fd.metrics.inc(
            "frontdoor_account_throttled_total",
            "Requests refused at their account's concurrency limit.",
            &[],
        );
        most
    })
}

/// Requests in progress, per account.
#[derive(Debug, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, u32>>>);

/// One request's place in its account's share; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    account: String,
}

impl InFlight {
    /// A slot for one more request of `account` (its uuid), unless `limit` are in progress.
    pub fn enter(&self, account: &str, limit: u32) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(account.to_owned()).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                counts.remove(account);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.0.clone(),
            account: account.to_owned(),
        })
    }

    /// Requests of `account` in progress now.
    pub fn count(&self, account: &str) -> u32 {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(account).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_gets_its_share_and_no_more_and_gives_it_back() {
        let f = InFlight::default();
        let a1 = f.enter("a", 2).unwrap();
        let a2 = f.enter("a", 2).unwrap();
        assert!(f.enter("a", 2).is_none(), "a third request of a");
        assert!(f.enter("b", 2).is_some(), "b is not held up by a");
        drop(a1);
        assert_eq!(f.count("a"), 1);
        let _a3 = f.enter("a", 2).unwrap();
        drop(a2);
        assert!(f.enter("z", 0).is_none());
        assert_eq!(f.count("z"), 0);
    }
}
