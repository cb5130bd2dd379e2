//! Fuzz target: arbitrary bytes as one WebSocket data frame (see
//! `wormhole_mailbox_fuzz::decode_and_handle` for what is checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wormhole_mailbox_fuzz::decode_and_handle(data);
});
