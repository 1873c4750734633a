//! Data size checks during evaluation.
#![cfg(not(feature = "unchecked"))]

use super::GlobalRuntimeState;
use crate::types::dynamic::Union;
use crate::{Dynamic, Engine, Position, RhaiResultOf, ERR};
use std::borrow::Borrow;
#[cfg(feature = "no_std")]
use std::prelude::v1::*;

// Switchyard patch (see vendor/README.md): the size walk below is bounded in
// depth, counts map keys toward the string total, and looks inside function
// pointers' curried arguments (closures' captured values), so that no value a
// script builds can nest deeper than [`MAX_DATA_DEPTH`] or hide its size.

/// Deepest nesting of arrays, maps and curried function pointers in script data.
pub const MAX_DATA_DEPTH: usize = 128;

/// The array count reported for data nested deeper than [`MAX_DATA_DEPTH`].
const TOO_DEEP: usize = usize::MAX / 4;

/// Sizes of one value found inside data, at nesting level `depth`.
#[inline]
fn calc_inner_sizes(value: &Dynamic, depth: usize) -> (usize, usize, usize) {
    if depth > MAX_DATA_DEPTH {
        return (TOO_DEEP, 0, 0);
    }
    match value.0 {
        #[cfg(not(feature = "no_index"))]
        Union::Array(ref a, ..) => calc_array_sizes_at(a, depth + 1),
        #[cfg(not(feature = "no_index"))]
        Union::Blob(ref a, ..) => (a.len(), 0, 0),
        #[cfg(not(feature = "no_object"))]
        Union::Map(ref m, ..) => calc_map_sizes_at(m, depth + 1),
        Union::Str(ref s, ..) => (0, 0, s.len()),
        Union::FnPtr(ref f, ..) => calc_curry_sizes(f.curry(), depth + 1),
        #[cfg(not(feature = "no_closure"))]
        Union::Shared(ref cell, ..) => match try_read(cell) {
            Some(inner) => calc_inner_sizes(&inner, depth + 1),
            // Locked by the running script right now: counted when it is next checked.
            None => (0, 0, 0),
        },
        _ => (0, 0, 0),
    }
}

/// A captured value, read without waiting (a lock held by this very run would never free).
#[cfg(not(feature = "no_closure"))]
fn try_read(cell: &crate::Locked<Dynamic>) -> Option<crate::func::native::LockGuard<'_, Dynamic>> {
    #[cfg(not(feature = "sync"))]
    return cell.try_borrow().ok();
    #[cfg(feature = "sync")]
    return cell.try_read().ok();
}

#[inline]
fn add(acc: &mut (usize, usize, usize), (a, m, s): (usize, usize, usize)) {
    acc.0 = acc.0.saturating_add(a);
    acc.1 = acc.1.saturating_add(m);
    acc.2 = acc.2.saturating_add(s);
}

fn calc_curry_sizes(curry: &[Dynamic], depth: usize) -> (usize, usize, usize) {
    let mut acc: (usize, usize, usize) = (0, 0, 0);
    for value in curry {
        // Each curried value counts like an array element.
        acc.0 += 1;
        add(&mut acc, calc_inner_sizes(value, depth));
    }
    acc
}

/// Recursively calculate the sizes of an array.
///
/// Sizes returned are `(` [`Array`][crate::Array], [`Map`][crate::Map] and [`String`] `)`.
#[cfg(not(feature = "no_index"))]
#[inline]
pub fn calc_array_sizes(array: &crate::Array) -> (usize, usize, usize) {
    calc_array_sizes_at(array, 1)
}

#[cfg(not(feature = "no_index"))]
fn calc_array_sizes_at(array: &crate::Array, depth: usize) -> (usize, usize, usize) {
    let mut acc: (usize, usize, usize) = (0, 0, 0);
    for value in array {
        acc.0 += 1;
        if let Union::Blob(ref b, ..) = value.0 {
            acc.0 = acc.0.saturating_add(1 + b.len());
            continue;
        }
        add(&mut acc, calc_inner_sizes(value, depth));
    }
    acc
}

/// Recursively calculate the sizes of a map; its keys count toward the string total.
#[cfg(not(feature = "no_object"))]
fn calc_map_sizes_at(map: &crate::Map, depth: usize) -> (usize, usize, usize) {
    let mut acc: (usize, usize, usize) = (0, 0, 0);
    for (key, value) in map {
        acc.1 += 1;
        acc.2 = acc.2.saturating_add(key.len());
        if let Union::Blob(ref b, ..) = value.0 {
            acc.0 = acc.0.saturating_add(1 + b.len());
            continue;
        }
        add(&mut acc, calc_inner_sizes(value, depth));
    }
    acc
}

/// Recursively calculate the sizes of a value.
///
/// Sizes returned are `(` [`Array`][crate::Array], [`Map`][crate::Map] and [`String`] `)`.
#[inline]
pub fn calc_data_sizes(value: &Dynamic, _top: bool) -> (usize, usize, usize) {
    match value.0 {
        #[cfg(not(feature = "no_index"))]
        Union::Blob(ref blob, ..) => (blob.len(), 0, 0),
        #[cfg(not(feature = "no_closure"))]
        Union::Shared(..) if _top => calc_data_sizes(&value.read_lock::<Dynamic>().unwrap(), true),
        _ => calc_inner_sizes(value, 0),
    }
}

impl Engine {
    /// Raise an error if any data size exceeds limit.
    ///
    /// [`Position`] in [`EvalAltResult`][crate::EvalAltResult] is always [`NONE`][Position::NONE]
    /// and should be set afterwards.
    #[cfg(not(feature = "unchecked"))]
    pub(crate) fn throw_on_size(&self, (_arr, _map, s): (usize, usize, usize)) -> RhaiResultOf<()> {
        if _arr >= TOO_DEEP {
            return Err(ERR::ErrorDataTooLarge(
                format!("Nesting depth of data (at most {MAX_DATA_DEPTH} levels)"),
                Position::NONE,
            )
            .into());
        }

        if self.limits.string_len.map_or(false, |max| s > max.get()) {
            return Err(
                ERR::ErrorDataTooLarge("Length of string".to_string(), Position::NONE).into(),
            );
        }

        #[cfg(not(feature = "no_index"))]
        if self.limits.array_size.map_or(false, |max| _arr > max.get()) {
            return Err(
                ERR::ErrorDataTooLarge("Size of array/BLOB".to_string(), Position::NONE).into(),
            );
        }

        #[cfg(not(feature = "no_object"))]
        if self.limits.map_size.map_or(false, |max| _map > max.get()) {
            return Err(
                ERR::ErrorDataTooLarge("Size of object map".to_string(), Position::NONE).into(),
            );
        }

        Ok(())
    }

    /// Check whether the size of a [`Dynamic`] is within limits.
    #[cfg(not(feature = "unchecked"))]
    #[inline]
    pub(crate) fn check_data_size<T: Borrow<Dynamic>>(
        &self,
        value: T,
        pos: Position,
    ) -> RhaiResultOf<T> {
        // If no data size limits, just return
        if !self.has_data_size_limit() {
            return Ok(value);
        }

        let sizes = calc_data_sizes(value.borrow(), true);

        self.throw_on_size(sizes)
            .map_err(|err| err.fill_position(pos))?;

        Ok(value)
    }

    /// Raise an error if the size of a [`Dynamic`] is out of limits (if any).
    ///
    /// Not available under `unchecked`.
    #[cfg(not(feature = "unchecked"))]
    #[inline(always)]
    pub fn ensure_data_size_within_limits(&self, value: &Dynamic) -> RhaiResultOf<()> {
        self.check_data_size(value, Position::NONE).map(|_| ())
    }

    /// Check if the number of operations stay within limit.
    #[inline(always)]
    pub(crate) fn track_operation(
        &self,
        global: &mut GlobalRuntimeState,
        pos: Position,
    ) -> RhaiResultOf<()> {
        let mut num_ops = None;

        let mut num_operations = || {
            *num_ops.get_or_insert_with(|| {
                // Increment operations count
                #[cfg(atomic_ops_count)]
                return global
                    .num_operations
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;

                #[cfg(not(atomic_ops_count))]
                {
                    global.num_operations += 1;
                    return global.num_operations;
                }
            })
        };

        // Guard against too many operations
        #[cfg(not(feature = "unchecked"))]
        if self.max_operations() > 0 && num_operations() > self.max_operations() {
            return Err(ERR::ErrorTooManyOperations(pos).into());
        }

        if let Some(progress) = self.progress.as_ref() {
            return progress(num_operations())
                .map(|token| Err(ERR::ErrorTerminated(token, pos).into()))
                .unwrap_or(Ok(()));
        }

        Ok(())
    }
}
