//! `RuntimeApi`: the Lambda Runtime API on loopback, for a real function process under test
//! (`AWS_LAMBDA_RUNTIME_API=<address>`), SnapStart's `restore/next` included.
//!
//! What the function sees is what Lambda's API answers: `invocation/next` is held until the test
//! [`invoke`](RuntimeApi::invoke)s, and with `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`,
//! `restore/next` is held until the test [`release_restore`](RuntimeApi::release_restore)s, which
//! is how Lambda keeps a snapshotted environment waiting (for days) before it restores it. The
//! test sees what Lambda would: every request in order ([`requests`](RuntimeApi::requests)), the
//! answers, and the errors posted to `init/error` and `restore/error`.
//!
//! `cargo lambda watch` has no `restore/next`; this server is the stand-in for Lambda's.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";
/// The ARN the function is told it was invoked as.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:snapstart-test";

/// A Lambda Runtime API server; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// How an invocation ended, as the function posted it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `POST invocation/{id}/response`: the body, as JSON.
    Response(serde_json::Value),
    /// `POST invocation/{id}/error`: the body, as JSON.
    Error(serde_json::Value),
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change of `state`; long polls wait on it.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// `METHOD path` of every request, in arrival order.
    requests: Vec<String>,
    pending: VecDeque<(String, Bytes)>,
    answers: HashMap<String, Answer>,
    restore_released: bool,
    init_error: Option<String>,
    restore_error: Option<String>,
    next_id: u64,
}

impl RuntimeApi {
    /// Starts the server on `127.0.0.1:0`, on the current tokio runtime.
    pub async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("RuntimeApi: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("RuntimeApi: local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        RuntimeApi { addr, shared, task }
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `METHOD path` of every request so far, in order (e.g. `GET /2018-06-01/runtime/restore/next`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Waits until the function has sent `GET {PREFIX}/{path}` (`restore/next`: its INIT and its
    /// `before_snapshot` hooks are done, the snapshot would be taken now; `invocation/next`: it
    /// is ready for an invocation), or posted an INIT error (returned as `Err`).
    pub async fn wait_for_get(&self, path: &str, timeout: Duration) -> Result<(), String> {
        let wanted = format!("GET {PREFIX}/{path}");
        self.wait(timeout, &format!("`{wanted}`"), |st| {
            if let Some(e) = &st.init_error {
                return Some(Err(format!("the function posted an INIT error: {e}")));
            }
            st.requests.contains(&wanted).then_some(Ok(()))
        })
        .await?
    }

    /// Answers the held `restore/next`: the environment is restored (now, and every later call).
    pub fn release_restore(&self) {
        self.shared.update(|st| st.restore_released = true);
    }

    /// One invocation with `payload`: queued for `invocation/next`, then waits for the function's
    /// answer.
    pub async fn invoke(&self, payload: serde_json::Value, timeout: Duration) -> Result<Answer, String> {
        let id = self.shared.update(|st| {
            st.next_id += 1;
            let id = format!("5a95a7a7-0000-4000-8000-{:012x}", st.next_id);
            st.pending
                .push_back((id.clone(), Bytes::from(payload.to_string())));
            id
        });
        self.wait(timeout, &format!("the answer to invocation {id}"), |st| {
            if let Some(e) = &st.restore_error {
                return Some(Err(format!("the function posted a restore error: {e}")));
            }
            st.answers.get(&id).cloned().map(Ok)
        })
        .await?
    }

    /// The error the function posted to `init/error`, if it did.
    pub fn init_error(&self) -> Option<String> {
        self.shared.lock().init_error.clone()
    }

    /// The error the function posted to `restore/error`, if it did.
    pub fn restore_error(&self) -> Option<String> {
        self.shared.lock().restore_error.clone()
    }

    /// Waits until `restore/error` has been posted, and returns it.
    pub async fn wait_for_restore_error(&self, timeout: Duration) -> Result<String, String> {
        self.wait(timeout, "a restore error", |st| st.restore_error.clone())
            .await
    }

    /// Waits (at most `timeout`) until `ready` says something of the state.
    async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&State) -> Option<T>,
    ) -> Result<T, String> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = ready(&self.shared.lock()) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "no {what} within {timeout:?}; requests so far: {:?}",
                    self.requests()
                ));
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
        out
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    super::accept_loop(listener, move |stream| {
        let shared = shared.clone();
        async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    shared.update(|st| st.requests.push(format!("{method} {path}")));
    let Some(route) = path.strip_prefix(PREFIX) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let text = || String::from_utf8_lossy(&body).into_owned();
    let json = || serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::Value::String(text()));
    Ok(match (&method, route) {
        (&Method::GET, "/invocation/next") => next_invocation(&shared).await,
        (&Method::GET, "/restore/next") => {
            let mut changed = shared.changed.subscribe();
            while !shared.lock().restore_released {
                if changed.changed().await.is_err() {
                    break;
                }
            }
            status(StatusCode::OK)
        }
        (&Method::POST, "/init/error") => {
            shared.update(|st| st.init_error = Some(text()));
            status(StatusCode::ACCEPTED)
        }
        (&Method::POST, "/restore/error") => {
            shared.update(|st| st.restore_error = Some(text()));
            status(StatusCode::ACCEPTED)
        }
        (&Method::POST, route) => {
            let answer = route.strip_prefix("/invocation/").and_then(|rest| {
                if let Some(id) = rest.strip_suffix("/response") {
                    Some((id, Answer::Response(json())))
                } else {
                    rest.strip_suffix("/error").map(|id| (id, Answer::Error(json())))
                }
            });
            match answer {
                Some((id, answer)) => {
                    shared.update(|st| st.answers.insert(id.to_owned(), answer));
                    status(StatusCode::ACCEPTED)
                }
                None => status(StatusCode::NOT_FOUND),
            }
        }
        _ => status(StatusCode::NOT_FOUND),
    })
}

/// Holds `invocation/next` until an invocation is queued, then hands it over with the headers
/// Lambda sends (the deadline 60 s from now).
async fn next_invocation(shared: &Shared) -> Response<Full<Bytes>> {
    let mut changed = shared.changed.subscribe();
    let (id, payload) = loop {
        if let Some(next) = shared.lock().pending.pop_front() {
            break next;
        }
        if changed.changed().await.is_err() {
            return status(StatusCode::GONE);
        }
    };
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", id)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", FUNCTION_ARN)
        .header(
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000;Sampled=0",
        )
        .body(Full::new(payload))
        .expect("a valid response")
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}
