//! The ring's own framing around the batches (entries, close entries, end markers): defined in
//! [`ringmq_protocol::ring`], which same-host readers share.

pub(crate) use ringmq_protocol::ring::*;
