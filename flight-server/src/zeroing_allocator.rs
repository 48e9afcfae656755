//! The process's allocator: the system's (glibc's malloc), except that a zeroed block of a page
//! or more is zeroed by writing it rather than left to the kernel's zero pages.
//!
//! glibc's `calloc` hands out fresh memory (a new heap top, a mapped block) without touching it:
//! the kernel's pages are zero already. Code that reads such memory before writing it — a hash
//! join's table of row numbers by key (DataFusion's `ArrayMap`, checking each slot before setting
//! it) — maps the shared zero page on the read, then takes a second, copy-on-write fault on the
//! write, whose TLB flush interrupts every other core running the process (`ptep_clear_flush`,
//! `smp_call_function_many_cond`: 8% of Nexmark q3's samples). Zeroed by `memset`, each page
//! faults once, on a write, with nothing to flush.
//!
//! Blocks over 4 MiB are left to `calloc` as they are: glibc maps them on their own (the
//! threshold `ferris-sql` sets), and a large table that is mostly never touched stays mostly not
//! resident (zeroing them by writing raised Nexmark q16's peak RSS by up to 100 MiB).

use std::alloc::{GlobalAlloc, Layout, System};

/// Zeroed blocks from this size up (a page) are zeroed by writing.
const FROM: usize = 4096;

/// Zeroed blocks over this size are left to `calloc` (glibc's mapping threshold, as
/// `ferris-sql` sets it).
const UP_TO: usize = crate::MMAP_THRESHOLD;

/// The system allocator, with zeroed blocks of a page to 4 MiB zeroed by writing.
pub struct ZeroingAllocator;

// SAFETY: every call goes to the system allocator with the caller's layout; `alloc_zeroed`
// writes zeros over exactly the block it was given.
unsafe impl GlobalAlloc for ZeroingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !(FROM..=UP_TO).contains(&layout.size()) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: the caller's contract, passed on; a non-null block has `layout.size()` bytes.
        unsafe {
            let p = System.alloc(layout);
            if !p.is_null() {
                std::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeroed blocks below, within and above the written range are all zeros, even where the
    /// memory was used before.
    #[test]
    fn zeroed_blocks_are_zero() {
        for size in [16, FROM - 1, FROM, 1 << 20, UP_TO, UP_TO + 1] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero layout; the block is written and freed with it.
            unsafe {
                let dirty = ZeroingAllocator.alloc(layout);
                assert!(!dirty.is_null());
                std::ptr::write_bytes(dirty, 0xAB, size);
                ZeroingAllocator.dealloc(dirty, layout);
                let p = ZeroingAllocator.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "size {size}");
                ZeroingAllocator.dealloc(p, layout);
            }
        }
    }
}
