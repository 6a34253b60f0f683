//! Refreshes where no tokio runtime runs them, or runs them no longer.

use super::*;

#[test]
fn a_refresh_lost_with_its_runtime_does_not_block_the_key() {
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let secrets = rt().block_on(
        Secrets::builder()
            .add(mem.value("k", "/k").ttl(Duration::from_millis(10)))
            .max_staleness(Duration::from_secs(60))
            .failure_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .load(),
    );
    let secrets = secrets.unwrap();
    mem.set("/k", "v2");
    mem.set_latency(Duration::from_secs(3600));
    // A runtime that starts the refresh and is dropped with it in flight.
    let doomed = rt();
    doomed.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = secrets.snapshot();
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    drop(doomed);
    assert_eq!(secrets.stats().refresh_failures, 1);
    mem.set_latency(Duration::ZERO);
    let fresh = rt().block_on(async { eventually(&secrets, |s| s.expose_str("k").unwrap() == "v2").await });
    assert!(fresh, "a new refresh replaced the lost one");
}

#[test]
fn refresh_now_and_refreshes_work_from_a_thread_without_a_runtime() {
    let rt = multi_thread_runtime();
    let (mem, secrets) = load_k_on(&rt, secs(60));
    mem.set("/k", "v2");
    let s = secrets.clone();
    let snap = std::thread::spawn(move || block_on(s.refresh_now("k")))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(snap.expose_str("k").unwrap(), "v2");
    mem.set("/k", "v3");
    std::thread::sleep(ms(20));
    let s = secrets.clone();
    let fresh = std::thread::spawn(move || {
        // Real time on a runtime's threads: a generous bound for a busy machine.
        for _ in 0..2000 {
            if s.snapshot().expose_str("k").unwrap() == "v3" {
                return true;
            }
            std::thread::sleep(ms(5));
        }
        false
    });
    assert!(fresh.join().unwrap(), "refreshed on the runtime load() ran on");
}

#[test]
fn fresh_snapshot_waits_without_panicking_outside_a_runtime() {
    let rt = multi_thread_runtime();
    let (mem, secrets) = load_k_on(&rt, ms(10));
    mem.set_latency(ms(200));
    std::thread::sleep(ms(20));
    let s = secrets.clone();
    let r =
        std::thread::spawn(move || block_on(s.fresh_snapshot()).expose_str("k").unwrap().to_owned()).join();
    println!(
        "fresh_snapshot from a non-tokio thread: {:?}",
        r.as_ref().map_err(|e| e.downcast_ref::<String>().cloned())
    );
    assert!(r.is_ok(), "panicked on the request path");
}

#[test]
fn a_refresh_with_no_runtime_to_run_it_ends_as_lost_and_refresh_now_returns() {
    // load() ran on a current-thread runtime that is kept but no longer driven; invocations
    // read from other threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mem, secrets) = load_k_on(&rt, ms(50));
    mem.set("/k", "v2");
    std::thread::sleep(ms(20));
    let _ = secrets.snapshot(); // spawns onto `rt`, which nobody drives
    std::thread::sleep(ms(200)); // far past the max staleness and the refresh budget
    let before = secrets.stats().misses;
    for _ in 0..100 {
        let _ = secrets.snapshot();
    }
    let snap = secrets.snapshot();
    println!(
        "value {:?}, misses for 100 reads: {}, stats {:?}",
        snap.expose_str("k").map(str::to_owned),
        secrets.stats().misses - before,
        secrets.stats()
    );
    let s = secrets.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(s.refresh_now("k")).is_ok());
    });
    let done = rx.recv_timeout(Duration::from_secs(3));
    println!("refresh_now within 3 s: {done:?}");
    assert!(done.is_ok(), "refresh_now never returns");
    assert!(
        secrets.stats().refresh_failures >= 1,
        "the lost refresh counts as a failure"
    );
}

#[test]
fn a_refresh_whose_task_is_never_run_ends_and_the_next_one_runs() {
    // The refresh is spawned on a runtime that is kept but never driven again (a sync wrapper
    // holding a runtime in a static): its task never runs, so it never ends by itself. The
    // watchdog ends it as lost; a later read, from a runtime that runs, refreshes the value.
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (load_rt, stuck_rt, live_rt) = (current(), current(), current());
    let mem = MemorySource::new();
    mem.set("/k", "v1");
    let secrets = load_rt.block_on(async {
        builder()
            .add(mem.value("k", "/k").ttl(ms(200)))
            .refresh_timeout(ms(100))
            .max_staleness(secs(600))
            .failure_backoff(ms(50), ms(100))
            .load()
            .await
            .unwrap()
    });
    mem.set("/k", "v2");
    stuck_rt.block_on(async {
        tokio::time::sleep(ms(300)).await;
        let _ = secrets.snapshot(); // spawns the refresh here; this runtime never runs again
    });
    let served = live_rt.block_on(async {
        for _ in 0..200 {
            if secrets.snapshot().expose_str("k").unwrap() == "v2" {
                return true;
            }
            tokio::time::sleep(ms(100)).await;
        }
        false
    });
    assert!(served, "the value was never refreshed: {:?}", secrets.stats());
    drop(stuck_rt);
}
