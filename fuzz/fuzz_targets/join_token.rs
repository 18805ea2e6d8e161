//! The join path's inputs: a room path and a token. Neither parsing the room nor verifying the
//! token panics, and a token that verifies names the room it was checked against and a member
//! within bounds.
#![no_main]

use chatfleet_wire::RoomId;
use chatfleet_wire::token::TokenKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (room, token) = text.split_once('\n').unwrap_or(("support/case-1", &text));
    let Ok(room) = room.parse::<RoomId>() else {
        return;
    };
    let keys = TokenKeys::from_secret(b"fuzz-secret");
    if let Ok(claims) = keys.verify(token, &room) {
        assert_eq!(claims.room, room);
        assert!(claims.member().check_bounds().is_ok());
    }
});
