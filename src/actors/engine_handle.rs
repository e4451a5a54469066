//! The engine with the current rules, shared by every actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::engine::{Engine, EngineConfig, RuleSet};

/// The current engine and a generation number that changes with the rules.
pub struct EngineHandle {
    engine: RwLock<Arc<Engine>>,
    config: EngineConfig,
    generation: AtomicU64,
}

impl EngineHandle {
    /// A handle on an engine evaluating `rules`.
    pub fn new(rules: RuleSet, config: EngineConfig) -> EngineHandle {
        EngineHandle {
            engine: RwLock::new(Arc::new(Engine::new(Arc::new(rules), config.clone()))),
            config,
            generation: AtomicU64::new(0),
        }
    }

    /// The engine with the current rules.
    pub fn current(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Swaps in a new rule set.
    pub fn set_rules(&self, rules: RuleSet) {
        let engine = Arc::new(Engine::new(Arc::new(rules), self.config.clone()));
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = engine;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes each time the rules change, so actors can keep their own
    /// handle on the engine and refresh it only then (cloning the shared
    /// handle on every message would make every core write one cache line).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
