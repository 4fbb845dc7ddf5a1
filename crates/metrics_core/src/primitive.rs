//! Atomics used by the lock-free parts, swapped for loom's under `--cfg loom`
//! so the same protocol code is model-checked (crossbeam's `primitive` idiom).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
/// Under loom a spin must yield, or the model explores the spin forever.
#[cfg(loom)]
pub(crate) fn spin_loop() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
