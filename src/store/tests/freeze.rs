//! Lambda freezes: time lost in a freeze given back to a refresh's budget.

use super::*;

/// A Secrets-Manager-like source: a refresh is `DescribeSecret` then, if the version changed,
/// `GetSecretValue` (two sequential calls to plentiful quotas: never spread).
struct TwoStep {
    version: AtomicU64,
}

impl Source for TwoStep {
    type Item = String;

    fn kind(&self) -> &'static str {
        "twostep"
    }
    async fn fetch(&self, items: &[String], _calls: &CallContext) -> Vec<ItemResult> {
        let v = self.version.load(Ordering::SeqCst);
        items
            .iter()
            .map(|i| {
                Ok(vec![
                    Fetched::new(i.as_str(), format!("v{v}")).with_version(v.to_string())
                ])
            })
            .collect()
    }
    async fn refresh(
        &self,
        items: &[String],
        current: &[Option<String>],
        calls: &CallContext,
    ) -> Vec<RefreshResult> {
        {
            let mut out = Vec::new();
            for (item, cur) in items.iter().zip(current) {
                let v = calls
                    .call(Operation::new("DescribeSecret"), || async {
                        tokio::time::sleep(ms(20)).await;
                        Ok::<_, CallError>(self.version.load(Ordering::SeqCst))
                    })
                    .await;
                let v = match v {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(Err(e.into_item_error("describe")));
                        continue;
                    }
                };
                if cur.as_deref() == Some(v.to_string().as_str()) {
                    out.push(Ok(Refreshed::Unchanged { refresh_by: None }));
                    continue;
                }
                let got = calls
                    .call(Operation::new("GetSecretValue"), || async {
                        tokio::time::sleep(ms(20)).await;
                        Ok::<_, CallError>(())
                    })
                    .await;
                out.push(match got {
                    Ok(()) => Ok(Refreshed::Changed(vec![Fetched::new(
                        item.as_str(),
                        format!("v{v}"),
                    )
                    .with_version(v.to_string())])),
                    Err(e) => Err(e.into_item_error("get")),
                });
            }
            out
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_freeze_during_a_call_that_succeeds_leaves_the_next_call_its_budget() {
    let capture = Capture::default();
    let _guard = capture.start();
    let src = Arc::new(TwoStep {
        version: AtomicU64::new(1),
    });
    let source = src.clone();
    // Default settings: TTL 10 s, so the default max staleness is 30 s.
    let secrets = builder()
        .retry_policy(crate::call::RetryPolicy::default())
        .add(Declaration::new("k", source, "secret".to_owned()).ttl(secs(10)))
        .load()
        .await
        .unwrap();
    src.version.store(2, Ordering::SeqCst); // rotated
    tokio::time::sleep(secs(10)).await;
    let _ = secrets.snapshot(); // an invocation: due, the refresh starts in the background
    tokio::time::sleep(ms(5)).await; // DescribeSecret is on the wire; the invocation ends
    tokio::time::advance(secs(60)).await; // Lambda freezes the process for a minute
                                          // The next invocation, AWS healthy all along:
    let snap = secrets.fresh_snapshot().await;
    let got = snap.expose_str("k").map(str::to_owned);
    println!("value after thaw: {got:?}");
    println!("stats: {:?}", secrets.stats());
    let logs = capture.text();
    for line in logs.lines().filter(|l| l.contains("WARN")) {
        println!("{line}");
    }
    assert_eq!(
        got.ok().as_deref(),
        Some("v2"),
        "healthy AWS, yet the value is not served"
    );
}

// ---- A second review of the fixes above. ----

#[tokio::test(start_paused = true)]
async fn a_hung_refresh_in_a_frozen_lambda_ends_at_its_budget() {
    // The watchdog gave back its whole wait after every freeze, so a source hanging outside
    // `CallContext` was never given up: every invocation waited `max_wait`, forever.
    let src = Scripted::new(ms(20));
    let secrets = builder()
        .add(src.declare("k", "/k").ttl(secs(2)))
        .load()
        .await
        .unwrap();
    src.set_mode(Mode::Hang);
    let start = Instant::now();
    let (mut long_waits, mut expired) = (0, 0);
    // One invocation every 10 s (frozen in between), for 5 minutes.
    while start.elapsed() < secs(300) {
        let t = Instant::now();
        let snap = secrets.fresh_snapshot().await;
        long_waits += usize::from(t.elapsed() >= secs(1));
        expired += usize::from(matches!(snap.expose_str("k"), Err(Error::Expired { .. })));
        tokio::time::sleep(ms(50)).await; // the handler runs
        tokio::time::advance(secs(10)).await; // Lambda freezes the process
    }
    let stats = secrets.stats();
    assert!(
        stats.refresh_failures > 0,
        "the hung refresh never ended: {stats:?}"
    );
    assert!(long_waits <= 2, "{long_waits} invocations waited: {stats:?}");
    assert!(expired > 0, "past its staleness, the value is reported expired");
}
