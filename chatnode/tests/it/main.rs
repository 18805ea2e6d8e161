//! Integration tests against real chatnode processes, real `redis-server`s and real
//! WebSocket and HTTP connections. One test binary, so it links once.

mod accept;
mod admin;
mod api;
mod audit;
mod auth;
mod chat;
mod cluster;
mod drain;
mod fleet;
mod hostile;
mod limits;
mod openapi;
mod outage;
mod record;
mod resume;
mod room_state;
mod sentinel;
mod sessions;
mod spanning;
mod support;
mod tls;
mod transcripts;
mod webhooks;
