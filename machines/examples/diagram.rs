//! Prints the phase machine as a Mermaid diagram for machines/README.md.
fn main() {
    print!("```mermaid\n{}```\n", neurallog_machines::mermaid());
}
