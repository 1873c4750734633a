//! Event patterns: "PATTERN\nNAME" — parsing and matching never panic, and a
//! literal pattern matches exactly its own name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::pattern::{valid_name, Pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, name) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(p) = Pattern::parse(pattern) {
        let _ = p.matches(name);
        if valid_name(pattern) {
            assert!(p.matches(pattern), "{pattern:?} must match itself");
        }
    }
    let _ = valid_name(name);
});
