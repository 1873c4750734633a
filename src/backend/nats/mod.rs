//! The NATS JetStream backend (SPEC §13).
