#[daemonic::worker]
enum Mode {
    Fast,
    Slow,
}

#[daemonic::worker]
fn helper() {}

fn main() {
    let _ = Mode::Fast;
    let _ = Mode::Slow;
    helper();
}
