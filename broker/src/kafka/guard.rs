//! A structural check of a Kafka request body before `kafka-protocol` decodes it.
//!
//! The crate sizes each array's allocation by the element count it reads (`Vec::with_capacity`),
//! before it has read a single element: a request claiming two billion topics would make the
//! broker ask for hundreds of gigabytes, and a refused allocation aborts the process. So every
//! body is walked first, here, against the schema of its API and version: every length and count
//! is checked against the bytes left (an array may claim no more elements than the bytes left
//! could hold at its smallest), every tagged field against its size, and the walk must end
//! exactly at the end of the body. Only a body that passes is decoded. The walk allocates nothing
//! and does work proportional to the body's size.
//!
//! The schemas below are Kafka's request definitions for the versions this listener serves
//! (`clients/src/main/resources/common/message/*Request.json`); a test encodes requests of every
//! served version with `kafka-protocol` and checks the walk consumes them exactly.

use kafka_protocol::messages::ApiKey;

/// Why a body failed the check: the field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} at byte {position}: {problem}")]
pub(crate) struct Malformed {
    pub(crate) field: &'static str,
    pub(crate) position: usize,
    pub(crate) problem: &'static str,
}

/// One field of a schema.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fixed(usize),
    /// A string (nullable or not): `int16` length, or a compact `uvarint` length + 1.
    Str,
    /// Bytes: `int32` length, or compact.
    Bytes,
    /// An array of structs.
    Array(&'static [Field]),
    /// An array of strings.
    Strs,
    /// An array of `int32`.
    Int32s,
}

/// A field present in versions `from..=to`.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    from: i16,
    to: i16,
}

const ALL: i16 = i16::MAX;

const fn field(name: &'static str, kind: Kind, from: i16, to: i16) -> Field {
    Field { name, kind, from, to }
}

const I8: Kind = Kind::Fixed(1);
const BOOL: Kind = Kind::Fixed(1);
const I16: Kind = Kind::Fixed(2);
const I32: Kind = Kind::Fixed(4);
const I64: Kind = Kind::Fixed(8);
const F64: Kind = Kind::Fixed(8);
const UUID: Kind = Kind::Fixed(16);

/// A request schema: its fields, the first flexible version (compact encodings and tagged
/// fields), and the known tagged fields of its top-level struct that the crate decodes by type.
#[derive(Debug)]
struct Schema {
    fields: &'static [Field],
    flexible_from: i16,
    known_tags: &'static [(u32, Kind)],
}

const API_VERSIONS: Schema = Schema {
    fields: &[
        field("client_software_name", Kind::Str, 3, ALL),
        field("client_software_version", Kind::Str, 3, ALL),
    ],
    flexible_from: 3,
    known_tags: &[],
};

const METADATA_TOPIC: &[Field] =
    &[field("topic_id", UUID, 10, ALL), field("name", Kind::Str, 0, ALL)];
const METADATA: Schema = Schema {
    fields: &[
        field("topics", Kind::Array(METADATA_TOPIC), 0, ALL),
        field("allow_auto_topic_creation", BOOL, 4, ALL),
        field("include_cluster_authorized_operations", BOOL, 8, 10),
        field("include_topic_authorized_operations", BOOL, 8, ALL),
    ],
    flexible_from: 9,
    known_tags: &[],
};

const PRODUCE_PARTITION: &[Field] =
    &[field("index", I32, 0, ALL), field("records", Kind::Bytes, 0, ALL)];
const PRODUCE_TOPIC: &[Field] = &[
    field("name", Kind::Str, 0, 12),
    field("topic_id", UUID, 13, ALL),
    field("partition_data", Kind::Array(PRODUCE_PARTITION), 0, ALL),
];
const PRODUCE: Schema = Schema {
    fields: &[
        field("transactional_id", Kind::Str, 0, ALL),
        field("acks", I16, 0, ALL),
        field("timeout_ms", I32, 0, ALL),
        field("topic_data", Kind::Array(PRODUCE_TOPIC), 0, ALL),
    ],
    flexible_from: 9,
    known_tags: &[],
};

const FETCH_PARTITION: &[Field] = &[
    field("partition", I32, 0, ALL),
    field("current_leader_epoch", I32, 9, ALL),
    field("fetch_offset", I64, 0, ALL),
    field("last_fetched_epoch", I32, 12, ALL),
    field("log_start_offset", I64, 5, ALL),
    field("partition_max_bytes", I32, 0, ALL),
];
const FETCH_TOPIC: &[Field] = &[
    field("topic", Kind::Str, 0, 12),
    field("topic_id", UUID, 13, ALL),
    field("partitions", Kind::Array(FETCH_PARTITION), 0, ALL),
];
const FORGOTTEN_TOPIC: &[Field] = &[
    field("topic", Kind::Str, 7, 12),
    field("topic_id", UUID, 13, ALL),
    field("partitions", Kind::Int32s, 7, ALL),
];
const FETCH: Schema = Schema {
    fields: &[
        field("replica_id", I32, 0, 14),
        field("max_wait_ms", I32, 0, ALL),
        field("min_bytes", I32, 0, ALL),
        field("max_bytes", I32, 3, ALL),
        field("isolation_level", I8, 4, ALL),
        field("session_id", I32, 7, ALL),
        field("session_epoch", I32, 7, ALL),
        field("topics", Kind::Array(FETCH_TOPIC), 0, ALL),
        field("forgotten_topics_data", Kind::Array(FORGOTTEN_TOPIC), 7, ALL),
        field("rack_id", Kind::Str, 11, ALL),
    ],
    flexible_from: 12,
    // The cluster id (a compact string) is decoded by type, not skipped by its size.
    known_tags: &[(0, Kind::Str)],
};

const LIST_OFFSETS_PARTITION: &[Field] = &[
    field("partition_index", I32, 0, ALL),
    field("current_leader_epoch", I32, 4, ALL),
    field("timestamp", I64, 0, ALL),
];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    field("name", Kind::Str, 0, ALL),
    field("partitions", Kind::Array(LIST_OFFSETS_PARTITION), 0, ALL),
];
const LIST_OFFSETS: Schema = Schema {
    fields: &[
        field("replica_id", I32, 0, ALL),
        field("isolation_level", I8, 2, ALL),
        field("topics", Kind::Array(LIST_OFFSETS_TOPIC), 0, ALL),
        field("timeout_ms", I32, 10, ALL),
    ],
    flexible_from: 6,
    known_tags: &[],
};

const FIND_COORDINATOR: Schema = Schema {
    fields: &[
        field("key", Kind::Str, 0, 3),
        field("key_type", I8, 1, ALL),
        field("coordinator_keys", Kind::Strs, 4, ALL),
    ],
    flexible_from: 3,
    known_tags: &[],
};

const INIT_PRODUCER_ID: Schema = Schema {
    fields: &[
        field("transactional_id", Kind::Str, 0, ALL),
        field("transaction_timeout_ms", I32, 0, ALL),
        field("producer_id", I64, 3, ALL),
        field("producer_epoch", I16, 3, ALL),
    ],
    flexible_from: 2,
    known_tags: &[],
};

const CREATABLE_ASSIGNMENT: &[Field] =
    &[field("partition_index", I32, 0, ALL), field("broker_ids", Kind::Int32s, 0, ALL)];
const CREATABLE_CONFIG: &[Field] =
    &[field("name", Kind::Str, 0, ALL), field("value", Kind::Str, 0, ALL)];
const CREATABLE_TOPIC: &[Field] = &[
    field("name", Kind::Str, 0, ALL),
    field("num_partitions", I32, 0, ALL),
    field("replication_factor", I16, 0, ALL),
    field("assignments", Kind::Array(CREATABLE_ASSIGNMENT), 0, ALL),
    field("configs", Kind::Array(CREATABLE_CONFIG), 0, ALL),
];
const CREATE_TOPICS: Schema = Schema {
    fields: &[
        field("topics", Kind::Array(CREATABLE_TOPIC), 0, ALL),
        field("timeout_ms", I32, 0, ALL),
        field("validate_only", BOOL, 1, ALL),
    ],
    flexible_from: 5,
    known_tags: &[],
};

const DELETE_TOPIC_STATE: &[Field] =
    &[field("name", Kind::Str, 6, ALL), field("topic_id", UUID, 6, ALL)];
const DELETE_TOPICS: Schema = Schema {
    fields: &[
        field("topics", Kind::Array(DELETE_TOPIC_STATE), 6, ALL),
        field("topic_names", Kind::Strs, 0, 5),
        field("timeout_ms", I32, 0, ALL),
    ],
    flexible_from: 4,
    known_tags: &[],
};

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    field("resource_type", I8, 0, ALL),
    field("resource_name", Kind::Str, 0, ALL),
    field("configuration_keys", Kind::Strs, 0, ALL),
];
const DESCRIBE_CONFIGS: Schema = Schema {
    fields: &[
        field("resources", Kind::Array(DESCRIBE_CONFIGS_RESOURCE), 0, ALL),
        field("include_synonyms", BOOL, 1, ALL),
        field("include_documentation", BOOL, 3, ALL),
    ],
    flexible_from: 4,
    known_tags: &[],
};

/// An ACL filter (DescribeAcls' body, each of DeleteAcls' filters).
const ACL_FILTER: &[Field] = &[
    field("resource_type_filter", I8, 0, ALL),
    field("resource_name_filter", Kind::Str, 0, ALL),
    field("pattern_type_filter", I8, 1, ALL),
    field("principal_filter", Kind::Str, 0, ALL),
    field("host_filter", Kind::Str, 0, ALL),
    field("operation", I8, 0, ALL),
    field("permission_type", I8, 0, ALL),
];
const DESCRIBE_ACLS: Schema = Schema { fields: ACL_FILTER, flexible_from: 2, known_tags: &[] };

const ACL_CREATION: &[Field] = &[
    field("resource_type", I8, 0, ALL),
    field("resource_name", Kind::Str, 0, ALL),
    field("resource_pattern_type", I8, 1, ALL),
    field("principal", Kind::Str, 0, ALL),
    field("host", Kind::Str, 0, ALL),
    field("operation", I8, 0, ALL),
    field("permission_type", I8, 0, ALL),
];
const CREATE_ACLS: Schema = Schema {
    fields: &[field("creations", Kind::Array(ACL_CREATION), 0, ALL)],
    flexible_from: 2,
    known_tags: &[],
};

const DELETE_ACLS: Schema = Schema {
    fields: &[field("filters", Kind::Array(ACL_FILTER), 0, ALL)],
    flexible_from: 2,
    known_tags: &[],
};

const QUOTA_COMPONENT: &[Field] = &[
    field("entity_type", Kind::Str, 0, ALL),
    field("match_type", I8, 0, ALL),
    field("match", Kind::Str, 0, ALL),
];
const DESCRIBE_CLIENT_QUOTAS: Schema = Schema {
    fields: &[
        field("components", Kind::Array(QUOTA_COMPONENT), 0, ALL),
        field("strict", BOOL, 0, ALL),
    ],
    flexible_from: 1,
    known_tags: &[],
};

const QUOTA_ENTITY: &[Field] =
    &[field("entity_type", Kind::Str, 0, ALL), field("entity_name", Kind::Str, 0, ALL)];
const QUOTA_OP: &[Field] =
    &[field("key", Kind::Str, 0, ALL), field("value", F64, 0, ALL), field("remove", BOOL, 0, ALL)];
const QUOTA_ENTRY: &[Field] = &[
    field("entity", Kind::Array(QUOTA_ENTITY), 0, ALL),
    field("ops", Kind::Array(QUOTA_OP), 0, ALL),
];
const ALTER_CLIENT_QUOTAS: Schema = Schema {
    fields: &[
        field("entries", Kind::Array(QUOTA_ENTRY), 0, ALL),
        field("validate_only", BOOL, 0, ALL),
    ],
    flexible_from: 1,
    known_tags: &[],
};

const JOIN_PROTOCOL: &[Field] =
    &[field("name", Kind::Str, 0, ALL), field("metadata", Kind::Bytes, 0, ALL)];
const JOIN_GROUP: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, ALL),
        field("session_timeout_ms", I32, 0, ALL),
        field("rebalance_timeout_ms", I32, 1, ALL),
        field("member_id", Kind::Str, 0, ALL),
        field("group_instance_id", Kind::Str, 5, ALL),
        field("protocol_type", Kind::Str, 0, ALL),
        field("protocols", Kind::Array(JOIN_PROTOCOL), 0, ALL),
        field("reason", Kind::Str, 8, ALL),
    ],
    flexible_from: 6,
    known_tags: &[],
};

const SYNC_ASSIGNMENT: &[Field] =
    &[field("member_id", Kind::Str, 0, ALL), field("assignment", Kind::Bytes, 0, ALL)];
const SYNC_GROUP: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, ALL),
        field("generation_id", I32, 0, ALL),
        field("member_id", Kind::Str, 0, ALL),
        field("group_instance_id", Kind::Str, 3, ALL),
        field("protocol_type", Kind::Str, 5, ALL),
        field("protocol_name", Kind::Str, 5, ALL),
        field("assignments", Kind::Array(SYNC_ASSIGNMENT), 0, ALL),
    ],
    flexible_from: 4,
    known_tags: &[],
};

const HEARTBEAT: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, ALL),
        field("generation_id", I32, 0, ALL),
        field("member_id", Kind::Str, 0, ALL),
        field("group_instance_id", Kind::Str, 3, ALL),
    ],
    flexible_from: 4,
    known_tags: &[],
};

const LEAVE_MEMBER: &[Field] = &[
    field("member_id", Kind::Str, 3, ALL),
    field("group_instance_id", Kind::Str, 3, ALL),
    field("reason", Kind::Str, 5, ALL),
];
const LEAVE_GROUP: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, ALL),
        field("member_id", Kind::Str, 0, 2),
        field("members", Kind::Array(LEAVE_MEMBER), 3, ALL),
    ],
    flexible_from: 4,
    known_tags: &[],
};

const COMMIT_PARTITION: &[Field] = &[
    field("partition_index", I32, 0, ALL),
    field("committed_offset", I64, 0, ALL),
    field("committed_leader_epoch", I32, 6, ALL),
    field("committed_metadata", Kind::Str, 0, ALL),
];
const COMMIT_TOPIC: &[Field] =
    &[field("name", Kind::Str, 0, ALL), field("partitions", Kind::Array(COMMIT_PARTITION), 0, ALL)];
const OFFSET_COMMIT: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, ALL),
        field("generation_id", I32, 1, ALL),
        field("member_id", Kind::Str, 1, ALL),
        field("group_instance_id", Kind::Str, 7, ALL),
        field("retention_time_ms", I64, 2, 4),
        field("topics", Kind::Array(COMMIT_TOPIC), 0, ALL),
    ],
    flexible_from: 8,
    known_tags: &[],
};

const FETCH_OFFSETS_TOPIC: &[Field] =
    &[field("name", Kind::Str, 0, ALL), field("partition_indexes", Kind::Int32s, 0, ALL)];
const FETCH_OFFSETS_GROUP: &[Field] = &[
    field("group_id", Kind::Str, 8, ALL),
    field("member_id", Kind::Str, 9, ALL),
    field("member_epoch", I32, 9, ALL),
    field("topics", Kind::Array(FETCH_OFFSETS_TOPIC), 8, ALL),
];
const OFFSET_FETCH: Schema = Schema {
    fields: &[
        field("group_id", Kind::Str, 0, 7),
        field("topics", Kind::Array(FETCH_OFFSETS_TOPIC), 0, 7),
        field("groups", Kind::Array(FETCH_OFFSETS_GROUP), 8, ALL),
        field("require_stable", BOOL, 7, ALL),
    ],
    flexible_from: 6,
    known_tags: &[],
};

const LIST_GROUPS: Schema = Schema {
    fields: &[
        field("states_filter", Kind::Strs, 4, ALL),
        field("types_filter", Kind::Strs, 5, ALL),
    ],
    flexible_from: 3,
    known_tags: &[],
};

const DESCRIBE_GROUPS: Schema = Schema {
    fields: &[
        field("groups", Kind::Strs, 0, ALL),
        field("include_authorized_operations", BOOL, 3, ALL),
    ],
    flexible_from: 5,
    known_tags: &[],
};

const SASL_HANDSHAKE: Schema = Schema {
    fields: &[field("mechanism", Kind::Str, 0, ALL)],
    flexible_from: ALL,
    known_tags: &[],
};

const SASL_AUTHENTICATE: Schema = Schema {
    fields: &[field("auth_bytes", Kind::Bytes, 0, ALL)],
    flexible_from: 2,
    known_tags: &[],
};

fn schema(api: ApiKey) -> Option<&'static Schema> {
    Some(match api {
        ApiKey::ApiVersions => &API_VERSIONS,
        ApiKey::Metadata => &METADATA,
        ApiKey::Produce => &PRODUCE,
        ApiKey::Fetch => &FETCH,
        ApiKey::ListOffsets => &LIST_OFFSETS,
        ApiKey::FindCoordinator => &FIND_COORDINATOR,
        ApiKey::InitProducerId => &INIT_PRODUCER_ID,
        ApiKey::CreateTopics => &CREATE_TOPICS,
        ApiKey::DeleteTopics => &DELETE_TOPICS,
        ApiKey::DescribeConfigs => &DESCRIBE_CONFIGS,
        ApiKey::JoinGroup => &JOIN_GROUP,
        ApiKey::SyncGroup => &SYNC_GROUP,
        ApiKey::Heartbeat => &HEARTBEAT,
        ApiKey::LeaveGroup => &LEAVE_GROUP,
        ApiKey::OffsetCommit => &OFFSET_COMMIT,
        ApiKey::OffsetFetch => &OFFSET_FETCH,
        ApiKey::ListGroups => &LIST_GROUPS,
        ApiKey::DescribeGroups => &DESCRIBE_GROUPS,
        ApiKey::SaslHandshake => &SASL_HANDSHAKE,
        ApiKey::SaslAuthenticate => &SASL_AUTHENTICATE,
        ApiKey::DescribeAcls => &DESCRIBE_ACLS,
        ApiKey::CreateAcls => &CREATE_ACLS,
        ApiKey::DeleteAcls => &DELETE_ACLS,
        ApiKey::DescribeClientQuotas => &DESCRIBE_CLIENT_QUOTAS,
        ApiKey::AlterClientQuotas => &ALTER_CLIENT_QUOTAS,
        _ => return None,
    })
}

/// Checks that `body` is a well-formed `api` request of `version`: see the module docs.
pub(crate) fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), Malformed> {
    let Some(schema) = schema(api) else {
        return Err(Malformed {
            field: "api_key",
            position: 0,
            problem: "not an API this listener serves",
        });
    };
    let mut walk = Walk { bytes: body, at: 0, version, flexible: version >= schema.flexible_from };
    walk.fields(schema.fields, "request")?;
    if walk.flexible {
        walk.tags(schema.known_tags)?;
    }
    if walk.at != body.len() {
        return Err(walk.fail("request", "bytes left after the last field"));
    }
    Ok(())
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn fail(&self, field: &'static str, problem: &'static str) -> Malformed {
        Malformed { field, position: self.at, problem }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn skip(&mut self, size: usize, field: &'static str) -> Result<(), Malformed> {
        if size > self.remaining() {
            return Err(self.fail(field, "runs past the end of the request"));
        }
        self.at += size;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Malformed> {
        let bytes = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| self.fail(field, "runs past the end of the request"))?;
        self.at += N;
        Ok(bytes.try_into().unwrap_or([0; N]))
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for index in 0..5 {
            let [byte] = self.fixed::<1>(field)?;
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fail(field, "unsigned varint longer than 5 bytes"))
    }

    /// A length or count: `None` for null (-1, or 0 compact).
    fn length(&mut self, field: &'static str, wide: bool) -> Result<Option<usize>, Malformed> {
        let value = if self.flexible {
            match self.uvarint(field)? {
                0 => return Ok(None),
                n => n - 1,
            }
        } else if wide {
            match i32::from_be_bytes(self.fixed(field)?) {
                -1 => return Ok(None),
                n => u64::try_from(n).map_err(|_| self.fail(field, "negative length"))?,
            }
        } else {
            match i16::from_be_bytes(self.fixed(field)?) {
                -1 => return Ok(None),
                n => u64::try_from(n).map_err(|_| self.fail(field, "negative length"))?,
            }
        };
        usize::try_from(value).map(Some).map_err(|_| self.fail(field, "length too large"))
    }

    fn fields(&mut self, fields: &'static [Field], _within: &'static str) -> Result<(), Malformed> {
        let version = self.version;
        for field in fields.iter().filter(|field| (field.from..=field.to).contains(&version)) {
            self.field(field.kind, field.name)?;
        }
        Ok(())
    }

    fn field(&mut self, kind: Kind, name: &'static str) -> Result<(), Malformed> {
        match kind {
            Kind::Fixed(size) => self.skip(size, name),
            Kind::Str => match self.length(name, false)? {
                Some(size) => self.skip(size, name),
                None => Ok(()),
            },
            Kind::Bytes => match self.length(name, true)? {
                Some(size) => self.skip(size, name),
                None => Ok(()),
            },
            Kind::Strs => self.array(name, 1, |walk| walk.field(Kind::Str, name)),
            Kind::Int32s => self.array(name, 4, |walk| walk.skip(4, name)),
            Kind::Array(fields) => {
                let smallest = self.smallest(fields);
                self.array(name, smallest, |walk| {
                    walk.fields(fields, name)?;
                    if walk.flexible {
                        walk.tags(&[])?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// An array whose elements take at least `smallest` bytes each.
    fn array(
        &mut self,
        name: &'static str,
        smallest: usize,
        mut element: impl FnMut(&mut Self) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        let Some(count) = self.length(name, true)? else { return Ok(()) };
        // INVARIANT: the crate allocates for `count` elements; no more can be in the bytes left.
        if count.saturating_mul(smallest.max(1)) > self.remaining() {
            return Err(self.fail(name, "claims more elements than the request holds"));
        }
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }

    /// The fewest bytes an element of `fields` takes at this version.
    fn smallest(&self, fields: &[Field]) -> usize {
        let fixed: usize = fields
            .iter()
            .filter(|field| (field.from..=field.to).contains(&self.version))
            .map(|field| match field.kind {
                Kind::Fixed(size) => size,
                Kind::Str => {
                    if self.flexible {
                        1
                    } else {
                        2
                    }
                }
                _ => {
                    if self.flexible {
                        1
                    } else {
                        4
                    }
                }
            })
            .sum();
        fixed + usize::from(self.flexible)
    }

    /// A tagged-fields section: known tags are checked by their kind and must fill their size.
    fn tags(&mut self, known: &[(u32, Kind)]) -> Result<(), Malformed> {
        let count = self.uvarint("tagged fields")?;
        if count > u64::try_from(self.remaining()).unwrap_or(u64::MAX) {
            return Err(self.fail("tagged fields", "claims more fields than the request holds"));
        }
        for _ in 0..count {
            let tag = self.uvarint("tag")?;
            let size = usize::try_from(self.uvarint("tag size")?)
                .map_err(|_| self.fail("tag size", "too large"))?;
            let start = self.at;
            match known.iter().find(|(known, _)| u64::from(*known) == tag) {
                Some(&(_, kind)) => {
                    self.field(kind, "tagged field")?;
                    if self.at != start + size {
                        return Err(self.fail("tagged field", "does not fill its declared size"));
                    }
                }
                None => self.skip(size, "tagged field")?,
            }
        }
        Ok(())
    }
}
