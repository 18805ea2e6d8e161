//! Reading one key of a Secret: how fleets name their Redis URL and their token key.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use crate::crd::SecretKeyRef;

/// Why a Secret's key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("secret {0} does not exist")]
    Missing(String),
    #[error("secret {name} has no key {key}")]
    NoKey { name: String, key: String },
}

/// The bytes under `reference.key` of the Secret `reference.name` in `namespace`.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<Vec<u8>, SecretError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&reference.name)
        .await?
        .ok_or_else(|| SecretError::Missing(reference.name.clone()))?;
    secret
        .data
        .and_then(|mut data| data.remove(&reference.key))
        .map(|bytes| bytes.0)
        .ok_or_else(|| SecretError::NoKey {
            name: reference.name.clone(),
            key: reference.key.clone(),
        })
}
