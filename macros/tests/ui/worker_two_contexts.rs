use daemonic::WorkerContext;
use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Twice;

#[daemonic::worker]
impl Twice {
    pub fn both(&mut self, ctx: &mut WorkerContext, again: &mut WorkerContext) -> u32 {
        let _ = (ctx, again);
        0
    }
}

fn main() {}
