//! Users, access rules and quotas, managed over the connection: who may log in, who may do
//! what, and how much. Setting a password sends salted SCRAM keys made here, never the password.

use ringmq_protocol::access::{
    QuotaEntry, QuotaList, QuotaTarget, RuleEntry, RuleList, ScramKeys, SetUser, UserList,
    UserName, QUOTA_DEFAULTS,
};
use ringmq_protocol::message::Request;

pub use ringmq_protocol::access::{QuotaKind, RuleOperation, RulePattern, RuleResource};

use crate::login::{salted_keys, Scram, SET_ITERATIONS};
use crate::{Client, ClientError};

/// One access rule: `principal` may do `operation` on the resources `pattern` and `name` name.
/// A [`RuleResource::Superuser`] rule makes the principal a superuser (allowed everything).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Who: a user's name, a client certificate's subject (`CN=…,O=…`), or `*` for every
    /// authenticated principal.
    pub principal: String,
    /// What kind of resource.
    pub resource: RuleResource,
    /// How `name` is matched.
    pub pattern: RulePattern,
    /// The topic or group name, or prefix (`*`: every one; the cluster is `kafka-cluster`).
    pub name: String,
    /// What is allowed.
    pub operation: RuleOperation,
}

impl Rule {
    /// A rule allowing `operation` on topic `name` (literally; see [`Rule::prefixed`]).
    pub fn topic(principal: &str, name: &str, operation: RuleOperation) -> Self {
        Self::new(principal, RuleResource::Topic, name, operation)
    }

    /// A rule allowing `operation` on group `name`.
    pub fn group(principal: &str, name: &str, operation: RuleOperation) -> Self {
        Self::new(principal, RuleResource::Group, name, operation)
    }

    /// A rule allowing `operation` on the cluster.
    pub fn cluster(principal: &str, operation: RuleOperation) -> Self {
        Self::new(principal, RuleResource::Cluster, "kafka-cluster", operation)
    }

    /// Makes `principal` a superuser.
    pub fn superuser(principal: &str) -> Self {
        Self::new(principal, RuleResource::Superuser, "", RuleOperation::All)
    }

    /// The same rule, for every name that starts with `name`.
    #[must_use]
    pub fn prefixed(mut self) -> Self {
        self.pattern = RulePattern::Prefix;
        self
    }

    fn new(principal: &str, resource: RuleResource, name: &str, operation: RuleOperation) -> Self {
        Self {
            principal: principal.to_owned(),
            resource,
            pattern: RulePattern::Literal,
            name: name.to_owned(),
            operation,
        }
    }

    fn entry(&self) -> RuleEntry<'_> {
        RuleEntry {
            principal: &self.principal,
            resource: self.resource,
            pattern: self.pattern,
            name: &self.name,
            operation: self.operation,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.resource == RuleResource::Superuser {
            return write!(f, "{} is a superuser", self.principal);
        }
        let prefix = if self.pattern == RulePattern::Prefix { " prefix" } else { "" };
        write!(
            f,
            "{} may {} {}{} {}",
            self.principal,
            self.operation.name(),
            self.resource.name(),
            prefix,
            self.name
        )
    }
}

impl Client {
    /// Every user's name, sorted (needs `describe` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `Unauthorized`, or a connection error.
    pub async fn list_users(&mut self) -> Result<Vec<String>, ClientError> {
        let body = self.read(&Request::ListUsers).await?;
        Ok(UserList::decode(&body)?.names.into_iter().map(str::to_owned).collect())
    }

    /// Adds a user (needs `alter` on the cluster). The password stays here: the broker gets
    /// its salted SCRAM-SHA-256 and SCRAM-SHA-512 keys.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for a bad name or an
    /// existing user.
    pub async fn add_user(&mut self, name: &str, password: &str) -> Result<(), ClientError> {
        self.set_user(name, password, false).await
    }

    /// Changes a user's password (needs `alter` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for no such user.
    pub async fn set_password(&mut self, name: &str, password: &str) -> Result<(), ClientError> {
        self.set_user(name, password, true).await
    }

    async fn set_user(
        &mut self,
        name: &str,
        password: &str,
        replace: bool,
    ) -> Result<(), ClientError> {
        if password.is_empty() {
            return Err(ClientError::InvalidArgument("the password is empty".into()));
        }
        let sha256 = salted_keys(password, Scram::Sha256)?;
        let sha512 = salted_keys(password, Scram::Sha512)?;
        fn keys(keys: &crate::login::SaltedKeys) -> ScramKeys<'_> {
            ScramKeys {
                salt: &keys.salt,
                iterations: SET_ITERATIONS,
                stored_key: &keys.stored_key,
                server_key: &keys.server_key,
            }
        }
        let request = Request::SetUser(SetUser {
            name,
            replace,
            sha256: keys(&sha256),
            sha512: keys(&sha512),
        });
        self.call(&request).await.map(drop)
    }

    /// Removes a user (needs `alter` on the cluster); the rules naming it stay.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for no such user.
    pub async fn remove_user(&mut self, name: &str) -> Result<(), ClientError> {
        self.call(&Request::RemoveUser(UserName { name })).await.map(drop)
    }

    /// Every rule, superusers first (needs `describe` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `Unauthorized`, or a connection error.
    pub async fn list_rules(&mut self) -> Result<Vec<Rule>, ClientError> {
        let body = self.read(&Request::ListRules).await?;
        let list = RuleList::decode(&body)?;
        Ok(list
            .rules
            .into_iter()
            .map(|entry| Rule {
                principal: entry.principal.to_owned(),
                resource: entry.resource,
                pattern: entry.pattern,
                name: entry.name.to_owned(),
                operation: entry.operation,
            })
            .collect())
    }

    /// Adds a rule, in force for the next request (needs `alter` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for a rule that cannot be
    /// kept (an operation that does not apply to the resource, say).
    pub async fn add_rule(&mut self, rule: &Rule) -> Result<(), ClientError> {
        self.call(&Request::AddRule(rule.entry())).await.map(drop)
    }

    /// Removes a rule (needs `alter` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for no such rule or the
    /// last superuser.
    pub async fn remove_rule(&mut self, rule: &Rule) -> Result<(), ClientError> {
        self.call(&Request::RemoveRule(rule.entry())).await.map(drop)
    }

    /// The broker's quotas: its defaults (the settings `produce_quota`, `fetch_quota`,
    /// `principal_connection_count_max` and `principal_topic_bytes_max`), and the quotas
    /// principals have of their own (needs `describe` on the cluster).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `Unauthorized`, or a connection error.
    pub async fn list_quotas(&mut self) -> Result<Quotas, ClientError> {
        let body = self.read(&Request::ListQuotas).await?;
        let list = QuotaList::decode(&body)?;
        let mut quotas = Quotas::default();
        for entry in list.entries {
            if entry.principal == QUOTA_DEFAULTS {
                quotas.defaults.push((entry.kind, entry.value));
            } else {
                quotas.own.push(Quota {
                    principal: entry.principal.to_owned(),
                    kind: entry.kind,
                    value: entry.value,
                });
            }
        }
        Ok(quotas)
    }

    /// Gives a principal its own quota of one kind, in place of the broker's default (0: no
    /// limit); in force for its connections at once (needs `alter` on the cluster; a
    /// superuser's quotas: be a superuser).
    ///
    /// ```no_run
    /// # async fn example(mut client: ringmq_client::Client) -> Result<(), ringmq_client::ClientError> {
    /// use ringmq_client::access::{Quota, QuotaKind};
    /// // The ingest service may produce 100 MB/s, whatever the broker's default.
    /// client.set_quota(&Quota::new("ingest", QuotaKind::Produce, 100_000_000)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` for a value past the kind's
    /// maximum or a principal that cannot be one.
    pub async fn set_quota(&mut self, quota: &Quota) -> Result<(), ClientError> {
        let entry =
            QuotaEntry { principal: &quota.principal, kind: quota.kind, value: quota.value };
        self.call(&Request::SetQuota(entry)).await.map(drop)
    }

    /// Puts a principal's quota of one kind back to the broker's default.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`]: `Unauthorized`, or `InvalidRequest` if the principal has no
    /// quota of that kind of its own.
    pub async fn remove_quota(
        &mut self,
        principal: &str,
        kind: QuotaKind,
    ) -> Result<(), ClientError> {
        self.call(&Request::RemoveQuota(QuotaTarget { principal, kind })).await.map(drop)
    }
}

/// A principal's own quota of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Whose: a user's name, a client certificate's subject, or `ANONYMOUS`.
    pub principal: String,
    /// What it limits.
    pub kind: QuotaKind,
    /// Bytes per second (produce, fetch), connections, or topic bytes; 0: no limit.
    pub value: u64,
}

impl Quota {
    /// `principal`'s own quota of `kind`.
    pub fn new(principal: &str, kind: QuotaKind, value: u64) -> Self {
        Self { principal: principal.to_owned(), kind, value }
    }
}

/// What [`Client::list_quotas`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    /// The broker's default of each kind (0: no limit).
    pub defaults: Vec<(QuotaKind, u64)>,
    /// The principals' own quotas, by principal.
    pub own: Vec<Quota>,
}
