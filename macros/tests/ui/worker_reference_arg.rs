use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Greeter {
    greeting: String,
}

#[daemonic::worker]
impl Greeter {
    pub fn greet(&mut self, name: &str) -> String {
        format!("{} {name}", self.greeting)
    }
}

fn main() {}
