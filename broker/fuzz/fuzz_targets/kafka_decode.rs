//! Arbitrary bytes as one Kafka request frame (after its size prefix), through the Kafka
//! listener's own parsing: the API and version check, the header, the schema guard and the
//! `kafka-protocol` decoder. It must return (an error or a request), never panic, and never ask
//! for an allocation a body's size cannot justify (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` catch that).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringmq_broker::parse_kafka_request_for_fuzzing(data);
});
