//! DescribeAcls, CreateAcls and DeleteAcls (versions 1 to 3): the core's rules in Kafka's terms,
//! so `kafka-acls`, an `AdminClient` or kafka-python manage them.
//!
//! A Kafka ACL maps onto a rule one to one where ringmq has the same idea: principal `User:NAME`
//! is the principal `NAME` (`User:*` every one); resource types topic, group and cluster;
//! patterns literal and prefixed; operations by resource (a topic's READ is `consume`, its WRITE
//! `produce`; `DESCRIBE_CONFIGS` and `ALTER_CONFIGS` are `describe` and `alter`). What ringmq has
//! no rule for is refused with a message saying so: DENY (anything not allowed is refused
//! already), a host other than `*`, and transactional ids, tokens and users as resources.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError as Kafka;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{codes, encoded, KafkaContext, Request};
use crate::auth::permissions::{
    Operation, PatternFilter, PatternKind, ResourceKind, Rule, RuleFilter, WILDCARD,
};
use crate::core::{AdminError, QuotaError};

// Kafka's resource types.
const RESOURCE_ANY: i8 = 1;
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_GROUP: i8 = 3;
const RESOURCE_CLUSTER: i8 = 4;
// Kafka's pattern types.
const PATTERN_ANY: i8 = 1;
const PATTERN_MATCH: i8 = 2;
const PATTERN_LITERAL: i8 = 3;
const PATTERN_PREFIXED: i8 = 4;
// Kafka's operations.
const OP_ANY: i8 = 1;
const OP_ALL: i8 = 2;
const OP_READ: i8 = 3;
const OP_WRITE: i8 = 4;
const OP_CREATE: i8 = 5;
const OP_DELETE: i8 = 6;
const OP_ALTER: i8 = 7;
const OP_DESCRIBE: i8 = 8;
const OP_DESCRIBE_CONFIGS: i8 = 10;
const OP_ALTER_CONFIGS: i8 = 11;
const OP_IDEMPOTENT_WRITE: i8 = 12;
// Kafka's permission types.
const PERMISSION_ANY: i8 = 1;
const PERMISSION_ALLOW: i8 = 3;

/// The only principal type.
const USER: &str = "User:";

pub(super) type Refusal = (i16, String);

fn invalid(message: String) -> Refusal {
    (Kafka::InvalidRequest.code(), message)
}

fn resource_kind(value: i8) -> Result<ResourceKind, Refusal> {
    match value {
        RESOURCE_TOPIC => Ok(ResourceKind::Topic),
        RESOURCE_GROUP => Ok(ResourceKind::Group),
        RESOURCE_CLUSTER => Ok(ResourceKind::Cluster),
        other => Err(invalid(format!(
            "resource type {other} has no rules here (topic 2, group 3 and cluster 4 do)"
        ))),
    }
}

fn resource_code(kind: ResourceKind) -> i8 {
    match kind {
        ResourceKind::Topic => RESOURCE_TOPIC,
        ResourceKind::Group => RESOURCE_GROUP,
        ResourceKind::Cluster => RESOURCE_CLUSTER,
    }
}

fn operation(kind: ResourceKind, value: i8) -> Result<Operation, Refusal> {
    let found = match (kind, value) {
        (_, OP_ALL) => Some(Operation::All),
        (ResourceKind::Topic, OP_READ) => Some(Operation::Consume),
        (ResourceKind::Topic, OP_WRITE) => Some(Operation::Produce),
        (ResourceKind::Group, OP_READ) => Some(Operation::Read),
        (ResourceKind::Topic | ResourceKind::Cluster, OP_CREATE) => Some(Operation::Create),
        (ResourceKind::Topic | ResourceKind::Group, OP_DELETE) => Some(Operation::Delete),
        // On the cluster, `alter` manages users and rules and `describe` lists them: Kafka's
        // *_CONFIGS operations, often granted to tools, do not map to them.
        (ResourceKind::Topic, OP_ALTER | OP_ALTER_CONFIGS) | (ResourceKind::Cluster, OP_ALTER) => {
            Some(Operation::Alter)
        }
        (ResourceKind::Topic, OP_DESCRIBE_CONFIGS) | (_, OP_DESCRIBE) => Some(Operation::Describe),
        (ResourceKind::Cluster, OP_IDEMPOTENT_WRITE) => Some(Operation::IdempotentWrite),
        _ => None,
    };
    found.ok_or_else(|| {
        invalid(format!("operation {value} has no meaning on a {} here", kind.name()))
    })
}

fn operation_code(operation: Operation) -> i8 {
    match operation {
        Operation::All => OP_ALL,
        Operation::Consume | Operation::Read => OP_READ,
        Operation::Produce => OP_WRITE,
        Operation::Create => OP_CREATE,
        Operation::Delete => OP_DELETE,
        Operation::Alter => OP_ALTER,
        Operation::Describe => OP_DESCRIBE,
        Operation::IdempotentWrite => OP_IDEMPOTENT_WRITE,
    }
}

fn principal(value: &str) -> Result<String, Refusal> {
    match value.strip_prefix(USER) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(invalid(format!(
            "principal {value:?}: only User:NAME principals (User:* for every one) are served"
        ))),
    }
}

fn principal_text(name: &str) -> StrBytes {
    StrBytes::from_string(format!("{USER}{name}"))
}

fn host(value: &str) -> Result<(), Refusal> {
    if value == WILDCARD {
        Ok(())
    } else {
        Err(invalid(format!("host {value:?}: rules are per principal, not per host (use *)")))
    }
}

fn rule(creation: &AclCreation) -> Result<Rule, Refusal> {
    if creation.permission_type != PERMISSION_ALLOW {
        return Err(invalid(
            "only ALLOW rules are served: whatever no rule allows is refused already".to_owned(),
        ));
    }
    host(&creation.host)?;
    let kind = resource_kind(creation.resource_type)?;
    let pattern = match creation.resource_pattern_type {
        PATTERN_LITERAL => PatternKind::Literal,
        PATTERN_PREFIXED => PatternKind::Prefix,
        other => return Err(invalid(format!("pattern type {other}: literal 3 or prefixed 4"))),
    };
    Ok(Rule {
        principal: principal(&creation.principal)?,
        resource: kind,
        pattern,
        name: creation.resource_name.to_string(),
        operation: operation(kind, creation.operation)?,
    })
}

/// A Kafka ACL filter's fields, as a rule filter (`Ok(None)`: the filter matches nothing
/// ringmq keeps, such as DENY rules).
#[allow(clippy::too_many_arguments, reason = "Kafka's filter, field by field")]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal_filter: Option<&StrBytes>,
    host_filter: Option<&StrBytes>,
    operation_filter: i8,
    permission_type: i8,
) -> Result<Option<RuleFilter>, Refusal> {
    if !matches!(permission_type, PERMISSION_ANY | PERMISSION_ALLOW)
        || host_filter.is_some_and(|host| **host != *WILDCARD)
    {
        return Ok(None);
    }
    let resource = match resource_type {
        RESOURCE_ANY => None,
        other => Some(resource_kind(other)?),
    };
    let pattern = match pattern_type {
        PATTERN_ANY => PatternFilter::Any,
        PATTERN_MATCH => PatternFilter::Matching,
        PATTERN_LITERAL => PatternFilter::Exactly(PatternKind::Literal),
        PATTERN_PREFIXED => PatternFilter::Exactly(PatternKind::Prefix),
        other => return Err(invalid(format!("pattern type filter {other}"))),
    };
    let operation = match (operation_filter, resource) {
        (OP_ANY, _) => None,
        (value, Some(kind)) => Some(operation(kind, value)?),
        (value, None) => {
            return Err(invalid(format!(
                "operation {value} needs a resource type (or ANY operation)"
            )))
        }
    };
    Ok(Some(RuleFilter {
        principal: principal_filter.map(|value| principal(value)).transpose()?,
        resource,
        name: name.map(ToString::to_string),
        pattern,
        operation,
    }))
}

/// A refused change of rules or quotas, as Kafka's error code and message.
pub(super) fn refusal_of(error: &AdminError) -> Refusal {
    let code = match error {
        AdminError::Unauthorized(denied) => codes::denied(denied),
        AdminError::AuthOff => Kafka::SecurityDisabled.code(),
        AdminError::NotSuperuser { .. } => Kafka::ClusterAuthorizationFailed.code(),
        AdminError::Permissions(_) => Kafka::InvalidRequest.code(),
        AdminError::Quotas(QuotaError::File(_)) => Kafka::UnknownServerError.code(),
        AdminError::Quotas(_) => Kafka::InvalidRequest.code(),
        _ => Kafka::UnknownServerError.code(),
    };
    (code, error.to_string())
}

/// `DescribeAcls`: the rules that pass the filter, grouped by resource.
pub(super) fn describe(
    context: &KafkaContext,
    request: &Request,
    body: &DescribeAclsRequest,
) -> Result<BytesMut, String> {
    let allowed = context.core.may_manage_rules(&request.caller, false);
    let filtered = allowed.map_err(|error| refusal_of(&error)).and_then(|()| {
        filter(
            body.resource_type_filter,
            body.resource_name_filter.as_ref(),
            body.pattern_type_filter,
            body.principal_filter.as_ref(),
            body.host_filter.as_ref(),
            body.operation,
            body.permission_type,
        )
    });
    let answer = filtered.and_then(|filter| match filter {
        None => Ok(Vec::new()),
        Some(filter) => context
            .core
            .rules(&request.caller, &filter)
            .map(|(rules, _)| rules)
            .map_err(|error| refusal_of(&error)),
    });
    let response = match answer {
        Ok(rules) => {
            let mut resources: Vec<DescribeAclsResource> = Vec::new();
            for rule in rules {
                let pattern = match rule.pattern {
                    PatternKind::Literal => PATTERN_LITERAL,
                    PatternKind::Prefix => PATTERN_PREFIXED,
                };
                let (kind, name) = (resource_code(rule.resource), rule.name.as_str());
                let acl = AclDescription::default()
                    .with_principal(principal_text(&rule.principal))
                    .with_host(StrBytes::from_static_str(WILDCARD))
                    .with_operation(operation_code(rule.operation))
                    .with_permission_type(PERMISSION_ALLOW);
                let same = |resource: &&mut DescribeAclsResource| {
                    resource.resource_type == kind
                        && resource.pattern_type == pattern
                        && resource.resource_name.as_str() == name
                };
                match resources.iter_mut().find(same) {
                    Some(resource) => resource.acls.push(acl),
                    None => resources.push(
                        DescribeAclsResource::default()
                            .with_resource_type(kind)
                            .with_resource_name(StrBytes::from_string(rule.name.clone()))
                            .with_pattern_type(pattern)
                            .with_acls(vec![acl]),
                    ),
                }
            }
            DescribeAclsResponse::default().with_resources(resources)
        }
        Err((code, message)) => DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
    };
    encoded(&response, request.version)
}

/// `CreateAcls`: each creation answered alone (an invalid one refused, the others kept).
pub(super) async fn create(
    context: &KafkaContext,
    request: &Request,
    body: &CreateAclsRequest,
) -> Result<BytesMut, String> {
    let mut results = Vec::with_capacity(body.creations.len());
    let allowed = context.core.may_manage_rules(&request.caller, true);
    for creation in &body.creations {
        let checked = allowed.as_ref().map_err(refusal_of).and_then(|()| rule(creation));
        let outcome = match checked {
            Ok(rule) => context
                .core
                .add_rules(&request.caller, vec![rule])
                .await
                .map(drop)
                .map_err(|error| refusal_of(&error)),
            Err(refusal) => Err(refusal),
        };
        results.push(match outcome {
            Ok(()) => AclCreationResult::default(),
            Err((code, message)) => {
                tracing::info!(client = %request.client_id, code, %message, "kafka acl creation refused");
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message)))
            }
        });
    }
    encoded(&CreateAclsResponse::default().with_results(results), request.version)
}

/// `DeleteAcls`: each filter's matching rules removed and listed.
pub(super) async fn delete(
    context: &KafkaContext,
    request: &Request,
    body: &DeleteAclsRequest,
) -> Result<BytesMut, String> {
    let mut results = Vec::with_capacity(body.filters.len());
    let allowed = context.core.may_manage_rules(&request.caller, true);
    for asked in &body.filters {
        let filtered = allowed.as_ref().map_err(refusal_of).and_then(|()| {
            filter(
                asked.resource_type_filter,
                asked.resource_name_filter.as_ref(),
                asked.pattern_type_filter,
                asked.principal_filter.as_ref(),
                asked.host_filter.as_ref(),
                asked.operation,
                asked.permission_type,
            )
        });
        let outcome = match filtered {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(filter)) => context
                .core
                .remove_rules(&request.caller, filter)
                .await
                .map_err(|error| refusal_of(&error)),
            Err(refusal) => Err(refusal),
        };
        results.push(match outcome {
            Ok(removed) => DeleteAclsFilterResult::default().with_matching_acls(
                removed
                    .iter()
                    .map(|rule| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(resource_code(rule.resource))
                            .with_resource_name(StrBytes::from_string(rule.name.clone()))
                            .with_pattern_type(match rule.pattern {
                                PatternKind::Literal => PATTERN_LITERAL,
                                PatternKind::Prefix => PATTERN_PREFIXED,
                            })
                            .with_principal(principal_text(&rule.principal))
                            .with_host(StrBytes::from_static_str(WILDCARD))
                            .with_operation(operation_code(rule.operation))
                            .with_permission_type(PERMISSION_ALLOW)
                    })
                    .collect(),
            ),
            Err((code, message)) => DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    encoded(&DeleteAclsResponse::default().with_filter_results(results), request.version)
}
