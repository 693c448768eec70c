//! Content types guessed from a file name's extension, as `mput` sends them when no
//! `Content-Type` is given (the original looks names up the same way). Unknown extensions get
//! `MANTA_DEFAULT_CONTENT_TYPE`, else `application/octet-stream`.

/// Extension (lowercase) to content type, for the names people usually store.
const TYPES: &[(&str, &str)] = &[
    ("avi", "video/x-msvideo"),
    ("bmp", "image/bmp"),
    ("bz2", "application/x-bzip2"),
    ("c", "text/x-c"),
    ("css", "text/css"),
    ("csv", "text/csv"),
    ("doc", "application/msword"),
    ("gif", "image/gif"),
    ("gz", "application/gzip"),
    ("h", "text/x-c"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("ico", "image/vnd.microsoft.icon"),
    ("jar", "application/java-archive"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "application/javascript"),
    ("json", "application/json"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("mjs", "application/javascript"),
    ("mov", "video/quicktime"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("ogg", "audio/ogg"),
    ("parquet", "application/vnd.apache.parquet"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("py", "text/x-python"),
    ("rs", "text/x-rust"),
    ("sh", "application/x-sh"),
    ("svg", "image/svg+xml"),
    ("tar", "application/x-tar"),
    ("tgz", "application/gzip"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("toml", "application/toml"),
    ("tsv", "text/tab-separated-values"),
    ("txt", "text/plain"),
    ("wasm", "application/wasm"),
    ("wav", "audio/wav"),
    ("webm", "video/webm"),
    ("webp", "image/webp"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("xz", "application/x-xz"),
    ("zip", "application/zip"),
    ("zst", "application/zstd"),
];

/// The content type for an object named `name`.
pub fn content_type_for(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let ext = base
        .rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, e)| e.to_ascii_lowercase());
    ext.and_then(|e| {
        TYPES
            .iter()
            .find(|(x, _)| *x == e)
            .map(|(_, t)| (*t).to_owned())
    })
    .or_else(|| {
        std::env::var("MANTA_DEFAULT_CONTENT_TYPE")
            .ok()
            .filter(|v| !v.is_empty())
    })
    .unwrap_or_else(|| "application/octet-stream".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_by_extension() {
        for (path, want) in [
            ("/jill/stor/a.TXT", "text/plain"),
            ("x.tar.gz", "application/gzip"),
            ("data.json", "application/json"),
        ] {
            assert_eq!(content_type_for(path), want, "{path}");
        }
        assert!(TYPES.windows(2).all(|w| w[0].0 != w[1].0));
    }
}
