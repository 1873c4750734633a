//! The websocket frame parser: any text must parse or say why, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::ws::parse_frame(text);
    }
});
