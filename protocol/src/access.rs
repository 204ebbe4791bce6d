//! Users, access rules and quotas: the bodies of `ListUsers`, `SetUser`, `RemoveUser`,
//! `ListRules`, `AddRule`, `RemoveRule`, `ListQuotas`, `SetQuota` and `RemoveQuota`.
//!
//! A password never crosses the wire: the client derives the salted SCRAM keys (RFC 5802) for
//! both hashes and sends those. A rule is `principal` may do `operation` on the resources the
//! pattern names; a "superuser rule" (resource kind [`RuleResource::Superuser`]) names a
//! principal allowed everything.

use crate::error::{DecodeError, EncodeError};
use crate::limits::{QUOTA_PRINCIPAL_COUNT_MAX, USER_COUNT_MAX};
use crate::wire::{len_u32, put_str16, put_u16, put_u32, put_u64, put_u8, Reader};

/// Longest user name, bytes.
pub const USER_NAME_SIZE_MAX: usize = 200;
/// Longest principal, bytes (certificate subjects can be long).
pub const PRINCIPAL_SIZE_MAX: usize = 1024;
/// Longest resource name or prefix in a rule, bytes.
pub const RESOURCE_NAME_SIZE_MAX: usize = 255;
/// Longest salt or key of a credential, bytes.
pub const KEY_SIZE_MAX: usize = 64;
/// Most rules (and superusers) a `ListRules` reply carries.
pub const RULE_COUNT_MAX: usize = 10_100;

macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident = $value:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant = $value,)*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The value for a wire byte.
            #[must_use]
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The wire byte.
            #[must_use]
            pub fn to_u8(self) -> u8 {
                match self {
                    $(Self::$variant => $value,)*
                }
            }

            /// The name the CLI and the documentation use.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// The value named `name`.
            #[must_use]
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|value| value.name() == name)
            }
        }
    };
}

codes! {
    /// What a rule is about.
    RuleResource {
        /// Not a resource: the principal is a superuser (allowed everything).
        Superuser = 0, "superuser";
        /// A topic.
        Topic = 1, "topic";
        /// A consumer group.
        Group = 2, "group";
        /// The cluster (`kafka-cluster`).
        Cluster = 3, "cluster";
    }
}

codes! {
    /// How a rule's name is matched.
    RulePattern {
        /// The name itself (`*`: every name).
        Literal = 0, "literal";
        /// Every name that starts with it.
        Prefix = 1, "prefix";
    }
}

codes! {
    /// What a rule allows.
    RuleOperation {
        /// Everything on the resource.
        All = 0, "all";
        /// Topic: append.
        Produce = 1, "produce";
        /// Topic: fetch.
        Consume = 2, "consume";
        /// Group: join, commit.
        Read = 3, "read";
        /// Topic or cluster: create topics.
        Create = 4, "create";
        /// Topic or group: delete.
        Delete = 5, "delete";
        /// See it.
        Describe = 6, "describe";
        /// Topic: change settings; cluster: manage users and rules.
        Alter = 7, "alter";
        /// Cluster: get an idempotent producer id.
        IdempotentWrite = 8, "idempotent-write";
    }
}

codes! {
    /// What a quota limits.
    QuotaKind {
        /// Record batch bytes per second produced.
        Produce = 0, "produce";
        /// Record batch bytes per second fetched.
        Fetch = 1, "fetch";
        /// Connections open at once.
        Connections = 2, "connections";
        /// Ring bytes (partitions × capacity) of the topics the principal created.
        TopicBytes = 3, "topic-bytes";
    }
}

/// The principal that stands for the broker's defaults in a [`QuotaList`].
pub const QUOTA_DEFAULTS: &str = "*";

/// Most entries a `ListQuotas` reply carries: every kind for the defaults and for each
/// principal with quotas of its own.
pub const QUOTA_ENTRY_COUNT_MAX: usize = 4 * (QUOTA_PRINCIPAL_COUNT_MAX + 1);

/// One quota on the wire: `principal`, kind `u8`, value `u64` (0: no limit). The `SetQuota`
/// body: the principal's own value, in place of the broker's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaEntry<'a> {
    /// Whose ([`QUOTA_DEFAULTS`] in a list: the broker's defaults).
    pub principal: &'a str,
    /// What it limits.
    pub kind: QuotaKind,
    /// Bytes per second, connections or bytes; 0: no limit.
    pub value: u64,
}

impl<'a> QuotaEntry<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let principal = reader.str16("principal", PRINCIPAL_SIZE_MAX)?;
        let kind = quota_kind(reader)?;
        let value = reader.u64("value")?;
        Ok(Self { principal, kind, value })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "principal", self.principal, PRINCIPAL_SIZE_MAX)?;
        put_u8(out, self.kind.to_u8());
        put_u64(out, self.value);
        Ok(())
    }

    /// Decodes a `SetQuota` body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "set quota request");
        let entry = Self::read(&mut reader)?;
        reader.finish()?;
        Ok(entry)
    }

    /// Encodes a `SetQuota` body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a principal over its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write(out)
    }
}

fn quota_kind(reader: &mut Reader<'_>) -> Result<QuotaKind, DecodeError> {
    let kind = reader.u8("kind")?;
    QuotaKind::from_u8(kind)
        .ok_or_else(|| reader.invalid("kind", u64::from(kind), "not a quota kind"))
}

/// The `RemoveQuota` body: the principal's quota of this kind goes back to the broker's
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaTarget<'a> {
    /// Whose.
    pub principal: &'a str,
    /// Which.
    pub kind: QuotaKind,
}

impl<'a> QuotaTarget<'a> {
    /// Decodes the body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "remove quota request");
        let principal = reader.str16("principal", PRINCIPAL_SIZE_MAX)?;
        let kind = quota_kind(&mut reader)?;
        reader.finish()?;
        Ok(Self { principal, kind })
    }

    /// Encodes the body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a principal over its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "principal", self.principal, PRINCIPAL_SIZE_MAX)?;
        put_u8(out, self.kind.to_u8());
        Ok(())
    }
}

/// The `ListQuotas` reply: the broker's defaults (principal [`QUOTA_DEFAULTS`], every kind),
/// then each principal's own quotas, by principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaList<'a> {
    /// The quotas.
    pub entries: Vec<QuotaEntry<'a>>,
}

impl<'a> QuotaList<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "quota list");
        let count = reader.count32("quotas", QUOTA_ENTRY_COUNT_MAX, 11)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(QuotaEntry::read(&mut reader)?);
        }
        reader.finish()?;
        Ok(Self { entries })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for too many entries or a principal over its limit.
    pub fn encode(entries: &[QuotaEntry<'_>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, len_u32("quotas", entries.len(), QUOTA_ENTRY_COUNT_MAX)?);
        entries.iter().try_for_each(|entry| entry.write(out))
    }
}

/// One rule on the wire: `principal`, resource kind `u8`, pattern `u8`, `name`, operation `u8`.
/// A superuser rule has an empty name, pattern literal and operation all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry<'a> {
    /// Who (`*`: every authenticated principal).
    pub principal: &'a str,
    /// The kind of resource.
    pub resource: RuleResource,
    /// How `name` is matched.
    pub pattern: RulePattern,
    /// The resource's name or prefix.
    pub name: &'a str,
    /// What is allowed.
    pub operation: RuleOperation,
}

impl<'a> RuleEntry<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let principal = reader.str16("principal", PRINCIPAL_SIZE_MAX)?;
        let resource = reader.u8("resource")?;
        let resource = RuleResource::from_u8(resource).ok_or_else(|| {
            reader.invalid("resource", u64::from(resource), "not a resource kind")
        })?;
        let pattern = reader.u8("pattern")?;
        let pattern = RulePattern::from_u8(pattern)
            .ok_or_else(|| reader.invalid("pattern", u64::from(pattern), "not a pattern kind"))?;
        let name = reader.str16("name", RESOURCE_NAME_SIZE_MAX)?;
        let operation = reader.u8("operation")?;
        let operation = RuleOperation::from_u8(operation)
            .ok_or_else(|| reader.invalid("operation", u64::from(operation), "not an operation"))?;
        Ok(Self { principal, resource, pattern, name, operation })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "principal", self.principal, PRINCIPAL_SIZE_MAX)?;
        put_u8(out, self.resource.to_u8());
        put_u8(out, self.pattern.to_u8());
        put_str16(out, "name", self.name, RESOURCE_NAME_SIZE_MAX)?;
        put_u8(out, self.operation.to_u8());
        Ok(())
    }

    /// Decodes an `AddRule` or `RemoveRule` body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "rule");
        let rule = Self::read(&mut reader)?;
        reader.finish()?;
        Ok(rule)
    }

    /// Encodes an `AddRule` or `RemoveRule` body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a principal or name over its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write(out)
    }
}

/// The `ListRules` reply: every rule, superusers first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleList<'a> {
    /// The rules.
    pub rules: Vec<RuleEntry<'a>>,
}

impl<'a> RuleList<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "rule list");
        let count = reader.count32("rules", RULE_COUNT_MAX, 7)?;
        let mut rules = Vec::with_capacity(count);
        for _ in 0..count {
            rules.push(RuleEntry::read(&mut reader)?);
        }
        reader.finish()?;
        Ok(Self { rules })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for too many rules or a field over its limit.
    pub fn encode(rules: &[RuleEntry<'_>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, len_u32("rules", rules.len(), RULE_COUNT_MAX)?);
        rules.iter().try_for_each(|rule| rule.write(out))
    }
}

/// A user name: the `RemoveUser` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName<'a> {
    /// The user.
    pub name: &'a str,
}

impl<'a> UserName<'a> {
    /// Decodes the body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "remove user request");
        let name = reader.str16("name", USER_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { name })
    }

    /// Encodes the body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a name over [`USER_NAME_SIZE_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "name", self.name, USER_NAME_SIZE_MAX)
    }
}

/// The `ListUsers` reply: every user's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserList<'a> {
    /// The names, sorted.
    pub names: Vec<&'a str>,
}

impl<'a> UserList<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "user list");
        let count = reader.count32("users", USER_COUNT_MAX, 2)?;
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            names.push(reader.str16("name", USER_NAME_SIZE_MAX)?);
        }
        reader.finish()?;
        Ok(Self { names })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for too many users or a name over its limit.
    pub fn encode(names: &[&str], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u32(out, len_u32("users", names.len(), USER_COUNT_MAX)?);
        names.iter().try_for_each(|name| put_str16(out, "name", name, USER_NAME_SIZE_MAX))
    }
}

/// One salted SCRAM credential: the salt, the PBKDF2 iterations, `H(ClientKey)` and the server
/// key.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys<'a> {
    /// The salt.
    pub salt: &'a [u8],
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: &'a [u8],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: &'a [u8],
}

// Keys let whoever holds them (with one captured exchange) log in: never in a Debug dump.
impl std::fmt::Debug for ScramKeys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl<'a> ScramKeys<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let salt = key(reader, "salt")?;
        let iterations = reader.u32("iterations")?;
        let stored_key = key(reader, "stored_key")?;
        let server_key = key(reader, "server_key")?;
        Ok(Self { salt, iterations, stored_key, server_key })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_key(out, "salt", self.salt)?;
        put_u32(out, self.iterations);
        put_key(out, "stored_key", self.stored_key)?;
        put_key(out, "server_key", self.server_key)
    }
}

fn key<'a>(reader: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], DecodeError> {
    let size = usize::from(reader.u16(field)?);
    if size > KEY_SIZE_MAX {
        return Err(reader.too_large(field, size, KEY_SIZE_MAX));
    }
    reader.take(size, field)
}

fn put_key(out: &mut Vec<u8>, field: &'static str, key: &[u8]) -> Result<(), EncodeError> {
    if key.len() > KEY_SIZE_MAX {
        return Err(EncodeError::TooLong { field, size: key.len(), max: KEY_SIZE_MAX });
    }
    put_u16(out, u16::try_from(key.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(key);
    Ok(())
}

/// `SetUser`: add a user (or, `replace`, change an existing one's password) with its salted
/// SCRAM-SHA-256 and SCRAM-SHA-512 keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUser<'a> {
    /// The user.
    pub name: &'a str,
    /// Change an existing user (`false`: add one that does not exist yet).
    pub replace: bool,
    /// The SCRAM-SHA-256 credential.
    pub sha256: ScramKeys<'a>,
    /// The SCRAM-SHA-512 credential.
    pub sha512: ScramKeys<'a>,
}

impl<'a> SetUser<'a> {
    /// Decodes the body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "set user request");
        let name = reader.str16("name", USER_NAME_SIZE_MAX)?;
        let replace = match reader.u8("replace")? {
            0 => false,
            1 => true,
            value => return Err(reader.invalid("replace", u64::from(value), "neither 0 nor 1")),
        };
        let sha256 = ScramKeys::read(&mut reader)?;
        let sha512 = ScramKeys::read(&mut reader)?;
        reader.finish()?;
        Ok(Self { name, replace, sha256, sha512 })
    }

    /// Encodes the body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a name or key over its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "name", self.name, USER_NAME_SIZE_MAX)?;
        put_u8(out, u8::from(self.replace));
        self.sha256.write(out)?;
        self.sha512.write(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_bad_values_are_refused() {
        let rule = RuleEntry {
            principal: "CN=app,O=ops",
            resource: RuleResource::Topic,
            pattern: RulePattern::Prefix,
            name: "orders.",
            operation: RuleOperation::Produce,
        };
        let mut out = Vec::new();
        rule.encode(&mut out).unwrap();
        assert_eq!(RuleEntry::decode(&out).unwrap(), rule);
        let mut list = Vec::new();
        RuleList::encode(std::slice::from_ref(&rule), &mut list).unwrap();
        assert_eq!(RuleList::decode(&list).unwrap().rules, std::slice::from_ref(&rule));
        let mut bad = out.clone();
        let at = 2 + rule.principal.len();
        bad[at] = 9;
        assert!(RuleEntry::decode(&bad).is_err(), "an unknown resource kind");
        out.push(0);
        assert!(RuleEntry::decode(&out).is_err(), "trailing bytes");

        let keys = ScramKeys {
            salt: &[1; 24],
            iterations: 4096,
            stored_key: &[2; 32],
            server_key: &[3; 32],
        };
        let set = SetUser { name: "alice", replace: true, sha256: keys.clone(), sha512: keys };
        let mut out = Vec::new();
        set.encode(&mut out).unwrap();
        assert_eq!(SetUser::decode(&out).unwrap(), set);
        assert!(!format!("{set:?}").contains("[2, 2"), "keys are not in Debug");
        assert!(SetUser::decode(&out[..out.len() - 1]).is_err());

        let mut users = Vec::new();
        UserList::encode(&["a", "b"], &mut users).unwrap();
        assert_eq!(UserList::decode(&users).unwrap().names, ["a", "b"]);
        assert!(UserList::decode(&[255, 255, 255, 255]).is_err(), "a count the bytes cannot hold");
        assert_eq!(
            RuleOperation::from_name("idempotent-write"),
            Some(RuleOperation::IdempotentWrite)
        );
    }

    #[test]
    fn quota_bodies_round_trip_and_bad_values_are_refused() {
        let entry = QuotaEntry { principal: "alice", kind: QuotaKind::TopicBytes, value: 1 << 40 };
        let mut out = Vec::new();
        entry.encode(&mut out).unwrap();
        assert_eq!(QuotaEntry::decode(&out).unwrap(), entry);
        let mut bad = out.clone();
        bad[2 + entry.principal.len()] = 4;
        assert!(QuotaEntry::decode(&bad).is_err(), "an unknown kind");
        assert!(QuotaEntry::decode(&out[..out.len() - 1]).is_err(), "a short value");
        let defaults = QuotaEntry { principal: QUOTA_DEFAULTS, kind: QuotaKind::Produce, value: 0 };
        let mut list = Vec::new();
        QuotaList::encode(&[defaults.clone(), entry.clone()], &mut list).unwrap();
        assert_eq!(QuotaList::decode(&list).unwrap().entries, [defaults, entry]);
        assert!(QuotaList::decode(&[255, 255, 255, 255]).is_err(), "a count the bytes cannot hold");
        let target = QuotaTarget { principal: "CN=app", kind: QuotaKind::Connections };
        let mut out = Vec::new();
        target.encode(&mut out).unwrap();
        assert_eq!(QuotaTarget::decode(&out).unwrap(), target);
        out.push(0);
        assert!(QuotaTarget::decode(&out).is_err(), "trailing bytes");
        assert_eq!(QuotaKind::from_name("topic-bytes"), Some(QuotaKind::TopicBytes));
    }
}
