//! `pool.call(msg)`: the mailbox, the worker and the method's own error
//! folded into one `Result<T, CallError<E>>`, each variant produced for
//! real; and what a method sees of its call through `&mut WorkerContext`.

use daemonic::prelude::*;
use daemonic::worker::WorkerPoolBuilder;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("division by zero")]
pub struct DivByZero;

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Calc;

mod parsing {
    /// A one-parameter alias, like `std::io::Result`.
    pub type Result<T> = std::result::Result<T, String>;
}

/// What a method saw of its call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    pid: u32,
    call_id: Option<u64>,
    remaining: Option<Duration>,
    role: String,
}

#[daemonic::worker]
impl Calc {
    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        a + b
    }

    pub fn divide(&mut self, a: i64, b: i64) -> Result<i64, DivByZero> {
        if b == 0 {
            Err(DivByZero)
        } else {
            Ok(a / b)
        }
    }

    /// An alias of `Result` works too.
    pub fn parse(&mut self, text: String) -> parsing::Result<u32> {
        text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
    }

    pub fn boom(&mut self) -> i64 {
        panic!("boom");
    }

    pub fn echo(&mut self, bytes: Vec<u8>) -> usize {
        bytes.len()
    }

    /// The context first.
    pub fn seen(&mut self, ctx: &mut WorkerContext) -> Seen {
        ctx.log(format_args!("call {:?}", ctx.call_id()));
        Seen {
            pid: ctx.pid(),
            call_id: ctx.call_id(),
            remaining: ctx.remaining(),
            role: ctx.role().to_string(),
        }
    }

    /// The context between two arguments, by a full path, in an `async`
    /// method.
    pub async fn between(
        &self,
        a: i64,
        ctx: &mut daemonic::worker::WorkerContext,
        b: i64,
    ) -> (i64, Option<u64>) {
        (a - b, ctx.call_id())
    }

    /// Last, named `ctx`, taken shared.
    pub fn last(&mut self, a: i64, ctx: &WorkerContext) -> (i64, u32) {
        (a, ctx.pid())
    }
}

fn pool() -> WorkerPoolBuilder<Calc> {
    WorkerPool::builder(Calc)
        .size(1)
        .call_timeout(Duration::from_secs(30))
}

#[actix::test]
async fn call_returns_the_value_of_a_plain_method() {
    let pool = pool().start().unwrap();
    let sum: Result<i64, CallError> = pool.call(calc::Add { a: 2, b: 3 }).await;
    assert_eq!(sum, Ok(5));
}

#[actix::test]
async fn call_unwraps_the_ok_of_a_method_returning_result() {
    let pool = pool().start().unwrap();
    let q: Result<i64, CallError<DivByZero>> = pool.call(calc::Divide { a: 7, b: 2 }).await;
    assert_eq!(q, Ok(3));
    let n = pool.call(calc::Parse { text: "42".into() }).await;
    assert_eq!(n.unwrap(), 42);
}

#[actix::test]
async fn a_method_error_is_call_error_method() {
    let pool = pool().start().unwrap();
    let e = pool.call(calc::Divide { a: 7, b: 0 }).await.unwrap_err();
    assert_eq!(e, CallError::Method(DivByZero));
    assert_eq!(e.to_string(), "division by zero", "logged as is");
    assert_eq!((e.kind(), e.method_error()), ("method", Some(&DivByZero)));
    // Through `?` into the caller's own error type.
    async fn half(pool: &Addr<WorkerPool<Calc>>, n: i64) -> Result<i64, CallError<DivByZero>> {
        let q = pool.call(calc::Divide { a: n, b: 0 }).await?;
        Ok(q / 2)
    }
    assert!(matches!(
        half(&pool, 4).await,
        Err(CallError::Method(DivByZero))
    ));
    let e = pool
        .call(calc::Parse { text: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "\"x\": invalid digit found in string");
}

#[actix::test]
async fn a_worker_failure_is_call_error_worker() {
    let pool = pool().max_payload(1024).start().unwrap();
    let e = pool.call(calc::Boom {}).await.unwrap_err();
    assert!(
        matches!(&e, CallError::Worker(WorkerError::Panicked { message }) if message.contains("boom")),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("worker method panicked: boom"),
        "{e}"
    );
    assert_eq!(e.kind(), "panicked");
    // Refused before it is sent.
    let e = pool
        .call(calc::Echo {
            bytes: vec![0; 4096],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CallError::Worker(WorkerError::TooLarge { max: 1024, .. })
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), "too_large");
}

#[test]
fn a_pool_that_is_gone_is_call_error_mailbox() {
    let system = actix::System::new();
    system.block_on(async {
        // The pool lives on an arbiter of its own, which then stops: its
        // actor is dropped and its mailbox closes.
        let arbiter = actix::Arbiter::new();
        let pool = pool().arbiter(arbiter.handle()).start().unwrap();
        assert_eq!(pool.call(calc::Add { a: 1, b: 1 }).await, Ok(2));
        arbiter.stop();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.connected() {
            assert!(
                std::time::Instant::now() < deadline,
                "the arbiter never stopped"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let e = pool.call(calc::Add { a: 1, b: 1 }).await.unwrap_err();
        assert_eq!(e, CallError::Mailbox(actix::MailboxError::Closed));
        assert_eq!(e.kind(), "mailbox");
        assert_eq!(e.to_string(), "worker pool unavailable: Mailbox has closed");
    });
}

#[actix::test]
async fn send_keeps_the_actix_layers() {
    let pool = pool().start().unwrap();
    let nested: Result<Result<Result<i64, DivByZero>, WorkerError>, actix::MailboxError> =
        pool.send(calc::Divide { a: 7, b: 0 }).await;
    assert_eq!(nested, Ok(Ok(Err(DivByZero))));
}

#[actix::test]
async fn a_method_sees_its_pid_call_id_and_deadline() {
    let returned = Arc::new(Mutex::new(Vec::new()));
    let ids = returned.clone();
    let pool = pool()
        .name("ctx")
        .on_return(move |r| ids.lock().push((r.method, r.call_id)))
        .start()
        .unwrap();
    let first = pool.call(calc::Seen {}).await.unwrap();
    let second = pool.call(calc::Seen {}).await.unwrap();
    assert_ne!(first.pid, std::process::id(), "it ran in a worker process");
    assert_eq!(first.role, "worker:ctx");
    let (a, b) = (first.call_id.unwrap(), second.call_id.unwrap());
    assert_ne!(a, b, "each call has its own id");
    assert_eq!(
        returned.lock().as_slice(),
        &[("seen", a), ("seen", b)],
        "the ids are the ones the daemon sees"
    );
    // The pool's 30 s timeout, as time left when the method ran.
    let left = first.remaining.expect("a call timeout gives a deadline");
    assert!(
        left > Duration::from_secs(20) && left <= Duration::from_secs(30),
        "{left:?}"
    );

    let (diff, id) = pool.call(calc::Between { a: 5, b: 3 }).await.unwrap();
    assert_eq!(diff, 2);
    assert!(id.is_some_and(|id| id > b));
    let (a, pid) = pool.call(calc::Last { a: 9 }).await.unwrap();
    assert_eq!((a, pid), (9, first.pid));
}

#[actix::test]
async fn without_a_call_timeout_there_is_no_deadline() {
    let pool = WorkerPool::builder(Calc).size(1).start().unwrap();
    let seen = pool.call(calc::Seen {}).await.unwrap();
    assert_eq!(seen.remaining, None);
    assert!(seen.call_id.is_some());
}

#[actix::test]
async fn inline_methods_get_a_context_too() {
    let pool = WorkerPool::builder(Calc).inline().start().unwrap();
    let seen = pool.call(calc::Seen {}).await.unwrap();
    assert_eq!(seen.pid, std::process::id(), "inline: this process");
    assert!(seen.call_id.is_some());
    assert_eq!(pool.call(calc::Between { a: 1, b: 1 }).await.unwrap().0, 0);
}
