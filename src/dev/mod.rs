//! Script development (SPEC §15): recordings of what a channel served, dry
//! runs that change nothing, replays of a draft over the recordings, and
//! `switchyard test` / `switchyard try` offline.
//!
//! - `dry`: the dry-run host and runner every other part uses.
//! - `recordings`: what channels with `opts.record` keep, written off the request's path.
//! - `api`: the admin routes (`/requests`, `/try`, `/replay`).
//! - `cases`: `switchyard test` and `switchyard try`, offline against the folders.

pub mod api;
pub mod cases;
pub mod dry;
pub mod recordings;
