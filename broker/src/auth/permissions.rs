//! Authorization: who may do what. A principal (a user's name, or the subject of a client
//! certificate) is allowed an operation on a resource by a [`Rule`]; anything no rule allows is
//! refused. Superusers are allowed everything. Rules and superusers are kept in
//! `DATA_DIR/.permissions.toml` (mode 0600, replaced whole) and take effect on the next request.
//!
//! Resources are topics and consumer groups, named literally (`orders`; `*` for every one) or by
//! a prefix (`orders.`), and the cluster (`kafka-cluster`, the one name Kafka uses). An operation
//! on a resource implies `describe` of it, as in Kafka: who may consume a topic may see it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::file::{read_toml, replace_private, FileError};

/// The file's name in the data directory.
pub const PERMISSIONS_FILE: &str = ".permissions.toml";
/// Most rules a broker holds.
pub const RULE_COUNT_MAX: usize = 10_000;
/// Most superusers.
pub const SUPERUSER_COUNT_MAX: usize = 100;
/// Longest principal, bytes (certificate subjects can be long).
pub const PRINCIPAL_SIZE_MAX: usize = 1024;
/// Longest resource name or prefix, bytes (topic and group names are shorter).
pub const RESOURCE_NAME_SIZE_MAX: usize = 255;
/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The principal or resource name a rule writes to mean every one.
pub const WILDCARD: &str = "*";

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster: creating topics, listing groups, the broker's counters, users and rules.
    Cluster,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 3] = [Self::Topic, Self::Group, Self::Cluster];

    /// The kind's name (`topic`, `group`, `cluster`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
            Self::Cluster => "cluster",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// How a rule's resource name is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatternKind {
    /// The name itself (`*`: every name).
    Literal,
    /// Every name that starts with it.
    Prefix,
}

impl PatternKind {
    /// The pattern kind's name (`literal`, `prefix`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Literal => "literal",
            Self::Prefix => "prefix",
        }
    }
}

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Every operation on the resource.
    All,
    /// Topic: append batches.
    Produce,
    /// Topic: fetch batches, commit offsets on it.
    Consume,
    /// Group: join it, commit its offsets.
    Read,
    /// Topic: create it. Cluster: create any topic.
    Create,
    /// Topic or group: delete it.
    Delete,
    /// See the resource (metadata, offsets, a group's members; cluster: list groups, counters,
    /// users and rules).
    Describe,
    /// Topic: change its settings. Cluster: manage users and rules.
    Alter,
    /// Cluster: get an idempotent producer id.
    IdempotentWrite,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 9] = [
        Self::All,
        Self::Produce,
        Self::Consume,
        Self::Read,
        Self::Create,
        Self::Delete,
        Self::Describe,
        Self::Alter,
        Self::IdempotentWrite,
    ];

    /// The operation's name, as rules write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Read => "read",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Describe => "describe",
            Self::Alter => "alter",
            Self::IdempotentWrite => "idempotent-write",
        }
    }

    /// The operation named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|operation| operation.name() == name)
    }

    /// Whether the operation means something on a resource of `kind`.
    pub fn applies_to(self, kind: ResourceKind) -> bool {
        match kind {
            ResourceKind::Topic => !matches!(self, Self::Read | Self::IdempotentWrite),
            ResourceKind::Group => {
                matches!(self, Self::All | Self::Read | Self::Describe | Self::Delete)
            }
            ResourceKind::Cluster => matches!(
                self,
                Self::All | Self::Create | Self::Describe | Self::Alter | Self::IdempotentWrite
            ),
        }
    }

    /// Whether a rule allowing `self` allows `wanted` too (`all` allows everything; every
    /// operation on a topic or group allows describing it).
    fn covers(self, wanted: Operation, kind: ResourceKind) -> bool {
        self == wanted
            || self == Self::All
            || (wanted == Self::Describe && kind != ResourceKind::Cluster)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One permission: `principal` may do `operation` on the resources the pattern names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// Who (`*`: every authenticated principal).
    pub principal: String,
    /// The kind of resource.
    pub resource: ResourceKind,
    /// How `name` is matched.
    pub pattern: PatternKind,
    /// The resource's name or prefix (`*` literal: every one; the cluster is `kafka-cluster`).
    pub name: String,
    /// What is allowed.
    pub operation: Operation,
}

impl Rule {
    /// Checks the rule's fields.
    ///
    /// # Errors
    ///
    /// [`PermissionsError::InvalidRule`] saying what is wrong.
    pub fn validate(&self) -> Result<(), PermissionsError> {
        let invalid =
            |reason: String| Err(PermissionsError::InvalidRule { rule: self.clone(), reason });
        if self.principal.is_empty() || self.principal.len() > PRINCIPAL_SIZE_MAX {
            return invalid(format!("the principal must be 1 to {PRINCIPAL_SIZE_MAX} bytes"));
        }
        if self.principal.chars().any(char::is_control) {
            return invalid("the principal has a control character".to_owned());
        }
        if self.name.is_empty() || self.name.len() > RESOURCE_NAME_SIZE_MAX {
            return invalid(format!(
                "the resource name must be 1 to {RESOURCE_NAME_SIZE_MAX} bytes"
            ));
        }
        if self.name.chars().any(char::is_control) {
            return invalid("the resource name has a control character".to_owned());
        }
        if !self.operation.applies_to(self.resource) {
            return invalid(format!(
                "{} is not an operation on a {}",
                self.operation,
                self.resource.name()
            ));
        }
        if self.resource == ResourceKind::Cluster
            && (self.pattern != PatternKind::Literal || self.name != CLUSTER_NAME)
        {
            return invalid(format!("the cluster resource is the literal name {CLUSTER_NAME:?}"));
        }
        Ok(())
    }

    /// Whether the rule names the resource `kind`/`name`.
    fn names(&self, kind: ResourceKind, name: &str) -> bool {
        self.resource == kind
            && match self.pattern {
                PatternKind::Literal => self.name == name || self.name == WILDCARD,
                PatternKind::Prefix => name.starts_with(&self.name),
            }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = match self.pattern {
            PatternKind::Literal => "",
            PatternKind::Prefix => " prefix",
        };
        write!(
            f,
            "{} may {} {}{} {:?}",
            self.principal,
            self.operation,
            self.resource.name(),
            pattern,
            self.name
        )
    }
}

/// How a filter matches a rule's resource pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern.
    Any,
    /// A pattern of this kind with exactly the filter's name.
    Exactly(PatternKind),
    /// Every rule that applies to the resource the filter names (literal, `*` or a prefix of
    /// it): Kafka's `MATCH`.
    Matching,
}

/// Which rules a list or a removal is about; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFilter {
    /// The rule's principal.
    pub principal: Option<String>,
    /// The rule's kind of resource.
    pub resource: Option<ResourceKind>,
    /// The rule's resource name (how it is matched: `pattern`).
    pub name: Option<String>,
    /// How `name` is matched.
    pub pattern: PatternFilter,
    /// The rule's operation.
    pub operation: Option<Operation>,
}

impl RuleFilter {
    /// The filter that matches every rule.
    pub fn any() -> Self {
        Self {
            principal: None,
            resource: None,
            name: None,
            pattern: PatternFilter::Any,
            operation: None,
        }
    }

    /// The filter that matches `rule` and nothing else.
    pub fn exactly(rule: &Rule) -> Self {
        Self {
            principal: Some(rule.principal.clone()),
            resource: Some(rule.resource),
            name: Some(rule.name.clone()),
            pattern: PatternFilter::Exactly(rule.pattern),
            operation: Some(rule.operation),
        }
    }

    /// Whether `rule` passes the filter.
    pub fn matches(&self, rule: &Rule) -> bool {
        let principal =
            self.principal.as_ref().is_none_or(|principal| *principal == rule.principal);
        let resource = self.resource.is_none_or(|resource| resource == rule.resource);
        let operation = self.operation.is_none_or(|operation| operation == rule.operation);
        let name = match (&self.name, self.pattern) {
            (None, PatternFilter::Any | PatternFilter::Matching) => true,
            (None, PatternFilter::Exactly(kind)) => rule.pattern == kind,
            (Some(name), PatternFilter::Any) => *name == rule.name,
            (Some(name), PatternFilter::Exactly(kind)) => {
                rule.pattern == kind && *name == rule.name
            }
            (Some(name), PatternFilter::Matching) => rule.names(rule.resource, name),
        };
        principal && resource && operation && name
    }
}

/// A request refused for want of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("principal {principal:?} is not allowed to {operation} {} {name:?}", kind.name())]
pub struct Denied {
    /// Who asked (`ANONYMOUS` for a client that did not authenticate).
    pub principal: String,
    /// The kind of resource.
    pub kind: ResourceKind,
    /// The resource.
    pub name: String,
    /// What was asked.
    pub operation: Operation,
}

/// Why a change to the permissions failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PermissionsError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is not what this broker writes.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A rule that cannot be kept.
    #[error("invalid rule ({rule}): {reason}")]
    InvalidRule {
        /// The rule.
        rule: Rule,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker holds the most rules (or superusers) it may.
    #[error("the broker already holds {max} {what}")]
    TooMany {
        /// Rules or superusers.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The last superuser is not removed: no one could manage users and rules after it.
    #[error("{0:?} is the last superuser: add another before removing it")]
    LastSuperuser(String),
    /// No such superuser.
    #[error("{0:?} is not a superuser")]
    NotSuperuser(String),
    /// An invalid superuser principal.
    #[error("invalid superuser principal {0:?}: 1 to 1024 bytes, no control characters")]
    InvalidPrincipal(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PermissionsFile {
    #[serde(default)]
    superusers: BTreeSet<String>,
    #[serde(default)]
    rule: Vec<Rule>,
}

/// The rules and superusers in force.
#[derive(Debug, Default)]
struct State {
    superusers: BTreeSet<String>,
    rules: BTreeSet<Rule>,
    /// The rules of each principal (`*` included), for the check on every request.
    by_principal: HashMap<String, Vec<Rule>>,
}

impl State {
    fn new(superusers: BTreeSet<String>, rules: BTreeSet<Rule>) -> Self {
        let mut by_principal: HashMap<String, Vec<Rule>> = HashMap::new();
        for rule in &rules {
            by_principal.entry(rule.principal.clone()).or_default().push(rule.clone());
        }
        Self { superusers, rules, by_principal }
    }
}

/// The broker's rules and superusers.
#[derive(Debug)]
pub struct Permissions {
    path: PathBuf,
    state: RwLock<Arc<State>>,
    /// One change at a time (a change writes the file, then publishes the new state).
    changing: std::sync::Mutex<()>,
}

impl Permissions {
    /// Reads `DATA_DIR/.permissions.toml` (none yet: no rules, no superusers).
    ///
    /// # Errors
    ///
    /// [`PermissionsError`] naming the file and what is wrong with it.
    pub fn open(data_dir: &Path) -> Result<Self, PermissionsError> {
        let path = data_dir.join(PERMISSIONS_FILE);
        let file: PermissionsFile = read_toml(&path)?;
        for rule in &file.rule {
            rule.validate().map_err(|error| PermissionsError::Invalid {
                path: path.clone(),
                message: error.to_string(),
            })?;
        }
        if let Some(bad) = file.superusers.iter().find(|principal| !valid_principal(principal)) {
            return Err(PermissionsError::Invalid {
                path,
                message: format!("invalid superuser principal {bad:?}"),
            });
        }
        let state = State::new(file.superusers, file.rule.into_iter().collect());
        Ok(Self { path, state: RwLock::new(Arc::new(state)), changing: std::sync::Mutex::new(()) })
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether `principal` may do `operation` on `kind`/`name`.
    pub fn allows(
        &self,
        principal: &str,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> bool {
        self.any_rule(principal, |rule| {
            rule.names(kind, name) && rule.operation.covers(operation, kind)
        })
    }

    /// Whether `principal` may do `operation` on at least one resource of `kind` (a rule for
    /// it on some name; for a producer id: produce on some topic).
    pub fn allows_some(&self, principal: &str, kind: ResourceKind, operation: Operation) -> bool {
        self.any_rule(principal, |rule| {
            rule.resource == kind && rule.operation.covers(operation, kind)
        })
    }

    /// Whether `principal` is a superuser or one of its rules (or of `*`'s) passes `test`.
    fn any_rule(&self, principal: &str, test: impl Fn(&Rule) -> bool) -> bool {
        let state = self.current();
        state.superusers.contains(principal)
            || [principal, WILDCARD]
                .iter()
                .filter_map(|who| state.by_principal.get(*who))
                .flatten()
                .any(test)
    }

    /// Whether `principal` is a superuser.
    pub fn is_superuser(&self, principal: &str) -> bool {
        self.current().superusers.contains(principal)
    }

    /// The superusers, sorted.
    pub fn superusers(&self) -> Vec<String> {
        self.current().superusers.iter().cloned().collect()
    }

    /// The rules that pass `filter`, sorted.
    pub fn rules(&self, filter: &RuleFilter) -> Vec<Rule> {
        self.current().rules.iter().filter(|rule| filter.matches(rule)).cloned().collect()
    }

    /// Adds `rules` (those already in force are kept once); how many were new. Durable when
    /// this returns; in force for the next request.
    ///
    /// # Errors
    ///
    /// An invalid rule (nothing is added then), the limit, or the file.
    pub fn add(&self, rules: &[Rule]) -> Result<usize, PermissionsError> {
        for rule in rules {
            rule.validate()?;
        }
        self.change(|superusers, current| {
            let before = current.len();
            current.extend(rules.iter().cloned());
            if current.len() > RULE_COUNT_MAX {
                return Err(PermissionsError::TooMany { what: "rules", max: RULE_COUNT_MAX });
            }
            let _ = superusers;
            Ok(current.len() - before)
        })
    }

    /// Removes the rules that pass `filter`; the rules removed.
    ///
    /// # Errors
    ///
    /// The file could not be written (nothing is removed then).
    pub fn remove(&self, filter: &RuleFilter) -> Result<Vec<Rule>, PermissionsError> {
        self.change(|_, current| {
            let removed: Vec<Rule> =
                current.iter().filter(|rule| filter.matches(rule)).cloned().collect();
            for rule in &removed {
                current.remove(rule);
            }
            Ok(removed)
        })
    }

    /// Makes `principal` a superuser; whether it was not one already.
    ///
    /// # Errors
    ///
    /// An invalid principal, the limit, or the file.
    pub fn add_superuser(&self, principal: &str) -> Result<bool, PermissionsError> {
        if !valid_principal(principal) {
            return Err(PermissionsError::InvalidPrincipal(principal.to_owned()));
        }
        self.change(|superusers, _| {
            let added = superusers.insert(principal.to_owned());
            if superusers.len() > SUPERUSER_COUNT_MAX {
                return Err(PermissionsError::TooMany {
                    what: "superusers",
                    max: SUPERUSER_COUNT_MAX,
                });
            }
            Ok(added)
        })
    }

    /// Makes `principal` a superuser if there is none yet (the first, from the environment);
    /// whether it did.
    ///
    /// # Errors
    ///
    /// An invalid principal, or the file.
    pub fn bootstrap_superuser(&self, principal: &str) -> Result<bool, PermissionsError> {
        if !valid_principal(principal) {
            return Err(PermissionsError::InvalidPrincipal(principal.to_owned()));
        }
        self.change(|superusers, _| {
            if !superusers.is_empty() {
                return Ok(false);
            }
            Ok(superusers.insert(principal.to_owned()))
        })
    }

    /// Takes superuser away from `principal` (never from the last one).
    ///
    /// # Errors
    ///
    /// [`PermissionsError::NotSuperuser`], [`PermissionsError::LastSuperuser`], or the file.
    pub fn remove_superuser(&self, principal: &str) -> Result<(), PermissionsError> {
        self.change(|superusers, _| {
            if !superusers.contains(principal) {
                return Err(PermissionsError::NotSuperuser(principal.to_owned()));
            }
            if superusers.len() == 1 {
                return Err(PermissionsError::LastSuperuser(principal.to_owned()));
            }
            superusers.remove(principal);
            Ok(())
        })
    }

    /// Runs `edit` on a copy of the superusers and rules, writes the result, then puts it in
    /// force; an error from `edit` or the write changes nothing.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut BTreeSet<String>, &mut BTreeSet<Rule>) -> Result<T, PermissionsError>,
    ) -> Result<T, PermissionsError> {
        let _one = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let (mut superusers, mut rules) = (current.superusers.clone(), current.rules.clone());
        let result = edit(&mut superusers, &mut rules)?;
        if superusers != current.superusers || rules != current.rules {
            let file = PermissionsFile {
                superusers: superusers.clone(),
                rule: rules.iter().cloned().collect(),
            };
            let text = toml::to_string(&file).expect("strings serialise as TOML");
            replace_private(&self.path, &text)?;
            let next = Arc::new(State::new(superusers, rules));
            *self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        }
        Ok(result)
    }
}

fn valid_principal(principal: &str) -> bool {
    !principal.is_empty()
        && principal.len() <= PRINCIPAL_SIZE_MAX
        && principal != WILDCARD
        && !principal.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        principal: &str,
        resource: ResourceKind,
        pattern: PatternKind,
        name: &str,
        operation: Operation,
    ) -> Rule {
        Rule { principal: principal.into(), resource, pattern, name: name.into(), operation }
    }

    #[test]
    fn rules_allow_what_they_name_and_nothing_else() {
        use Operation::*;
        use PatternKind::*;
        use ResourceKind::*;
        let dir = tempfile::tempdir().unwrap();
        let permissions = Permissions::open(dir.path()).unwrap();
        assert!(!permissions.allows("alice", Topic, "orders", Produce), "nothing without a rule");
        permissions
            .add(&[
                rule("alice", Topic, Literal, "orders", Produce),
                rule("alice", Topic, Prefix, "logs.", Consume),
                rule("alice", Group, Literal, "g", Read),
                rule("*", Topic, Literal, "public", Describe),
                rule("bob", Topic, Literal, "*", All),
                rule("carol", Cluster, Literal, CLUSTER_NAME, Create),
            ])
            .unwrap();
        assert!(permissions.allows("alice", Topic, "orders", Produce));
        assert!(permissions.allows("alice", Topic, "orders", Describe), "implied");
        assert!(!permissions.allows("alice", Topic, "orders", Consume));
        assert!(!permissions.allows("alice", Topic, "orders2", Produce), "literal is exact");
        assert!(permissions.allows("alice", Topic, "logs.app", Consume));
        assert!(!permissions.allows("alice", Topic, "logs", Consume), "prefix, not a glob");
        assert!(!permissions.allows("alice", Group, "orders", Read), "kinds are apart");
        assert!(permissions.allows("alice", Group, "g", Describe));
        assert!(!permissions.allows("alice", Group, "g", Delete));
        assert!(permissions.allows("dave", Topic, "public", Describe), "* is everyone");
        assert!(!permissions.allows("dave", Topic, "public", Consume));
        assert!(permissions.allows("bob", Topic, "anything", Delete));
        assert!(!permissions.allows("bob", Group, "anything", Read));
        assert!(permissions.allows("carol", Cluster, CLUSTER_NAME, Create));
        assert!(
            !permissions.allows("carol", Cluster, CLUSTER_NAME, Describe),
            "not implied on the cluster"
        );
        assert!(permissions.allows_some("alice", Topic, Produce));
        assert!(!permissions.allows_some("carol", Topic, Produce));

        // Invalid rules are refused whole.
        let bad = [
            rule("alice", Group, Literal, "g", Produce),
            rule("alice", Cluster, Literal, "other", Create),
            rule("", Topic, Literal, "t", Produce),
            rule("alice", Topic, Literal, "", Produce),
            rule("alice", Topic, Literal, "a\nb", Produce),
        ];
        for bad in bad {
            let error = permissions.add(std::slice::from_ref(&bad)).unwrap_err();
            assert!(matches!(error, PermissionsError::InvalidRule { .. }), "{bad}: {error}");
        }

        // Durable, and removal by filter.
        let reopened = Permissions::open(dir.path()).unwrap();
        assert_eq!(reopened.rules(&RuleFilter::any()).len(), 6);
        let matching = RuleFilter {
            name: Some("logs.x".into()),
            pattern: PatternFilter::Matching,
            ..RuleFilter::any()
        };
        assert_eq!(reopened.rules(&matching).len(), 2, "the prefix rule and bob's *");
        let removed = reopened
            .remove(&RuleFilter::exactly(&rule("alice", Topic, Literal, "orders", Produce)))
            .unwrap();
        assert_eq!(removed.len(), 1);
        assert!(!reopened.allows("alice", Topic, "orders", Produce), "in force at once");
        assert!(!Permissions::open(dir.path()).unwrap().allows("alice", Topic, "orders", Produce));
        let everyone = RuleFilter { principal: Some("*".into()), ..RuleFilter::any() };
        assert_eq!(reopened.remove(&everyone).unwrap().len(), 1);
    }

    #[test]
    fn superusers_are_allowed_everything_and_the_last_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let permissions = Permissions::open(dir.path()).unwrap();
        assert!(permissions.bootstrap_superuser("root").unwrap());
        assert!(!permissions.bootstrap_superuser("other").unwrap(), "only the first");
        assert!(permissions.allows("root", ResourceKind::Group, "g", Operation::Delete));
        assert!(matches!(
            permissions.remove_superuser("root"),
            Err(PermissionsError::LastSuperuser(_))
        ));
        assert!(permissions.add_superuser("CN=admin,O=ops").unwrap());
        permissions.remove_superuser("root").unwrap();
        assert!(matches!(
            permissions.remove_superuser("root"),
            Err(PermissionsError::NotSuperuser(_))
        ));
        assert!(matches!(
            permissions.add_superuser("*"),
            Err(PermissionsError::InvalidPrincipal(_))
        ));
        assert_eq!(Permissions::open(dir.path()).unwrap().superusers(), ["CN=admin,O=ops"]);
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(dir.path().join(PERMISSIONS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(PERMISSIONS_FILE), "[[rule]]\nprincipal = 1\n").unwrap();
        let error = Permissions::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains(PERMISSIONS_FILE), "{error}");
    }
}
