//! A worker method may take the worker's context: `&mut WorkerContext` (by
//! any path) or any reference named `ctx`, in any position, in plain and
//! `async` methods. It is not a field of the message. Runs a real pool.

use daemonic::prelude::*;
use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Greeter {
    greeting: String,
}

#[daemonic::worker]
impl Greeter {
    pub fn first(&mut self, ctx: &mut WorkerContext, name: String) -> String {
        ctx.log(format_args!("greeting {name}"));
        format!("{} {name} from {}", self.greeting, ctx.pid())
    }

    pub fn middle(&mut self, a: u32, context: &mut daemonic::worker::WorkerContext, b: u32) -> u32 {
        let _ = context.call_id();
        a + b
    }

    pub fn last(&self, n: u32, ctx: &WorkerContext) -> bool {
        n > 0 && ctx.deadline().is_none()
    }

    pub async fn later(&self, ctx: &mut WorkerContext, n: u32) -> Option<u64> {
        let _ = n;
        ctx.call_id()
    }
}

fn main() {
    let system = daemonic::actix::System::new();
    system.block_on(async {
        let pool = WorkerPool::builder(Greeter {
            greeting: "hello".into(),
        })
        .size(1)
        .start()
        .expect("pool starts");
        let greeting = pool
            .call(greeter::First { name: "ann".into() })
            .await
            .expect("answers");
        assert!(greeting.starts_with("hello ann from "), "{greeting}");
        assert_eq!(pool.call(greeter::Middle { a: 1, b: 2 }).await, Ok(3));
        assert_eq!(pool.call(greeter::Last { n: 1 }).await, Ok(true));
        assert!(pool.call(greeter::Later { n: 1 }).await.expect("answers").is_some());
    });
}
