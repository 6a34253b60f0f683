//! Region failover, measured: a cold load of 110 values (100 SSM SecureStrings and 10 Secrets
//! Manager secrets, kept in us-east-1 and us-west-2; every call answered 20 ms late) while the
//! primary Region (us-east-1) is healthy, fails every call with a 500, or hangs; each with
//! `failover_region("us-west-2")` on both sources and without it (the baseline), side by side in
//! one run. No AWS account needed: one moto emulator serves both Regions behind our fault proxy,
//! which fails or hangs a Region by the Region in each request's SigV4 credential scope.
//!
//! Reported per row: whether the load succeeded, its wall time, the Region that served the values,
//! and the calls the emulator saw per Region. Each load has its own rate limits
//! (`RateLimits::new()`, a fresh container's) and the default budget (8 s). Timing is reported,
//! never asserted (machines are busy); the example exits non-zero only if a load that should
//! succeed (healthy primary, or any load with failover) fails. Values are never printed.
//!
//! `cargo run --all-features --example failover`

use std::time::{Duration, Instant};

use aws_types::region::Region;
use lambda_secrets::{RateLimits, Secrets, SecretsManagerSource, SsmSource};

#[path = "../tests/support/mod.rs"]
mod support;

const LATENCY: Duration = Duration::from_millis(20);
const PARAMS: usize = 100;
const SECRETS: usize = 10;
const PRIMARY: &str = "us-east-1";
const REPLICA: &str = "us-west-2";

#[derive(Clone, Copy, PartialEq)]
enum Primary {
    Healthy,
    Failing500,
    Hanging,
}

impl Primary {
    fn label(self) -> &'static str {
        match self {
            Primary::Healthy => "healthy",
            Primary::Failing500 => "failing (500s)",
            Primary::Hanging => "hanging",
        }
    }
}

struct Row {
    primary: Primary,
    failover: bool,
    ok: Result<Vec<String>, String>,
    took: Duration,
    east: u64,
    west: u64,
}

async fn seed(prefix: &str) {
    for region in [PRIMARY, REPLICA] {
        let config = support::sdk_config(&support::moto().endpoint)
            .await
            .into_builder()
            .region(Region::from_static(region))
            .build();
        let ssm = aws_sdk_ssm::Client::new(&config);
        for i in 0..PARAMS {
            support::put_param(
                &ssm,
                &format!("{prefix}/p{i:03}"),
                &format!("value-{i}"),
                "SecureString",
            )
            .await;
        }
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        for i in 0..SECRETS {
            sm.create_secret()
                .name(format!("{}/s{i:02}", prefix.trim_start_matches('/')))
                .secret_string(format!("secret-{i}"))
                .client_request_token(format!("{i:08}-1111-1111-1111-111111111111"))
                .send()
                .await
                .expect("seeding a secret");
        }
    }
}

fn calls_in(proxy: &support::FaultProxy, region: &str) -> u64 {
    proxy
        .calls_all()
        .keys()
        .map(|op| proxy.calls_in(region, op))
        .sum()
}

async fn load(proxy: &support::FaultProxy, prefix: &str, primary: Primary, failover: bool) -> Row {
    proxy.reset_counts();
    proxy.clear_region(PRIMARY);
    match primary {
        Primary::Healthy => {}
        Primary::Failing500 => proxy.fail_region(PRIMARY, Some(500)),
        Primary::Hanging => proxy.fail_region(PRIMARY, None),
    }
    let config = support::sdk_config(&proxy.endpoint()).await;
    let (mut ssm, mut sm) = (SsmSource::new(&config), SecretsManagerSource::new(&config));
    if failover {
        ssm = ssm.failover_region(REPLICA).expect("a Region");
        sm = sm.failover_region(REPLICA).expect("a Region");
    }
    let mut builder = Secrets::builder().rate_limits(RateLimits::new());
    for i in 0..PARAMS {
        builder = builder.add(ssm.parameter(format!("p{i:03}"), format!("{prefix}/p{i:03}")));
    }
    for i in 0..SECRETS {
        builder = builder.add(sm.secret(
            format!("s{i:02}"),
            format!("{}/s{i:02}", prefix.trim_start_matches('/')),
        ));
    }
    let start = Instant::now();
    let loaded = builder.load().await;
    let took = start.elapsed();
    let ok = loaded
        .map(|secrets| {
            let snapshot = secrets.snapshot();
            let mut regions: Vec<String> = snapshot
                .keys()
                .iter()
                .map(|k| {
                    snapshot
                        .info(k)
                        .and_then(|i| i.region.clone())
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            regions.sort();
            regions.dedup();
            regions
        })
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_owned());
    proxy.clear_region(PRIMARY);
    Row {
        primary,
        failover,
        ok,
        took,
        east: calls_in(proxy, PRIMARY),
        west: calls_in(proxy, REPLICA),
    }
}

fn main() {
    support::init_tracing();
    println!("starting the moto emulator (first run installs it with pip)...");
    let moto = support::moto();
    let aws = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let proxy = aws.block_on(support::FaultProxy::start(&moto.endpoint));
    let function = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let prefix = support::unique_prefix("failover-example");
    function.block_on(seed(&prefix));
    proxy.set_latency(LATENCY);
    let mut rows = Vec::new();
    for primary in [Primary::Healthy, Primary::Failing500, Primary::Hanging] {
        for failover in [false, true] {
            rows.push(function.block_on(load(&proxy, &prefix, primary, failover)));
        }
    }
    println!(
        "\ncold load of {PARAMS} SSM SecureStrings + {SECRETS} secrets, {} ms per call, primary {PRIMARY}, replica {REPLICA}:\n",
        LATENCY.as_millis()
    );
    println!(
        "| primary | failover | load | wall time | served by | calls {PRIMARY} | calls {REPLICA} |\n|---|---|---|---|---|---|---|"
    );
    let mut failed = false;
    for row in &rows {
        let (outcome, served) = match &row.ok {
            Ok(regions) => ("ok".to_owned(), regions.join(", ")),
            Err(e) => (format!("failed: {e}"), "-".to_owned()),
        };
        println!(
            "| {} | {} | {outcome} | {} ms | {served} | {} | {} |",
            row.primary.label(),
            if row.failover { "us-west-2" } else { "none" },
            row.took.as_millis(),
            row.east,
            row.west
        );
        let should_load = row.failover || row.primary == Primary::Healthy;
        failed |= should_load && row.ok.is_err();
    }
    drop(function);
    drop(aws);
    if failed {
        eprintln!("a load that should have succeeded failed");
        std::process::exit(1);
    }
}
