//! cepheus: a complex event processing service.
//!
//! Producers POST events about keyed entities; operators register declarative
//! temporal pattern rules; cepheus evaluates every rule against each entity's
//! stream and publishes alerts the moment a pattern completes.
//!
//! The pattern engine ([`engine`]) is a pure library: it is fed events and
//! time and returns alerts. Everything else is a thin shell around it.
#![deny(missing_docs)]

pub mod actors;
pub mod api;
pub mod backtest;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod delivery;
pub mod engine;
pub mod event;
pub mod ingest;
pub mod journal;
pub mod migrate;
pub mod rules;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod time;
