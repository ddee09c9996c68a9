//! Replaying a tenant's journal through the phase machine: each recorded input is fed to
//! a step function (the current machine, [`neurallog_machines::step`], or in tests a
//! changed one) starting from `New`, and each result is compared with what was recorded.
//! The first record where the machine now gives another phase or other outputs is a
//! divergence: this is how a change to the machine is checked against real history.

use crate::journal::Record;
use crate::journal::view::{describe_input, format_time, write_table};
use chrono::{DateTime, Utc};
use neurallog_machines::{Action, Input, Phase, Transition};
use std::io::{self, Write};

/// What one record replays to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedStep {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub input: Input,
    pub recorded: Transition,
    /// `None` when the machine now ignores the input.
    pub replayed: Option<Transition>,
}

impl ReplayedStep {
    /// Same phase and same outputs; the message is informational.
    pub fn matches(&self) -> bool {
        self.replayed.as_ref().is_some_and(|replayed| {
            replayed.from == self.recorded.from
                && replayed.to == self.recorded.to
                && replayed.outputs == self.recorded.outputs
        })
    }
}

/// The replay of a chain up to `--to` (or its end), stopped at the first divergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub steps: Vec<ReplayedStep>,
}

impl Replay {
    /// The step that diverged: always the last, when there is one.
    pub fn divergence(&self) -> Option<&ReplayedStep> {
        self.steps.last().filter(|step| !step.matches())
    }
}

/// Feeds `records` (one chain in seq order) through `step` from `New`, up to seq `to`. A
/// chain that retention compacted starts after its checkpoint, from the phase its first
/// kept record starts in (the checkpoint's phase: the two are hash-linked).
pub fn replay(
    records: &[Record],
    to: Option<u64>,
    step: impl Fn(Phase, &Input) -> Option<Transition>,
) -> Replay {
    let mut phase = records
        .first()
        .filter(|first| first.seq > 1)
        .map_or(Phase::New, |first| first.from);
    let mut steps = Vec::new();
    for record in records
        .iter()
        .take_while(|r| to.is_none_or(|to| r.seq <= to))
    {
        let replayed = step(phase, &record.input);
        let done = ReplayedStep {
            seq: record.seq,
            time: record.time,
            input: record.input.clone(),
            recorded: recorded_transition(record),
            replayed,
        };
        let matches = done.matches();
        steps.push(done);
        if !matches {
            break;
        }
        phase = record.to;
    }
    Replay { steps }
}

fn recorded_transition(record: &Record) -> Transition {
    Transition {
        from: record.from,
        to: record.to,
        outputs: record.outputs.clone(),
        message: record.message.clone(),
    }
}

/// The record in force at `at`: the last one at or before it.
pub fn record_at(records: &[Record], at: DateTime<Utc>) -> Option<&Record> {
    records.iter().take_while(|r| r.time <= at).last()
}

fn outputs(actions: &[Action]) -> String {
    comma_list(actions)
}

fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What the operator carries out after `transition`: its outputs' duties and those of its
/// phase (see `machines/README.md`).
fn duties(transition: &Transition) -> String {
    comma_list(&neurallog_machines::plan(
        &transition.outputs,
        transition.to,
    ))
}

/// One line per step, then recorded vs replayed side by side at a divergence.
pub fn write_replay(out: &mut impl Write, replay: &Replay) -> io::Result<()> {
    let rows = replay.steps.iter().map(|step| {
        let verdict = if step.matches() { "same" } else { "DIVERGES" };
        vec![
            step.seq.to_string(),
            format_time(&step.time),
            describe_input(&step.input),
            format!("{} -> {}", step.recorded.from, step.recorded.to),
            outputs(&step.recorded.outputs),
            verdict.to_owned(),
        ]
    });
    write_table(
        out,
        &["SEQ", "TIME", "INPUT", "RECORDED", "OUTPUTS", "REPLAY"],
        rows.collect(),
    )?;
    match replay.divergence() {
        Some(step) => write_divergence(out, step),
        None => writeln!(
            out,
            "replay matches the journal: {} step(s)",
            replay.steps.len()
        ),
    }
}

fn write_divergence(out: &mut impl Write, step: &ReplayedStep) -> io::Result<()> {
    writeln!(out, "\nfirst divergence at seq {}:", step.seq)?;
    let recorded = &step.recorded;
    let side = |f: &dyn Fn(&Transition) -> String| {
        step.replayed
            .as_ref()
            .map_or_else(|| "(no transition)".to_owned(), f)
    };
    let rows = vec![
        vec![
            "from".into(),
            recorded.from.to_string(),
            side(&|t| t.from.to_string()),
        ],
        vec![
            "to".into(),
            recorded.to.to_string(),
            side(&|t| t.to.to_string()),
        ],
        vec![
            "outputs".into(),
            outputs(&recorded.outputs),
            side(&|t| outputs(&t.outputs)),
        ],
        vec!["duties".into(), duties(recorded), side(&|t| duties(t))],
        vec![
            "message".into(),
            recorded.message.clone(),
            side(&|t| t.message.clone()),
        ],
    ];
    write_table(out, &["", "RECORDED", "REPLAYED"], rows)
}

/// `replay --at`: the phase and message in force at `at`.
pub fn write_at(
    out: &mut impl Write,
    tenant: &str,
    records: &[Record],
    at: DateTime<Utc>,
) -> io::Result<()> {
    match record_at(records, at) {
        Some(record) => writeln!(
            out,
            "at {}: tenant {tenant} was {} (since seq {} at {}, generation {}): {}",
            format_time(&at),
            record.to,
            record.seq,
            format_time(&record.time),
            record.generation,
            record.message
        ),
        None => writeln!(
            out,
            "at {}: tenant {tenant} was not yet observed (phase {}); its first record is at {}",
            format_time(&at),
            Phase::New,
            records
                .first()
                .map_or_else(|| "-".to_owned(), |r| format_time(&r.time))
        ),
    }
}

#[cfg(test)]
mod tests;
