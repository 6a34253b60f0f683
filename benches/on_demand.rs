//! On-demand lookups, side by side in one run:
//! - a cached `OnDemand::get` against a declared value's `Snapshot::get` and a bare
//!   `moka::future::Cache::get` on the same names (memory source, no I/O);
//! - a burst of 100 concurrent lookups of distinct, uncached names against the moto emulator
//!   (started here, behind our fault proxy adding 20 ms a call): `OnDemand` (coalesced into batched
//!   `GetParameters` calls) against one `GetParameter` call per name, all concurrent.
//!
//! `cargo bench --all-features --bench on_demand` (installs moto with pip on first run).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use futures_util::future::join_all;
use lambda_secrets::{MemorySource, OnDemand, RateLimits, SecretValue, Secrets, SsmSource};

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/report.rs"]
mod report;

const NAMES: usize = 100;
const LATENCY: Duration = Duration::from_millis(20);

fn cached(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mem = MemorySource::new();
    let names: Vec<String> = (0..NAMES).map(|i| format!("/tenants/t{i:03}")).collect();
    for name in &names {
        mem.set(name.as_str(), format!("value-of-{name}"));
    }
    let od = {
        let mem = mem.clone();
        OnDemand::builder()
            .ttl(Duration::from_secs(3600))
            .build(move |name| mem.value(name, name))
            .unwrap()
    };
    let moka: moka::future::Cache<String, SecretValue> = moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(3600))
        .build();
    let secrets = rt.block_on(async {
        let mut builder = Secrets::builder().default_ttl(Duration::from_secs(3600));
        for name in &names {
            builder = builder.add(mem.value(name.as_str(), name.as_str()));
        }
        let secrets = builder.load().await.unwrap();
        for name in &names {
            od.get(name).await.unwrap();
            moka.insert(name.clone(), secrets.snapshot().get(name).unwrap().clone())
                .await;
        }
        secrets
    });
    let snapshot = secrets.snapshot();
    let mut group = c.benchmark_group("cached_lookup");
    let mut i = 0usize;
    group.bench_function("on_demand_get", |b| {
        b.to_async(rt).iter(|| {
            i = (i + 1) % NAMES;
            let (od, name) = (&od, &names[i]);
            async move { black_box(od.get(black_box(name)).await.unwrap().len()) }
        })
    });
    group.bench_function("bare_moka_future_get", |b| {
        b.to_async(rt).iter(|| {
            i = (i + 1) % NAMES;
            let (moka, name) = (&moka, &names[i]);
            async move { black_box(moka.get(black_box(name)).await.unwrap().len()) }
        })
    });
    group.bench_function("declared_snapshot_get", |b| {
        b.iter(|| {
            i = (i + 1) % NAMES;
            black_box(snapshot.get(black_box(&names[i])).unwrap().len())
        })
    });
    group.finish();
}

fn burst(c: &mut Criterion, rt: &tokio::runtime::Runtime) -> String {
    let moto = support::moto();
    let (proxy, names, ssm, client) = rt.block_on(async {
        let proxy = support::FaultProxy::start(&moto.endpoint).await;
        let seed = support::ssm_client(&moto.endpoint).await;
        let prefix = support::unique_prefix("odbench");
        let mut names = Vec::new();
        for i in 0..NAMES {
            let name = format!("{prefix}/tenants/t{i:03}/api-key");
            support::put_param(&seed, &name, &format!("key-{i:03}"), "SecureString").await;
            names.push(name);
        }
        let config = support::sdk_config(&proxy.endpoint()).await;
        (
            proxy,
            names,
            SsmSource::new(&config),
            aws_sdk_ssm::Client::new(&config),
        )
    });
    proxy.set_latency(LATENCY);
    // A fresh cache per burst: every lookup misses.
    let on_demand_burst = || {
        let ssm = ssm.clone();
        let od = OnDemand::builder()
            .rate_limits(RateLimits::new())
            .build(move |name| ssm.parameter(name, name))
            .unwrap();
        let names = &names;
        async move { black_box(join_all(names.iter().map(|n| od.get(n))).await.len()) }
    };
    let naive_burst = || {
        let (client, names) = (&client, &names);
        async move {
            let calls = names
                .iter()
                .map(|name| client.get_parameter().name(name).with_decryption(true).send());
            black_box(join_all(calls).await.len())
        }
    };
    proxy.reset_counts();
    rt.block_on(on_demand_burst());
    let ours = proxy.calls_all();
    proxy.reset_counts();
    rt.block_on(naive_burst());
    let naive = proxy.calls_all();

    let mut group = c.benchmark_group("burst_100_distinct_misses");
    group.sample_size(10);
    group.bench_function("on_demand_coalesced", |b| b.to_async(rt).iter(on_demand_burst));
    group.bench_function("get_parameter_per_name", |b| b.to_async(rt).iter(naive_burst));
    group.finish();
    format!("calls per burst: on-demand {ours:?}, one GetParameter per name {naive:?}")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    cached(&mut c, &rt);
    let calls = burst(&mut c, &rt);
    c.final_summary();
    println!("\n== on-demand lookups, side by side (medians of this run) ==");
    report::compare("cached_lookup", "on_demand_get", "declared_snapshot_get");
    report::compare("cached_lookup", "on_demand_get", "bare_moka_future_get");
    println!("\n== burst of {NAMES} distinct misses, emulator + {LATENCY:?} per call ==");
    report::compare(
        "burst_100_distinct_misses",
        "on_demand_coalesced",
        "get_parameter_per_name",
    );
    println!("{calls}");
}
