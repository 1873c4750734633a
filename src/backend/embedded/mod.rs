//! The embedded backend: one process and its SQLite store (the default).

pub mod events;
pub mod kv;
