//! Request paths: the Manta API's parse of every request path (percent-decoding, the
//! `/:login/buckets/...` view of S3 objects, [`MantaPath`]), Manta paths given already
//! decoded (job inputs and assets), and the Manta path of an S3 object.

use frontdoor::api::buckets::Target;
use manta_types::path::{
    MAX_LOGIN_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, encode_url_path, validate_login, validate_name,
};
use manta_types::s3::BucketObjectPath;
use manta_types::{Area, ErrorCode, MantaPath};

/// Paths: what the front door makes of a request path, and of text given as a Manta path.
pub fn manta_path(data: &[u8]) {
    let s = crate::text(data);
    request_path(&s);
    if let Ok(p) = MantaPath::parse(&s) {
        valid(&p);
        assert_eq!(MantaPath::parse(&p.to_string()).as_ref(), Ok(&p));
        assert_eq!(MantaPath::from_url_path(&p.to_url_path()).as_ref(), Ok(&p));
        family(&p);
        upload_target(&p);
    }
    if let Some(b) = BucketObjectPath::parse(&s) {
        assert!(!b.login.is_empty() && !b.bucket.is_empty() && !b.key.is_empty());
        assert!(!b.login.contains('/') && !b.bucket.contains('/'));
        assert_eq!(BucketObjectPath::parse(&b.to_string()).as_ref(), Some(&b));
    }
}

/// The front door's parse of a raw request path, as every Manta API request gets it.
fn request_path(raw: &str) {
    match frontdoor::api::parse_path(raw) {
        Ok((p, None)) => {
            valid(&p);
            assert_ne!(p.area(), Some(Area::Buckets), "{raw:?} is a bucket path");
            let again = frontdoor::api::parse_path(&p.to_url_path());
            assert_eq!(again.ok(), Some((p, None)), "{raw:?}");
        }
        Ok((p, Some(target))) => {
            // The caller is authorised on the area root, so that is what it must be.
            assert!(
                p.is_area_root() && p.area() == Some(Area::Buckets),
                "{raw:?}: {p}"
            );
            valid(&p);
            let login = p.login();
            let rendered = match &target {
                Target::Buckets => format!("/{login}/buckets"),
                Target::Bucket(b) => {
                    assert!(!b.is_empty() && !b.contains('/'));
                    format!("/{login}/buckets/{}", encode_url_path(b))
                }
                Target::Objects(b) => {
                    assert!(!b.is_empty() && !b.contains('/'));
                    format!("/{login}/buckets/{}/objects", encode_url_path(b))
                }
                Target::Object(b, k) => {
                    assert!(!b.is_empty() && !b.contains('/') && !k.is_empty());
                    format!(
                        "/{login}/buckets/{}/objects/{}",
                        encode_url_path(b),
                        encode_url_path(k)
                    )
                }
            };
            let again = frontdoor::api::parse_path(&rendered);
            assert_eq!(again.ok(), Some((p, Some(target))), "{raw:?}");
        }
        Err(e) => assert!(
            matches!(
                e.code,
                ErrorCode::InvalidResource | ErrorCode::ResourceNotFound
            ),
            "{raw:?}: {e:?}"
        ),
    }
}

/// The invariants every [`MantaPath`] keeps.
fn valid(p: &MantaPath) {
    assert!(validate_login(p.login()).is_ok() && p.login().len() <= MAX_LOGIN_BYTES);
    assert!(p.area().is_some() || p.segments().is_empty());
    for s in p.segments() {
        assert!(validate_name(s, s).is_ok() && s.len() <= MAX_NAME_BYTES && !s.contains('/'));
    }
    assert!(p.to_string().len() <= MAX_PATH_BYTES, "{p}");
}

/// A path's parents and children are paths too, and it lies below each parent (the first
/// few generations: each check renders the whole path).
fn family(p: &MantaPath) {
    let mut cur = p.clone();
    for _ in 0..8 {
        let Some(parent) = cur.parent() else {
            return;
        };
        valid(&parent);
        assert!(cur.starts_with(&parent) && !parent.starts_with(&cur));
        assert_eq!(parent.join(cur.name()).as_ref(), Ok(&cur));
        assert_eq!(parent.login(), p.login());
        cur = parent;
    }
}

/// What a path under `/:login/uploads` addresses: ids and part numbers read from it render
/// back to the same path, and an upload's parts directory addresses that upload.
fn upload_target(p: &MantaPath) {
    use manta_types::uploads::{self as u, Target as T};
    let Some(t) = u::target(p) else {
        assert_ne!(p.area(), Some(Area::Uploads), "{p}");
        return;
    };
    let login = p.login();
    let dir = |id: &str| {
        assert!(u::is_upload_id(id), "{p}: {id}");
        let d = MantaPath::parse(&u::parts_directory(login, id)).expect("a parts directory parses");
        assert_eq!(u::target(&d), Some(T::Upload { id: id.to_owned() }), "{p}");
        d
    };
    match t {
        T::Root => assert!(p.is_area_root()),
        T::Short { id, rest } => {
            dir(&id);
            let short = format!("/{login}/uploads/{id}");
            let want = rest.map_or(short.clone(), |r| format!("{short}/{r}"));
            assert_eq!(p.to_string(), want);
        }
        T::Upload { id } => assert_eq!(dir(&id), *p),
        T::Action { id, action } => {
            let name = match action {
                u::Action::State => "state",
                u::Action::Commit => "commit",
                u::Action::Abort => "abort",
            };
            assert_eq!(dir(&id).join(name).as_ref(), Ok(p));
        }
        T::Part { id, number } => {
            assert!(number <= u::MAX_PART_NUMBER);
            assert_eq!(dir(&id).join(&number.to_string()).as_ref(), Ok(p));
        }
        T::Other => {}
    }
}
