//! A push-only lock-free stack whose consumer takes everything at once.
//!
//! Recorders that had to seal a stale second themselves (see `gate`) hand the
//! harvested second to the service's sealer through this stack.  Because the
//! consumer never pops single nodes but swaps the whole list out, there is no
//! ABA problem and no node is freed while a pusher can still read it.

use crate::primitive::{AtomicPtr, Ordering};
use std::ptr;

struct Node<T> {
    value: T,
    next: *mut Node<T>,
}

/// Multi-producer, take-all stack.
pub struct Handoff<T> {
    head: AtomicPtr<Node<T>>,
}

// SAFETY: nodes are heap-allocated and owned by the stack between `push` and
// `take_all`; a `T` moves from one thread to another through it, so `T: Send`
// is all that is needed for both Send and Sync.
unsafe impl<T: Send> Send for Handoff<T> {}
// SAFETY: as above; shared access only goes through the atomic head.
unsafe impl<T: Send> Sync for Handoff<T> {}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Handoff {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl<T> Handoff<T> {
    pub fn push(&self, value: T) {
        let node = Box::into_raw(Box::new(Node {
            value,
            next: ptr::null_mut(),
        }));
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` came from Box::into_raw above and is not yet
            // shared: only this thread can touch it until the CAS succeeds.
            unsafe { (*node).next = head };
            // Release: the node's contents happen-before the consumer's
            // Acquire swap that takes it.
            match self
                .head
                .compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Takes every pushed value, oldest first.
    pub fn take_all(&self) -> Vec<T> {
        // Acquire: pairs with the pushers' Release CAS.
        let mut p = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        let mut out = Vec::new();
        while !p.is_null() {
            // SAFETY: every non-null pointer in the list came from
            // Box::into_raw in `push`, and the swap above made this thread
            // its only owner (pushers only read `head`, never older nodes).
            let node = unsafe { Box::from_raw(p) };
            p = node.next;
            out.push(node.value);
        }
        out.reverse();
        out
    }

    #[cfg(all(test, not(loom)))]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }
}

impl<T> Drop for Handoff<T> {
    fn drop(&mut self) {
        drop(self.take_all());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_pushes_are_all_taken_once() {
        let h = Arc::new(Handoff::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.push(t * 1_000_000 + i);
                    }
                })
            })
            .collect();
        let mut got = vec![];
        while got.len() < 40_000 {
            got.extend(h.take_all());
        }
        for t in threads {
            t.join().unwrap();
        }
        got.extend(h.take_all());
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 40_000);
        assert!(h.is_empty());
    }

    #[test]
    fn drop_frees_leftovers() {
        let h = Handoff::default();
        h.push(String::from("left behind"));
        drop(h);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_push_push_take() {
        loom::model(|| {
            let h = Arc::new(Handoff::default());
            let a = {
                let h = h.clone();
                loom::thread::spawn(move || h.push(1u32))
            };
            let b = {
                let h = h.clone();
                loom::thread::spawn(move || h.push(2u32))
            };
            let mut got = h.take_all();
            a.join().unwrap();
            b.join().unwrap();
            got.extend(h.take_all());
            got.sort_unstable();
            assert_eq!(got, vec![1, 2]);
        });
    }
}
