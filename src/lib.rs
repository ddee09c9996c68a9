//! The NeuralLog tenant operator: an event-sourced state-machine reconciler for `Tenant`s.

pub mod auth;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod http;
pub mod journal;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod redis_config;
pub mod render;
pub mod validation;
