//! The fleet's pods as placement sees them, read from the pod cache.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::decide::workload::FLEET_LABEL;

/// The fleet's pods that are not being deleted.
fn live_pods<'a>(
    pods: &'a [Arc<Pod>],
    namespace: &'a str,
    fleet: &'a str,
) -> impl Iterator<Item = &'a Arc<Pod>> {
    pods.iter()
        .filter(move |pod| pod.namespace().as_deref() == Some(namespace))
        .filter(move |pod| pod.labels().get(FLEET_LABEL).map(String::as_str) == Some(fleet))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
}

/// The names of the fleet's pods that are not being deleted, Ready or not.
pub fn fleet_pods(pods: &[Arc<Pod>], namespace: &str, fleet: &str) -> Vec<String> {
    live_pods(pods, namespace, fleet)
        .map(|pod| pod.name_any())
        .collect()
}

/// The UID of the fleet's pod `name`, if it exists and is not being deleted.
pub fn fleet_pod_uid(
    pods: &[Arc<Pod>],
    namespace: &str,
    fleet: &str,
    name: &str,
) -> Option<String> {
    live_pods(pods, namespace, fleet)
        .find(|pod| pod.name_any() == name)
        .and_then(|pod| pod.metadata.uid.clone())
}

/// The fleet's pods that are Ready and not being deleted, by name.
pub fn ready_pods(pods: &[Arc<Pod>], namespace: &str, fleet: &str) -> Vec<String> {
    let mut ready: Vec<String> = live_pods(pods, namespace, fleet)
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .map(|pod| pod.name_any())
        .collect();
    ready.sort();
    ready
}
