//! A worker in a nested module, its `impl` block written in another module
//! through a path, and a message argument type from the worker's module.

mod outer {
    pub mod inner {
        use serde::{Deserialize, Serialize};

        #[derive(Serialize, Deserialize)]
        pub struct Job {
            pub id: u32,
        }

        #[daemonic::worker]
        #[derive(Clone, Serialize, Deserialize)]
        pub struct Runner;
    }

    use inner::Job;

    #[daemonic::worker]
    impl inner::Runner {
        pub fn run(&mut self, job: Job) -> u32 {
            job.id
        }

        /// `Self` in a signature means the worker, not the message type.
        pub fn merged(&self, other: Self) -> Self {
            other
        }

        pub(crate) fn run_crate(&mut self) {}

        pub(super) fn run_super(&mut self) {}
    }

    #[allow(dead_code)]
    async fn usage(pool: daemonic::actix::Addr<daemonic::worker::WorkerPool<inner::Runner>>) {
        let _ = pool.send(runner::RunSuper {}).await;
    }
}

#[allow(dead_code)]
async fn usage(pool: daemonic::actix::Addr<daemonic::worker::WorkerPool<outer::inner::Runner>>) {
    let _ = pool.send(outer::runner::Run { job: outer::inner::Job { id: 1 } }).await;
    let _ = pool.send(outer::runner::RunCrate {}).await;
}

fn main() {}
