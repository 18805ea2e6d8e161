//! The operator's one error type. Every variant is retried with backoff by the controller.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("shared state in Redis: {0}")]
    State(#[from] chatfleet_state::StateError),
    #[error("seats kept being taken by others: {0}")]
    Contended(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("{0} is not a valid room id: {1}")]
    BadRoomId(String, String),
}

impl Error {
    /// A short label for the `errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Redis(_) => "redis",
            Error::State(chatfleet_state::StateError::Redis(_)) => "redis",
            Error::State(_) => "store",
            Error::Contended(_) => "contended",
            Error::Config(_) => "config",
            Error::NoNamespace(_) | Error::BadRoomId(..) => "invalid",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
