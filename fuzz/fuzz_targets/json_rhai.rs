//! JSON text straight into Rhai values (the parser behind `parse_json` and the
//! request bodies): never panics, accepts exactly what serde_json accepts, and
//! gives the same value as going through `serde_json::Value`; writing the value
//! back gives JSON that parses to the same value again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::script::convert;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let direct = convert::parse(text);
    let via_value = serde_json::from_str::<serde_json::Value>(text);
    assert_eq!(direct.is_ok(), via_value.is_ok(), "{text:?}");
    let (Ok(direct), Ok(value)) = (direct, via_value) else { return };
    let expected = convert::to_json(&convert::from_json(&value)).unwrap();
    assert_eq!(convert::to_json(&direct).unwrap(), expected);
    let written = convert::to_json_text(&direct).unwrap();
    let again = convert::parse(&written).unwrap();
    assert_eq!(convert::to_json(&again).unwrap(), expected);
});
