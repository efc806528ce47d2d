use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Store {
    items: Vec<String>,
}

#[daemonic::worker]
impl Store {
    pub fn put<T: ToString>(&mut self, item: T) -> usize {
        self.items.push(item.to_string());
        self.items.len()
    }
}

fn main() {}
