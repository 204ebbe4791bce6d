//! DescribeClientQuotas and AlterClientQuotas (versions 0 and 1): the principals' own quotas in
//! Kafka's terms, so `kafka-configs --entity-type users`, an `AdminClient` or kafka-python
//! manage them.
//!
//! ringmq keeps quotas per principal, which is Kafka's `user` entity: a named user is the
//! principal of that name, the default user (no name) is the broker's settings, shown but not
//! changed here (they live in its configuration). The keys are Kafka's `producer_byte_rate`
//! (produce) and `consumer_byte_rate` (fetch), and ringmq's own `ringmq_connection_count_max`
//! and `ringmq_topic_bytes_max`; "no limit" (ringmq's 0) is Kafka's `Long.MAX_VALUE` both ways.
//! Quotas per `client-id` or `ip` are not kept: a filter on them matches nothing, and a change
//! to them is refused with a message saying so.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError as Kafka;
use kafka_protocol::messages::alter_client_quotas_request::EntryData as AlterEntry;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_protocol::access::QuotaKind;

use super::acls::{refusal_of, Refusal};
use super::{encoded, KafkaContext, Request};
use crate::core::{check_quota, quota_max, Limits, Own, QuotaError};

/// The entity type ringmq keeps quotas for.
const USER: &str = "user";
/// Kafka's other entity types, which hold no quotas here.
const OTHER_ENTITIES: [&str; 2] = ["client-id", "ip"];
// Kafka's match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// Kafka's quota keys, and ringmq's own.
const KEYS: [(&str, QuotaKind); 4] = [
    ("producer_byte_rate", QuotaKind::Produce),
    ("consumer_byte_rate", QuotaKind::Fetch),
    ("ringmq_connection_count_max", QuotaKind::Connections),
    ("ringmq_topic_bytes_max", QuotaKind::TopicBytes),
];

fn invalid(message: String) -> Refusal {
    (Kafka::InvalidRequest.code(), message)
}

fn key_of(kind: QuotaKind) -> &'static str {
    KEYS.iter().find(|(_, found)| *found == kind).map_or("", |(key, _)| key)
}

fn kind_of(key: &str) -> Result<QuotaKind, Refusal> {
    KEYS.iter().find(|(found, _)| *found == key).map(|(_, kind)| *kind).ok_or_else(|| {
        let keys: Vec<&str> = KEYS.iter().map(|(key, _)| *key).collect();
        invalid(format!("quota key {key:?} is not kept here (only {})", keys.join(", ")))
    })
}

/// Which user entities a filter asks for.
enum Users {
    /// Every entity: named users and the default.
    All,
    /// None (the filter is on client ids or addresses, or strict without a user component).
    Nothing,
    /// The user of this name.
    Named(String),
    /// The default user (the broker's settings).
    Default,
    /// Every named user.
    AnyNamed,
}

fn users(body: &DescribeClientQuotasRequest) -> Result<Users, Refusal> {
    let mut seen: Vec<&str> = Vec::new();
    let mut users = None;
    let mut other = false;
    for component in &body.components {
        let kind = component.entity_type.as_str();
        if kind != USER && !OTHER_ENTITIES.contains(&kind) {
            return Err(invalid(format!("entity type {kind:?}: user, client-id or ip")));
        }
        if seen.contains(&kind) {
            return Err(invalid(format!("entity type {kind:?} named twice")));
        }
        seen.push(kind);
        let matched = match (component.match_type, component._match.as_ref()) {
            (MATCH_EXACT, Some(name)) => Users::Named(name.to_string()),
            (MATCH_EXACT, None) => {
                return Err(invalid(format!("an exact match of {kind:?} needs a name")))
            }
            (MATCH_DEFAULT, None) => Users::Default,
            (MATCH_ANY, None) => Users::AnyNamed,
            (MATCH_DEFAULT | MATCH_ANY, Some(_)) => {
                return Err(invalid(format!(
                    "match types 1 (default) and 2 (any) of {kind:?} take no name"
                )))
            }
            (other, _) => return Err(invalid(format!("match type {other}: 0, 1 or 2"))),
        };
        if kind == USER {
            users = Some(matched);
        } else {
            other = true;
        }
    }
    Ok(match users {
        // Every entity here has exactly one component, a user.
        _ if other => Users::Nothing,
        Some(users) => users,
        None if body.strict => Users::Nothing,
        None => Users::All,
    })
}

fn entry(name: Option<&str>, values: Vec<ValueData>) -> EntryData {
    let entity = EntityData::default()
        .with_entity_type(StrBytes::from_static_str(USER))
        .with_entity_name(name.map(|name| StrBytes::from_string(name.to_owned())));
    EntryData::default().with_entity(vec![entity]).with_values(values)
}

/// Kafka's value for "no limit" (`Long.MAX_VALUE` as a double), which ringmq keeps as 0.
#[allow(clippy::cast_precision_loss, reason = "Kafka's own constant, as a double")]
const UNLIMITED: f64 = i64::MAX as f64;

fn value(kind: QuotaKind, value: u64) -> ValueData {
    #[allow(clippy::cast_precision_loss, reason = "quotas are at most 2^50, exact in an f64")]
    let value = if value == 0 { UNLIMITED } else { value as f64 };
    ValueData::default().with_key(StrBytes::from_static_str(key_of(kind))).with_value(value)
}

fn entries(users: &Users, defaults: Limits, own: &[(String, Own)]) -> Vec<EntryData> {
    let mut found = Vec::new();
    if matches!(users, Users::All | Users::Default) {
        let values: Vec<ValueData> = QuotaKind::ALL
            .iter()
            .filter(|kind| defaults.get(**kind) != 0)
            .map(|&kind| value(kind, defaults.get(kind)))
            .collect();
        if !values.is_empty() {
            found.push(entry(None, values));
        }
    }
    for (principal, own) in own {
        let wanted = match users {
            Users::All | Users::AnyNamed => true,
            Users::Named(name) => name == principal,
            Users::Default | Users::Nothing => false,
        };
        if wanted {
            let values = QuotaKind::ALL
                .iter()
                .filter_map(|&kind| own.get(kind).map(|found| value(kind, found)))
                .collect();
            found.push(entry(Some(principal), values));
        }
    }
    found
}

/// `DescribeClientQuotas`: the user entities that match the filter, with their quotas.
pub(super) fn describe(
    context: &KafkaContext,
    request: &Request,
    body: &DescribeClientQuotasRequest,
) -> Result<BytesMut, String> {
    let core = &context.core;
    let answer = core
        .may_manage_rules(&request.caller, false)
        .map_err(|error| refusal_of(&error))
        .and_then(|()| users(body))
        .and_then(|users| {
            let (defaults, own) =
                core.quotas(&request.caller).map_err(|error| refusal_of(&error))?;
            Ok(entries(&users, defaults, &own))
        });
    let response = match answer {
        Ok(entries) => DescribeClientQuotasResponse::default().with_entries(Some(entries)),
        Err((code, message)) => DescribeClientQuotasResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
    };
    encoded(&response, request.version)
}

/// One alteration, checked: whose quotas, and each kind's new value (`None`: back to the
/// default).
type Change = (String, Vec<(QuotaKind, Option<u64>)>);

fn change(entry: &AlterEntry) -> Result<Change, Refusal> {
    let [entity] = entry.entity.as_slice() else {
        return Err(invalid(
            "quotas are kept per user alone: the entity must be one user component".to_owned(),
        ));
    };
    let kind = entity.entity_type.as_str();
    if kind != USER {
        return Err(invalid(if OTHER_ENTITIES.contains(&kind) {
            format!("quotas are kept per user (principal) here, not per {kind}")
        } else {
            format!("entity type {kind:?}: user, client-id or ip")
        }));
    }
    let Some(principal) = entity.entity_name.as_ref().map(ToString::to_string) else {
        return Err(invalid(QuotaError::Defaults.to_string()));
    };
    let mut values: Vec<(QuotaKind, Option<u64>)> = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let kind = kind_of(op.key.as_str())?;
        if values.iter().any(|(seen, _)| *seen == kind) {
            return Err(invalid(format!("quota key {:?} named twice", op.key.as_str())));
        }
        let value = if op.remove {
            None
        } else if op.value >= UNLIMITED {
            Some(0)
        } else {
            let max = quota_max(kind);
            #[allow(clippy::cast_precision_loss, reason = "the maximum is at most 2^50")]
            let in_range = op.value.is_finite() && op.value >= 1.0 && op.value <= max as f64;
            if !in_range || op.value.fract() != 0.0 {
                return Err(invalid(format!(
                    "{} = {}: a whole number from 1 to {max}, or {UNLIMITED:e} for no limit (remove the key for the default)",
                    op.key.as_str(),
                    op.value
                )));
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a whole number from 1 to 2^50, checked above"
            )]
            Some(op.value as u64)
        };
        check_quota(&principal, kind, value).map_err(|error| invalid(error.to_string()))?;
        values.push((kind, value));
    }
    Ok((principal, values))
}

/// `AlterClientQuotas`: each entry checked whole, then applied (unless `validate_only`).
pub(super) async fn alter(
    context: &KafkaContext,
    request: &Request,
    body: &AlterClientQuotasRequest,
) -> Result<BytesMut, String> {
    let core = &context.core;
    let allowed = core.may_manage_rules(&request.caller, true);
    let mut results = Vec::with_capacity(body.entries.len());
    for asked in &body.entries {
        let checked = allowed.as_ref().map_err(refusal_of).and_then(|()| change(asked));
        let outcome = match checked {
            // The same checks as the change itself, superusers' quotas included.
            Ok((principal, _)) if body.validate_only => {
                core.may_set_quotas(&request.caller, &principal).map_err(|error| refusal_of(&error))
            }
            Ok((principal, values)) => {
                // One write for the entry: all of it, or (refused) none.
                let done = core.set_quotas(&request.caller, &principal, values, false).await;
                if done.is_ok() {
                    tracing::info!(client = %request.client_id, by = request.caller.principal(), %principal, "quotas altered over kafka");
                }
                done.map_err(|error| refusal_of(&error))
            }
            Err(refusal) => Err(refusal),
        };
        let entity: Vec<AlteredEntity> = asked
            .entity
            .iter()
            .map(|entity| {
                AlteredEntity::default()
                    .with_entity_type(entity.entity_type.clone())
                    .with_entity_name(entity.entity_name.clone())
            })
            .collect();
        let result = AlteredEntry::default().with_entity(entity);
        results.push(match outcome {
            Ok(()) => result,
            Err((code, message)) => {
                tracing::info!(client = %request.client_id, code, %message, "kafka quota change refused");
                result.with_error_code(code).with_error_message(Some(StrBytes::from_string(message)))
            }
        });
    }
    encoded(&AlterClientQuotasResponse::default().with_entries(results), request.version)
}
