//! The channel document parser and validator: any text is a channel or a FieldError.
#![no_main]
use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use switchyard::channel::{locate, ChannelDoc, ValidationContext};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let scripts: HashSet<String> = ["a", "b", "orders_recv"].iter().map(|s| s.to_string()).collect();
    let types = vec!["erp".to_string()];
    let ctx = ValidationContext { solution_types: &types, scripts: &scripts };
    match ChannelDoc::parse(text) {
        Ok(doc) => {
            if let Err(e) = doc.validate(Some("orders"), &ctx) {
                let _ = locate(text, &e.field);
            }
        }
        Err(e) => {
            let _ = locate(text, &e.field);
        }
    }
});
