//! PostgreSQL WAL positions (`pg_lsn`), written the way Postgres writes them: `16/B374D848`.
//!
//! The cluster state's `initWal` and every WAL figure in `/status` use this form, so they can be
//! pasted into `psql` as they are.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL position: a 64-bit byte offset into the WAL stream. Ordered like the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Why a string is not a WAL position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid WAL position {input:?}: expected two hex numbers of at most 8 digits joined by '/', like 0/16B3748"
)]
pub struct LsnParseError {
    input: String,
}

impl Lsn {
    /// Bytes from `older` to `self`, zero when `older` is ahead.
    pub fn bytes_after(self, older: Lsn) -> u64 {
        self.0.saturating_sub(older.0)
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError {
            input: s.chars().take(64).collect(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |p: &str| -> Result<u64, LsnParseError> {
            // from_str_radix accepts a leading '+', Postgres does not.
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_postgres_forms() {
        assert_eq!("0/16B3748".parse::<Lsn>(), Ok(Lsn(0x16B3748)));
        assert_eq!("16/b374d848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        for bad in [
            "",
            "0",
            "/",
            "0/",
            "/0",
            "+1/0",
            "1/+0",
            "0/123456789",
            "g/0",
            "0/0/0",
            " 0/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
        assert!(Lsn(5) > Lsn(4));
        assert_eq!(Lsn(5).bytes_after(Lsn(7)), 0);
    }

    proptest! {
        #[test]
        fn round_trips(v in any::<u64>()) {
            let l = Lsn(v);
            prop_assert_eq!(l.to_string().parse::<Lsn>(), Ok(l));
            let json = serde_json::to_string(&l).unwrap();
            prop_assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), l);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn accepts_exactly_hex_pairs(hi in "[0-9a-fA-F]{1,8}", lo in "[0-9a-fA-F]{1,8}") {
            let l: Lsn = format!("{hi}/{lo}").parse().unwrap();
            prop_assert_eq!(l.0 >> 32, u64::from_str_radix(&hi, 16).unwrap());
            prop_assert_eq!(l.0 & 0xffff_ffff, u64::from_str_radix(&lo, 16).unwrap());
        }
    }
}
