//! The NeuralLog tenant operator: an event-sourced state-machine reconciler for `Tenant`s.

pub mod auth;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod http;
pub mod journal;
pub mod journal_api;
pub mod journal_client;
pub mod journal_recovery;
pub mod journal_slot;
pub mod journal_upkeep;
pub mod journal_view;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod redis_config;
pub mod render;
pub mod replay;
pub mod validation;
