//! The one error type of the node's start-up; once running, the node reports problems to
//! clients as frames and never exits on them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the token secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token secret is empty")]
    EmptySecret,
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[from] redis::RedisError),
    #[error("Redis TLS: {0}")]
    RedisTls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("webhooks: {0}")]
    Webhooks(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}
