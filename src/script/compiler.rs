//! Compiling scripts without holding anyone up.
//!
//! Rhai compiles in time that grows faster than the script (a 900 KB script
//! of 35 000 small functions takes seconds). A reload runs under the
//! registry's lock, and the runtime waits for its blocking tasks when it
//! stops, so a large script compiled there would delay every reload, every
//! admin write and the shutdown. Instead, a script over
//! [`INLINE_COMPILE_BYTES`] is compiled on a detached thread of its own: the
//! reload that finds it keeps the last good version serving (or, for a new
//! script, a placeholder saying it is still compiling) and goes on; when the
//! compile ends, its result waits here and the server reloads again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use rhai::AST;

use super::CompileError;

/// Scripts up to this size are compiled where they are met (milliseconds).
pub const INLINE_COMPILE_BYTES: usize = 64 * 1024;

/// Finished results kept at most, waiting for the reload that takes them.
const KEPT: usize = 64;

/// A compile's result, or that it is under way.
enum Slot {
    Pending,
    Done(Result<Arc<AST>, CompileError>),
}

/// The compiles under way and the results not yet taken, by source text.
#[derive(Default)]
pub struct Compiles {
    slots: Mutex<HashMap<(usize, u64), Slot>>,
    /// Called when a background compile ends (the server reloads then);
    /// unset (as in `switchyard check`), every compile happens in place.
    on_done: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// What [`Compiles::find`] knows of a source.
pub enum Found {
    /// Compiled: the result.
    Done(Result<Arc<AST>, CompileError>),
    /// Being compiled on its own thread.
    Pending,
    /// Not known: compile it (in place, or in the background when `true`).
    Unknown(bool),
}

fn key(source: &str) -> (usize, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    (source.len(), h.finish())
}

impl Compiles {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, u64), Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns background compiles on; `on_done` is called after each.
    pub fn in_background(&self, on_done: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_done.set(Box::new(on_done));
    }

    /// What is known of `source`; a finished result is taken (handed out once).
    /// `Unknown(true)` also marks it pending: the caller starts its compile.
    pub fn find(&self, source: &str) -> Found {
        let k = key(source);
        let mut slots = self.slots();
        match slots.remove(&k) {
            Some(Slot::Done(result)) => Found::Done(result),
            Some(Slot::Pending) => {
                slots.insert(k, Slot::Pending);
                Found::Pending
            }
            None => {
                let background =
                    self.on_done.get().is_some() && source.len() > INLINE_COMPILE_BYTES;
                if background {
                    slots.insert(k, Slot::Pending);
                }
                Found::Unknown(background)
            }
        }
    }

    /// Drops the pending mark of a compile that could not be started.
    pub fn forget(&self, source: &str) {
        self.slots().remove(&key(source));
    }

    /// Keeps a finished result for the reload that will look for it.
    pub fn done(&self, source: &str, result: Result<Arc<AST>, CompileError>) {
        let mut slots = self.slots();
        if slots.len() >= KEPT {
            slots.retain(|_, s| matches!(s, Slot::Pending));
        }
        slots.insert(key(source), Slot::Done(result));
        drop(slots);
        if let Some(on_done) = self.on_done.get() {
            on_done();
        }
    }
}
