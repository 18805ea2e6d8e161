//! The real parts these tests use live in the shared `testkit` crate; a node that no test
//! kills or signals can also run in-process, through [`chatnode::serve`].

use clap::Parser;
pub use testkit::*;

/// A node served inside the test's runtime, with the flags of `Node::start` plus `args`.
pub async fn in_process(args: &[&str]) -> Node {
    Node::in_process(args, |argv, listener| async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let config = chatnode::Config::parse_from(argv);
        chatnode::serve(listener, config, std::future::pending())
            .await
            .expect("the in-process node failed");
    })
    .await
}
