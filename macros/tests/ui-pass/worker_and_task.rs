use daemonic::task::{Task, TaskContext};
use daemonic::worker::{WorkerContext, WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
pub struct Calc {
    offset: i64,
}

#[daemonic::worker]
impl Calc {
    /// An associated function: stays an ordinary constructor, not a message.
    pub fn new(offset: i64) -> Self {
        Self { offset }
    }

    fn started(&mut self, ctx: &mut WorkerContext) {
        ctx.log("ready");
    }

    fn stopping(&mut self, ctx: &mut WorkerContext) {
        ctx.log("bye");
    }

    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        a + b + self.offset
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn names(&mut self, names: Vec<String>) -> Result<usize, String> {
        Ok(names.len())
    }

    pub async fn add_later(&mut self, a: i64) -> i64 {
        a + self.offset
    }

    // Not public: not a worker method.
    fn helper(&self) -> i64 {
        self.offset
    }
}

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

#[daemonic::task]
impl Task for SendEmail {
    fn run(self, ctx: &mut TaskContext) -> Result<(), daemonic::BoxError> {
        ctx.log(format_args!("sending to {}", self.to));
        Ok(())
    }
}

#[allow(dead_code)]
async fn usage(pool: daemonic::actix::Addr<WorkerPool<Calc>>) {
    let _calc = Calc::new(1);
    let sum: Result<i64, WorkerError> = pool.send(calc::Add { a: 1, b: 2 }).await.unwrap();
    let _ = sum;
    let _ = pool.send(calc::Offset {}).await;
    let _ = pool.send(calc::Names { names: vec![] }).await;
    let _ = pool.send(calc::AddLater { a: 1 }).await;
}

fn main() {
    let calc = Calc { offset: 1 };
    let _ = calc.helper();
    let _ = <SendEmail as daemonic::task::RegisteredTask>::NAME;
    let _ = daemonic::worker::WorkerPool::builder(calc);
}
