use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[daemonic::worker]
impl Counter {
    pub fn finish(self) -> u64 {
        self.n
    }
}

fn main() {}
