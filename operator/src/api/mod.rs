//! The room API and the admin routes as the operator serves them: `chatfleet_api`'s routers
//! over Kubernetes ([`rooms::KubeDirectory`]: rooms are ChatRoom resources) and over the
//! default fleet's Redis ([`admin::KubeFleetAdmin`]).

pub mod admin;
pub mod rooms;
