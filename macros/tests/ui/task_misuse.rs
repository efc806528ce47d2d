use daemonic::task::{Task, TaskContext};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

// Not a `Task` impl.
#[daemonic::task]
impl SendEmail {
    fn address(&self) -> &str {
        &self.to
    }
}

#[derive(Serialize, Deserialize)]
struct Cleanup;

// Arguments are not accepted.
#[daemonic::task(max_concurrent = 2)]
impl Task for Cleanup {
    fn run(self, _ctx: &mut TaskContext) -> Result<(), daemonic::BoxError> {
        Ok(())
    }
}

fn main() {
    let email = SendEmail { to: "a@b.c".into() };
    let _ = email.address();
}
