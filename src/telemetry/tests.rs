//! The metrics each cache records, read back through the `metrics` project's own debugging
//! recorder (installed for the test's thread; the tests run on a current-thread runtime).

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::source::MemorySource;
use crate::Secrets;

/// Metric values by name and labels (`name{k=v,...}`): counters summed since the last read,
/// gauges as last set, histograms' sample counts.
fn read(snapshotter: &Snapshotter) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        };
        out.insert(name, value);
    }
    out
}

/// Runs `run` (given the recorder's snapshotter) on a current-thread runtime in paused time, with
/// the debugging recorder as this thread's recorder; returns its output and the snapshotter.
fn recorded<T, F: std::future::Future<Output = T>>(run: impl FnOnce(Snapshotter) -> F) -> (T, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    (runtime.block_on(run(recorder.snapshotter())), snapshotter)
}

/// Every label value recorded: none may be a key, a name or a value.
fn label_values(snapshotter: &Snapshotter) -> Vec<String> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .flat_map(|(key, ..)| {
            key.key()
                .labels()
                .map(|l| l.value().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_declared_cache_counts_hits_per_snapshot_misses_refreshes_and_calls_without_names() {
    let ((), snapshotter) = recorded(|snapshotter| async move {
        let mem = MemorySource::new();
        mem.set("/prod/db-password", "hunter2");
        let secrets = Secrets::builder()
            .add(
                mem.value("db_password", "/prod/db-password")
                    .ttl(Duration::from_secs(60)),
            )
            .ttl_jitter(0.0)
            .load()
            .await
            .unwrap();
        let loaded = read(&snapshotter);
        assert_eq!(
            loaded["aws.calls{cache=declared,source=other,operation=MemoryFetch}"], 1.0,
            "{loaded:?}"
        );
        assert_eq!(
            loaded["cache.oldest_value.age{cache=declared}"], 0.0,
            "set by the load: {loaded:?}"
        );
        for _ in 0..3 {
            secrets.snapshot().expose_str("db_password").unwrap();
        }
        // Two values read from one snapshot are one hit.
        let snapshot = secrets.snapshot();
        snapshot.expose_str("db_password").unwrap();
        snapshot.expose_str("db_password").unwrap();
        let warm = read(&snapshotter);
        assert_eq!(warm["cache.hits{cache=declared}"], 4.0, "{warm:?}");
        assert!(!warm.contains_key("cache.misses{cache=declared}"), "{warm:?}");
        // Past the TTL: a miss, served while the refresh runs; it fails (the source fails).
        mem.set_failing(true);
        tokio::time::advance(Duration::from_secs(61)).await;
        secrets.snapshot().expose_str("db_password").unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        let due = read(&snapshotter);
        assert_eq!(due["cache.misses{cache=declared}"], 1.0, "{due:?}");
        assert_eq!(
            due["cache.refresh.failures{cache=declared,source=memory}"], 1.0,
            "{due:?}"
        );
        assert!(due["cache.oldest_value.age{cache=declared}"] >= 61.0, "{due:?}");
        assert!(
            due["cache.refresh.duration{cache=declared,source=memory}"] >= 1.0,
            "{due:?}"
        );
        assert!(
            due.keys()
                .any(|k| k.starts_with("aws.retries{cache=declared,source=other,operation=MemoryFetch")),
            "{due:?}"
        );
    });
    let labels = label_values(&snapshotter);
    assert!(
        labels.iter().all(|v| !v.contains("db") && !v.contains("hunter2")),
        "{labels:?}"
    );
}

/// The samples of histogram `name` (any labels), drained.
fn samples(snapshotter: &Snapshotter, name: &str) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == name)
        .flat_map(|(_, _, _, value)| match value {
            DebugValue::Histogram(samples) => samples.into_iter().map(|s| s.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The `cache.refresh.duration` samples of one refresh whose 500 ms call is out when Lambda
/// freezes the process for `frozen`.
fn refresh_duration_frozen_for(frozen: Duration) -> Vec<f64> {
    recorded(|snapshotter| async move {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        let secrets = Secrets::builder()
            .add(mem.value("a", "/a").ttl(Duration::from_secs(60)))
            .ttl_jitter(0.0)
            .load()
            .await
            .unwrap();
        mem.set_latency(Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(61)).await;
        secrets.snapshot().expose_str("a").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::advance(frozen).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(secrets.stats().refreshes, 1);
        samples(&snapshotter, crate::telemetry::REFRESH_DURATION)
    })
    .0
}

#[test]
fn a_refresh_s_duration_leaves_out_a_freeze_under_its_call() {
    let took = refresh_duration_frozen_for(Duration::from_secs(60));
    assert_eq!(took.len(), 1, "{took:?}");
    assert!(took[0] < 1.0, "the minute frozen is not the call's: {took:?}");
}

#[test]
fn a_refresh_s_duration_leaves_out_a_freeze_too_short_for_its_call_to_notice() {
    // Review of the metrics: a freeze ending as the fetch answered was left in the sample (the
    // watch's slice was ready with the answer, and only the answer was looked at). Frozen 2.5 s
    // under the call: within its 3 s attempt timeout, so only the watch sees it, at the thaw,
    // when the call's answer is ready too.
    let took = refresh_duration_frozen_for(Duration::from_millis(2_500));
    assert_eq!(took.len(), 1, "{took:?}");
    assert!(took[0] < 1.0, "the 2.5 s frozen are not the call's: {took:?}");
}

#[test]
fn a_failed_load_counts_its_values_by_source_kind() {
    let ((), snapshotter) = recorded(|_| async {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        Secrets::builder()
            .add(mem.value("a", "/a"))
            .add(mem.value("b", "/missing-1"))
            .add(mem.value("c", "/missing-2"))
            .load()
            .await
            .unwrap_err();
    });
    let failed = read(&snapshotter);
    assert_eq!(
        failed["cache.load.failures{cache=declared,source=memory}"], 2.0,
        "{failed:?}"
    );
}

#[cfg(feature = "on-demand")]
#[test]
fn an_on_demand_cache_counts_hits_misses_and_evictions() {
    let (stats, snapshotter) = recorded(|_| async {
        let mem = MemorySource::new();
        for t in ["tenant-a", "tenant-b", "tenant-c"] {
            mem.set(t, "secret");
        }
        let od = crate::OnDemand::builder()
            .max_entries(1)
            .build(move |name| mem.value(name, name))
            .unwrap();
        od.get("tenant-a").await.unwrap();
        od.get("tenant-a").await.unwrap();
        od.get("tenant-b").await.unwrap();
        od.get("tenant-c").await.unwrap();
        od.get("missing").await.unwrap_err();
        od.stats()
    });
    let seen = read(&snapshotter);
    assert_eq!(seen["cache.hits{cache=on-demand}"], 1.0, "{seen:?}");
    assert_eq!(seen["cache.misses{cache=on-demand}"], 4.0, "{seen:?}");
    assert_eq!(
        seen["cache.load.failures{cache=on-demand,source=memory}"], 1.0,
        "{seen:?}"
    );
    assert!(seen["cache.evictions{cache=on-demand}"] >= 2.0, "{seen:?}");
    assert_eq!(seen["cache.evictions{cache=on-demand}"], stats.evictions as f64);
    assert_eq!(
        seen["aws.calls{cache=on-demand,source=other,operation=MemoryFetch}"],
        stats.calls["MemoryFetch"] as f64
    );
}
