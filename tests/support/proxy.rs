//! `FaultProxy`: an HTTP/1.1 reverse proxy in front of moto that counts
//! requests per AWS operation and injects faults.
//!
//! Every request is handled in this order (the first matching knob wins):
//!
//! 1. counted (`calls`, `request_times`);
//! 2. `kill_open_connections`: a request on a connection opened before it is never answered
//!    (counted in `unanswered`);
//! 3. `drop_connections_next`: the connection is closed without an answer;
//! 4. `throttle_tps`: over quota -> 400 `ThrottlingException`;
//! 5. `fail_region` (the Region the request is signed for, from its SigV4 credential scope),
//!    then `fail_all`, then `fail_next`: injected error status; `hang_region`: never answered;
//!    then `stale_signature_next`: 400 `InvalidSignatureException` "Signature expired";
//! 6. `deny`: 400 `AccessDeniedException`;
//! 7. forwarded to the upstream (`forwarded`).
//!
//! `close_open_connections` closes every connection open now once it is idle (as a server's
//! idle timeout does while the client is frozen): the client's next request on it finds it
//! closed.
//!
//! `set_latency` delays every answer (injected or forwarded) by that much;
//! the fate of a request is decided when it arrives, before the delay.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const AWS_JSON: &str = "application/x-amz-json-1.1";
const WINDOW: Duration = Duration::from_secs(1);
/// Bodies kept for [`FaultProxy::requests`]; later requests are counted but not kept.
const MAX_RECORDED_REQUESTS: usize = 10_000;

/// Headers that belong to one hop and are never copied across the proxy.
/// `content-length` is recomputed from the buffered body and `host` is set
/// to the upstream's authority.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// A fault-injecting reverse proxy; see the module docs for semantics.
/// Stops when dropped (or when the runtime it was started on shuts down).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    /// `host:port` of the upstream.
    upstream: String,
    next_request_id: AtomicU64,
    /// Connections accepted so far (each is numbered in order).
    connections: AtomicU64,
    /// Connections numbered below this are closed once idle (`close_open_connections`).
    close_below: tokio::sync::watch::Sender<u64>,
    /// Connections closed that way.
    closed: AtomicU64,
    state: Mutex<State>,
    /// What moto lacks of AppConfig (`appconfig.rs`).
    appconfig: super::appconfig::AppConfigEmulator,
}

#[derive(Default)]
struct State {
    // counters
    calls: BTreeMap<String, u64>,
    forwarded: BTreeMap<String, u64>,
    throttled: u64,
    dropped: u64,
    unanswered: u64,
    arrivals: Vec<(Instant, String)>,
    /// Operation and body of every request, in arrival order.
    requests: Vec<(String, Bytes)>,
    /// Calls per (Region the request was signed for, operation).
    calls_in: BTreeMap<(String, String), u64>,
    /// Per Region: `Some(status)` fails every request signed for it; `None` hangs them.
    region_faults: BTreeMap<String, Option<u16>>,
    /// Operations whose forwarded answers are kept, and those answers' bodies.
    record_responses: Vec<String>,
    responses: Vec<(String, Bytes)>,
    /// Operation and request id (`x-amzn-RequestId`) of every answer, ours or the upstream's.
    request_ids: Vec<(String, String)>,
    // knobs
    latency: Duration,
    fail_next: usize,
    fail_next_status: u16,
    /// The next requests refused as signed too long ago (`InvalidSignatureException`,
    /// "Signature expired"), as AWS answers a request signed before a freeze and sent after.
    stale_next: usize,
    fail_all: Option<u16>,
    /// While set, every request gets this status with an HTML body (a proxy's or WAF's page).
    html_all: Option<u16>,
    throttle_tps: Option<u32>,
    /// Arrival times of requests admitted by the throttle, last second only.
    admitted: VecDeque<Instant>,
    denies: Vec<(String, String)>,
    drop_next: usize,
    /// Connections numbered below this are dead: requests on them are never answered.
    dead_below: u64,
}

/// What happens to one request.
enum Fate {
    Unanswered,
    Drop,
    Throttle,
    Fail(u16),
    StaleSignature,
    Html(u16),
    Deny(String),
    Forward,
}

/// The service error that makes hyper close the connection without answering.
#[derive(Debug)]
struct DroppedByProxy;

impl fmt::Display for DroppedByProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by FaultProxy")
    }
}

impl std::error::Error for DroppedByProxy {}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream`
    /// (e.g. `http://127.0.0.1:5000`), on the current tokio runtime.
    pub async fn start(upstream: &str) -> FaultProxy {
        let uri: Uri = upstream
            .parse()
            .unwrap_or_else(|e| panic!("FaultProxy: bad upstream {upstream:?}: {e}"));
        assert!(
            uri.scheme_str().is_none_or(|s| s == "http"),
            "FaultProxy: upstream must be plain http: {upstream:?}"
        );
        let authority = uri
            .authority()
            .unwrap_or_else(|| panic!("FaultProxy: upstream has no host:port: {upstream:?}"));
        let upstream = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FaultProxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FaultProxy: local_addr");
        let shared = Arc::new(Shared {
            upstream,
            next_request_id: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            close_below: tokio::sync::watch::Sender::new(0),
            closed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            appconfig: Default::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT` — use as the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AppConfig the proxy emulates (environments, deployments, the data plane).
    pub fn appconfig(&self) -> &super::appconfig::AppConfigEmulator {
        &self.shared.appconfig
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // ----- counters -------------------------------------------------------

    /// Requests for `op` (e.g. `"GetParameters"`) that reached the proxy,
    /// including those it dropped, throttled or failed.
    pub fn calls(&self, op: &str) -> u64 {
        self.state().calls.get(op).copied().unwrap_or(0)
    }

    /// [`calls`](Self::calls) for every operation seen.
    pub fn calls_all(&self) -> BTreeMap<String, u64> {
        self.state().calls.clone()
    }

    /// Requests for `op` signed for `region` (SigV4's credential scope) that reached the proxy.
    pub fn calls_in(&self, region: &str, op: &str) -> u64 {
        self.state()
            .calls_in
            .get(&(region.to_owned(), op.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests for `op` that were passed on to the upstream.
    pub fn forwarded(&self, op: &str) -> u64 {
        self.state().forwarded.get(op).copied().unwrap_or(0)
    }

    /// [`forwarded`](Self::forwarded) for every operation.
    pub fn forwarded_all(&self) -> BTreeMap<String, u64> {
        self.state().forwarded.clone()
    }

    /// Requests answered with our `ThrottlingException`.
    pub fn throttled(&self) -> u64 {
        self.state().throttled
    }

    /// Connections closed by `drop_connections_next`.
    pub fn dropped(&self) -> u64 {
        self.state().dropped
    }

    /// Requests left unanswered on connections killed by `kill_open_connections`.
    pub fn unanswered(&self) -> u64 {
        self.state().unanswered
    }

    /// Arrival time and operation of every request, in arrival order.
    pub fn request_times(&self) -> Vec<(Instant, String)> {
        self.state().arrivals.clone()
    }

    /// Operation and JSON body of every request, in arrival order (bodies that are not JSON are
    /// `null`; at most the first 10,000 since the last `reset_counts`).
    pub fn requests(&self) -> Vec<(String, serde_json::Value)> {
        self.state()
            .requests
            .iter()
            .map(|(op, body)| (op.clone(), serde_json::from_slice(body).unwrap_or_default()))
            .collect()
    }

    /// The bodies of the upstream's answers to `op`, in order, since
    /// [`record_responses`](Self::record_responses) asked for them.
    pub fn responses(&self, op: &str) -> Vec<Bytes> {
        self.state()
            .responses
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The text of the first `<tag>…</tag>` of each kept answer to `op` that has one (an XML
    /// protocol's: STS).
    pub fn xml_fields(&self, op: &str, tag: &str) -> Vec<String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        self.responses(op)
            .iter()
            .filter_map(|body| {
                let text = String::from_utf8_lossy(body);
                let start = text.find(&open)? + open.len();
                let end = start + text[start..].find(&close)?;
                Some(text[start..end].to_owned())
            })
            .collect()
    }

    /// The largest number of arrivals within any sliding 1-second window.
    pub fn peak_in_any_1s_window(&self) -> usize {
        let mut times: Vec<Instant> = self.state().arrivals.iter().map(|(t, _)| *t).collect();
        times.sort();
        let mut peak = 0;
        let mut end = 0;
        for (start, &t0) in times.iter().enumerate() {
            end = end.max(start);
            while end < times.len() && times[end].duration_since(t0) < WINDOW {
                end += 1;
            }
            peak = peak.max(end - start);
        }
        peak
    }

    /// The request ids (`x-amzn-RequestId`) of the answers to `op`, in order.
    pub fn request_ids(&self, op: &str) -> Vec<String> {
        self.state()
            .request_ids
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Zeroes all counters and forgets arrival times. Fault knobs are kept.
    pub fn reset_counts(&self) {
        let mut st = self.state();
        st.calls.clear();
        st.forwarded.clear();
        st.throttled = 0;
        st.dropped = 0;
        st.unanswered = 0;
        st.arrivals.clear();
        st.requests.clear();
        st.responses.clear();
        st.request_ids.clear();
        st.calls_in.clear();
    }

    // ----- knobs ----------------------------------------------------------

    /// Every request signed for `region` gets `status` (an AWS JSON error), or with `None` no
    /// answer at all (a Region that hangs); [`clear_region`](Self::clear_region) lifts it.
    pub fn fail_region(&self, region: &str, status: Option<u16>) {
        self.state().region_faults.insert(region.to_owned(), status);
    }

    pub fn clear_region(&self, region: &str) {
        self.state().region_faults.remove(region);
    }

    /// Keeps the upstream's answers to `op` (e.g. `"/"` for STS), for [`responses`](Self::responses).
    pub fn record_responses(&self, op: &str) {
        self.state().record_responses.push(op.to_owned());
    }

    /// Delay before every answer (forwarded or injected).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// The next `n` requests get `status` with an AWS JSON error body
    /// (`InternalServerError` for 500, `ServiceUnavailable` for 503).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut st = self.state();
        st.fail_next = n;
        st.fail_next_status = status;
    }

    /// While `Some(status)`, every request fails with `status`.
    pub fn fail_all(&self, status: Option<u16>) {
        self.state().fail_all = status;
    }

    /// While `Some(status)`, every request gets `status` with an HTML page for a body, as a
    /// corporate proxy or a WAF in front of the endpoint answers: no AWS error JSON.
    pub fn html_all(&self, status: Option<u16>) {
        self.state().html_all = status;
    }

    /// An account-wide quota: a request that would make more than `tps`
    /// admitted requests in the trailing second gets SSM's 400
    /// `ThrottlingException`. `None` lifts the quota. Restarts the window.
    pub fn throttle_tps(&self, tps: Option<u32>) {
        let mut st = self.state();
        st.throttle_tps = tps;
        st.admitted.clear();
    }

    /// Requests for `op` whose body contains `needle` get a 400
    /// `AccessDeniedException` naming `needle` as the resource.
    pub fn deny(&self, op: &str, needle: &str) {
        self.state().denies.push((op.to_string(), needle.to_string()));
    }

    pub fn clear_denies(&self) {
        self.state().denies.clear();
    }

    /// The next `n` requests are read and then their connection is closed
    /// without any answer (like a call cut by a Lambda freeze).
    pub fn drop_connections_next(&self, n: usize) {
        self.state().drop_next = n;
    }

    /// The next `n` requests are refused with 400 `InvalidSignatureException` "Signature
    /// expired", AWS's answer to a request signed before a Lambda freeze and sent after it.
    pub fn stale_signature_next(&self, n: usize) {
        self.state().stale_next = n;
    }

    /// Every connection open now is closed once idle, as a server closes keep-alive connections
    /// idle past its timeout (while the client is frozen, it cannot see it). New connections
    /// work.
    pub fn close_open_connections(&self) {
        let open = self.shared.connections.load(Ordering::SeqCst);
        self.shared.close_below.send_replace(open);
    }

    /// Connections closed by `close_open_connections`.
    pub fn closed(&self) -> u64 {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Every connection open now is dead from here on, as a client's pooled connections are after a
    /// SnapStart restore (or a long freeze): a request sent on one is never answered and its
    /// connection is never closed, so the client learns only from its own timeout. New connections
    /// work.
    pub fn kill_open_connections(&self) {
        let open = self.shared.connections.load(Ordering::SeqCst);
        self.state().dead_below = open;
    }

    /// Turns every fault knob off (latency 0, no failures, no quota, no
    /// denies, no drops). Counters are kept.
    pub fn reset_faults(&self) {
        let mut st = self.state();
        st.latency = Duration::ZERO;
        st.fail_next = 0;
        st.stale_next = 0;
        st.fail_all = None;
        st.throttle_tps = None;
        st.admitted.clear();
        st.denies.clear();
        st.drop_next = 0;
        st.region_faults.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the proxy for others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_id(&self) -> String {
        let n = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        format!("fa017000-0000-4000-8000-{n:012x}")
    }
}

/// Serves the proxy's connections, numbered in the order they are accepted.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    super::accept_loop(listener, move |stream| {
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let number = shared.connections.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut closing = shared.close_below.subscribe();
            let svc = {
                let shared = shared.clone();
                service_fn(move |req| handle(shared.clone(), number, req))
            };
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            // Errors here are dropped connections or client hang-ups.
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    changed = closing.changed() => {
                        if changed.is_err() {
                            let _ = conn.as_mut().await;
                            return;
                        }
                        if number < *closing.borrow_and_update() {
                            // Closed once the request in flight, if any, is answered.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                            shared.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        }
    })
    .await
}

/// The Region a request is signed for: the third field of its SigV4 credential scope
/// (`Credential=AKID/20261207/us-west-2/ssm/aws4_request`); empty when unsigned.
fn signed_region(req: &Request<Incoming>) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(2))
        .unwrap_or_default()
        .to_owned()
}

/// `(service prefix, operation)` from `X-Amz-Target`, e.g.
/// `AmazonSSM.GetParameters` -> `("AmazonSSM", "GetParameters")`; requests
/// without the header count under their path.
fn identify(req: &Request<Incoming>) -> (String, String) {
    match req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(target) => match target.rsplit_once('.') {
            Some((service, op)) => (service.to_string(), op.to_string()),
            None => (String::new(), target.to_string()),
        },
        None => match super::appconfig::route(req.method(), req.uri().path()) {
            Some((op, _)) => (APPCONFIG.to_owned(), op.to_owned()),
            None => (String::new(), req.uri().path().to_string()),
        },
    }
}

/// The service of the REST AppConfig operations (control and data plane).
const APPCONFIG: &str = "appconfig";

async fn handle(
    shared: Arc<Shared>,
    connection: u64,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DroppedByProxy> {
    let (service, op) = identify(&req);
    let region = signed_region(&req);
    let emulated = super::appconfig::route(req.method(), req.uri().path()).is_some_and(|(_, own)| own);
    let (parts, body) = req.into_parts();
    let uri = parts.uri.clone();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(DroppedByProxy),
    };

    let (fate, latency) = {
        let mut st = shared.lock();
        let now = Instant::now();
        *st.calls.entry(op.clone()).or_default() += 1;
        *st.calls_in.entry((region.clone(), op.clone())).or_default() += 1;
        st.arrivals.push((now, op.clone()));
        if st.requests.len() < MAX_RECORDED_REQUESTS {
            st.requests.push((op.clone(), body.clone()));
        }
        let fate = match (connection < st.dead_below, st.region_faults.get(&region)) {
            (true, _) | (false, Some(None)) => Fate::Unanswered,
            (false, Some(Some(status))) => Fate::Fail(*status),
            (false, None) => decide(&mut st, now, &op, &body),
        };
        match fate {
            Fate::Unanswered => st.unanswered += 1,
            Fate::Drop => st.dropped += 1,
            Fate::Throttle => st.throttled += 1,
            Fate::Forward => *st.forwarded.entry(op.clone()).or_default() += 1,
            Fate::Fail(_) | Fate::StaleSignature | Fate::Html(_) | Fate::Deny(_) => {}
        }
        (fate, st.latency)
    };

    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let request_id = shared.request_id();
    let response = match fate {
        Fate::Unanswered => std::future::pending().await,
        Fate::Drop => return Err(DroppedByProxy),
        // AppConfig is REST JSON: throttling is `429`.
        Fate::Throttle if service == APPCONFIG => aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            serde_json::json!({"Message": "Rate exceeded"}),
            &request_id,
        ),
        Fate::Throttle => aws_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            serde_json::json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
            &request_id,
        ),
        Fate::Fail(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = injected_error_type(status);
            aws_error(
                status,
                kind,
                serde_json::json!({"__type": kind, "message": "injected"}),
                &request_id,
            )
        }
        Fate::StaleSignature => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureException",
            serde_json::json!({
                "__type": "InvalidSignatureException",
                "message": "Signature expired: 20261207T120000Z is now earlier than 20261207T120100Z (20261207T120600Z - 5 min.)"
            }),
            &request_id,
        ),
        Fate::Html(status) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(
                b"<html><body><h1>403 Forbidden</h1>Request blocked.</body></html>",
            )));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            resp
        }
        Fate::Deny(needle) => {
            let message = access_denied_message(&service, &op, &needle);
            aws_error(
                if service == APPCONFIG {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_REQUEST
                },
                "AccessDeniedException",
                serde_json::json!({"__type": "AccessDeniedException", "Message": message}),
                &request_id,
            )
        }
        Fate::Forward if emulated => {
            let mut resp = shared
                .appconfig
                .answer(&op, uri.path(), uri.query().unwrap_or(""), &body);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("x-amzn-requestid"), v);
            }
            resp
        }
        Fate::Forward => match forward(&shared.upstream, parts, body.clone()).await {
            Ok((resp, answer)) => {
                if service == APPCONFIG {
                    shared.appconfig.observe(&op, uri.path(), &resp, &body, &answer);
                }
                let body = answer;
                let mut st = shared.lock();
                if st.record_responses.contains(&op) {
                    st.responses.push((op.clone(), body));
                }
                resp
            }
            Err(e) => aws_error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                serde_json::json!({"__type": "BadGateway", "message": format!("FaultProxy: upstream error: {e}")}),
                &request_id,
            ),
        },
    };
    let answered = response
        .headers()
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok());
    if let Some(id) = answered {
        shared.lock().request_ids.push((op.clone(), id.to_owned()));
    }
    Ok(response)
}

fn decide(st: &mut State, now: Instant, op: &str, body: &[u8]) -> Fate {
    if st.drop_next > 0 {
        st.drop_next -= 1;
        return Fate::Drop;
    }
    if let Some(tps) = st.throttle_tps {
        while st
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            st.admitted.pop_front();
        }
        if st.admitted.len() >= tps as usize {
            return Fate::Throttle;
        }
        st.admitted.push_back(now);
    }
    if let Some(status) = st.html_all {
        return Fate::Html(status);
    }
    if let Some(status) = st.fail_all {
        return Fate::Fail(status);
    }
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return Fate::Fail(st.fail_next_status);
    }
    if st.stale_next > 0 {
        st.stale_next -= 1;
        return Fate::StaleSignature;
    }
    if let Some((_, needle)) = st
        .denies
        .iter()
        .find(|(deny_op, needle)| deny_op == op && contains(body, needle.as_bytes()))
    {
        return Fate::Deny(needle.clone());
    }
    Fate::Forward
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn injected_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        503 => "ServiceUnavailable",
        429 => "ThrottlingException",
        _ => "InternalServerError",
    }
}

fn access_denied_message(service: &str, op: &str, needle: &str) -> String {
    let (prefix, resource) = match service {
        "secretsmanager" => (
            "secretsmanager",
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{needle}"),
        ),
        "TrentService" => ("kms", format!("arn:aws:kms:us-east-1:123456789012:key/{needle}")),
        _ => {
            let slash = if needle.starts_with('/') { "" } else { "/" };
            (
                "ssm",
                format!("arn:aws:ssm:us-east-1:123456789012:parameter{slash}{needle}"),
            )
        }
    };
    format!(
        "User: arn:aws:sts::123456789012:assumed-role/test/fn is not authorized to perform: \
         {prefix}:{op} on resource: {resource} because no identity-based policy allows the \
         {prefix}:{op} action"
    )
}

fn aws_error(
    status: StatusCode,
    error_type: &str,
    body: serde_json::Value,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(AWS_JSON));
    if let Ok(v) = HeaderValue::from_str(error_type) {
        headers.insert(HeaderName::from_static("x-amzn-errortype"), v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), v);
    }
    resp
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Sends one buffered request to the upstream on a fresh connection and
/// returns the fully buffered response.
async fn forward(
    upstream: &str,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<(Response<Full<Bytes>>, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });

    let path = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let mut out = Request::builder()
        .method(parts.method)
        .uri(path)
        .body(Full::new(body.clone()))?;
    let headers = out.headers_mut();
    for (name, value) in parts.headers.iter() {
        if !is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The client's `Host` is kept: it is part of the SigV4 signature, which an upstream that
    // enforces IAM (moto with `enforce_iam`) checks.
    match parts.headers.get(HOST) {
        Some(host) => headers.insert(HOST, host.clone()),
        None => headers.insert(HOST, HeaderValue::from_str(upstream)?),
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));

    let resp = sender.send_request(out).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut back = Response::new(Full::new(body.clone()));
    *back.status_mut() = parts.status;
    let headers = back.headers_mut();
    for (name, value) in parts.headers.iter() {
        if !is_hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    Ok((back, body))
}
