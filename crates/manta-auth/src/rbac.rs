//! Role-based access for sub-users: an account's sub-users, roles and policies, the rule
//! language of policies, and the decision for one request.
//!
//! An account owns everything in its tree. A *sub-user* of the account (its own login and
//! SSH keys; it signs with `keyId="/<account>/<user>/keys/<fingerprint>"`) may act on the
//! account's tree only through *roles*: a role has members (sub-users), default members
//! (whose requests take the role without asking), and policies. A request's *active roles*
//! are those named in its `Role` header (`*`: all the user's roles), else the user's default
//! roles. A request is allowed when one active role
//! - is named in the resource's `role-tag` (an object's or directory's own tags; a new entry's
//!   parent directory's; tags do not cascade), and
//! - has a policy with a rule that allows the action under the request's conditions.
//!
//! Rules read as the original's: `CAN getobject, putobject` optionally followed by `WHEN` (or
//! `IF`) and conditions joined by `AND`: `sourceip = 10.0.0.0/8`, `date < 2027-01-01T00:00:00Z`
//! (`<`, `<=`, `>`, `>=`, `=`), `day = Monday` (`day in (Monday, Tuesday)`), `time >= 09:00`
//! (UTC). Actions are the object store's: `getobject`, `putobject`, `deleteobject`,
//! `getdirectory`, `putdirectory`, `deletedirectory`, `putsnaplink`, `putmetadata`, and `*`.

use std::net::IpAddr;

use manta_types::{ErrorCode, MantaError};
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountKey};

/// A sub-user of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubUser {
    /// Stable id.
    pub uuid: String,
    /// Its login (unique within the account).
    pub login: String,
    /// Its SSH keys.
    #[serde(default)]
    pub keys: Vec<AccountKey>,
    /// Its S3 access keys (S3 requests signed with one act with its roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub s3_keys: Vec<crate::account::S3Key>,
    /// Creation time, epoch ms.
    #[serde(default)]
    pub created: u64,
}

impl SubUser {
    /// A new sub-user with a random id.
    pub fn new(login: &str) -> SubUser {
        SubUser {
            uuid: uuid::Uuid::new_v4().to_string(),
            login: login.to_owned(),
            keys: Vec::new(),
            s3_keys: Vec::new(),
            created: manta_types::time::now_ms(),
        }
    }

    /// The key with this fingerprint (either form).
    pub fn key(&self, fingerprint: &str) -> Option<&AccountKey> {
        let md5 = fingerprint.strip_prefix("MD5:").unwrap_or(fingerprint);
        self.keys
            .iter()
            .find(|k| k.fingerprint.eq_ignore_ascii_case(md5) || k.sha256 == fingerprint)
    }
}

/// A role of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Its name (what `role-tag` and the `Role` header name).
    pub name: String,
    /// Sub-users who may take it.
    #[serde(default)]
    pub members: Vec<String>,
    /// Members whose requests take it unless they name their roles.
    #[serde(default)]
    pub default_members: Vec<String>,
    /// Names of the policies it has.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// A policy of an account: rules in the rule language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Its rules, as written.
    #[serde(default)]
    pub rules: Vec<String>,
}

/// What a request does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read an object (`GET`, `HEAD`).
    GetObject,
    /// Write an object.
    PutObject,
    /// Delete an object.
    DeleteObject,
    /// List or read a directory.
    GetDirectory,
    /// Make a directory.
    PutDirectory,
    /// Delete a directory.
    DeleteDirectory,
    /// Make a SnapLink.
    PutSnapLink,
    /// Change an entry's metadata (headers, role tags).
    PutMetadata,
}

impl Action {
    /// Every action, for tables.
    pub const ALL: [Action; 8] = [
        Action::GetObject,
        Action::PutObject,
        Action::DeleteObject,
        Action::GetDirectory,
        Action::PutDirectory,
        Action::DeleteDirectory,
        Action::PutSnapLink,
        Action::PutMetadata,
    ];

    /// Its name in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::GetObject => "getobject",
            Action::PutObject => "putobject",
            Action::DeleteObject => "deleteobject",
            Action::GetDirectory => "getdirectory",
            Action::PutDirectory => "putdirectory",
            Action::DeleteDirectory => "deletedirectory",
            Action::PutSnapLink => "putsnaplink",
            Action::PutMetadata => "putmetadata",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A comparison in a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
}

impl Op {
    fn holds<T: Ord>(self, a: &T, b: &T) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "=",
        }
    }
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The client's address is in this network (address, prefix length).
    SourceIp(IpAddr, u8),
    /// The request time (epoch ms) compared with this one.
    Date(Op, u64),
    /// The request's weekday (UTC), 0 = Monday.
    Day(Vec<u8>),
    /// The request's time of day (UTC, minutes since midnight) compared with this one.
    Time(Op, u32),
}

/// A parsed rule: which actions it allows, under which conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The actions (`None`: every action, `*`).
    pub actions: Option<Vec<Action>>,
    /// Every one must hold.
    pub conditions: Vec<Condition>,
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Splits a rule into words and the punctuation `,` `(` `)` and comparison operators.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            ',' | '(' | ')' | '<' | '>' | '=' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                let mut t = c.to_string();
                if matches!(c, '<' | '>') && chars.peek() == Some(&'=') {
                    chars.next();
                    t.push('=');
                }
                out.push(t);
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn op_of(t: &str) -> Option<Op> {
    Some(match t {
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "=" => Op::Eq,
        _ => return None,
    })
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|n| *n <= max)?,
        None => max,
    };
    Some((ip, len))
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (a, b, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(v4) => return in_network(IpAddr::V4(v4), net, len),
            None => return false,
        },
        _ => return false,
    };
    if len == 0 {
        return true;
    }
    let shift = bits - u32::from(len);
    (a >> shift) == (b >> shift)
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60 && s.len() <= 5).then_some(h * 60 + m)
}

/// Parses one rule.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_rule(text: &str) -> Result<Rule, String> {
    let t = tokens(text);
    let lower: Vec<String> = t.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut i = 0;
    if lower.first().map(String::as_str) != Some("can") {
        return Err(format!("{text:?}: a rule starts with CAN"));
    }
    i += 1;
    let mut actions = Vec::new();
    let mut every = false;
    loop {
        let Some(word) = lower.get(i) else {
            return Err(format!("{text:?}: CAN needs an action"));
        };
        if word == "*" {
            every = true;
        } else {
            actions.push(Action::parse(word).ok_or_else(|| {
                format!(
                    "{text:?}: {word:?} is not an action (one of {}, or *)",
                    Action::ALL.map(Action::as_str).join(", ")
                )
            })?);
        }
        i += 1;
        if lower.get(i).map(String::as_str) == Some(",") {
            i += 1;
            continue;
        }
        break;
    }
    let mut conditions = Vec::new();
    if let Some(w) = lower.get(i) {
        if w != "when" && w != "if" {
            return Err(format!("{text:?}: expected WHEN or IF, found {:?}", t[i]));
        }
        i += 1;
        loop {
            let (Some(name), Some(op)) = (lower.get(i), lower.get(i + 1)) else {
                return Err(format!("{text:?}: a condition is incomplete"));
            };
            i += 2;
            let value = |i: usize| {
                t.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{text:?}: {name} needs a value"))
            };
            let c = match (name.as_str(), op.as_str()) {
                ("sourceip", "=") => {
                    let v = value(i)?;
                    i += 1;
                    let (ip, len) = parse_cidr(&v)
                        .ok_or_else(|| format!("{text:?}: {v:?} is not an address or network"))?;
                    Condition::SourceIp(ip, len)
                }
                ("date", o) if op_of(o).is_some() => {
                    let v = value(i)?;
                    i += 1;
                    let ms = manta_types::time::parse_iso8601_ms(&v).ok_or_else(|| {
                        format!("{text:?}: {v:?} is not a date (2027-01-01T00:00:00Z)")
                    })?;
                    Condition::Date(op_of(o).unwrap_or(Op::Eq), ms)
                }
                ("time", o) if op_of(o).is_some() => {
                    let v = value(i)?;
                    i += 1;
                    let m = parse_hhmm(&v)
                        .ok_or_else(|| format!("{text:?}: {v:?} is not a time (HH:MM)"))?;
                    Condition::Time(op_of(o).unwrap_or(Op::Eq), m)
                }
                ("day", "=") | ("day", "in") => {
                    let mut days = Vec::new();
                    let listed = op == "in";
                    if listed {
                        if lower.get(i).map(String::as_str) != Some("(") {
                            return Err(format!("{text:?}: day in needs a list: (Monday, ...)"));
                        }
                        i += 1;
                    }
                    loop {
                        let v = lower
                            .get(i)
                            .ok_or_else(|| format!("{text:?}: day needs a value"))?;
                        let d = DAYS
                            .iter()
                            .position(|d| d == v)
                            .ok_or_else(|| format!("{text:?}: {v:?} is not a day"))?;
                        days.push(d as u8);
                        i += 1;
                        if listed && lower.get(i).map(String::as_str) == Some(",") {
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    if listed {
                        if lower.get(i).map(String::as_str) != Some(")") {
                            return Err(format!("{text:?}: the day list is not closed"));
                        }
                        i += 1;
                    }
                    Condition::Day(days)
                }
                _ => {
                    return Err(format!(
                        "{text:?}: {name} {op} is not a condition (sourceip =, date, time, day)"
                    ));
                }
            };
            conditions.push(c);
            match lower.get(i).map(String::as_str) {
                None => break,
                Some("and") => i += 1,
                Some(_) => return Err(format!("{text:?}: expected AND, found {:?}", t[i])),
            }
        }
    }
    Ok(Rule {
        actions: (!every).then_some(actions),
        conditions,
    })
}

impl Rule {
    /// The rule in the form [`parse_rule`] reads.
    pub fn render(&self) -> String {
        let mut s = String::from("CAN ");
        match &self.actions {
            None => s.push('*'),
            Some(a) => s.push_str(&a.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")),
        }
        for (i, c) in self.conditions.iter().enumerate() {
            s.push_str(if i == 0 { " WHEN " } else { " AND " });
            match c {
                Condition::SourceIp(ip, len) => s.push_str(&format!("sourceip = {ip}/{len}")),
                Condition::Date(op, ms) => s.push_str(&format!(
                    "date {} {}",
                    op.as_str(),
                    manta_types::time::iso8601_ms(*ms)
                )),
                Condition::Time(op, m) => {
                    s.push_str(&format!("time {} {:02}:{:02}", op.as_str(), m / 60, m % 60));
                }
                Condition::Day(d) => {
                    let names: Vec<&str> = d.iter().map(|d| DAYS[*d as usize]).collect();
                    s.push_str(&format!("day in ({})", names.join(", ")));
                }
            }
        }
        s
    }

    /// Whether the rule allows `action` under `ctx`.
    pub fn allows(&self, action: Action, ctx: &Conditions) -> bool {
        let named = self.actions.as_ref().is_none_or(|a| a.contains(&action));
        named
            && self.conditions.iter().all(|c| match c {
                Condition::SourceIp(net, len) => {
                    ctx.source_ip.is_some_and(|ip| in_network(ip, *net, *len))
                }
                Condition::Date(op, ms) => op.holds(&ctx.now_ms, ms),
                Condition::Time(op, m) => {
                    let minute = ((ctx.now_ms / 60_000) % (24 * 60)) as u32;
                    op.holds(&minute, m)
                }
                Condition::Day(days) => {
                    // 1970-01-01 was a Thursday (3).
                    let day = ((ctx.now_ms / 86_400_000 + 3) % 7) as u8;
                    days.contains(&day)
                }
            })
    }
}

/// What a request's conditions are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Conditions {
    /// The client's address.
    pub source_ip: Option<IpAddr>,
    /// The time of the request, epoch ms.
    pub now_ms: u64,
}

/// A sub-user making a request, with the roles active for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    /// The sub-user's login.
    pub login: String,
    /// Its id.
    pub uuid: String,
    /// The roles active for this request.
    pub roles: Vec<String>,
}

/// The roles active for `user`'s request that names `asked` (its `Role` header, if any).
///
/// # Errors
/// `InvalidRole` when a named role does not exist or the user is not a member of it.
pub fn active_roles(
    account: &Account,
    user: &SubUser,
    asked: Option<&str>,
) -> Result<Vec<String>, MantaError> {
    let member_of = |r: &&Role| r.members.contains(&user.login);
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(account
            .roles
            .iter()
            .filter(|r| r.default_members.contains(&user.login) && member_of(r))
            .map(|r| r.name.clone())
            .collect()),
        Some("*") => Ok(account
            .roles
            .iter()
            .filter(member_of)
            .map(|r| r.name.clone())
            .collect()),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                account
                    .roles
                    .iter()
                    .find(|r| r.name == name)
                    .filter(member_of)
                    .map(|r| r.name.clone())
                    .ok_or_else(|| {
                        MantaError::new(
                            ErrorCode::InvalidRole,
                            format!("{name} is not a role {} may take", user.login),
                        )
                    })
            })
            .collect(),
    }
}

/// Why a sub-user's request was allowed: the role and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The role.
    pub role: String,
    /// The policy.
    pub policy: String,
    /// The rule, as written.
    pub rule: String,
}

/// Decides whether `acting` (a sub-user of `account`) may do `action` to a resource tagged
/// with `tags`, under `ctx`.
///
/// # Errors
/// `NoMatchingRoleTag` (403) when no active role is among the resource's tags;
/// `MissingPermission` (403) when none of those roles has a rule allowing the action.
pub fn decide(
    account: &Account,
    acting: &Acting,
    action: Action,
    tags: &[String],
    ctx: &Conditions,
) -> Result<Allowed, MantaError> {
    let tagged: Vec<&Role> = account
        .roles
        .iter()
        .filter(|r| acting.roles.contains(&r.name) && tags.contains(&r.name))
        .collect();
    if tagged.is_empty() {
        return Err(MantaError::new(
            ErrorCode::NoMatchingRoleTag,
            format!(
                "none of {}'s active roles ({}) is among the resource's role tags",
                acting.login,
                acting.roles.join(", ")
            ),
        ));
    }
    for role in tagged {
        for p in account
            .policies
            .iter()
            .filter(|p| role.policies.contains(&p.name))
        {
            for text in &p.rules {
                if parse_rule(text).is_ok_and(|r| r.allows(action, ctx)) {
                    return Ok(Allowed {
                        role: role.name.clone(),
                        policy: p.name.clone(),
                        rule: text.clone(),
                    });
                }
            }
        }
    }
    Err(MantaError::new(
        ErrorCode::MissingPermission,
        format!(
            "{} may not {} here: no policy of its roles allows it",
            acting.login,
            action.as_str()
        ),
    ))
}

/// Checks role tags given on a write: every name must be a role of `account`.
///
/// # Errors
/// `InvalidRoleTag` naming the first unknown role.
pub fn parse_role_tags(account: &Account, value: &str) -> Result<Vec<String>, MantaError> {
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !account.roles.iter().any(|r| r.name == name) {
            return Err(MantaError::new(
                ErrorCode::InvalidRoleTag,
                format!("{name} is not a role of {}", account.login),
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rules_parse_in_the_originals_words() {
        let r = parse_rule("CAN getobject, putobject").unwrap();
        assert_eq!(r.actions, Some(vec![Action::GetObject, Action::PutObject]));
        assert!(r.conditions.is_empty());
        let r = parse_rule("can * when sourceip = 10.0.0.0/8 and day in (Monday, friday)").unwrap();
        assert_eq!(r.actions, None);
        assert_eq!(r.conditions.len(), 2);
        let r =
            parse_rule("CAN getobject IF date < 2027-01-01T00:00:00Z AND time >= 09:00").unwrap();
        assert_eq!(r.conditions.len(), 2);
        for bad in [
            "",
            "getobject",
            "CAN",
            "CAN fly",
            "CAN getobject when",
            "CAN getobject when sourceip = nope",
            "CAN getobject when color = red",
            "CAN getobject when day in (Monday",
            "CAN getobject when time > 25:00",
            "CAN getobject and",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn conditions_hold_as_written() {
        let at = |iso: &str, ip: &str| Conditions {
            source_ip: Some(ip.parse().unwrap()),
            now_ms: manta_types::time::parse_iso8601_ms(iso).unwrap(),
        };
        // 2026-12-07 is a Monday.
        let monday_10 = at("2026-12-07T10:00:00.000Z", "10.1.2.3");
        let r = parse_rule("CAN getobject WHEN sourceip = 10.0.0.0/8").unwrap();
        assert!(r.allows(Action::GetObject, &monday_10));
        assert!(!r.allows(Action::PutObject, &monday_10));
        assert!(!r.allows(
            Action::GetObject,
            &at("2026-12-07T10:00:00.000Z", "192.168.0.1")
        ));
        assert!(r.allows(
            Action::GetObject,
            &at("2026-12-07T10:00:00.000Z", "::ffff:10.9.9.9")
        ));
        let days =
            parse_rule("CAN * WHEN day = Monday AND time >= 09:00 AND time < 17:00").unwrap();
        assert!(days.allows(Action::DeleteObject, &monday_10));
        assert!(!days.allows(
            Action::DeleteObject,
            &at("2026-12-07T18:00:00.000Z", "10.1.2.3")
        ));
        assert!(!days.allows(
            Action::DeleteObject,
            &at("2026-12-08T10:00:00.000Z", "10.1.2.3")
        ));
        let until = parse_rule("CAN getobject WHEN date < 2026-12-07T11:00:00Z").unwrap();
        assert!(until.allows(Action::GetObject, &monday_10));
        assert!(!until.allows(
            Action::GetObject,
            &at("2026-12-07T11:00:00.000Z", "10.1.2.3")
        ));
    }

    proptest! {
        #[test]
        fn parsed_rules_render_to_rules_that_parse_the_same(s in "[ -~]{0,80}") {
            if let Ok(r) = parse_rule(&s) {
                let again = parse_rule(&r.render());
                prop_assert_eq!(again.as_ref(), Ok(&r), "{}", r.render());
            }
        }

        #[test]
        fn built_rules_round_trip(
            acts in proptest::sample::subsequence(Action::ALL.to_vec(), 1..4),
            a in any::<u32>(), len in 0u8..=32, t in 0u32..1440,
        ) {
            let ip = std::net::Ipv4Addr::from(a);
            let text = format!(
                "CAN {} WHEN sourceip = {ip}/{len} AND time < {:02}:{:02}",
                acts.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "),
                t / 60, t % 60
            );
            let r = parse_rule(&text).unwrap();
            prop_assert_eq!(parse_rule(&r.render()).unwrap(), r);
        }
    }
}
