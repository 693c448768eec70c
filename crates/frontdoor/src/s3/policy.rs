//! Bucket policies: the subset that makes a bucket, or part of it, readable by anyone.
//!
//! `PutBucketPolicy` takes a policy document; what it grants maps onto the decision function
//! as the [`Grant`] of what is read, exactly as a `public-read` ACL does, so one place decides
//! for both. Kept:
//!
//! - statements with `"Effect": "Allow"` and `"Principal": "*"` (or `{"AWS": "*"}`);
//! - `s3:GetObject` on `arn:aws:s3:::<bucket>/<prefix>*`: anyone may read (`GetObject`,
//!   `HeadObject`) the objects whose keys start with `<prefix>` (`/*`: all of them);
//! - `s3:ListBucket` on `arn:aws:s3:::<bucket>`: anyone may list the bucket.
//!
//! Any other effect, principal, action, condition or resource answers `NotImplemented` (a
//! policy that would mean something this service does not enforce is never stored), a
//! resource outside the bucket or a document that is not a policy `MalformedPolicy`. The
//! document is answered back by `GetBucketPolicy` as it was given; `DeleteBucketPolicy`
//! removes it.

use manta_auth::Grant;
use s3s::S3ErrorCode;
use s3s::dto::{
    DeleteBucketPolicyInput, DeleteBucketPolicyOutput, GetBucketPolicyInput, GetBucketPolicyOutput,
    PutBucketPolicyInput, PutBucketPolicyOutput,
};
use s3s::{S3Request, S3Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::acl::CannedAcl;
use super::error::{S3Result, conditional_conflict, s3err};
use super::meta::BucketRecord;
use super::service::{S3Api, bucket_of};

/// Largest policy document kept, in bytes (S3's bound).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// A bucket's policy: the document, and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPolicy {
    /// The document as given.
    pub text: String,
    /// Key prefixes anyone may read (`""`: every key).
    #[serde(default)]
    pub read_prefixes: Vec<String>,
    /// Whether anyone may list the bucket.
    #[serde(default)]
    pub list: bool,
}

impl BucketPolicy {
    /// What the policy grants everyone on `key` (`None`: the bucket itself, to list it).
    pub fn grant(&self, key: Option<&str>) -> Grant {
        let open = match key {
            None => self.list,
            Some(k) => self.read_prefixes.iter().any(|p| k.starts_with(p.as_str())),
        };
        if open { Grant::PublicRead } else { Grant::None }
    }
}

/// What the owner of `bucket` granted everyone: on the bucket itself (`None`: to list it),
/// or on an object (its key and its own ACL). A `public-read` ACL or the bucket's policy,
/// either opens it.
pub fn granted(bucket: &BucketRecord, object: Option<(&str, CannedAcl)>) -> Grant {
    let acl = match object {
        None => bucket.acl,
        Some((_, acl)) => acl,
    };
    let by_policy = bucket
        .policy
        .as_ref()
        .map_or(Grant::None, |p| p.grant(object.map(|(k, _)| k)));
    if acl == CannedAcl::PublicRead || by_policy == Grant::PublicRead {
        Grant::PublicRead
    } else {
        Grant::None
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a policy document, or one about something else (`MalformedPolicy`).
    Malformed(String),
    /// A policy this service does not enforce (`NotImplemented`).
    Unsupported(String),
}

impl From<PolicyError> for s3s::S3Error {
    fn from(e: PolicyError) -> s3s::S3Error {
        match e {
            PolicyError::Malformed(m) => s3err(S3ErrorCode::MalformedPolicy, m),
            PolicyError::Unsupported(m) => s3err(S3ErrorCode::NotImplemented, m),
        }
    }
}

fn malformed(m: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(m.into())
}

fn unsupported(m: impl Into<String>) -> PolicyError {
    PolicyError::Unsupported(format!(
        "{}: bucket policies here may only let anyone (\"Principal\": \"*\") s3:GetObject \
         under a key prefix, or s3:ListBucket",
        m.into()
    ))
}

/// A string or a list of strings (how policies write one or several).
fn strings(v: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("{field} must hold strings")))
            })
            .collect(),
        _ => Err(malformed(format!(
            "{field} must be a string or a list of strings"
        ))),
    }
}

fn is_everyone(p: &Value) -> Result<bool, PolicyError> {
    Ok(match p {
        Value::String(s) => s == "*",
        Value::Object(m) => {
            m.len() == 1
                && m.get("AWS")
                    .is_some_and(|v| strings(v, "Principal").is_ok_and(|a| a == ["*"]))
        }
        _ => return Err(malformed("Principal must be \"*\" or an object")),
    })
}

/// Parses a policy document for `bucket`.
///
/// # Errors
/// [`PolicyError::Malformed`] for what is not a policy on this bucket;
/// [`PolicyError::Unsupported`] for what is a policy, but not one kept here.
pub fn parse(bucket: &str, text: &str) -> Result<BucketPolicy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(malformed(format!(
            "Policies must be at most {MAX_POLICY_BYTES} bytes"
        )));
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("Policies must be JSON: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(malformed("A policy is a JSON object"));
    };
    for k in doc.keys() {
        if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
            return Err(malformed(format!("Unknown field {k}")));
        }
    }
    match doc.get("Version") {
        None => {}
        Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
        Some(_) => return Err(malformed("Version must be 2012-10-17 or 2008-10-17")),
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => return Err(malformed("Missing required field Statement")),
    };
    let arn = format!("arn:aws:s3:::{bucket}");
    let mut out = BucketPolicy {
        text: text.to_owned(),
        read_prefixes: Vec::new(),
        list: false,
    };
    for st in &statements {
        let Value::Object(st) = st else {
            return Err(malformed("A statement is a JSON object"));
        };
        for k in st.keys() {
            match k.as_str() {
                "Sid" | "Effect" | "Principal" | "Action" | "Resource" => {}
                "NotPrincipal" | "NotAction" | "NotResource" | "Condition" => {
                    return Err(unsupported(format!("{k} is not supported")));
                }
                _ => return Err(malformed(format!("Unknown field {k}"))),
            }
        }
        match st.get("Effect").and_then(Value::as_str) {
            Some("Allow") => {}
            Some("Deny") => return Err(unsupported("Deny statements are not supported")),
            _ => return Err(malformed("Effect must be Allow or Deny")),
        }
        let principal = st
            .get("Principal")
            .ok_or_else(|| malformed("Missing required field Principal"))?;
        if !is_everyone(principal)? {
            return Err(unsupported("Principals other than \"*\" are not supported"));
        }
        let actions = strings(
            st.get("Action")
                .ok_or_else(|| malformed("Missing required field Action"))?,
            "Action",
        )?;
        let resources = strings(
            st.get("Resource")
                .ok_or_else(|| malformed("Missing required field Resource"))?,
            "Resource",
        )?;
        let mut objects: Vec<String> = Vec::new();
        let mut whole_bucket = false;
        for r in &resources {
            if r == &arn {
                whole_bucket = true;
            } else if let Some(pattern) = r.strip_prefix(&arn).and_then(|p| p.strip_prefix('/')) {
                match pattern.strip_suffix('*') {
                    Some(prefix) if !prefix.contains(['*', '?']) => objects.push(prefix.to_owned()),
                    _ => {
                        return Err(unsupported(format!(
                            "Resource {r}: only a key prefix followed by one * is supported"
                        )));
                    }
                }
            } else {
                return Err(malformed(format!(
                    "Policy has invalid resource {r}: it is not in bucket {bucket}"
                )));
            }
        }
        for a in &actions {
            match a.as_str() {
                "s3:GetObject" if !objects.is_empty() => {
                    out.read_prefixes.extend(objects.iter().cloned());
                }
                "s3:ListBucket" if whole_bucket => out.list = true,
                "s3:GetObject" | "s3:ListBucket" => {
                    return Err(malformed(format!(
                        "Action does not apply to any resource(s) in statement: {a}"
                    )));
                }
                _ => return Err(unsupported(format!("Action {a} is not supported"))),
            }
        }
    }
    out.read_prefixes.sort();
    out.read_prefixes.dedup();
    Ok(out)
}

/// `PutBucketPolicy`.
///
/// # Errors
/// `MalformedPolicy`, `NotImplemented` ([`parse`]); `ConditionalRequestConflict` when the
/// bucket changed meanwhile.
pub async fn put_bucket_policy(
    api: &S3Api,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    let policy = parse(&b.rec.name, &req.input.policy)?;
    let mut rec = b.rec.clone();
    rec.policy = Some(policy);
    let cond = moray::EtagCondition::MustMatch(b.etag.clone());
    if !api.meta.put_bucket(&rec, cond).await? {
        return Err(conditional_conflict());
    }
    tracing::info!(bucket = %rec.name, policy = ?rec.policy, "bucket policy set");
    Ok(S3Response::with_status(
        PutBucketPolicyOutput::default(),
        http::StatusCode::NO_CONTENT,
    ))
}

/// `GetBucketPolicy`: the document as it was given.
///
/// # Errors
/// `NoSuchBucketPolicy`.
pub async fn get_bucket_policy(
    _api: &S3Api,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?.rec;
    let p = b.policy.ok_or_else(|| {
        s3err(
            S3ErrorCode::NoSuchBucketPolicy,
            "The bucket policy does not exist",
        )
    })?;
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(p.text),
    }))
}

/// `DeleteBucketPolicy` (a bucket without one answers the same).
///
/// # Errors
/// `ConditionalRequestConflict` when the bucket changed meanwhile.
pub async fn delete_bucket_policy(
    api: &S3Api,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    let b = bucket_of(&req, &req.input.bucket)?;
    if b.rec.policy.is_some() {
        let mut rec = b.rec.clone();
        rec.policy = None;
        let cond = moray::EtagCondition::MustMatch(b.etag.clone());
        if !api.meta.put_bucket(&rec, cond).await? {
            return Err(conditional_conflict());
        }
        tracing::info!(bucket = %rec.name, "bucket policy removed");
    }
    Ok(S3Response::with_status(
        DeleteBucketPolicyOutput::default(),
        http::StatusCode::NO_CONTENT,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn public(resource: &str, action: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"pub","Effect":"Allow","Principal":"*","Action":["{action}"],"Resource":["{resource}"]}}]}}"#
        )
    }

    #[test]
    fn public_read_of_a_prefix_or_the_whole_bucket() {
        let p = parse(
            "pics",
            &public("arn:aws:s3:::pics/shared/*", "s3:GetObject"),
        )
        .unwrap();
        assert_eq!(p.read_prefixes, ["shared/"]);
        assert_eq!(p.grant(Some("shared/a.png")), Grant::PublicRead);
        assert_eq!(p.grant(Some("private/a.png")), Grant::None);
        assert_eq!(p.grant(None), Grant::None);
        let all = parse("pics", &public("arn:aws:s3:::pics/*", "s3:GetObject")).unwrap();
        assert_eq!(all.grant(Some("anything")), Grant::PublicRead);
        let list = parse("pics", &public("arn:aws:s3:::pics", "s3:ListBucket")).unwrap();
        assert_eq!(list.grant(None), Grant::PublicRead);
        assert_eq!(list.grant(Some("a")), Grant::None);
        let aws = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"s3:GetObject","Resource":"arn:aws:s3:::pics/*"}}"#;
        assert!(parse("pics", aws).is_ok());
    }

    #[test]
    fn what_is_not_kept_is_refused() {
        let unsupported = |t: &str| {
            assert!(
                matches!(parse("pics", t), Err(PolicyError::Unsupported(_))),
                "{t}: {:?}",
                parse("pics", t)
            );
        };
        let malformed = |t: &str| {
            assert!(
                matches!(parse("pics", t), Err(PolicyError::Malformed(_))),
                "{t}: {:?}",
                parse("pics", t)
            );
        };
        unsupported(&public("arn:aws:s3:::pics/*", "s3:PutObject"));
        unsupported(&public("arn:aws:s3:::pics/*", "s3:*"));
        unsupported(&public("arn:aws:s3:::pics/a*b*", "s3:GetObject"));
        unsupported(&public("arn:aws:s3:::pics/exact.txt", "s3:GetObject"));
        unsupported(&public("arn:aws:s3:::pics/*", "s3:GetObject").replace("Allow", "Deny"));
        unsupported(
            &public("arn:aws:s3:::pics/*", "s3:GetObject")
                .replace(r#""*""#, r#"{"AWS":"arn:aws:iam::1:root"}"#),
        );
        unsupported(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::pics/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        );
        malformed(&public("arn:aws:s3:::other/*", "s3:GetObject"));
        malformed(&public("arn:aws:s3:::pics", "s3:GetObject"));
        malformed(&public("arn:aws:s3:::pics/*", "s3:ListBucket"));
        malformed("");
        malformed("[]");
        malformed(r#"{"Statement":[]}"#);
        malformed(r#"{"Version":"2020-01-01","Statement":[]}"#);
        malformed(&" ".repeat(MAX_POLICY_BYTES + 1));
    }

    proptest! {
        #[test]
        fn anything_parsed_grants_only_reads_inside_the_bucket(text in "[ -~]{0,200}", key in "[a-z/]{0,12}") {
            if let Ok(p) = parse("pics", &text) {
                prop_assert_eq!(&p.text, &text);
                let g = p.grant(Some(&key));
                prop_assert_eq!(g == Grant::PublicRead, p.read_prefixes.iter().any(|x| key.starts_with(x.as_str())));
            }
        }

        #[test]
        fn built_prefix_policies_grant_exactly_their_prefix(prefix in "[a-z0-9/._-]{0,16}", key in "[a-z0-9/._-]{0,20}") {
            let p = parse("pics", &public(&format!("arn:aws:s3:::pics/{prefix}*"), "s3:GetObject")).unwrap();
            prop_assert_eq!(p.grant(Some(&key)) == Grant::PublicRead, key.starts_with(&prefix));
            prop_assert_eq!(p.grant(None), Grant::None);
        }
    }
}
