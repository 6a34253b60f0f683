//! Region failover against moto: one moto serves both Regions (it takes the Region from the
//! request's SigV4 credential scope), and the fault proxy fails or hangs one Region by that same
//! scope. The secrets are "replicated" by creating them in both Regions with the same version ids
//! (`ClientRequestToken`), as Secrets Manager's replication keeps them.

mod support;

use std::time::{Duration, Instant};

use aws_types::region::Region;
use aws_types::SdkConfig;
use lambda_secrets::{Error, ItemError, OnDemand, Secrets, SecretsManagerSource, SsmSource};
use support::{moto, put_param, sdk_config, unique_prefix, FaultProxy};

const PRIMARY: &str = "us-east-1";
const REPLICA: &str = "us-west-2";
const V1: &str = "11111111-1111-1111-1111-111111111111";
const V2: &str = "22222222-2222-2222-2222-222222222222";

async fn in_region(endpoint: &str, region: &'static str) -> SdkConfig {
    sdk_config(endpoint)
        .await
        .into_builder()
        .region(Region::from_static(region))
        .build()
}

/// A secret named `name` with `value` as version `version`, in each of `regions`.
async fn put_secret(name: &str, value: &str, version: &str, regions: &[&'static str]) {
    for region in regions {
        let sm = aws_sdk_secretsmanager::Client::new(&in_region(&moto().endpoint, region).await);
        let created = sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .client_request_token(version)
            .send()
            .await;
        if created.is_err() {
            sm.put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .client_request_token(version)
                .send()
                .await
                .unwrap();
        }
    }
}

fn secret_name(tag: &str) -> String {
    format!("{}/db", unique_prefix(tag).trim_start_matches('/'))
}

/// The Secrets Manager source of the proxy's primary Region, failing over to the replica's.
async fn failing_over(proxy: &FaultProxy) -> SecretsManagerSource {
    SecretsManagerSource::new(&sdk_config(&proxy.endpoint()).await)
        .failover_region(REPLICA)
        .unwrap()
}

fn calls_in(proxy: &FaultProxy, region: &str) -> u64 {
    proxy
        .calls_all()
        .keys()
        .map(|op| proxy.calls_in(region, op))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_500s_loads_from_the_replica_counted_per_region() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = secret_name("fo-500");
    put_secret(&name, "pw", V1, &[PRIMARY, REPLICA]).await;
    proxy.fail_region(PRIMARY, Some(500));
    let secrets = Secrets::builder()
        .add(failing_over(&proxy).await.secret("db", &name))
        .load()
        .await
        .unwrap();
    let snapshot = secrets.snapshot();
    assert_eq!(snapshot.expose_str("db").unwrap(), "pw");
    assert_eq!(snapshot.info("db").unwrap().region.as_deref(), Some(REPLICA));
    let (east, west) = (calls_in(&proxy, PRIMARY), calls_in(&proxy, REPLICA));
    assert!(east >= 1 && west >= 1, "{east} / {west}");
    // The library's own count agrees with the emulator's: exactly for the replica; for the
    // primary, the attempt under way when the replica's answer won is abandoned, and it may not
    // have reached the emulator yet (an attempt is counted when it starts).
    let stats = secrets.stats();
    let counted: u64 = stats.failover_calls[REPLICA].values().sum();
    assert_eq!(counted, west, "{stats:?}");
    let all = stats.calls.values().sum::<u64>();
    assert!(
        all == east + west || all == east + west + 1,
        "{east} + {west} seen; {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssm_primary_failing_loads_the_parameters_kept_in_the_other_region() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let prefix = unique_prefix("fo-ssm");
    for region in [PRIMARY, REPLICA] {
        let ssm = aws_sdk_ssm::Client::new(&in_region(&moto().endpoint, region).await);
        put_param(
            &ssm,
            &format!("{prefix}/key"),
            &format!("key-{region}"),
            "SecureString",
        )
        .await;
        put_param(&ssm, &format!("{prefix}/cfg/a"), "1", "String").await;
    }
    proxy.fail_region(PRIMARY, Some(503));
    let ssm = SsmSource::new(&sdk_config(&proxy.endpoint()).await)
        .failover_region(REPLICA)
        .unwrap();
    let secrets = Secrets::builder()
        .add(ssm.parameter("key", format!("{prefix}/key")))
        .add(ssm.path_with_prefix("cfg/", format!("{prefix}/cfg")))
        .load()
        .await
        .unwrap();
    let snapshot = secrets.snapshot();
    assert_eq!(snapshot.expose_str("key").unwrap(), format!("key-{REPLICA}"));
    assert_eq!(snapshot.info("cfg/a").unwrap().region.as_deref(), Some(REPLICA));
    assert!(proxy.calls_in(REPLICA, "GetParameters") >= 1);
    assert!(proxy.calls_in(REPLICA, "GetParametersByPath") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_primary_costs_the_cold_load_the_hedge_delay_not_its_budget() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = secret_name("fo-hang");
    put_secret(&name, "pw", V1, &[PRIMARY, REPLICA]).await;
    proxy.fail_region(PRIMARY, None);
    let start = Instant::now();
    let secrets = Secrets::builder()
        .max_wait(Duration::from_secs(30))
        .add(failing_over(&proxy).await.secret("db", &name))
        .load()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(
        secrets.snapshot().info("db").unwrap().region.as_deref(),
        Some(REPLICA)
    );
    // Hedged after 1 s (a third of the 3 s attempt timeout). Without hedging the primary would
    // have had half the 30 s budget; the bound is generous for a busy machine and still tells
    // the two apart. (The exact figure is the unit test's, in virtual time.)
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_not_found_in_the_primary_is_reported_not_resurrected_from_the_replica() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = secret_name("fo-gone");
    // Deleted in the primary (never there), still in the lagging replica.
    put_secret(&name, "old", V1, &[REPLICA]).await;
    let Err(err) = Secrets::builder()
        .add(failing_over(&proxy).await.secret("db", &name))
        .load()
        .await
    else {
        panic!("a value missing in the primary was served");
    };
    let Error::Load { failures, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(failures[0].error, ItemError::NotFound, "{err}");
    assert_eq!(calls_in(&proxy, REPLICA), 0, "the replica was not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_fails_over_never_backwards_and_fails_back_when_the_primary_answers() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = secret_name("fo-rotate");
    put_secret(&name, "v1", V1, &[PRIMARY, REPLICA]).await;
    // Rotated in the primary; the replica has not caught up. (moto dates versions to the second.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_secret(&name, "v2", V2, &[PRIMARY]).await;
    let secrets = Secrets::builder()
        .refresh_now_interval(Duration::ZERO)
        .add(failing_over(&proxy).await.secret("db", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "v2");

    // The primary fails: the refresh reads the replica, whose version is older: v2 stays.
    proxy.fail_region(PRIMARY, Some(503));
    let snapshot = secrets.refresh_now("db").await.unwrap();
    assert_eq!(snapshot.expose_str("db").unwrap(), "v2", "went backwards");
    assert!(calls_in(&proxy, REPLICA) >= 1);

    // The replica catches up (v2 reaches it) and a later rotation reaches both: v3 is taken.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_secret(&name, "v2", V2, &[REPLICA]).await;
    put_secret(
        &name,
        "v3",
        "33333333-3333-3333-3333-333333333333",
        &[PRIMARY, REPLICA],
    )
    .await;
    let snapshot = secrets.refresh_now("db").await.unwrap();
    assert_eq!(snapshot.expose_str("db").unwrap(), "v3");
    assert_eq!(snapshot.info("db").unwrap().region.as_deref(), Some(REPLICA));

    // The primary recovers: once the backoff is over (1 s after the first failure, 2 s after the
    // second), the next refresh returns to it.
    proxy.clear_region(PRIMARY);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    proxy.reset_counts();
    let snapshot = secrets.refresh_now("db").await.unwrap();
    assert_eq!(snapshot.expose_str("db").unwrap(), "v3");
    assert_eq!(calls_in(&proxy, REPLICA), 0, "{:?}", proxy.calls_all());
    assert!(calls_in(&proxy, PRIMARY) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapstart_restore_during_a_primary_outage_loads_from_the_replica() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = secret_name("fo-restore");
    put_secret(&name, "pw", V1, &[PRIMARY, REPLICA]).await;
    let secrets = Secrets::builder()
        .add(failing_over(&proxy).await.secret("db", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(
        secrets.snapshot().info("db").unwrap().region.as_deref(),
        Some(PRIMARY)
    );
    let snapstart = secrets.snapstart();
    snapstart.before_snapshot().await.unwrap();
    proxy.fail_region(PRIMARY, None);
    proxy.kill_open_connections();
    snapstart.after_restore().await.unwrap();
    let snapshot = secrets.snapshot();
    assert_eq!(snapshot.expose_str("db").unwrap(), "pw");
    assert_eq!(snapshot.info("db").unwrap().region.as_deref(), Some(REPLICA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_lookups_during_an_outage_are_served_by_the_replica() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let prefix = secret_name("fo-ondemand");
    for tenant in ["t1", "t2"] {
        put_secret(&format!("{prefix}/{tenant}"), tenant, V1, &[PRIMARY, REPLICA]).await;
    }
    proxy.fail_region(PRIMARY, Some(500));
    let sm = failing_over(&proxy).await;
    let tenants = OnDemand::builder()
        .rate_limits(lambda_secrets::RateLimits::new())
        .build(move |tenant| sm.secret(tenant, format!("{prefix}/{tenant}")))
        .unwrap();
    for tenant in ["t1", "t2"] {
        let (value, info) = tenants.get_with_info(tenant).await.unwrap();
        assert_eq!(value.expose_str().unwrap(), tenant);
        assert_eq!(info.region.as_deref(), Some(REPLICA));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_miss_while_the_primary_hangs_is_hedged() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let prefix = secret_name("fo-od-hang");
    put_secret(&format!("{prefix}/t1"), "t1", V1, &[PRIMARY, REPLICA]).await;
    proxy.fail_region(PRIMARY, None);
    let sm = failing_over(&proxy).await;
    let tenants = OnDemand::builder()
        .rate_limits(lambda_secrets::RateLimits::new())
        .fetch_timeout(Duration::from_secs(30))
        .build(move |tenant| sm.secret(tenant, format!("{prefix}/{tenant}")))
        .unwrap();
    let start = Instant::now();
    let (value, info) = tenants.get_with_info("t1").await.unwrap();
    let took = start.elapsed();
    assert_eq!(value.expose_str().unwrap(), "t1");
    assert_eq!(info.region.as_deref(), Some(REPLICA));
    // Hedged after 1 s; without it the primary would have had half the 30 s budget.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssm_refresh_never_takes_a_parameter_the_replica_changed_before_the_one_held() {
    support::init_tracing();
    let proxy = FaultProxy::start(&moto().endpoint).await;
    let name = format!("{}/flag", unique_prefix("fo-ssm-lag"));
    let client = |region| async move { aws_sdk_ssm::Client::new(&in_region(&moto().endpoint, region).await) };
    let (primary, replica) = (client(PRIMARY).await, client(REPLICA).await);
    put_param(&replica, &name, "old", "String").await;
    // Changed in the primary later (moto dates to the millisecond; a margin for both clocks).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_param(&primary, &name, "new", "String").await;
    let ssm = SsmSource::new(&sdk_config(&proxy.endpoint()).await)
        .failover_region(REPLICA)
        .unwrap();
    let secrets = Secrets::builder()
        .refresh_now_interval(Duration::ZERO)
        .add(ssm.parameter("flag", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("flag").unwrap(), "new");

    proxy.fail_region(PRIMARY, Some(503));
    let snapshot = secrets.refresh_now("flag").await.unwrap();
    assert!(proxy.calls_in(REPLICA, "GetParameters") >= 1);
    assert_eq!(snapshot.expose_str("flag").unwrap(), "new", "went backwards");
    assert_eq!(snapshot.info("flag").unwrap().region.as_deref(), Some(PRIMARY));

    // The replica's tooling copies a later change: taken from there.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_param(&replica, &name, "newer", "String").await;
    let snapshot = secrets.refresh_now("flag").await.unwrap();
    assert_eq!(snapshot.expose_str("flag").unwrap(), "newer");
    assert_eq!(snapshot.info("flag").unwrap().region.as_deref(), Some(REPLICA));
}

#[tokio::test]
async fn a_bad_failover_region_is_refused_naming_it() {
    let config = sdk_config("http://127.0.0.1:9").await;
    for (region, says) in [
        ("us-west", "invalid failover Region `us-west`"),
        ("US-WEST-2", "like us-west-2"),
        (PRIMARY, "the source's own Region"),
    ] {
        let err = SecretsManagerSource::new(&config)
            .failover_region(region)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{region}: {err}");
        let err = SsmSource::new(&config)
            .failover_region(region)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{region}: {err}");
    }
}
