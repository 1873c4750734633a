//! The ipmask / trusted_proxies parser: "CIDR\nADDRESS" — never panics, and a
//! parsed network contains its own network address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::net::{in_nets, parse_net};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (cidr, addr) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(net) = parse_net(cidr) {
        assert!(in_nets(&[net], net.network()));
        if let Ok(ip) = addr.trim().parse() {
            let _ = in_nets(&[net], ip);
        }
    }
});
