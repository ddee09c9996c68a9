//! Unit tests of the pass without a cluster: `fixtures` holds the scripted API server, the
//! journal and the Auth stub; `pass` the scenarios.

mod fixtures;
mod pass;
mod resize;
mod verdicts;
