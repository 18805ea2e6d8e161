//! The fleet's pods as placement sees them, read from the pod cache.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::decide::workload::FLEET_LABEL;

/// The fleet's pods that are Ready and not being deleted, by name.
pub fn ready_pods(pods: &[Arc<Pod>], namespace: &str, fleet: &str) -> Vec<String> {
    let mut ready: Vec<String> = pods
        .iter()
        .filter(|pod| pod.namespace().as_deref() == Some(namespace))
        .filter(|pod| pod.labels().get(FLEET_LABEL).map(String::as_str) == Some(fleet))
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
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
