//! Shared secrets kept in files: the passwords of the region's Postgres roles.
//!
//! A password file holds one line of letters, digits and `-_.+/=` (what [`new_password`]
//! writes, and what base64 or hex keep to), so it needs no quoting in SQL, in a libpq
//! connection string or in a `pgpass` file. Anything else is refused when read, with the file
//! named, rather than mangled on the way to Postgres.

use std::fmt;
use std::io;
use std::path::Path;

/// The Postgres role Moray logs in as in a Manatee shard: it owns the tables, nothing more.
pub const PG_CLIENT_ROLE: &str = "moray";

/// The Postgres role a shard's peers replicate, back up and rewind with (no superuser).
pub const PG_REPLICATION_ROLE: &str = "manatee_repl";

/// A Postgres role and its password (the password never appears in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct PgLogin {
    /// The role.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for PgLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLogin")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl PgLogin {
    /// `user` with the password kept in `file`.
    ///
    /// # Errors
    /// As [`read_password`].
    pub fn from_file(user: &str, file: &Path) -> io::Result<PgLogin> {
        Ok(PgLogin {
            user: user.to_owned(),
            password: read_password(file)?,
        })
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.+/=".contains(&b)
}

/// Checks a password: 16 to 256 characters from the set above.
///
/// # Errors
/// `InvalidData` saying what is wrong (never echoing the password).
pub fn check_password(p: &str) -> io::Result<()> {
    if !(16..=256).contains(&p.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a password must have 16 to 256 characters, not {}", p.len()),
        ));
    }
    if !p.bytes().all(allowed) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a password may hold only letters, digits and -_.+/=",
        ));
    }
    Ok(())
}

/// Reads a password file (one line; a trailing newline is dropped). Blocking.
///
/// # Errors
/// When the file cannot be read, or its text is not a password by [`check_password`]; the
/// error names the file.
pub fn read_password(file: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", file.display())))?;
    let p = text.strip_suffix('\n').unwrap_or(&text);
    check_password(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    Ok(p.to_owned())
}

/// A new random password (256 bits, hex).
pub fn new_password() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

/// Makes `file` hold a password, writing a new one (0600) when it does not exist; returns it.
/// Blocking.
///
/// # Errors
/// When it cannot be written, or an existing one is not a password.
pub fn ensure_password(file: &Path) -> io::Result<String> {
    if file.exists() {
        return read_password(file);
    }
    let p = new_password();
    crate::write_private(file, format!("{p}\n").as_bytes())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_password_reads_back_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        let p = ensure_password(&f).unwrap();
        assert_eq!(read_password(&f).unwrap(), p);
        assert_eq!(ensure_password(&f).unwrap(), p, "kept, not replaced");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for bad in [
            "short",
            "has a space in it, long enough",
            "quote'quote'quote'quote",
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = read_password(&f).unwrap_err().to_string();
            assert!(e.contains(&f.display().to_string()), "{e}");
            assert!(!e.contains(bad), "the password leaked into the error: {e}");
        }
        assert_ne!(new_password(), new_password());
    }

    #[test]
    fn debug_hides_the_password() {
        let l = PgLogin {
            user: "moray".into(),
            password: "secret-secret-secret".into(),
        };
        assert!(!format!("{l:?}").contains("secret"));
    }
}
