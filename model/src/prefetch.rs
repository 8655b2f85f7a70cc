//! A cache prefetch hint: start loading the line that holds an address without waiting for it.
//!
//! The alert chain's hot loops (the decoder's shape table, dedup's look-ahead, the label sets
//! the operators after dedup and the `alerts` writer read) know a few records ahead which
//! allocations they will touch. A plain load of such an address stalls the worker once the CPU's reorder
//! window fills behind the miss; a prefetch retires at once and the load proceeds in the
//! background, so several records' misses overlap with the work at hand.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_is_allowed() {
        let v = vec![7u64; 64];
        prefetch(v.as_ptr());
        prefetch(std::ptr::null::<u64>());
        prefetch(usize::MAX as *const u8);
        assert_eq!(v[63], 7);
    }
}
