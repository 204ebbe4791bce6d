//! Arbitrary bytes as one frame a cluster peer sends (header, then the body of the kind it
//! names): the header check, the `Append` decoder (its JSON head and the entries' batches, each
//! validated as a ring stores it) and the JSON bodies. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmq_broker::decode_peer_frame_for_fuzzing(data);
});
