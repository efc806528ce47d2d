//! Supervision trees with real worker processes: each strategy (which
//! children restart, in which order), the restart types, the intensity
//! window, an escalation chain, addresses that survive restarts, shutdown
//! order and timeouts, and the backoff's growth. A pool here gives up at
//! its first worker death (`restart_limit(0, ..)`), so one `die` call is one
//! failure its supervisor sees.

#[macro_use]
mod common;

use daemonic::actix::prelude::*;
use daemonic::event::{ChildRestarted, Events, SupervisorEscalated};
use daemonic::prelude::*;
use daemonic::supervision::{
    ActorSpec, Backoff, GetTree, IntoChild, PoolSpec, RemoveChild, RemoveChildError, Restart,
    StopTree, Strategy, Supervisor,
};
use daemonic::worker::{GetPoolStats, WorkerPoolBuilder};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Unit;

#[daemonic::worker]
impl Unit {
    pub fn pid(&mut self) -> i32 {
        std::process::id() as i32
    }

    pub fn die(&mut self) -> i32 {
        std::process::exit(3)
    }

    pub fn sleep(&mut self, ms: u64) -> i32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id() as i32
    }
}

type Pool = Addr<WorkerPool<Unit>>;

fn unit(name: &str) -> WorkerPoolBuilder<Unit> {
    WorkerPool::builder(Unit)
        .name(name)
        .size(1)
        .warm_spares(0)
        .restart_limit(0, Duration::from_secs(60))
}

fn pool(name: &str) -> (Pool, PoolSpec<Unit>) {
    let spec = PoolSpec::new(unit(name));
    (spec.addr(), spec)
}

/// Waits (without blocking the arbiter) until `cond` holds.
async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn pid(pool: &Pool) -> i32 {
    pool.call(unit::Pid {}).await.expect("the pool answers")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// `ChildRestarted` and `SupervisorEscalated`, in order, as `sup/child`
/// and `sup!`.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn events(&self) -> Events {
        let events = Events::new();
        let restarted = self.0.clone();
        events.on(move |e: &mut ChildRestarted| {
            restarted
                .lock()
                .push(format!("{}/{}", e.supervisor, e.child))
        });
        let escalated = self.0.clone();
        events.on(move |e: &mut SupervisorEscalated| {
            escalated.lock().push(format!("{}!", e.supervisor))
        });
        events
    }

    fn get(&self) -> Vec<String> {
        self.0.lock().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        until("tree events", Duration::from_secs(20), || {
            self.0.lock().len() >= n
        })
        .await;
        self.get()
    }
}

/// A tree `tree` of three pools `a`, `b`, `c` under `strategy`.
async fn three_pools(strategy: Strategy) -> (Addr<Supervisor>, [Pool; 3], Journal) {
    let journal = Journal::default();
    let (a, a_spec) = pool("a");
    let (b, b_spec) = pool("b");
    let (c, c_spec) = pool("c");
    let tree = Supervisor::builder("tree")
        .strategy(strategy)
        .events(journal.events())
        .child(a_spec)
        .child(b_spec)
        .child(c_spec)
        .start()
        .unwrap();
    (tree, [a, b, c], journal)
}

/// Three pools under `strategy`; the middle one fails. Returns the events
/// and which pools got new workers.
async fn fail_the_middle(strategy: Strategy, restarts: usize) -> (Vec<String>, [bool; 3]) {
    let (tree, [a, b, c], journal) = three_pools(strategy).await;
    let before = [pid(&a).await, pid(&b).await, pid(&c).await];
    let _ = b.send(unit::Die {}).await;
    let events = journal.wait_for(restarts).await;
    let after = [pid(&a).await, pid(&b).await, pid(&c).await];
    tree.send(StopTree).await.unwrap();
    for p in before.iter().chain(&after) {
        until(
            "workers gone after the stop",
            Duration::from_secs(10),
            || !alive(*p),
        )
        .await;
    }
    assert_eq!(
        journal.get(),
        events,
        "no restart beyond the strategy's set"
    );
    let changed = [
        before[0] != after[0],
        before[1] != after[1],
        before[2] != after[2],
    ];
    (events, changed)
}

#[actix::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (events, changed) = fail_the_middle(Strategy::OneForOne, 1).await;
    assert_eq!(events, ["tree/b"]);
    assert_eq!(changed, [false, true, false]);
}

#[actix::test]
async fn one_for_all_restarts_every_child_in_order() {
    let (events, changed) = fail_the_middle(Strategy::OneForAll, 3).await;
    assert_eq!(events, ["tree/a", "tree/b", "tree/c"]);
    assert_eq!(changed, [true, true, true]);
}

#[actix::test]
async fn rest_for_one_restarts_the_failed_child_and_the_ones_after_it() {
    let (events, changed) = fail_the_middle(Strategy::RestForOne, 2).await;
    assert_eq!(events, ["tree/b", "tree/c"]);
    assert_eq!(changed, [false, true, true]);
}

/// An actor that records its life in a shared log.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    /// Refuses to stop (its `stopping` says `Running`).
    stubborn: bool,
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.log.lock().push(format!("start {}", self.name));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if self.stubborn {
            self.log.lock().push(format!("refuse {}", self.name));
            return Running::Continue;
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.lock().push(format!("stop {}", self.name));
    }
}

impl Supervised for Recorder {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.log.lock().push(format!("restart {}", self.name));
    }
}

#[derive(Message)]
#[rtype(result = "String")]
struct Ping;

impl Handler<Ping> for Recorder {
    type Result = String;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> String {
        self.name.to_string()
    }
}

/// Stops the actor: as a failure, or as a normal end.
#[derive(Message)]
#[rtype(result = "()")]
struct Quit {
    normally: bool,
}

impl Handler<Quit> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Quit, ctx: &mut Context<Self>) {
        if msg.normally {
            daemonic::supervision::stop_normally(ctx);
        } else {
            ctx.stop();
        }
    }
}

fn recorder(
    name: &'static str,
    log: &Arc<Mutex<Vec<String>>>,
    stubborn: bool,
) -> ActorSpec<Recorder> {
    let log = log.clone();
    ActorSpec::new(move |_| Recorder {
        name,
        log,
        stubborn,
    })
    .name(name)
}

#[actix::test]
async fn an_actor_keeps_its_address_across_restarts() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let journal = Journal::default();
    let spec = recorder("uploader", &log, false);
    let addr = spec.addr();
    // Sent before the tree starts: waits in the mailbox.
    let early = addr.send(Ping);
    let tree = Supervisor::builder("app")
        .events(journal.events())
        .child(spec)
        .start()
        .unwrap();
    assert_eq!(early.await.unwrap(), "uploader");
    addr.do_send(Quit { normally: false });
    assert_eq!(journal.wait_for(1).await, ["app/uploader"]);
    assert_eq!(addr.send(Ping).await.unwrap(), "uploader");
    assert_eq!(
        log.lock().clone(),
        [
            "start uploader",
            "stop uploader",
            "restart uploader",
            "start uploader"
        ]
    );
    tree.send(StopTree).await.unwrap();
}

#[actix::test]
async fn restart_types_transient_and_temporary() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let journal = Journal::default();
    let finished = recorder("finished", &log, false);
    let crashed = recorder("crashed", &log, false);
    let once = recorder("once", &log, false);
    let (finished_addr, crashed_addr, once_addr) = (finished.addr(), crashed.addr(), once.addr());
    let (temp_pool, temp_spec) = pool("scratch");
    let tree = Supervisor::builder("types")
        .events(journal.events())
        .backoff(Backoff::none())
        .intensity(10, Duration::from_secs(60))
        .child(finished.restart(Restart::Transient))
        .child(crashed.restart(Restart::Transient))
        .child(once.restart(Restart::Temporary))
        .child(temp_spec.restart(Restart::Temporary))
        .start()
        .unwrap();
    let temp_pid = pid(&temp_pool).await;

    // Transient: a normal end is final, a failure restarts.
    finished_addr.do_send(Quit { normally: true });
    crashed_addr.do_send(Quit { normally: false });
    assert_eq!(journal.wait_for(1).await, ["types/crashed"]);
    assert_eq!(crashed_addr.send(Ping).await.unwrap(), "crashed");

    // Temporary: never restarted; a temporary pool's calls then fail.
    once_addr.do_send(Quit { normally: false });
    let _ = temp_pool.send(unit::Die {}).await;
    let tree_stats = || tree.send(GetTree);
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stats = tree_stats().await.unwrap();
        states = stats
            .children
            .iter()
            .map(|c| (c.name.clone(), c.state.clone()))
            .collect();
        if states.iter().filter(|(_, s)| s == "terminated").count() == 3 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let expect = |n: &str, s: &str| (n.to_string(), s.to_string());
    assert_eq!(
        states,
        [
            expect("finished", "terminated"),
            expect("crashed", "running"),
            expect("once", "terminated"),
            expect("scratch", "terminated"),
        ]
    );
    assert!(
        matches!(
            temp_pool.call(unit::Pid {}).await,
            Err(CallError::Worker(WorkerError::PoolFailed { .. }))
        ),
        "a pool its tree gave up on fails its calls"
    );
    until(
        "the temporary pool's worker gone",
        Duration::from_secs(10),
        || !alive(temp_pid),
    )
    .await;
    assert_eq!(journal.get(), ["types/crashed"], "nothing else restarted");
    tree.send(StopTree).await.unwrap();
}

#[actix::test]
async fn a_temporary_sibling_is_not_restarted_by_one_for_all() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let journal = Journal::default();
    let (p, p_spec) = pool("p");
    let tree = Supervisor::builder("all")
        .strategy(Strategy::OneForAll)
        .events(journal.events())
        .child(recorder("helper", &log, false).restart(Restart::Temporary))
        .child(p_spec)
        .start()
        .unwrap();
    pid(&p).await;
    let _ = p.send(unit::Die {}).await;
    assert_eq!(journal.wait_for(1).await, ["all/p"]);
    let stats = tree.send(GetTree).await.unwrap();
    assert_eq!(stats.children[0].state, "terminated");
    assert_eq!(stats.children[1].state, "running");
    tree.send(StopTree).await.unwrap();
}

#[actix::test]
async fn the_intensity_window_counts_recent_restarts_only() {
    let journal = Journal::default();
    let escalated = Arc::new(Mutex::new(None::<String>));
    let hook = escalated.clone();
    let (p, spec) = pool("flaky");
    let period = Duration::from_millis(600);
    let tree = Supervisor::builder("window")
        .intensity(1, period)
        .backoff(Backoff::none())
        .events(journal.events())
        .on_escalation(move |reason| *hook.lock() = Some(reason))
        .child(spec)
        .start()
        .unwrap();
    // One failure per period is within the intensity, however many.
    for round in 1..=3 {
        let started = Instant::now();
        pid(&p).await;
        let _ = p.send(unit::Die {}).await;
        journal.wait_for(round).await;
        let next_window = started + period + Duration::from_millis(50);
        until("the window to pass", period * 2, || {
            Instant::now() >= next_window
        })
        .await;
    }
    assert!(escalated.lock().is_none());
    // Two within one period is one too many.
    pid(&p).await;
    let _ = p.send(unit::Die {}).await;
    journal.wait_for(4).await;
    pid(&p).await;
    let _ = p.send(unit::Die {}).await;
    until("the escalation", Duration::from_secs(10), || {
        escalated.lock().is_some()
    })
    .await;
    let reason = escalated.lock().clone().unwrap_or_default();
    assert!(reason.contains("2 restarts within"), "{reason}");
    assert_eq!(journal.get().last().map(String::as_str), Some("window!"));
    let stats = tree.send(GetTree).await.unwrap();
    assert_eq!(stats.state, "failed");
    assert_eq!(stats.children[0].state, "terminated");
    assert!(matches!(
        p.call(unit::Pid {}).await,
        Err(CallError::Worker(WorkerError::PoolFailed { .. }))
    ));
}

#[actix::test]
async fn an_escalation_climbs_the_tree_until_the_root_decides() {
    let journal = Journal::default();
    let escalated = Arc::new(Mutex::new(None::<String>));
    let hook = escalated.clone();
    let (steady, steady_spec) = pool("steady");
    let (inner, inner_spec) = pool("inner");
    let root = Supervisor::builder("root")
        .intensity(1, Duration::from_secs(60))
        .backoff(Backoff::none())
        .events(journal.events())
        .on_escalation(move |reason| *hook.lock() = Some(reason))
        .child(steady_spec)
        .child(
            Supervisor::builder("middle")
                .intensity(1, Duration::from_secs(60))
                .backoff(Backoff::none())
                .child(inner_spec),
        )
        .start()
        .unwrap();
    let steady_pid = pid(&steady).await;
    // The middle supervisor restarts its pool once…
    let _ = inner.send(unit::Die {}).await;
    assert_eq!(journal.wait_for(1).await, ["middle/inner"]);
    // … gives up at the second failure; the root restarts it (and its pool,
    // in place: the same address answers).
    pid(&inner).await;
    let _ = inner.send(unit::Die {}).await;
    assert_eq!(
        journal.wait_for(3).await,
        ["middle/inner", "middle!", "root/middle"]
    );
    let inner_pid = pid(&inner).await;
    assert_eq!(
        pid(&steady).await,
        steady_pid,
        "one_for_one: the sibling kept its worker"
    );
    // Twice more: the middle gives up again, which is one restart too many
    // for the root: it stops everything and escalates to its owner.
    let _ = inner.send(unit::Die {}).await;
    assert_eq!(journal.wait_for(4).await[3], "middle/inner");
    pid(&inner).await;
    let _ = inner.send(unit::Die {}).await;
    until("the root to give up", Duration::from_secs(10), || {
        escalated.lock().is_some()
    })
    .await;
    let reason = escalated.lock().clone().unwrap_or_default();
    assert!(reason.contains("middle"), "{reason}");
    let tail: Vec<String> = journal.get().into_iter().rev().take(2).collect();
    assert_eq!(tail, ["root!", "middle!"]);
    until("every worker gone", Duration::from_secs(10), || {
        !alive(steady_pid) && !alive(inner_pid)
    })
    .await;
    let stats = root.send(GetTree).await.unwrap();
    assert_eq!(stats.state, "failed");
    let middle = stats.children[1].tree.as_ref().expect("the nested tree");
    assert_eq!(middle.name, "middle");
    assert!(stats.children[1]
        .last_failure
        .as_deref()
        .is_some_and(|f| f.contains("supervisor middle gave up")));
}

#[actix::test]
async fn calls_made_while_a_pool_restarts_wait_for_it() {
    let journal = Journal::default();
    let (p, spec) = pool("slow");
    let tree = Supervisor::builder("wait")
        .intensity(5, Duration::from_secs(60))
        .backoff(Backoff::new(Duration::from_millis(400), Duration::from_secs(1)).jitter(0.0))
        .events(journal.events())
        .child(spec)
        .start()
        .unwrap();
    pid(&p).await;
    let _ = p.send(unit::Die {}).await;
    journal.wait_for(1).await;
    pid(&p).await;
    // The second restart waits 400 ms: calls meanwhile queue, then run.
    let _ = p.send(unit::Die {}).await;
    let during = Instant::now();
    let answers = futures_util::future::join_all((0..3).map(|_| p.call(unit::Pid {}))).await;
    assert!(
        answers.iter().all(|a| a.is_ok()),
        "every call made during the restart was served: {answers:?}"
    );
    assert!(
        during.elapsed() >= Duration::from_millis(300),
        "they waited for it"
    );
    assert_eq!(journal.wait_for(2).await.len(), 2);
    tree.send(StopTree).await.unwrap();
}

#[actix::test]
async fn children_stop_in_reverse_order_each_within_its_timeout() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (p, spec) = pool("busy");
    let tree = Supervisor::builder("ordered")
        .child(recorder("first", &log, false))
        .child(recorder("stubborn", &log, true).shutdown(Duration::from_millis(200)))
        .child(spec.shutdown(Duration::from_millis(300)))
        .child(recorder("last", &log, false))
        .start()
        .unwrap();
    let worker = pid(&p).await;
    // A call that would hold the worker for a minute: the pool's 300 ms are
    // all it gets before the worker is killed.
    let held = p.call(unit::Sleep { ms: 60_000 });
    let held = actix_rt::spawn(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.send(GetPoolStats).await.unwrap().in_flight == 0 {
        assert!(Instant::now() < deadline, "the long call never started");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = Instant::now();
    tree.send(StopTree).await.unwrap();
    let took = stopping.elapsed();
    until("the worker reaped", Duration::from_secs(5), || {
        !alive(worker)
    })
    .await;
    assert!(
        took < Duration::from_secs(20),
        "bounded by the children's timeouts, not the call: {took:?}"
    );
    assert!(
        held.await.unwrap().is_err(),
        "the held call failed with the worker"
    );
    let log = log.lock().clone();
    assert_eq!(
        log,
        [
            "start first",
            "start stubborn",
            "start last",
            "stop last",
            "refuse stubborn",
            // actix's `terminate` clears the context's flags: the actor
            // runs `started` once more on its way out.
            "start stubborn",
            "stop stubborn",
            "stop first",
        ]
    );
}

#[actix::test]
async fn a_removed_child_stops_for_good_and_its_siblings_are_untouched() {
    let (tree, [a, b, c], journal) = three_pools(Strategy::RestForOne).await;
    let before = [pid(&a).await, pid(&b).await, pid(&c).await];
    assert_eq!(tree.send(RemoveChild::new("b")).await.unwrap(), Ok(()));
    until("b's worker gone", Duration::from_secs(10), || {
        !alive(before[1])
    })
    .await;
    assert!(b.call(unit::Pid {}).await.is_err(), "b no longer answers");
    let names = |t: &daemonic::supervision::TreeStats| -> Vec<String> {
        t.children.iter().map(|c| c.name.clone()).collect()
    };
    assert_eq!(names(&tree.send(GetTree).await.unwrap()), ["a", "c"]);
    assert_eq!([pid(&a).await, pid(&c).await], [before[0], before[2]]);
    assert!(journal.get().is_empty(), "no restart: {:?}", journal.get());
    // The children after it still report to the right slot: c's failure
    // restarts c (rest_for_one: only c, the last), not a.
    let _ = c.send(unit::Die {}).await;
    assert_eq!(journal.wait_for(1).await, ["tree/c"]);
    assert_eq!(pid(&a).await, before[0]);
    assert_ne!(pid(&c).await, before[2]);
    assert_eq!(
        tree.send(RemoveChild::new("b")).await.unwrap(),
        Err(RemoveChildError::NoSuchChild {
            supervisor: "tree".into(),
            child: "b".into()
        })
    );
    tree.send(StopTree).await.unwrap();
    assert!(matches!(
        tree.send(RemoveChild::new("a")).await.unwrap(),
        Err(RemoveChildError::NotSupervising { .. })
    ));
}

#[actix::test]
async fn restarts_back_off_exponentially() {
    let journal = Journal::default();
    let restarted_at = Arc::new(Mutex::new(Vec::new()));
    let times = restarted_at.clone();
    let events = journal.events();
    events.on(move |_: &mut ChildRestarted| times.lock().push(Instant::now()));
    let (p, spec) = pool("looping");
    let tree = Supervisor::builder("backoff")
        .intensity(10, Duration::from_secs(60))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(400)).jitter(0.0))
        .events(events)
        .child(spec)
        .start()
        .unwrap();
    let mut gaps = Vec::new();
    for round in 1..=5 {
        pid(&p).await;
        let died = Instant::now();
        let _ = p.send(unit::Die {}).await;
        journal.wait_for(round).await;
        let at = restarted_at.lock()[round - 1];
        gaps.push(at.saturating_duration_since(died));
    }
    // Lower bounds only (a busy machine adds, never subtracts): 0, 100,
    // 200, 400, then the 400 ms cap.
    let floors = [0, 100, 200, 400, 400].map(Duration::from_millis);
    for (i, (gap, floor)) in gaps.iter().zip(floors).enumerate() {
        assert!(
            *gap >= floor,
            "restart {}: waited {gap:?}, at least {floor:?}",
            i + 1
        );
    }
    println!("backoff gaps: {gaps:?}");
    tree.send(StopTree).await.unwrap();
}
