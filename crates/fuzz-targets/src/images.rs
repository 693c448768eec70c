//! OCI image archives a job's phase names (`"image"`), as an agent unpacks them.

use jobs::agent::image::{ImageError, unpack};

/// An image archive: unpacking it never writes outside its directory, and it either yields a
/// root or is refused as the image's fault (never as the node's, for a well-behaved disk).
pub fn oci_image(data: &[u8]) {
    let d = tempfile::tempdir().expect("a temporary directory");
    let inside = d.path().join("in");
    std::fs::create_dir(&inside).expect("a directory");
    let archive = inside.join("image.tar");
    std::fs::write(&archive, data).expect("the archive is written");
    match unpack(&archive, &inside.join("out"), 16 << 20, None) {
        Ok(u) => {
            assert!(u.digest.starts_with("sha256:"));
            assert!(inside.join("out/rootfs/tmp").is_dir());
        }
        Err(ImageError::Bad(m)) => assert!(!m.is_empty()),
        Err(ImageError::Io(e)) => {
            // Entries may clash (a file where a directory goes): the node's disk is fine.
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists
                        | std::io::ErrorKind::NotADirectory
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::DirectoryNotEmpty
                ),
                "{e}"
            );
        }
    }
    let outside: Vec<_> = std::fs::read_dir(d.path())
        .expect("the directory is listed")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("in")]);
}
