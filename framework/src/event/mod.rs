//! Typed events and the bus that dispatches them.
//!
//! A listener is either a closure, which runs synchronously in the thread that
//! raises the event and may change it (skip a tick, rewrite a log line, add a
//! stats field), or an actix [`Recipient`], which receives a clone of the event
//! after the closures have run and can only observe.
//!
//! Every dispatch builds a fresh event value, so a listener that cancels one
//! dispatch cannot affect any other: the PHP original kept a "propagation
//! stopped" flag on a shared event object, and one cancelled pre-execute event
//! skipped `execute` on every later tick.
//!
//! Every event is named *subject, then verb*: in the past tense for what
//! happened, with `-ing` for what is about to happen, which a listener may
//! still change or cancel.
//!
//! | event | raised | a listener may |
//! |---|---|---|
//! | [`DaemonStarted`] | once, before the first tick | |
//! | [`TickStarting`] | before each `execute` | [`skip`](TickStarting::skip) this tick |
//! | [`TickFinished`] | after each `execute` | |
//! | [`IdleStarted`] | when a tick ends early: time to spare | |
//! | [`SignalReceived`] | for every signal the daemon catches | |
//! | [`LogWriting`] | before each log line | rewrite or [`suppress`](LogWriting::suppress) it |
//! | [`StatsCollecting`] | when stats are collected | [`add`](StatsCollecting::add) fields |
//! | [`ErrorOccurred`] | when something fails | |
//! | [`PidChanged`] | after `--daemon` forked, after a restart | |
//! | [`RestartStarting`] | before a restart | [`cancel`](RestartStarting::cancel) it |
//! | [`ShutdownStarted`] | when the graceful shutdown begins | |
//! | [`TaskExited`] | when a task process ends | |
//! | [`WorkerSpawned`], [`WorkerReturned`], [`WorkerDied`], [`WorkerTimedOut`], [`WorkerRecycled`], [`WorkerPoolFailed`] | as worker pools run | |
//! | [`ChildRestarted`], [`SupervisorEscalated`] | as supervision trees restart children and give up | |
//!
//! ```
//! use daemonic::event::{TickFinished, WorkerDied};
//! use daemonic::DaemonBuilder;
//! # struct App;
//! # impl daemonic::Daemon for App {
//! #     fn execute(&mut self, _: &mut daemonic::LoopContext<'_, Self>) {}
//! # }
//!
//! let builder = DaemonBuilder::new(App)
//!     .on(|e: &mut TickFinished| {
//!         if e.duration.as_millis() > 100 {
//!             log::warn!("tick {} took {:?}", e.iteration, e.duration);
//!         }
//!     })
//!     .on(|e: &mut WorkerDied| log::error!("worker {} of {} died: {}", e.pid, e.pool, e.exit));
//! # let _ = builder;
//! ```

mod kinds;

pub use kinds::*;

use actix::{Message, Recipient};
use parking_lot::RwLock;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An event that can be raised on an [`Events`] bus.
///
/// Any `Message<Result = ()> + Clone + Send` type is an event: a daemon
/// may raise events of its own on its bus.
///
/// ```
/// use daemonic::event::{Event, Events};
///
/// #[derive(Clone)]
/// struct OrderPlaced {
///     id: u64,
/// }
/// impl daemonic::actix::Message for OrderPlaced {
///     type Result = ();
/// }
/// impl Event for OrderPlaced {}
///
/// let events = Events::new();
/// events.on(|e: &mut OrderPlaced| println!("order {}", e.id));
/// events.dispatch(&mut OrderPlaced { id: 7 });
/// ```
pub trait Event: Message<Result = ()> + Clone + Send + 'static {}

type Closure<E> = Arc<dyn Fn(&mut E) + Send + Sync>;

enum Listener<E: Event> {
    Closure(u64, Closure<E>),
    Recipient(u64, Recipient<E>),
}

impl<E: Event> Clone for Listener<E> {
    fn clone(&self) -> Self {
        match self {
            Listener::Closure(id, f) => Listener::Closure(*id, f.clone()),
            Listener::Recipient(id, r) => Listener::Recipient(*id, r.clone()),
        }
    }
}

impl<E: Event> Listener<E> {
    fn id(&self) -> u64 {
        match self {
            Listener::Closure(id, _) | Listener::Recipient(id, _) => *id,
        }
    }
}

/// The listeners of one event type, replaced wholesale on (un)subscription so a
/// dispatch never holds a lock while it runs user code.
struct Listeners<E: Event>(Vec<Listener<E>>);

/// The bus stores lists of different event types side by side; this lets it
/// drop a listener by id without knowing the list's event type.
trait ErasedList: Send + Sync {
    fn without(&self, id: u64) -> Option<Arc<dyn ErasedList>>;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<E: Event> ErasedList for Listeners<E> {
    fn without(&self, id: u64) -> Option<Arc<dyn ErasedList>> {
        if !self.0.iter().any(|l| l.id() == id) {
            return None;
        }
        let kept = self.0.iter().filter(|l| l.id() != id).cloned().collect();
        Some(Arc::new(Listeners::<E>(kept)))
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Identifies one subscription, for [`Events::unsubscribe`].
///
/// ```
/// use daemonic::event::{Events, TickFinished};
///
/// let events = Events::new();
/// let subscription = events.on(|_: &mut TickFinished| {});
/// assert!(events.has_listeners::<TickFinished>());
/// assert!(events.unsubscribe(subscription));
/// assert!(!events.has_listeners::<TickFinished>());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription {
    type_id: TypeId,
    id: u64,
}

#[derive(Default)]
struct Inner {
    by_type: RwLock<HashMap<TypeId, Arc<dyn ErasedList>>>,
    next_id: AtomicU64,
    /// Bumped on every change so hot paths can cache a listener list.
    generation: AtomicU64,
}

/// The event bus of one daemon. Cheap to clone; all clones share listeners.
///
/// ```
/// use daemonic::event::{Events, TickStarting};
///
/// let events = Events::new();
/// events.on(|e: &mut TickStarting| {
///     if e.iteration % 2 == 0 {
///         e.skip();
///     }
/// });
/// let mut tick = TickStarting::new(4);
/// events.dispatch(&mut tick);
/// assert!(tick.is_skipped());
/// ```
#[derive(Clone, Default)]
pub struct Events {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("types", &self.inner.by_type.read().len())
            .finish()
    }
}

impl Events {
    /// A bus with no listeners.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `listener` synchronously for every event of type `E`. The
    /// listener may modify the event (for example skip a tick).
    pub fn on<E: Event>(&self, listener: impl Fn(&mut E) + Send + Sync + 'static) -> Subscription {
        self.add(|id| Listener::Closure(id, Arc::new(listener)))
    }

    /// Sends a clone of every event of type `E` to an actix actor, after the
    /// closure listeners have run. The actor observes; it cannot cancel.
    pub fn subscribe<E: Event>(&self, recipient: Recipient<E>) -> Subscription {
        self.add(|id| Listener::Recipient(id, recipient))
    }

    fn add<E: Event>(&self, make: impl FnOnce(u64) -> Listener<E>) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.inner.by_type.write();
        let mut list = map
            .get(&TypeId::of::<E>())
            .and_then(|l| l.clone().as_any().downcast::<Listeners<E>>().ok())
            .map(|l| l.0.clone())
            .unwrap_or_default();
        list.push(make(id));
        map.insert(TypeId::of::<E>(), Arc::new(Listeners(list)));
        self.inner.generation.fetch_add(1, Ordering::Release);
        Subscription {
            type_id: TypeId::of::<E>(),
            id,
        }
    }

    /// Removes a listener. Returns whether it was still registered.
    pub fn unsubscribe(&self, subscription: Subscription) -> bool {
        let mut map = self.inner.by_type.write();
        let Some(entry) = map.get_mut(&subscription.type_id) else {
            return false;
        };
        match entry.without(subscription.id) {
            Some(replacement) => {
                *entry = replacement;
                self.inner.generation.fetch_add(1, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn listeners<E: Event>(&self) -> Option<Arc<Listeners<E>>> {
        let erased = self.inner.by_type.read().get(&TypeId::of::<E>())?.clone();
        erased.as_any().downcast::<Listeners<E>>().ok()
    }

    /// Whether anything listens for `E` (lets callers skip building costly events).
    pub fn has_listeners<E: Event>(&self) -> bool {
        self.listeners::<E>().is_some_and(|l| !l.0.is_empty())
    }

    /// Raises `event`: closures run in registration order and see each other's
    /// changes; recipients then get a clone of the final value.
    pub fn dispatch<E: Event>(&self, event: &mut E) {
        if let Some(list) = self.listeners::<E>() {
            run_listeners(&list, event);
        }
    }

    /// A cache of the listener list of `E` for hot paths (the main loop
    /// dispatches two events per tick): one atomic load per dispatch while
    /// nothing (un)subscribes.
    pub(crate) fn cached<E: Event>(&self) -> CachedListeners<E> {
        CachedListeners {
            events: self.clone(),
            generation: u64::MAX,
            list: None,
        }
    }
}

fn run_listeners<E: Event>(list: &Listeners<E>, event: &mut E) {
    for listener in &list.0 {
        if let Listener::Closure(_, f) = listener {
            f(event);
        }
    }
    for listener in &list.0 {
        if let Listener::Recipient(_, r) = listener {
            r.do_send(event.clone());
        }
    }
}

/// A listener list cached by generation; see [`Events::cached`].
pub(crate) struct CachedListeners<E: Event> {
    events: Events,
    generation: u64,
    list: Option<Arc<Listeners<E>>>,
}

impl<E: Event> CachedListeners<E> {
    /// Whether the current list is non-empty (refreshing it if stale).
    pub(crate) fn active(&mut self) -> bool {
        let current = self.events.inner.generation.load(Ordering::Acquire);
        if current != self.generation {
            self.list = self.events.listeners::<E>().filter(|l| !l.0.is_empty());
            self.generation = current;
        }
        self.list.is_some()
    }

    pub(crate) fn dispatch(&mut self, event: &mut E) {
        if self.active() {
            if let Some(list) = &self.list {
                run_listeners(list, event);
            }
        }
    }
}
