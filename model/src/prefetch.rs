//! A cache prefetch hint: start loading the line that holds an address without waiting for it.
//!
//! The alert chain's hot loops (the decoder's shape table, dedup's look-ahead, the label sets
//! the operators after dedup and the `alerts` writer read) know a few records ahead which
//! allocations they will touch. A plain load of such an address stalls the worker once the CPU's reorder
//! window fills behind the miss; a prefetch retires at once and the load proceeds in the
//! background, so several records' misses overlap with the work at hand. [`prefetch_write`]
//! does the same for a line about to be written (a reference count), taking it over from the
//! core that last wrote it.

/// Hints that the cache line holding `p` will be read soon. Never dereferences `p` in the
/// language's sense: any address is allowed (a dangling or wild one is simply wasted).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is part of SSE, which every x86_64 CPU has (it is in the target's
    // baseline features); the instruction never faults, whatever the address, and changes no
    // memory or register the program can observe.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints that the cache line holding `p` will be written soon (an atomic reference count
/// about to change): `prefetchw` fetches the line for ownership, so the locked instruction
/// that follows finds it owned instead of first asking the other cores to give it up while the
/// worker waits. A read hint ([`prefetch`]) would bring the line shared, and the locked change
/// would still wait for the other copies to go. On a CPU without the instruction it is a read
/// hint. Any address is allowed, as for [`prefetch`].
#[inline(always)]
pub fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_prefetchw() {
            // SAFETY: the CPU says it has `prefetchw` (CPUID 8000_0001h, ECX bit 8); like every
            // prefetch it never faults whatever the address, writes no memory and changes no
            // register or flag the program can observe.
            #[allow(unsafe_code)]
            unsafe {
                core::arch::asm!("prefetchw byte ptr [{0}]", in(reg) p, options(readonly, nostack, preserves_flags));
            }
        } else {
            prefetch(p);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether the CPU has `prefetchw` (every AMD64 CPU; Intel's since Broadwell), asked once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    const UNKNOWN: u8 = 2;
    static HAS: AtomicU8 = AtomicU8::new(UNKNOWN);
    match HAS.load(Ordering::Relaxed) {
        UNKNOWN => {
            // Leaf 8000_0001h exists on every x86_64 CPU (it is where long mode is reported).
            let has = core::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            HAS.store(has as u8, Ordering::Relaxed);
            has
        }
        h => h == 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_is_allowed() {
        let v = vec![7u64; 64];
        prefetch(v.as_ptr());
        prefetch(std::ptr::null::<u64>());
        prefetch(usize::MAX as *const u8);
        prefetch_write(v.as_ptr());
        prefetch_write(std::ptr::null::<u64>());
        prefetch_write(usize::MAX as *const u8);
        assert_eq!(v[63], 7);
    }
}
