//! `Origin`, `X-Forwarded-For`, `Authorization`, `Sec-WebSocket-Protocol`, request targets and
//! the allow-list / trusted-proxy parsers: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ws_auth::fuzz::headers(data));
