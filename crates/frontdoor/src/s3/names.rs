//! Names: object keys, bucket names, upload ids and part numbers, and how they become Moray
//! keys.
//!
//! A Moray key is `<bucket>/<rest>`: bucket names never contain `/`, so the first `/` always
//! ends the bucket name (that is what the ring hashes on), and the rest is kept byte for byte.

use s3s::S3ErrorCode;

use super::error::{S3Result, invalid_argument, s3err};

/// Longest object key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Highest part number of a multipart upload.
pub const MAX_PART_NUMBER: i32 = 10_000;

/// Checks an object key: 1 to 1024 bytes of UTF-8, no NUL (which the metadata tier cannot
/// store). Any other character, `/` included, is part of the key as is.
///
/// # Errors
/// `KeyTooLongError` or `InvalidArgument`.
pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(invalid_argument("Object key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(s3err(S3ErrorCode::KeyTooLongError, "Your key is too long"));
    }
    if key.contains('\0') {
        return Err(invalid_argument(
            "Object key must not contain the NUL character",
        ));
    }
    Ok(())
}

/// The S3 bucket naming rules (3 to 63 of `a-z 0-9 . -`, starting and ending with a letter
/// or digit, no `..`, `.-` or `-.`, not an IP address, none of the prefixes and suffixes S3
/// keeps for itself: `xn--`, `sthree-`, `-s3alias`, `--ol-s3`, `--x-s3`, `.mrap`).
pub fn valid_bucket_name(name: &str) -> bool {
    const RESERVED_PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const RESERVED_SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3"];
    s3s::path::check_bucket_name(name)
        && !name.contains(".-")
        && !name.contains("-.")
        && !RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        && !RESERVED_SUFFIXES.iter().any(|p| name.ends_with(p))
}

/// The Moray key of an object.
pub fn object_key(bucket: &str, key: &str) -> String {
    manta_types::s3::object_key(bucket, key)
}

/// A new upload id: 32 lower-case hex digits (random).
pub fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// True for ids [`new_upload_id`] could have made; anything else names no upload.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The Moray key of an upload.
pub fn upload_key(bucket: &str, upload_id: &str) -> String {
    format!("{bucket}/{upload_id}")
}

/// The Moray key of a part (zero-padded, so key order is part order).
pub fn part_key(bucket: &str, upload_id: &str, part: u32) -> String {
    format!("{bucket}/{upload_id}/{part:05}")
}

/// The `name` of a part record: its number, zero-padded.
pub fn part_name(part: u32) -> String {
    format!("{part:05}")
}

/// Checks a part number (1 to 10 000).
///
/// # Errors
/// `InvalidArgument`.
pub fn check_part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n.unsigned_abs())
    } else {
        Err(invalid_argument(format!(
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )))
    }
}

/// `EncodingType=url`: percent-encodes everything but unreserved characters and `/`
/// (a space becomes `%20`, `+` becomes `%2B`), as S3 does in listings.
pub fn url_encode(s: &str) -> String {
    manta_types::path::encode_url_path(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys() {
        assert!(check_key("a/b/../c d+e&f%g☃").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert_eq!(
            check_key(&"k".repeat(1025)).unwrap_err().code().as_str(),
            "KeyTooLongError"
        );
        assert_eq!(
            check_key("a\0b").unwrap_err().code().as_str(),
            "InvalidArgument"
        );
        assert_eq!(object_key("bkt", "/a//b/"), "bkt//a//b/");
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my.bucket-1", "0ab", &"a".repeat(63)] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "a.-b",
            "a-.b",
            "sthree-abc",
            "abc-s3alias",
            "abc--ol-s3",
            "abc--x-s3",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn upload_ids_and_parts() {
        let id = new_upload_id();
        assert!(valid_upload_id(&id));
        assert!(!valid_upload_id("../x"));
        assert!(!valid_upload_id(&id.to_uppercase()));
        assert_eq!(part_key("b", &id, 7), format!("b/{id}/00007"));
        assert_eq!(check_part_number(10_000).unwrap(), 10_000);
        for bad in [0, -1, 10_001] {
            assert_eq!(
                check_part_number(bad).unwrap_err().code().as_str(),
                "InvalidArgument"
            );
        }
    }

    #[test]
    fn url_encoding_matches_s3() {
        for (raw, want) in [
            ("foo+1/bar", "foo%2B1/bar"),
            ("quux ab/", "quux%20ab/"),
            ("a~b-c_d.e", "a~b-c_d.e"),
            ("☃&%", "%E2%98%83%26%25"),
        ] {
            assert_eq!(url_encode(raw), want, "{raw}");
        }
    }

    proptest! {
        #[test]
        fn url_encoding_round_trips(s in any::<String>()) {
            let e = url_encode(&s);
            prop_assert!(e.is_ascii());
            prop_assert!(!e.contains(' ') && !e.contains('+'));
            let d = percent_encoding::percent_decode_str(&e).decode_utf8().unwrap();
            prop_assert_eq!(d, s);
        }

        #[test]
        fn key_checks_never_panic(s in any::<String>()) {
            let _ = check_key(&s);
            let _ = valid_bucket_name(&s);
            let _ = valid_upload_id(&s);
        }
    }
}
