//! What a tracing backend sees of the AWS calls, against moto through the fault proxy: each
//! call's `aws.call` span carries the request id AWS answered with (`x-amzn-RequestId`), on a
//! success and on a failure, and never a name or a value.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use lambda_secrets::Secrets;
use support::{moto, put_param, ssm_client, unique_prefix, FaultProxy};

/// A span's id and fields (as text).
type Seen = (u64, BTreeMap<String, String>);

/// The fields of every `aws.call` span, in order of creation.
#[derive(Clone, Default)]
struct CallSpans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for CallSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "aws.call" {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push((id.into_u64(), fields));
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

#[tokio::test]
async fn each_aws_call_span_carries_the_request_id_aws_answered_with() {
    let moto = moto();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let name = format!("{}/db-password", unique_prefix("spans"));
    put_param(
        &ssm_client(&moto.endpoint).await,
        &name,
        "hunter2",
        "SecureString",
    )
    .await;
    let ssm = lambda_secrets::SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);

    let spans = CallSpans::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    tracing::callsite::rebuild_interest_cache();

    let secrets = Secrets::builder()
        .add(ssm.parameter("db_password", &name))
        .load()
        .await
        .unwrap();
    assert_eq!(secrets.snapshot().expose_str("db_password").unwrap(), "hunter2");
    // Denied: the answer's request id is what a support case with AWS needs.
    proxy.deny("GetParameters", &name);
    Secrets::builder()
        .add(ssm.parameter("db_password", &name))
        .load()
        .await
        .unwrap_err();

    let seen = spans.0.lock().unwrap().clone();
    let calls: Vec<&BTreeMap<String, String>> = seen
        .iter()
        .map(|(_, f)| f)
        .filter(|f| f.get("rpc.method").map(String::as_str) == Some("GetParameters"))
        .collect();
    let ids: Vec<&str> = calls
        .iter()
        .map(|f| f.get("aws.request_id").map_or("", String::as_str))
        .collect();
    let answered = proxy.request_ids("GetParameters");
    assert_eq!(answered.len(), 2, "{:?}", proxy.calls_all());
    assert_eq!(ids, answered, "{calls:?}");
    assert_eq!(calls[0]["otel.status_code"], "OK", "{calls:?}");
    assert_eq!(calls[1]["otel.status_code"], "ERROR", "{calls:?}");
    assert_eq!(calls[1]["error.type"], "denied", "{calls:?}");
    for field in seen.iter().flat_map(|(_, f)| f.values()) {
        assert!(
            !field.contains("hunter2") && !field.contains("db-password"),
            "{field}"
        );
    }
}
