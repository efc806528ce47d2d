//! A worker declared inside a function. Its argument types must be nameable
//! from the enclosing module (a module, even one declared in a function,
//! cannot see the function's items). Runs a real pool (a child process forked
//! by the fork server) to show the worker is registered and dispatched, not
//! only that it compiles.

use daemonic::worker::{WorkerError, WorkerPool};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A module-level type used as an argument by a function-local worker.
#[derive(Serialize, Deserialize)]
pub struct Point {
    x: i64,
    y: i64,
}

fn main() {
    #[daemonic::worker]
    #[derive(Clone, Serialize, Deserialize)]
    struct Scaler {
        factor: i64,
    }

    #[daemonic::worker]
    impl Scaler {
        pub fn scale(&mut self, p: Point) -> i64 {
            (p.x + p.y) * self.factor
        }

        pub fn factor(&self) -> i64 {
            self.factor
        }
    }

    let system = daemonic::actix::System::new();
    system.block_on(async {
        let pool = WorkerPool::builder(Scaler { factor: 3 })
            .size(1)
            .call_timeout(Duration::from_secs(10))
            .start()
            .expect("pool starts");
        let scaled: Result<i64, WorkerError> = pool
            .send(scaler::Scale { p: Point { x: 1, y: 2 } })
            .await
            .expect("pool answers");
        assert_eq!(scaled, Ok(9));
        assert_eq!(pool.send(scaler::Factor {}).await.expect("answers"), Ok(3));
    });
}
