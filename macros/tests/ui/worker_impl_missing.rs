use serde::{Deserialize, Serialize};

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Resizer {
    width: u32,
}

// Missing `#[daemonic::worker]`: no message types, no dispatcher.
impl Resizer {
    pub fn resize(&mut self, height: u32) -> u32 {
        self.width * height
    }
}

fn main() {}
