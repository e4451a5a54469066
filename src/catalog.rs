//! The rule catalog: stored rules, compiled, and handed to the engine.
//!
//! Every change (create, replace, delete, enable, disable) is written to the
//! store, then the engine's rule set is rebuilt and swapped in; live
//! entities re-align on their next message and passivated ones when they
//! wake, so rules change without a restart. A replaced rule starts with
//! empty per-key state (DESIGN §3).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::actors::{wall_now, Runtime};
use crate::engine::RuleSet;
use crate::rules::{self, Format, Problem, Rule, RuleDocument, RuleLimits};
use crate::store::rules::StoredRule;
use crate::store::{Store, StoreError};

/// Why a catalog operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// The rule is invalid; every problem is listed.
    #[error("the rule is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<Problem>),
    /// Creating a rule whose id exists.
    #[error("a rule with id `{0}` already exists; replace it with PUT /v1/rules/{0}")]
    Exists(String),
    /// No rule with that id.
    #[error("no rule with id `{0}`")]
    NotFound(String),
    /// `keep` was asked for a replacement that changes the pattern's shape.
    #[error("the state of version {version} cannot be kept: {reason}; replace with the `reset` state policy")]
    CannotKeepState {
        /// The current version.
        version: u64,
        /// What changed.
        reason: String,
    },
    /// The id in the body differs from the id in the path.
    #[error("the document's id `{body}` differs from the id `{path}` in the path")]
    IdMismatch {
        /// Id in the path.
        path: String,
        /// Id in the body.
        body: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a replacement does with the per-key state of the previous version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatePolicy {
    /// Drop it: the new version starts empty (default).
    #[default]
    Reset,
    /// Keep it: allowed only when the pattern's shape is unchanged
    /// (`rules::shape`), e.g. a new threshold value or message.
    Keep,
}

/// A change of the catalog, as the scale-out mode shares it between
/// instances (the rules topic, `src/cluster.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum RuleChange {
    /// A rule stored (created, replaced, enabled or disabled).
    Stored(Box<StoredRule>),
    /// A rule deleted.
    Deleted(String),
}

/// The catalog of rules.
pub struct Catalog {
    store: Store,
    limits: RuleLimits,
    /// Compiled current rules by id; the lock also serializes changes.
    compiled: Mutex<BTreeMap<String, (StoredRule, Arc<Rule>)>>,
    /// Where local changes are told (the scale-out mode's rule log).
    changes: Mutex<Option<std::sync::mpsc::Sender<RuleChange>>>,
}

impl Catalog {
    /// Loads and compiles every stored rule. A stored rule that no longer
    /// compiles (e.g. after an upgrade tightened a limit) is left out with
    /// an error in the log, not silently dropped from the store.
    pub fn open(store: Store, limits: RuleLimits) -> Result<Catalog, StoreError> {
        let mut compiled = BTreeMap::new();
        for stored in store.rules().list()? {
            match compile_stored(&stored, &limits) {
                Ok(rule) => {
                    compiled.insert(stored.document.id.clone(), (stored, Arc::new(rule)));
                }
                Err(problems) => tracing::error!(
                    rule = %stored.document.id,
                    problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "stored rule no longer compiles; it is not evaluated"
                ),
            }
        }
        Ok(Catalog {
            store,
            limits,
            compiled: Mutex::new(compiled),
            changes: Mutex::new(None),
        })
    }

    /// Tells every later local change to `changes` (the scale-out mode
    /// shares them through the rules topic).
    pub fn tell_changes(&self, changes: std::sync::mpsc::Sender<RuleChange>) {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(changes);
    }

    fn told(&self, change: RuleChange) {
        if let Some(tx) = &*self.changes.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(change);
        }
    }

    /// Applies a change made on another instance (read from the rules
    /// topic, in its order): a stored rule replaces the local one unless
    /// the local one is newer; the same version with another document
    /// (two instances changed it at once) takes the topic's, so every
    /// instance ends with the topic's last record. Returns whether
    /// anything changed.
    pub fn apply_remote(
        &self,
        runtime: &Runtime,
        change: RuleChange,
    ) -> Result<bool, CatalogError> {
        let mut compiled = self.lock();
        match change {
            RuleChange::Stored(stored) => {
                let stored = *stored;
                if let Some((local, _)) = compiled.get(&stored.document.id) {
                    if local.version > stored.version || *local == stored {
                        return Ok(false);
                    }
                }
                let rule = compile_stored(&stored, &self.limits).map_err(CatalogError::Invalid)?;
                self.store.rules().put(&stored)?;
                compiled.insert(stored.document.id.clone(), (stored, Arc::new(rule)));
            }
            RuleChange::Deleted(id) => {
                if compiled.remove(&id).is_none() {
                    return Ok(false);
                }
                self.store.rules().delete(&id)?;
            }
        }
        runtime.set_rules(RuleSet::new(compiled.values().map(|(_, r)| Arc::clone(r))));
        Ok(true)
    }

    /// The rule set to evaluate now.
    pub fn rule_set(&self) -> RuleSet {
        let compiled = self.lock();
        RuleSet::new(compiled.values().map(|(_, rule)| Arc::clone(rule)))
    }

    /// Every current rule, by id.
    pub fn list(&self) -> Vec<StoredRule> {
        self.lock()
            .values()
            .map(|(stored, _)| stored.clone())
            .collect()
    }

    /// The current version of rule `id`.
    pub fn get(&self, id: &str) -> Option<StoredRule> {
        self.lock().get(id).map(|(stored, _)| stored.clone())
    }

    /// Checks a rule text without saving it.
    pub fn validate(&self, text: &str, format: Format) -> Result<Rule, CatalogError> {
        rules::load(text, format, 1, &self.limits).map_err(CatalogError::Invalid)
    }

    /// Creates a rule from text.
    pub fn create(
        &self,
        runtime: &Runtime,
        text: &str,
        format: Format,
    ) -> Result<StoredRule, CatalogError> {
        let document = self.read(text, format)?;
        let mut compiled = self.lock();
        if compiled.contains_key(&document.id) {
            return Err(CatalogError::Exists(document.id));
        }
        // A deleted rule's history is kept: a re-created rule continues its
        // version numbers, so alert ids never repeat.
        let version = self.store.rules().latest_version(&document.id)? + 1;
        let now = wall_now();
        self.commit(
            runtime,
            &mut compiled,
            StoredRule {
                document,
                version,
                created_at: now,
                updated_at: now,
                state_since: version,
            },
        )
    }

    /// Replaces rule `id` with the rule in `text` (version + 1); `policy`
    /// says whether entities keep the previous version's state.
    pub fn replace(
        &self,
        runtime: &Runtime,
        id: &str,
        text: &str,
        format: Format,
        policy: StatePolicy,
    ) -> Result<StoredRule, CatalogError> {
        let document = self.read(text, format)?;
        if document.id != id {
            return Err(CatalogError::IdMismatch {
                path: id.to_owned(),
                body: document.id,
            });
        }
        let mut compiled = self.lock();
        let Some((previous, previous_rule)) = compiled.get(id) else {
            return Err(CatalogError::NotFound(id.to_owned()));
        };
        let version = previous.version + 1;
        let state_since = match policy {
            StatePolicy::Reset => version,
            StatePolicy::Keep => {
                let candidate = rules::check_document(&document, version, &self.limits)
                    .map_err(CatalogError::Invalid)?;
                if let Some(reason) = rules::shape::incompatibility(previous_rule, &candidate) {
                    return Err(CatalogError::CannotKeepState {
                        version: previous.version,
                        reason,
                    });
                }
                previous.state_since()
            }
        };
        let stored = StoredRule {
            document,
            version,
            created_at: previous.created_at,
            updated_at: wall_now(),
            state_since,
        };
        self.commit(runtime, &mut compiled, stored)
    }

    /// Enables or disables rule `id`. A disabled rule keeps no state, so
    /// enabling one stores it as a new version that starts afresh (entities
    /// passivated while it was disabled may still hold the old state, which
    /// the new version does not continue); disabling keeps the version.
    pub fn set_enabled(
        &self,
        runtime: &Runtime,
        id: &str,
        enabled: bool,
    ) -> Result<StoredRule, CatalogError> {
        let mut compiled = self.lock();
        let Some((previous, _)) = compiled.get(id) else {
            return Err(CatalogError::NotFound(id.to_owned()));
        };
        if previous.document.enabled == enabled {
            return Ok(previous.clone());
        }
        let mut stored = previous.clone();
        stored.document.enabled = enabled;
        stored.updated_at = wall_now();
        if enabled {
            stored.version += 1;
            stored.state_since = stored.version;
        }
        self.commit(runtime, &mut compiled, stored)
    }

    /// Every stored version of rule `id`, oldest first (deleted rules too).
    pub fn versions(&self, id: &str) -> Result<Vec<StoredRule>, CatalogError> {
        let versions = self.store.rules().versions(id)?;
        if versions.is_empty() {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        Ok(versions)
    }

    /// Version `version` of rule `id`.
    pub fn version(&self, id: &str, version: u64) -> Result<StoredRule, CatalogError> {
        self.store
            .rules()
            .version(id, version)?
            .ok_or_else(|| CatalogError::NotFound(format!("{id} version {version}")))
    }

    /// Compiles a stored version (for backtests).
    pub fn compile_version(&self, stored: &StoredRule) -> Result<Rule, CatalogError> {
        compile_stored(stored, &self.limits).map_err(CatalogError::Invalid)
    }

    /// Compiles a rule text at version 1 without storing it (for backtests).
    pub fn compile_text(&self, text: &str, format: Format) -> Result<Rule, CatalogError> {
        rules::load(text, format, 1, &self.limits).map_err(CatalogError::Invalid)
    }

    /// Deletes rule `id`.
    pub fn delete(&self, runtime: &Runtime, id: &str) -> Result<(), CatalogError> {
        let mut compiled = self.lock();
        if compiled.remove(id).is_none() {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        self.store.rules().delete(id)?;
        runtime.set_rules(RuleSet::new(compiled.values().map(|(_, r)| Arc::clone(r))));
        self.told(RuleChange::Deleted(id.to_owned()));
        Ok(())
    }

    /// Loads every rule file in `dir` (as `cepheus check` reads them):
    /// new ids are created, changed documents replace the stored ones, the
    /// same documents are left alone. Any invalid file refuses them all.
    pub fn load_dir(&self, runtime: &Runtime, dir: &Path) -> Result<usize, Vec<String>> {
        let files = crate::cli::check::rule_files(dir)
            .map_err(|e| vec![format!("{}: {e}", dir.display())])?;
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            match rules::load(
                &text,
                Format::from_path(&file).unwrap_or(Format::Yaml),
                1,
                &self.limits,
            ) {
                Ok(rule) => loaded.push((file, rule.document)),
                Err(problems) => {
                    errors.extend(problems.iter().map(|p| format!("{}: {p}", file.display())))
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut changed = 0;
        for (file, document) in loaded {
            let text = serde_json::to_string(&document).unwrap_or_default();
            let result = match self.get(&document.id) {
                Some(current) if current.document == document => continue,
                Some(_) => self.replace(
                    runtime,
                    &document.id,
                    &text,
                    Format::Json,
                    StatePolicy::Reset,
                ),
                None => self.create(runtime, &text, Format::Json),
            };
            match result {
                Ok(_) => changed += 1,
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
        }
        if errors.is_empty() {
            Ok(changed)
        } else {
            Err(errors)
        }
    }

    fn read(&self, text: &str, format: Format) -> Result<RuleDocument, CatalogError> {
        let rule = rules::load(text, format, 1, &self.limits).map_err(CatalogError::Invalid)?;
        Ok(rule.document)
    }

    /// Stores `stored`, compiles it at its version and swaps the engine's rules.
    fn commit(
        &self,
        runtime: &Runtime,
        compiled: &mut BTreeMap<String, (StoredRule, Arc<Rule>)>,
        stored: StoredRule,
    ) -> Result<StoredRule, CatalogError> {
        let rule = compile_stored(&stored, &self.limits).map_err(CatalogError::Invalid)?;
        self.store.rules().put(&stored)?;
        compiled.insert(stored.document.id.clone(), (stored.clone(), Arc::new(rule)));
        runtime.set_rules(RuleSet::new(compiled.values().map(|(_, r)| Arc::clone(r))));
        self.told(RuleChange::Stored(Box::new(stored.clone())));
        Ok(stored)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (StoredRule, Arc<Rule>)>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compiles a stored rule at its version, continuing the state it says.
fn compile_stored(stored: &StoredRule, limits: &RuleLimits) -> Result<Rule, Vec<Problem>> {
    let mut rule = rules::check_document(&stored.document, stored.version, limits)?;
    rule.state_since = stored.state_since();
    Ok(rule)
}
