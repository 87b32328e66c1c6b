//! agent-events-load: the load tool (being written).

fn main() {
    eprintln!("agent-events-load: not written yet");
}
