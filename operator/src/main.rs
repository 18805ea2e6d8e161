//! The chatfleet operator: reconciles `ChatFleet` and `ChatRoom` resources (issue 3).
//!
//! Not built yet. The wire contracts it will use come from the `chatnode` library, so the two
//! crates can never disagree about Redis keys or the load report.

use chatnode::wire::keys;

fn main() {
    eprintln!(
        "the chatfleet operator is not implemented yet (issue 3); it will read node load reports from {}",
        keys::node_index()
    );
    std::process::exit(2);
}
