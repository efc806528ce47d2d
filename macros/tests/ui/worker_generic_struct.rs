use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Cache<T> {
    items: Vec<T>,
}

#[daemonic::worker]
impl<T> Cache<T> {
    pub fn len(&mut self) -> usize {
        self.items.len()
    }
}

fn main() {
    let mut cache = Cache::<u8> { items: Vec::new() };
    let _ = cache.len();
}
