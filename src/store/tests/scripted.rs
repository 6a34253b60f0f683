//! A source whose answers the test scripts (ok, error, panic, hang), which records every fetch
//! and how many are in flight per item. Its calls are `GetParameters` calls (a scarce quota), so
//! background refreshes spread them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::call::{CallContext, Operation};
use crate::error::{CallError, CallErrorKind};
use crate::limiter::QuotaClass;
use crate::source::{Declaration, Fetched, ItemResult, Source};

const GET_PARAMETERS: Operation = Operation::new("GetParameters").with_quota(QuotaClass::SsmGet);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ok,
    Fail,
    Panic,
    Hang,
}

/// One fetch of one item.
#[derive(Debug, Clone)]
pub(crate) struct FetchLog {
    pub(crate) item: String,
    pub(crate) start: Instant,
    /// When it returned, or was dropped (panic, hang given up).
    pub(crate) end: Option<Instant>,
    /// Returned values (rather than an error, a panic or a drop).
    pub(crate) ok: bool,
}

struct State {
    mode: Mode,
    version: u64,
    latency: Duration,
    /// Sequential calls per fetch (pages of a path).
    pages: usize,
    in_flight: HashMap<String, u32>,
    max_in_flight: u32,
    log: Vec<FetchLog>,
}

/// The shared state, which is also the [`Source`] (one `Arc` for every declaration, so its
/// items are fetched together as a real source's are).
#[derive(Clone)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
pub(crate) struct Scripted {
    shared: Shared,
    source: Arc<Shared>,
}

impl Scripted {
    pub(crate) fn new(latency: Duration) -> Self {
        let shared = Shared(Arc::new(Mutex::new(State {
            mode: Mode::Ok,
            version: 1,
            latency,
            pages: 1,
            in_flight: HashMap::new(),
            max_in_flight: 0,
            log: Vec::new(),
        })));
        Scripted {
            source: Arc::new(shared.clone()),
            shared,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    pub(crate) fn declare(&self, key: &str, id: &str) -> Declaration {
        Declaration::new(key, self.source.clone(), id.to_owned())
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    pub(crate) fn set_pages(&self, pages: usize) {
        self.state().pages = pages;
    }

    /// Changes every value (new version).
    pub(crate) fn change(&self) -> u64 {
        let mut s = self.state();
        s.version += 1;
        s.version
    }

    /// The version every value is at (values read `v{version}`).
    pub(crate) fn version(&self) -> u64 {
        self.state().version
    }

    pub(crate) fn log(&self) -> Vec<FetchLog> {
        self.state().log.clone()
    }

    pub(crate) fn fetches(&self) -> usize {
        self.state().log.len()
    }

    pub(crate) fn max_in_flight(&self) -> u32 {
        self.state().max_in_flight
    }
}

/// Ends the fetch's log entries and in-flight counts however the fetch ends.
struct Flight {
    source: Shared,
    entries: Vec<usize>,
    ok: bool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut s = self.source.state();
        let now = Instant::now();
        for &e in &self.entries {
            s.log[e].end = Some(now);
            s.log[e].ok = self.ok;
            let item = s.log[e].item.clone();
            *s.in_flight.entry(item).or_default() -= 1;
        }
    }
}

impl Source for Shared {
    type Item = String;

    fn kind(&self) -> &'static str {
        "scripted"
    }

    async fn fetch(&self, items: &[String], calls: &CallContext) -> Vec<ItemResult> {
        {
            let (mode, latency, pages) = {
                let s = self.state();
                (s.mode, s.latency, s.pages)
            };
            let mut flight = Flight {
                source: self.clone(),
                entries: Vec::new(),
                ok: false,
            };
            {
                let mut s = self.state();
                let now = Instant::now();
                for item in items {
                    let n = s.in_flight.entry(item.clone()).or_default();
                    *n += 1;
                    let n = *n;
                    s.max_in_flight = s.max_in_flight.max(n);
                    s.log.push(FetchLog {
                        item: item.clone(),
                        start: now,
                        end: None,
                        ok: false,
                    });
                    flight.entries.push(s.log.len() - 1);
                }
            }
            match mode {
                Mode::Panic => panic!("scripted panic (expected by the test)"),
                // Ignores the context's deadline: only the store's own budget ends it.
                Mode::Hang => std::future::pending::<()>().await,
                Mode::Ok | Mode::Fail => {}
            }
            for _ in 0..pages {
                let answer = calls
                    .call(GET_PARAMETERS, || async move {
                        tokio::time::sleep(latency).await;
                        match mode {
                            Mode::Fail => Err(CallError::new(CallErrorKind::Fatal, "scripted failure")),
                            _ => Ok(()),
                        }
                    })
                    .await;
                if let Err(e) = answer {
                    return items
                        .iter()
                        .map(|_| Err(e.clone().into_item_error("scripted:Get")))
                        .collect();
                }
            }
            let version = self.state().version;
            flight.ok = true;
            items
                .iter()
                .map(|item| {
                    Ok(vec![
                        Fetched::new(item.as_str(), format!("v{version}")).with_version(version.to_string())
                    ])
                })
                .collect()
        }
    }
}
