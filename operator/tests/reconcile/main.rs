//! The reconcilers against a mocked Kubernetes API server (tower-test, as kube-rs's
//! controller-rs does) and a real redis-server.

mod admin;
mod fleet;
mod mock;
mod room;
mod room_api;
