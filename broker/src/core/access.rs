//! Who a request comes from ([`Caller`]), and the one check of what it may do, made by the core
//! for every front end.

use std::sync::{Arc, OnceLock};

use super::quota::Usage;
use crate::auth::permissions::{Denied, Operation, Permissions, ResourceKind, CLUSTER_NAME};

pub use crate::auth::ANONYMOUS;

/// Who a request comes from: the user a connection logged in as, the subject of its client
/// certificate, or no one (a broker with `auth = off`).
///
/// Its quota usage is looked up on its first produce or fetch and kept, shared by its clones.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Option<Arc<str>>,
    usage: Arc<OnceLock<Arc<Usage>>>,
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        self.principal == other.principal
    }
}

impl Eq for Caller {}

impl Caller {
    /// A client that did not authenticate.
    pub fn anonymous() -> Self {
        Self { principal: None, usage: Arc::default() }
    }

    /// A client authenticated as `principal`.
    pub fn authenticated(principal: &str) -> Self {
        Self { principal: Some(Arc::from(principal)), usage: Arc::default() }
    }

    /// Its quota usage, made by `make` on the first call.
    pub(super) fn usage(&self, make: impl FnOnce(&str) -> Arc<Usage>) -> &Arc<Usage> {
        self.usage.get_or_init(|| make(self.principal()))
    }

    /// The principal's name ([`ANONYMOUS`] for a client that did not authenticate).
    pub fn principal(&self) -> &str {
        self.principal.as_deref().unwrap_or(ANONYMOUS)
    }

    /// Whether the client authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.principal.is_some()
    }
}

/// The permissions and whether they are enforced (they are when clients must authenticate).
#[derive(Debug)]
pub(super) struct Access {
    pub(super) permissions: Arc<Permissions>,
    pub(super) enforced: bool,
}

impl Access {
    /// Whether `caller` may do `operation` on `kind`/`name`.
    pub(super) fn check(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> Result<(), Denied> {
        let allowed = !self.enforced
            || caller
                .principal
                .as_deref()
                .is_some_and(|who| self.permissions.allows(who, kind, name, operation));
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                principal: caller.principal().to_owned(),
                kind,
                name: name.to_owned(),
                operation,
            })
        }
    }

    /// Whether `caller` may manage users and rules with `operation` (describe or alter): only
    /// where rules are enforced.
    pub(super) fn check_admin(
        &self,
        caller: &Caller,
        operation: Operation,
    ) -> Result<(), super::AdminError> {
        if !self.enforced {
            return Err(super::AdminError::AuthOff);
        }
        Ok(self.check_cluster(caller, operation)?)
    }

    /// Whether `caller` is a superuser, for a change only superusers may make (`what`).
    pub(super) fn check_superuser(
        &self,
        caller: &Caller,
        what: impl FnOnce() -> String,
    ) -> Result<(), super::AdminError> {
        let principal = caller.principal.as_deref();
        if principal.is_some_and(|who| self.permissions.is_superuser(who)) {
            Ok(())
        } else {
            Err(super::AdminError::NotSuperuser { by: caller.principal().to_owned(), what: what() })
        }
    }

    /// Whether `caller` may do `operation` on the cluster.
    pub(super) fn check_cluster(
        &self,
        caller: &Caller,
        operation: Operation,
    ) -> Result<(), Denied> {
        self.check(caller, ResourceKind::Cluster, CLUSTER_NAME, operation)
    }

    /// Whether `caller` may do `operation` on some resource of `kind`.
    pub(super) fn allows_some(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        operation: Operation,
    ) -> bool {
        !self.enforced
            || caller
                .principal
                .as_deref()
                .is_some_and(|who| self.permissions.allows_some(who, kind, operation))
    }
}
