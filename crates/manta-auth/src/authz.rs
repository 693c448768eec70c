//! Authorisation: what an authenticated (or anonymous) caller may do to a path. The one
//! place this is decided; the front door calls it for every request, and the jobs supervisor
//! calls it to decide whether a job's owner may read an object it names as an input.

use http::Method;
use manta_types::{Area, ErrorCode, MantaError, MantaPath};

use crate::account::{Account, Caller, Via};

/// May `caller` perform `method` on `path` in `owner`'s namespace?
///
/// Anyone may read `/:login/public`. An account may do anything in its own namespace except
/// write where only the system writes (`reports`, job outputs, the uploads tree). Nobody else
/// may touch it.
///
/// # Errors
/// `AuthorizationRequired` (401) for anonymous callers, `AuthorizationFailed` (403) otherwise.
pub fn authorize(
    caller: &Caller,
    owner: &Account,
    path: &MantaPath,
    method: &Method,
) -> Result<(), MantaError> {
    let read_only = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if read_only && path.area() == Some(Area::Public) {
        return Ok(());
    }
    let Some(account) = caller.account() else {
        return Err(MantaError::new(
            ErrorCode::AuthorizationRequired,
            "Authorization is required",
        ));
    };
    if account.uuid != owner.uuid {
        return Err(MantaError::new(
            ErrorCode::AuthorizationFailed,
            format!("{} is not allowed to access {path}", account.login),
        ));
    }
    if let Caller::Account {
        methods: Some(allowed),
        ..
    } = caller
        && !allowed.iter().any(|m| m == method.as_str())
    {
        return Err(MantaError::new(
            ErrorCode::InvalidQueryStringAuthentication,
            format!("this URL does not allow {method}"),
        ));
    }
    let restricted_write = *method == Method::PUT
        && matches!(
            path.area(),
            Some(Area::Reports | Area::Jobs | Area::Uploads)
        );
    if restricted_write
        && !matches!(
            caller,
            Caller::Account {
                via: Via::Token,
                ..
            }
        )
    {
        return Err(MantaError::new(
            ErrorCode::AuthorizationFailed,
            format!("{} is not allowed to write {path}", account.login),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_(account: &Account, via: Via) -> Caller {
        Caller::Account {
            account: account.clone(),
            via,
            methods: None,
        }
    }

    fn code(r: Result<(), MantaError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn public_is_readable_by_anyone_and_writable_by_its_owner_only() {
        let jill = Account::new("jill");
        let bob = Account::new("bob");
        let p = MantaPath::parse("/jill/public/a.txt").unwrap();
        assert_eq!(
            code(authorize(&Caller::Anonymous, &jill, &p, &Method::GET)),
            None
        );
        assert_eq!(
            code(authorize(&as_(&bob, Via::Token), &jill, &p, &Method::HEAD)),
            None
        );
        assert_eq!(
            code(authorize(
                &as_(&bob, Via::Signature),
                &jill,
                &p,
                &Method::PUT
            )),
            Some(ErrorCode::AuthorizationFailed)
        );
        assert_eq!(
            code(authorize(
                &as_(&jill, Via::Signature),
                &jill,
                &p,
                &Method::PUT
            )),
            None
        );
    }

    #[test]
    fn stor_is_the_owners_alone() {
        let jill = Account::new("jill");
        let bob = Account::new("bob");
        let p = MantaPath::parse("/jill/stor/a.txt").unwrap();
        assert_eq!(
            code(authorize(&Caller::Anonymous, &jill, &p, &Method::GET)),
            Some(ErrorCode::AuthorizationRequired)
        );
        assert_eq!(
            code(authorize(&as_(&bob, Via::Token), &jill, &p, &Method::GET)),
            Some(ErrorCode::AuthorizationFailed)
        );
        assert_eq!(
            code(authorize(&as_(&jill, Via::Token), &jill, &p, &Method::GET)),
            None
        );
    }

    #[test]
    fn system_areas_are_written_only_with_a_token_and_urls_only_allow_their_methods() {
        let jill = Account::new("jill");
        let p = MantaPath::parse("/jill/reports/x").unwrap();
        assert_eq!(
            code(authorize(
                &as_(&jill, Via::Signature),
                &jill,
                &p,
                &Method::PUT
            )),
            Some(ErrorCode::AuthorizationFailed)
        );
        assert_eq!(
            code(authorize(&as_(&jill, Via::Token), &jill, &p, &Method::PUT)),
            None
        );
        let url = Caller::Account {
            account: jill.clone(),
            via: Via::Presigned,
            methods: Some(vec!["GET".into()]),
        };
        let p = MantaPath::parse("/jill/stor/a").unwrap();
        assert_eq!(code(authorize(&url, &jill, &p, &Method::GET)), None);
        assert_eq!(
            code(authorize(&url, &jill, &p, &Method::DELETE)),
            Some(ErrorCode::InvalidQueryStringAuthentication)
        );
    }
}
