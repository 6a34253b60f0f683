//! Helpers shared by the unit tests of several modules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Captures the `tracing` output of the current thread.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub(crate) fn start(&self) -> tracing::subscriber::DefaultGuard {
        every_subscriber_asked();
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// With one subscriber alive, tracing computes a callsite's interest from the default of the
/// thread that first hits it: another test's thread, with no subscriber, would make it "never" for
/// this one too. A second, idle subscriber kept alive makes tracing ask every live one.
fn every_subscriber_asked() {
    static IDLE: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    IDLE.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

/// The unit tests' allocator: the system's, which can also count the blocks freed on the calling
/// thread that still hold a canary (plaintext freed without being zeroized).
pub(crate) struct Scanning;

#[global_allocator]
static ALLOCATOR: Scanning = Scanning;

thread_local! {
    /// The canary looked for in blocks freed on this thread, and the blocks found holding it.
    static SCAN: std::cell::Cell<(Option<&'static [u8]>, usize)> = const { std::cell::Cell::new((None, 0)) };
}

// SAFETY: every call is forwarded to the system allocator; `dealloc` only reads the block it is
// given (which is still allocated) before freeing it. `realloc` is the trait's default, which
// frees through `dealloc`, so a block moved by a reallocation is scanned too.
unsafe impl std::alloc::GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        let _ = SCAN.try_with(|scan| {
            if let (Some(canary), hits) = scan.get() {
                // SAFETY: `ptr` is a live block of `layout.size()` bytes until freed below.
                let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                if block.windows(canary.len()).any(|w| w == canary) {
                    scan.set((Some(canary), hits + 1));
                }
            }
        });
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns how many blocks freed on this thread meanwhile held `canary` (each a copy
/// of plaintext left in freed memory). Only this thread's frees are seen: run single-threaded code.
pub(crate) fn freed_holding<T>(canary: &'static [u8], f: impl FnOnce() -> T) -> (T, usize) {
    SCAN.with(|scan| scan.set((Some(canary), 0)));
    let out = f();
    let hits = SCAN.with(|scan| scan.replace((None, 0)).1);
    (out, hits)
}

/// A span's id, name and fields (as text).
type Seen = (u64, String, BTreeMap<String, String>);

/// Every span, in order of creation.
#[derive(Clone, Default)]
pub(crate) struct Spans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    /// Keeps the span's fields, and its parent's name as the field `@parent` (none: a root).
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(parent) = ctx.span(id).and_then(|span| span.parent()) {
            fields.insert("@parent".to_owned(), parent.name().to_owned());
        }
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().push((id.into_u64(), name, fields));
    }
    /// Notes the names of the spans a span follows from, as the field `@follows` (`a,b`).
    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let Some(name) = ctx.span(follows).map(|s| s.name().to_owned()) else {
            return;
        };
        let mut spans = self.0.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|(i, ..)| *i == id.into_u64()) {
            let list = fields.entry("@follows".to_owned()).or_default();
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(&name);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // Ids are reused once a span closes: the latest span with this id is the one recorded.
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|(i, ..)| *i == id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    pub(crate) fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

/// Runs `run` on a current-thread runtime in paused time, keeping every span it makes.
pub(crate) fn traced<T>(run: impl std::future::Future<Output = T>) -> (T, Spans) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    every_subscriber_asked();
    let out = tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        runtime.block_on(run)
    });
    (out, spans)
}
