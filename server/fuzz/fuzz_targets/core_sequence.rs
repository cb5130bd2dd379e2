//! Fuzz target: bytes read (with `arbitrary`) as a command sequence over
//! several connections, invariants checked after every step (see
//! `wormhole_mailbox_fuzz::sequence`).
#![no_main]

libfuzzer_sys::fuzz_target!(|plan: wormhole_mailbox_fuzz::sequence::Plan| {
    let _ = wormhole_mailbox_fuzz::sequence::run(&plan);
});
