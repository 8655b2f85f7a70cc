//! Where the alert chain's keyed state lives: the worker of a tenant's incidents (correlate)
//! and of a storm group (suppress).
//!
//! correlate needs a tenant's whole link graph on one worker; suppress needs one storm group
//! (tenant and `group_by` values) on one worker. Hashed independently, a tenant's storm group
//! lands on its tenant's correlate worker by chance (half the time with 2 workers), and then
//! a storm onset — for a hundred milliseconds every arriving record the first notice of a new
//! alert of that one storm — needs suppress's and correlate's work from the same core. At
//! 100,000 records/s that core fell 30–45 ms behind (BENCHMARKS, issue 10, fifth session)
//! while the other was half idle. So suppress puts a group on any worker *but* its tenant's
//! correlate worker: the two stages of one storm always run side by side on two cores, and
//! a single-tenant deployment keeps correlate's worker free of suppress work.
//!
//! Both functions return a worker index below `peers`, which timely's exchange maps to that
//! worker whether `peers` is a power of two (it masks) or not (it takes the remainder).
//! Checkpointed state is per worker, so changing either mapping changes the checkpoint format.

/// The worker of a tenant's correlate state: its xxh3 hash modulo the workers.
pub fn tenant_worker(tenant: &str, peers: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64(tenant.as_bytes()) % peers.max(1) as u64
}

/// The worker of a storm group with hash `group_hash` in `tenant`: spread by the hash over
/// every worker except [`tenant_worker`] of the tenant (with one worker, that one).
pub fn group_worker(group_hash: u64, tenant: &str, peers: usize) -> u64 {
    let peers = peers.max(1) as u64;
    if peers == 1 {
        return 0;
    }
    let avoid = tenant_worker(tenant, peers as usize);
    let w = group_hash % (peers - 1);
    if w >= avoid { w + 1 } else { w }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_never_share_their_tenants_correlate_worker_and_spread_over_the_rest() {
        for peers in 1..=7usize {
            for t in 0..200 {
                let tenant = format!("tenant-{t}");
                let c = tenant_worker(&tenant, peers);
                assert!(c < peers as u64);
                let mut seen = vec![0usize; peers];
                for g in 0..2_000u64 {
                    let h = xxhash_rust::xxh3::xxh3_64(&g.to_le_bytes());
                    let w = group_worker(h, &tenant, peers);
                    assert!(w < peers as u64, "worker {w} of {peers}");
                    assert!(peers == 1 || w != c, "group on its tenant's correlate worker {c} of {peers}");
                    seen[w as usize] += 1;
                }
                // Every other worker takes a fair share (2,000 groups over peers − 1 workers).
                for (w, n) in seen.iter().enumerate() {
                    if peers > 1 && w as u64 != c {
                        let fair = 2_000 / (peers - 1);
                        assert!(*n > fair * 3 / 4 && *n < fair * 5 / 4, "worker {w} of {peers}: {n} groups, fair {fair}");
                    }
                }
            }
        }
    }

    #[test]
    fn tenant_worker_is_where_timelys_exchange_put_the_plain_hash_at_a_power_of_two() {
        // At 1, 2, 4 and 8 workers correlate's tenants stay where the plain hash (masked by
        // timely) put them before this module.
        for peers in [1usize, 2, 4, 8] {
            for t in 0..100 {
                let tenant = format!("t{t}");
                let h = xxhash_rust::xxh3::xxh3_64(tenant.as_bytes());
                assert_eq!(tenant_worker(&tenant, peers), h & (peers as u64 - 1));
            }
        }
    }
}
