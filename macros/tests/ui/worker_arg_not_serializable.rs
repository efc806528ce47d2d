use serde::{Deserialize, Serialize};

struct Config {
    verbose: bool,
}

#[daemonic::worker]
#[derive(Serialize, Deserialize)]
struct Loader {
    loaded: u32,
}

#[daemonic::worker]
impl Loader {
    pub fn load(&mut self, config: Config) -> u32 {
        if config.verbose {
            self.loaded += 1;
        }
        self.loaded
    }
}

fn main() {}
