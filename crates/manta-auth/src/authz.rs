//! Authorisation: what an authenticated (or anonymous) caller may do to a path. The one
//! place this is decided; the front door calls it for every request, and the jobs supervisor
//! calls it to decide whether a job's owner may read an object it names as an input.

use http::Method;
use manta_types::{Area, ErrorCode, MantaError, MantaPath};

use crate::account::{Account, Caller, Via};
use crate::rbac::{self, Action, Allowed, Conditions};

/// What the owner of an entry granted everyone, beyond what its area allows: an S3 canned ACL
/// (`public-read` on an object lets anyone read it; on a bucket, list it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Grant {
    /// Nothing beyond the area's rules.
    #[default]
    None,
    /// Anyone may read (`GET`, `HEAD`).
    PublicRead,
}

/// May `caller` perform `method` on `path` in `owner`'s namespace? As [`authorize_granted`]
/// with no grant.
///
/// # Errors
/// As [`authorize_granted`].
pub fn authorize(
    caller: &Caller,
    owner: &Account,
    path: &MantaPath,
    method: &Method,
) -> Result<(), MantaError> {
    authorize_granted(caller, owner, path, method, Grant::None)
}

/// May `caller` perform `method` on `path` in `owner`'s namespace, given what the owner
/// granted everyone on it?
///
/// Anyone may read `/:login/public`, and an entry granted [`Grant::PublicRead`]. An account
/// may do anything in its own namespace except write where only the system writes
/// (`reports`, job outputs, the uploads tree but its parts). Nobody else may touch it.
///
/// # Errors
/// `AuthorizationRequired` (401) for anonymous callers, `AuthorizationFailed` (403) otherwise.
pub fn authorize_granted(
    caller: &Caller,
    owner: &Account,
    path: &MantaPath,
    method: &Method,
    grant: Grant,
) -> Result<(), MantaError> {
    let read_only = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if read_only && (path.area() == Some(Area::Public) || grant == Grant::PublicRead) {
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
    // The uploads tree takes parts (`PUT …/<id>/<n>`); what else it holds only the system
    // writes.
    let part = matches!(
        manta_types::uploads::target(path),
        Some(manta_types::uploads::Target::Part { .. })
    );
    let restricted_write = *method == Method::PUT
        && !part
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

/// What a sub-user's request acts on: the action, and the role tags of the entry that
/// decides it (the entry itself to read, change or delete it; its parent directory to make
/// a new entry).
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// The action.
    pub action: Action,
    /// The deciding entry's role tags.
    pub tags: &'a [String],
}

/// The whole decision for a request whose resource is known: [`authorize_granted`] for
/// everyone; then, for a sub-user, the roles ([`rbac::decide`]), unless the request reads what
/// anyone may read. Answers the rule that let a sub-user in (`None` for everyone else).
///
/// # Errors
/// As [`authorize_granted`], then `NoMatchingRoleTag` or `MissingPermission`.
pub fn authorize_resource(
    caller: &Caller,
    owner: &Account,
    path: &MantaPath,
    method: &Method,
    grant: Grant,
    resource: Resource<'_>,
    ctx: &Conditions,
) -> Result<Option<Allowed>, MantaError> {
    authorize_granted(caller, owner, path, method, grant)?;
    let read_only = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if read_only && (path.area() == Some(Area::Public) || grant == Grant::PublicRead) {
        return Ok(None);
    }
    match caller.user() {
        None => Ok(None),
        Some(u) => rbac::decide(owner, u, resource.action, resource.tags, ctx).map(Some),
    }
}

/// [`authorize_resource`], logged (in the caller's span, which carries the request id): a
/// sub-user's request with the role, policy and rule that allowed it, and every denial of a
/// sub-user with its active roles, the resource's tags and the reason. Both the Manta API and
/// S3 decide through this.
///
/// # Errors
/// As [`authorize_resource`].
#[allow(clippy::too_many_arguments)]
pub fn authorize_logged(
    caller: &Caller,
    owner: &Account,
    path: &MantaPath,
    method: &Method,
    grant: Grant,
    resource: Resource<'_>,
    ctx: &Conditions,
) -> Result<(), MantaError> {
    let action = resource.action.as_str();
    match authorize_resource(caller, owner, path, method, grant, resource, ctx) {
        Ok(Some(allowed)) => {
            tracing::info!(
                caller = %caller.name(),
                action,
                path = %path,
                role = %allowed.role,
                policy = %allowed.policy,
                rule = %allowed.rule,
                "allowed"
            );
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            if let Some(u) = caller.user() {
                tracing::warn!(
                    caller = %caller.name(),
                    action,
                    path = %path,
                    roles = ?u.roles,
                    tags = ?resource.tags,
                    code = ?e.code,
                    "denied: {}",
                    e.message
                );
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_(account: &Account, via: Via) -> Caller {
        Caller::Account {
            account: account.clone(),
            via,
            methods: None,
            user: None,
        }
    }

    fn code(r: Result<(), MantaError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn a_public_read_grant_lets_anyone_read_and_nobody_else_write() {
        let jill = Account::new("jill");
        let bob = Account::new("bob");
        let p = MantaPath::parse("/jill/buckets/pics/objects/a.png").unwrap();
        let anon = Caller::Anonymous;
        let read = |c: &Caller, g| code(authorize_granted(c, &jill, &p, &Method::GET, g));
        assert_eq!(read(&anon, Grant::PublicRead), None);
        assert_eq!(read(&as_(&bob, Via::Signature), Grant::PublicRead), None);
        assert_eq!(
            read(&anon, Grant::None),
            Some(ErrorCode::AuthorizationRequired)
        );
        assert_eq!(
            read(&as_(&bob, Via::Signature), Grant::None),
            Some(ErrorCode::AuthorizationFailed)
        );
        for m in [Method::PUT, Method::DELETE, Method::POST] {
            assert_eq!(
                code(authorize_granted(&anon, &jill, &p, &m, Grant::PublicRead)),
                Some(ErrorCode::AuthorizationRequired),
                "{m}"
            );
        }
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
            user: None,
        };
        let p = MantaPath::parse("/jill/stor/a").unwrap();
        assert_eq!(code(authorize(&url, &jill, &p, &Method::GET)), None);
        assert_eq!(
            code(authorize(&url, &jill, &p, &Method::DELETE)),
            Some(ErrorCode::InvalidQueryStringAuthentication)
        );
    }

    #[test]
    fn the_uploads_tree_takes_parts_and_nothing_else() {
        let jill = Account::new("jill");
        let bob = Account::new("bob");
        let id = "b2c5d1e2-0000-4000-8000-000000000003";
        let put = |who: &Account, path: &str| {
            let p = MantaPath::parse(path).unwrap();
            code(authorize(
                &as_(who, Via::Signature),
                &jill,
                &p,
                &Method::PUT,
            ))
        };
        assert_eq!(put(&jill, &format!("/jill/uploads/b2c/{id}/0")), None);
        assert_eq!(
            put(&bob, &format!("/jill/uploads/b2c/{id}/0")),
            Some(ErrorCode::AuthorizationFailed)
        );
        for other in [
            format!("/jill/uploads/b2c/{id}"),
            format!("/jill/uploads/b2c/{id}/state"),
            "/jill/uploads/b2c".to_owned(),
            "/jill/uploads/mine".to_owned(),
        ] {
            assert_eq!(
                put(&jill, &other),
                Some(ErrorCode::AuthorizationFailed),
                "{other}"
            );
        }
    }

    /// Every caller over every action, on a resource tagged with both roles and on an
    /// untagged one: the one decision function's table.
    #[test]
    fn the_decision_matrix() {
        use crate::rbac::{Acting, Policy, Role, SubUser};
        let mut jill = Account::new("jill");
        jill.users = vec![SubUser::new("bob"), SubUser::new("carl")];
        let role = |name: &str, default: bool, policy: &str| Role {
            name: name.into(),
            members: vec!["bob".into()],
            default_members: if default { vec!["bob".into()] } else { vec![] },
            policies: vec![policy.into()],
        };
        jill.roles = vec![role("reader", true, "read"), role("writer", false, "write")];
        jill.policies = vec![
            Policy {
                name: "read".into(),
                rules: vec!["CAN getobject, getdirectory".into()],
            },
            Policy {
                name: "write".into(),
                rules: vec!["CAN putobject, putdirectory, deleteobject".into()],
            },
        ];
        let eve = Account::new("eve");
        let acting = |login: &str, asked: Option<&str>| {
            let u = jill.user(login).unwrap().clone();
            let roles = rbac::active_roles(&jill, &u, asked).unwrap();
            Caller::Account {
                account: jill.clone(),
                via: Via::Signature,
                methods: None,
                user: Some(Box::new(Acting {
                    login: u.login,
                    uuid: u.uuid,
                    roles,
                })),
            }
        };
        let reads = [Action::GetObject, Action::GetDirectory];
        let writes = [
            Action::PutObject,
            Action::PutDirectory,
            Action::DeleteObject,
        ];
        let both: Vec<Action> = reads.iter().chain(&writes).copied().collect();
        // Each caller, and the actions it may take on the tagged resource.
        let callers: Vec<(&str, Caller, Vec<Action>)> = vec![
            ("owner", as_(&jill, Via::Signature), Action::ALL.to_vec()),
            ("bob (default roles)", acting("bob", None), reads.to_vec()),
            (
                "bob as writer",
                acting("bob", Some("writer")),
                writes.to_vec(),
            ),
            ("bob with every role", acting("bob", Some("*")), both),
            ("carl (no role)", acting("carl", None), Vec::new()),
        ];
        let ctx = Conditions {
            source_ip: None,
            now_ms: 0,
        };
        let p = MantaPath::parse("/jill/stor/x").unwrap();
        let tagged = vec!["reader".to_owned(), "writer".to_owned()];
        for action in Action::ALL {
            let method = match action {
                Action::GetObject | Action::GetDirectory => Method::GET,
                Action::DeleteObject | Action::DeleteDirectory => Method::DELETE,
                _ => Method::PUT,
            };
            let decide = |c: &Caller, tags: &[String]| {
                let r = Resource { action, tags };
                code(authorize_resource(c, &jill, &p, &method, Grant::None, r, &ctx).map(|_| ()))
            };
            for (who, caller, allowed) in &callers {
                let want = if allowed.contains(&action) {
                    None
                } else if caller.user().is_some_and(|u| u.roles.is_empty()) {
                    Some(ErrorCode::NoMatchingRoleTag)
                } else {
                    Some(ErrorCode::MissingPermission)
                };
                assert_eq!(decide(caller, &tagged), want, "{who} {action:?} tagged");
                let untagged = if caller.user().is_some() {
                    Some(ErrorCode::NoMatchingRoleTag)
                } else {
                    None
                };
                assert_eq!(decide(caller, &[]), untagged, "{who} {action:?} untagged");
            }
            assert_eq!(
                decide(&as_(&eve, Via::Signature), &tagged),
                Some(ErrorCode::AuthorizationFailed),
                "other account {action:?}"
            );
            assert_eq!(
                decide(&Caller::Anonymous, &tagged),
                Some(ErrorCode::AuthorizationRequired),
                "anonymous {action:?}"
            );
        }
        // Anyone reads /public, sub-users without roles too.
        let public = MantaPath::parse("/jill/public/x").unwrap();
        let r = Resource {
            action: Action::GetObject,
            tags: &[],
        };
        let carl = acting("carl", None);
        assert_eq!(
            code(
                authorize_resource(&carl, &jill, &public, &Method::GET, Grant::None, r, &ctx)
                    .map(|_| ())
            ),
            None
        );
        // A role the user is not a member of is refused when asked for.
        let carl_user = jill.user("carl").unwrap().clone();
        assert_eq!(
            rbac::active_roles(&jill, &carl_user, Some("reader"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidRole
        );
    }
}
