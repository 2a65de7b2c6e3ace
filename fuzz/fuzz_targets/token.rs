//! A token in every carrier (Authorization, subprotocol, query), verified with a key of every
//! type: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_auth::fuzz::token(data));
