//! Whatever a client sends as a text frame: parsing never panics, and a frame that parses
//! encodes back to one that parses the same.
#![no_main]

use chatfleet_wire::frames::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
        let again = serde_json::to_string(&frame).expect("a parsed frame encodes");
        let back: ClientFrame = serde_json::from_str(&again).expect("its encoding parses");
        assert_eq!(back, frame);
    }
});
