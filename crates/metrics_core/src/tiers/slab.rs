//! Where sealed buckets' byte strings live: 4 KiB pages per size class.
//!
//! A full monitor holds ~2 000 small blobs a service (30 to 450 bytes),
//! each kept for an hour (10 s tier) or a day (1 min tier), allocated while
//! sealing among short-lived buffers.  From the general allocator that
//! costs twice: a chunk header and rounding per blob (~15 bytes), and holes
//! where short-lived neighbours were freed that the next allocations do not
//! fit (glibc: ~200 KiB a service after a day, more than the 10 s tier
//! itself).  Here every blob takes a slot of its size rounded up to 8 bytes
//! in a page of same-sized slots, a freed slot is the next one handed out
//! for that size, and a page whose last slot is freed goes back to the
//! allocator.  Blobs over [`MAX_SLOT`] bytes use the allocator directly.
//! Pages are plain 4 KiB allocations (an aligned one costs glibc a hole in
//! front of it), so a slot's owner knows its page by the slot's offset
//! in it, which [`alloc`] returns and [`free`] takes back.
//!
//! One global lock, held for a few pointer updates per sealed bucket (never
//! on the record path).

use std::alloc::{self, Layout};
use std::ptr;
use std::sync::Mutex;

const PAGE: usize = 4096;
const GRAIN: usize = 8;
/// Largest slot; bigger blobs are plain allocations.
pub const MAX_SLOT: usize = 512;
const CLASSES: usize = MAX_SLOT / GRAIN;

/// At the start of every page.
#[repr(C)]
struct Page {
    slot: usize,
    live: usize,
    /// Offset of the first slot never handed out.
    bump: usize,
    /// Freed slots, linked through their first 8 bytes.
    free: *mut u8,
    /// Pages of this class with a free slot.
    prev: *mut Page,
    next: *mut Page,
    listed: bool,
}

const FIRST: usize = std::mem::size_of::<Page>().next_multiple_of(GRAIN);

struct Classes {
    /// Per class, the pages that have room.
    room: [*mut Page; CLASSES],
    pages: usize,
}

// SAFETY: the pages are only touched with the lock held.
unsafe impl Send for Classes {}

static SLABS: Mutex<Classes> = Mutex::new(Classes {
    room: [ptr::null_mut(); CLASSES],
    pages: 0,
});

fn page_layout() -> Layout {
    Layout::from_size_align(PAGE, GRAIN).expect("page layout")
}

/// Bytes a blob of `size` bytes occupies.
pub fn slot_size(size: usize) -> usize {
    if size > MAX_SLOT {
        size
    } else {
        size.max(GRAIN).next_multiple_of(GRAIN)
    }
}

fn lock() -> std::sync::MutexGuard<'static, Classes> {
    SLABS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Classes {
    /// Takes page `p` off class `c`'s list of pages with room.
    ///
    /// # Safety
    /// `p` is a live page of class `c`, on the list; the lock is held.
    unsafe fn unlink(&mut self, c: usize, p: *mut Page) {
        // SAFETY: per the contract, `p` and its neighbours are live pages.
        unsafe {
            let pg = &mut *p;
            if pg.prev.is_null() {
                self.room[c] = pg.next;
            } else {
                (*pg.prev).next = pg.next;
            }
            if !pg.next.is_null() {
                (*pg.next).prev = pg.prev;
            }
            pg.prev = ptr::null_mut();
            pg.next = ptr::null_mut();
            pg.listed = false;
        }
    }

    /// Puts page `p` on class `c`'s list of pages with room.
    ///
    /// # Safety
    /// `p` is a live page of class `c`, not on the list; the lock is held.
    unsafe fn link(&mut self, c: usize, p: *mut Page) {
        // SAFETY: per the contract, `p` and the list head are live pages.
        unsafe {
            let pg = &mut *p;
            pg.prev = ptr::null_mut();
            pg.next = self.room[c];
            if !pg.next.is_null() {
                (*pg.next).prev = p;
            }
            self.room[c] = p;
            pg.listed = true;
        }
    }
}

/// `size` bytes (at least 1) and, for a slot in a page (`size` up to
/// [`MAX_SLOT`]), its offset in the page (below 4096; 0 otherwise).
pub fn alloc(size: usize) -> (*mut u8, usize) {
    if size > MAX_SLOT {
        let layout = Layout::from_size_align(size, 1).expect("blob layout");
        // SAFETY: size > 0.
        let p = unsafe { alloc::alloc(layout) };
        if p.is_null() {
            alloc::handle_alloc_error(layout)
        }
        return (p, 0);
    }
    let slot = slot_size(size);
    let c = slot / GRAIN - 1;
    let mut classes = lock();
    // SAFETY: every page pointer in `room` is a live page of class `c`,
    // owned by this module and touched only under the lock.
    unsafe {
        let mut p = classes.room[c];
        if p.is_null() {
            let base = alloc::alloc(page_layout());
            if base.is_null() {
                alloc::handle_alloc_error(page_layout())
            }
            p = base.cast::<Page>();
            p.write(Page {
                slot,
                live: 0,
                bump: FIRST,
                free: ptr::null_mut(),
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                listed: false,
            });
            classes.pages += 1;
            classes.link(c, p);
        }
        let pg = &mut *p;
        let out = if !pg.free.is_null() {
            let s = pg.free;
            pg.free = s.cast::<*mut u8>().read();
            s
        } else {
            let s = p.cast::<u8>().add(pg.bump);
            pg.bump += slot;
            s
        };
        let offset = out as usize - p as usize;
        pg.live += 1;
        if pg.free.is_null() && pg.bump + slot > PAGE {
            classes.unlink(c, p);
        }
        (out, offset)
    }
}

/// Frees what [`alloc`] returned for the same `size`.
///
/// # Safety
/// `(p, offset)` came from `alloc(size)` and `p` is not used again.
pub unsafe fn free(p: *mut u8, size: usize, offset: usize) {
    if size > MAX_SLOT {
        // SAFETY: allocated by `alloc` with this layout.
        unsafe { alloc::dealloc(p, Layout::from_size_align(size, 1).expect("blob layout")) };
        return;
    }
    let c = slot_size(size) / GRAIN - 1;
    let page = p.wrapping_sub(offset).cast::<Page>();
    let mut classes = lock();
    // SAFETY: `p` is a slot of class `c` at `offset` in a live page (the
    // caller's contract); the lock is held.
    unsafe {
        let pg = &mut *page;
        debug_assert_eq!(pg.slot, slot_size(size));
        p.cast::<*mut u8>().write(pg.free);
        pg.free = p;
        pg.live -= 1;
        if pg.live == 0 {
            if pg.listed {
                classes.unlink(c, page);
            }
            classes.pages -= 1;
            alloc::dealloc(page.cast::<u8>(), page_layout());
        } else if !pg.listed {
            classes.link(c, page);
        }
    }
}

/// Pages currently held (for tests and accounting).
#[allow(dead_code)]
pub fn pages() -> usize {
    lock().pages
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_empty_pages_released() {
        let sizes = [1usize, 7, 8, 9, 36, 100, 214, 511, 512, 513, 2000];
        let mut held: Vec<(*mut u8, usize, usize, u8)> = Vec::new();
        for round in 0..5000usize {
            let size = sizes[round % sizes.len()];
            let (p, o) = alloc(size);
            assert!(o < PAGE);
            let tag = (round % 251) as u8;
            // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
            unsafe { ptr::write_bytes(p, tag, size) };
            held.push((p, size, o, tag));
            if round % 3 == 0 {
                let (q, s, o, t) = held.swap_remove(round % held.len());
                // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
                unsafe {
                    assert!((0..s).all(|i| *q.add(i) == t), "slot overwritten");
                    free(q, s, o);
                }
            }
        }
        for (p, s, o, t) in held.drain(..) {
            // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
            unsafe {
                assert!((0..s).all(|i| *p.add(i) == t), "slot overwritten");
                free(p, s, o);
            }
        }
    }

    #[test]
    fn threads_share_the_classes() {
        // Miri interprets every byte written: fewer rounds there, same paths.
        let rounds: usize = if cfg!(miri) { 400 } else { 20_000 };
        let hs: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..rounds {
                        let size = 20 + (i * 7 + t) % 300;
                        let (p, o) = alloc(size);
                        // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
                        unsafe { ptr::write_bytes(p, t as u8, size) };
                        held.push((p, size, o));
                        if i % 2 == 1 {
                            let (q, s, o) = held.swap_remove(i % held.len());
                            // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
                            unsafe {
                                assert!((0..s).all(|k| *q.add(k) == t as u8));
                                free(q, s, o);
                            }
                        }
                    }
                    for (q, s, o) in held {
                        // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
                        unsafe { free(q, s, o) };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn slot_sizes_round_to_eight() {
        assert_eq!(slot_size(1), 8);
        assert_eq!(slot_size(40), 40);
        assert_eq!(slot_size(41), 48);
        assert_eq!(slot_size(512), 512);
        assert_eq!(slot_size(513), 513);
        let (one, o) = alloc(40);
        assert_eq!(one as usize % 8, 0);
        // SAFETY: a live slot of `size` bytes from `alloc`, freed once.
        unsafe { free(one, 40, o) };
    }
}
