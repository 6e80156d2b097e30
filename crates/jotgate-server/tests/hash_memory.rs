//! A hashing thread's argon2 memory leaves the resident size when it goes idle, every
//! time, not only the first (glibc's dynamic mmap threshold would keep the second block in
//! the thread's heap). Its own test binary: nothing else allocates meanwhile.

#![cfg(target_os = "linux")]

use std::time::Duration;

use jotgate_core::{PasswordHasher, PasswordParams};
use jotgate_server::limits::HashPool;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1 << 20) as f64
}

#[tokio::test]
async fn idle_hashing_threads_give_their_memory_back_every_time() {
    let hasher = PasswordHasher::new(PasswordParams::default(), None).unwrap(); // 19 MiB
    let idle = Duration::from_millis(300);
    let pool = HashPool::with_idle(hasher, 1, 4, idle).unwrap();
    for cycle in 1..=3 {
        pool.run(|h, ws| h.hash_in("correct horse battery", ws).unwrap())
            .await
            .unwrap();
        let held = rss_mib();
        tokio::time::sleep(idle * 4).await;
        let released = rss_mib();
        assert!(
            held - released > 15.0,
            "cycle {cycle}: {held:.1} MiB while held, {released:.1} MiB after idling"
        );
    }
}
