//! Routes `tracing` events (and the fields of the spans around them) into the
//! daemon's slog pipeline, in every process of the daemon.
//!
//! Libraries such as actix-web, reqwest, sqlx and tokio emit `tracing` events,
//! not `log` records. The daemon installs a global `tracing` subscriber made
//! of a [`tracing_subscriber::Registry`] and [`layer`], so these events reach
//! the same log as everything else, as
//!
//! ```text
//! 2026-12-09T10:14:03.120Z [812/815 worker:resizer] INFO  resized width=640 job=17 span=job target=ops
//! ```
//!
//! (event fields, then the fields of the enclosing spans from the outermost,
//! then the span names and the event's target). Workers and tasks install the
//! same subscriber when they start, so their events carry their own pid and
//! role. Events above the daemon's level (`--debug`) are filtered by this
//! layer only: layers added beside it see everything they ask for (see
//! [`tracing_layer`](super::tracing_layer) to add your own).
use super::Level;
use parking_lot::RwLock;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

static TARGET: RwLock<Option<slog::Logger>> = RwLock::new(None);
static INSTALL: Once = Once::new();
/// The most verbose level written, as [`level_index`] (0 = nothing).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);

thread_local! {
    // A log-event listener that emits a tracing event must not recurse.
    static IN_EVENT: Cell<bool> = const { Cell::new(false) };
}

fn level_index(level: Level) -> u8 {
    match level {
        Level::Error => 1,
        Level::Warning => 2,
        Level::Info => 3,
        Level::Debug => 4,
        Level::Trace => 5,
    }
}

/// The daemon's level for a `tracing` level.
fn from_tracing(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::TRACE => Level::Trace,
    }
}

fn level_filter() -> LevelFilter {
    match MAX_LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The layer that writes `tracing` events to the daemon's log, filtered to
/// the daemon's level (other layers of the same subscriber are not).
///
/// To add a layer of your own (JSON output, OpenTelemetry), install the
/// global subscriber yourself before the daemon starts, with this layer in
/// it; the daemon then leaves your subscriber in place and this layer keeps
/// feeding the daemon's log:
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// # #[derive(Default)] struct MyJsonLayer;
/// # impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MyJsonLayer {}
/// let subscriber = tracing_subscriber::registry()
///     .with(daemonic::log::tracing_layer())
///     .with(MyJsonLayer::default());
/// tracing::subscriber::set_global_default(subscriber).expect("no subscriber yet");
/// ```
///
/// Worker and task processes install the daemon's own subscriber (your
/// layers run in the main process).
pub fn layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    LogLayer { fixed: None }.with_filter(DaemonLevel)
}

/// Makes `logger` the destination of `tracing` events in this process, at
/// most as verbose as `max`. Installs the global subscriber unless one is
/// already set (then a subscriber with [`layer`] in it keeps working).
pub(super) fn install(logger: &slog::Logger, max: Level) {
    *TARGET.write() = Some(logger.clone());
    set_level(max);
}

/// Installs the global subscriber (once per process, see [`install`]) and
/// lets events up to `max` through.
pub(super) fn set_level(max: Level) {
    let previous = MAX_LEVEL.swap(level_index(max), Ordering::Relaxed);
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(layer());
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    if previous != level_index(max) {
        // Callsites cached their interest for the previous level.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Stops writing events to a pipeline that is shutting down.
pub(super) fn detach() {
    *TARGET.write() = None;
}

/// Passes what the daemon's level lets through (per layer: other layers of
/// the same subscriber are not affected).
struct DaemonLevel;

impl<S> Filter<S> for DaemonLevel {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        level_index(from_tracing(meta.level())) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(level_filter())
    }
}

/// The formatted fields of a span, kept in its extensions.
struct SpanFields(Vec<(&'static str, String)>);

/// Collects an event's or span's fields as `(name, text)` pairs; the
/// `message` field separately.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(&'static str, String)>,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            // Quoted like `tracing-subscriber`'s own formatter: a value with
            // spaces stays one value to whoever parses the line.
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.push((field.name(), text));
        }
    }
}

/// Key-value pairs for a slog record, then the event's target.
struct Pairs<'a> {
    pairs: &'a [(&'static str, String)],
    target: &'a str,
}

impl slog::KV for Pairs<'_> {
    fn serialize(
        &self,
        _: &slog::Record<'_>,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        for (key, value) in self.pairs {
            serializer.emit_arguments(key, &format_args!("{value}"))?;
        }
        serializer.emit_str("target", self.target)
    }
}

/// Writes events to [`TARGET`] (or to a fixed logger, in tests).
struct LogLayer {
    fixed: Option<slog::Logger>,
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        span.extensions_mut().insert(SpanFields(visitor.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut visitor = FieldVisitor::default();
        values.record(&mut visitor);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(fields) => fields.0.extend(visitor.fields),
            None => extensions.insert(SpanFields(visitor.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if IN_EVENT.with(Cell::get) {
            return;
        }
        let Some(logger) = self.fixed.clone().or_else(|| TARGET.read().clone()) else {
            return;
        };
        IN_EVENT.with(|f| f.set(true));
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let mut pairs = visitor.fields;
        let mut names = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if !names.is_empty() {
                    names.push(':');
                }
                names.push_str(span.name());
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    pairs.extend(fields.0.iter().cloned());
                }
            }
        }
        if !names.is_empty() {
            pairs.push(("span", names));
        }
        let meta = event.metadata();
        let message = visitor.message.unwrap_or_default();
        write(&logger, meta, &message, &pairs);
        IN_EVENT.with(|f| f.set(false));
    }
}

fn write(
    logger: &slog::Logger,
    meta: &Metadata<'_>,
    message: &str,
    pairs: &[(&'static str, String)],
) {
    let location = slog::RecordLocation {
        file: "",
        line: meta.line().unwrap_or(0),
        column: 0,
        function: "",
        module: "",
    };
    let rstatic = slog::RecordStatic {
        location: &location,
        tag: "",
        level: from_tracing(meta.level()).to_slog(),
    };
    let kv = Pairs {
        pairs,
        target: meta.target(),
    };
    logger.log(&slog::Record::new(
        &rstatic,
        &format_args!("{message}"),
        slog::BorrowedKV(&kv),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    /// A slog drain that keeps rendered lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<(slog::Level, String)>>>);

    struct KvText<'a>(&'a mut String);
    impl slog::Serializer for KvText<'_> {
        fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
            let _ = write!(self.0, " {key}={val}");
            Ok(())
        }
    }

    impl slog::Drain for Lines {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            use slog::KV;
            let mut line = r.msg().to_string();
            let _ = r.kv().serialize(r, &mut KvText(&mut line));
            self.0.lock().unwrap().push((r.level(), line));
            Ok(())
        }
    }

    #[test]
    fn events_carry_fields_span_fields_and_target() {
        let lines = Lines::default();
        let fixed = Some(slog::Logger::root(lines.clone(), slog::o!()));
        let layer = LogLayer { fixed }.with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", path = "/a b");
            let _o = outer.enter();
            let inner = tracing::info_span!("job", id = 7, done = tracing::field::Empty);
            inner.record("done", true);
            let _i = inner.enter();
            tracing::warn!(n = 3, word = "x y", ratio = 0.5, "computed {}", "it");
            tracing::debug!("not at info");
        });
        let lines = lines.0.lock().unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].0, slog::Level::Warning);
        assert_eq!(
            lines[0].1,
            r#"computed it n=3 word="x y" ratio=0.5 path="/a b" id=7 done=true span=request:job target=daemonic::log::tracing::tests"#
        );
    }

    #[test]
    fn levels_map_in_order() {
        let order = [
            tracing::Level::ERROR,
            tracing::Level::WARN,
            tracing::Level::INFO,
            tracing::Level::DEBUG,
            tracing::Level::TRACE,
        ];
        let indexes: Vec<u8> = order.iter().map(|l| level_index(from_tracing(l))).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5]);
        assert_eq!(from_tracing(&tracing::Level::WARN), Level::Warning);
    }
}
