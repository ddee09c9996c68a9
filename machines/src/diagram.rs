//! A Mermaid state diagram generated from the machine itself, by asking it every
//! (phase, trigger) pair, so the picture cannot disagree with the code.

use crate::{Input, Phase, Trigger, step};
use std::fmt::Write;

/// The machine as a Mermaid `stateDiagram-v2`, one edge per transition, labelled
/// `Trigger / Action`.
pub fn mermaid() -> String {
    let mut out = String::from("stateDiagram-v2\n    [*] --> New\n");
    for from in Phase::ALL {
        for trigger in Trigger::ALL {
            if let Some(t) = step(from, &Input::new(trigger, 0)) {
                let actions: Vec<String> = t.outputs.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(
                    out,
                    "    {} --> {}: {} / {}",
                    from,
                    t.to,
                    trigger,
                    actions.join(", ")
                );
            }
        }
    }
    out.push_str("    Deleted --> [*]\n");
    out
}
