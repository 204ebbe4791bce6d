//! Frame headers and every request and response body decoder, on arbitrary bytes: they must
//! return an error, never panic, and never allocate by a length read from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_protocol::limits::FRAME_HEADER_SIZE;
use ringmq_protocol::message::{
    BrokerStats, ErrorBody, FetchReply, HandshakeReply, LocalOpenReply, LocalWaitReply,
    TopicDescription, TopicList,
};
use ringmq_protocol::{FrameHead, Opcode, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = FrameHead::decode(data, u32::MAX) {
        let body = data.get(FRAME_HEADER_SIZE..).unwrap_or_default();
        let body = body.get(..head.body_len()).unwrap_or(body);
        if let Some(opcode) = Opcode::from_u8(head.opcode) {
            let _ = Request::decode(opcode, body);
        }
        let _ = Response::decode(&head, body);
    }
    // Every body decoder on the raw input too.
    for &opcode in Opcode::ALL {
        if let Ok(Some(request)) = Request::decode(opcode, data) {
            // What decodes re-encodes to the same bytes.
            let mut encoded = Vec::new();
            request.encode(&mut encoded).expect("a decoded request re-encodes");
            assert_eq!(encoded, data, "{opcode:?} did not round-trip");
        }
    }
    let _ = ErrorBody::decode(data);
    let _ = HandshakeReply::decode(data);
    let _ = TopicList::decode(data).map(|list| list.iter().count());
    let _ = TopicDescription::decode(data).map(|description| description.partitions().count());
    let _ = FetchReply::decode(data);
    let _ = BrokerStats::decode(data);
    let _ = LocalOpenReply::decode(data);
    let _ = LocalWaitReply::decode(data);
});
