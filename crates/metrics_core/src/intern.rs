//! Lock-free interning of a service's error types into small ids.
//!
//! A fixed table of `MAX_ERROR_TYPES` slots, each an `AtomicPtr<str box>`
//! set once and never changed until the table drops: a lookup is a scan of
//! loads and string compares, an insert one CAS into the first empty slot.
//! When the table is full, new types map to [`OTHER_ERROR`] ("other").

use crate::open_slot::{MAX_ERROR_TYPES, OTHER_ERROR};
use crate::primitive::{AtomicPtr, Ordering};
use std::ptr;

/// Name reported for errors past the table's capacity.
pub const OTHER_ERROR_NAME: &str = "other";

pub struct ErrorTypes {
    slots: [AtomicPtr<String>; MAX_ERROR_TYPES],
}

impl Default for ErrorTypes {
    fn default() -> Self {
        ErrorTypes {
            slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }
}

impl ErrorTypes {
    /// The id of `name`, interning it if there is room.
    pub fn intern(&self, name: &str) -> u8 {
        for (i, slot) in self.slots.iter().enumerate() {
            // Acquire: pairs with the Release CAS that published the string.
            let mut p = slot.load(Ordering::Acquire);
            if p.is_null() {
                let fresh = Box::into_raw(Box::new(name.to_owned()));
                match slot.compare_exchange(
                    ptr::null_mut(),
                    fresh,
                    Ordering::Release,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return i as u8,
                    Err(actual) => {
                        // SAFETY: `fresh` came from Box::into_raw above and
                        // was never published (the CAS failed).
                        drop(unsafe { Box::from_raw(fresh) });
                        p = actual;
                    }
                }
            }
            // SAFETY: a published pointer is a live Box<String> that is only
            // freed in Drop, which needs `&mut self`.
            if unsafe { &*p }.as_str() == name {
                return i as u8;
            }
        }
        OTHER_ERROR
    }

    /// The name of an id ("other" for the catch-all).
    pub fn name(&self, id: u8) -> Option<String> {
        if id == OTHER_ERROR {
            return Some(OTHER_ERROR_NAME.to_owned());
        }
        let p = self.slots.get(id as usize)?.load(Ordering::Acquire);
        // SAFETY: as in `intern`: published pointers live until Drop.
        (!p.is_null()).then(|| unsafe { &*p }.clone())
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                let p = s.load(Ordering::Acquire);
                if p.is_null() {
                    0
                } else {
                    // SAFETY: as in `intern`.
                    std::mem::size_of::<String>() + unsafe { &*p }.capacity()
                }
            })
            .sum()
    }
}

impl Drop for ErrorTypes {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            let p = s.swap(ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: `&mut self` means no reader is left; each pointer
                // came from Box::into_raw and is freed exactly once (swapped
                // to null first).
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn interns_up_to_capacity_then_other() {
        let t = ErrorTypes::default();
        assert_eq!(t.intern("timeout"), 0);
        assert_eq!(t.intern("http_500"), 1);
        assert_eq!(t.intern("timeout"), 0);
        for i in 2..MAX_ERROR_TYPES {
            assert_eq!(t.intern(&format!("e{i}")) as usize, i);
        }
        assert_eq!(t.intern("one too many"), OTHER_ERROR);
        assert_eq!(t.name(OTHER_ERROR).as_deref(), Some("other"));
        assert_eq!(t.name(1).as_deref(), Some("http_500"));
    }

    #[test]
    fn concurrent_interning_agrees() {
        let t = Arc::new(ErrorTypes::default());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| t.intern(&format!("err{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "all threads see one id per name"
        );
        let mut uniq = ids[0].clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 20);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two threads interning the same new name agree on one id, and a
    /// different name gets another; nothing leaks (loom checks drops).
    #[test]
    fn loom_concurrent_intern_agrees() {
        loom::model(|| {
            let t = Arc::new(ErrorTypes::default());
            let t2 = t.clone();
            let h = loom::thread::spawn(move || (t2.intern("timeout"), t2.intern("oom")));
            let mine = t.intern("timeout");
            let (theirs, oom) = h.join().unwrap();
            assert_eq!(mine, theirs);
            assert_ne!(mine, oom);
            assert_eq!(t.name(mine).as_deref(), Some("timeout"));
        });
    }
}
