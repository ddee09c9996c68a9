//! Prints the phase machine as a Mermaid diagram, then its transitions with their outputs
//! and duties as a Markdown table, for machines/README.md.
fn main() {
    print!("```mermaid\n{}```\n\n", neurallog_machines::mermaid());
    print!("{}", neurallog_machines::duty_table());
}
