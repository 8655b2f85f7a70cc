//! Where the alert chain's keyed state lives: the worker of a tenant (correlate's incidents,
//! notify's groups) and of a storm group (suppress).
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
    fn timelys_exchange_delivers_each_key_to_the_worker_named() {
        // The claim the module rests on: a key below the worker count is that worker's index,
        // at a power of two (timely masks) and otherwise (it takes the remainder).
        use std::sync::{Arc, Mutex};
        use timely::dataflow::channels::pact::Exchange;
        use timely::dataflow::operators::{Operator, ToStream};
        for peers in [2usize, 3, 4] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = seen.clone();
            timely::execute(timely::Config::process(peers), move |worker| {
                let me = worker.index();
                let s = s.clone();
                worker.dataflow::<u64, _, _>(|scope| {
                    let keys: Vec<(String, u64)> = if me == 0 {
                        (0..40)
                            .flat_map(|t| (0..25u64).map(move |g| (format!("t{t}"), xxhash_rust::xxh3::xxh3_64(&g.to_le_bytes()))))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    keys.to_stream(scope).sink(
                        Exchange::new(move |(t, h): &(String, u64)| group_worker(*h, t, peers)),
                        "placed",
                        move |(input, _)| {
                            input.for_each(|_, data| {
                                s.lock().unwrap().extend(data.drain(..).map(|(t, h)| (me as u64, t, h)));
                            })
                        },
                    );
                });
            })
            .unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 1000, "{peers} workers");
            for (at, t, h) in seen.iter() {
                assert_eq!(*at, group_worker(*h, t, peers), "{peers} workers: {t}");
                assert_ne!(*at, tenant_worker(t, peers), "{peers} workers: {t} on its correlate worker");
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
