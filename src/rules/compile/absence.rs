//! Checks and compiles `absence:`.

use super::Checker;
use crate::rules::expr::Scope;
use crate::rules::model::AbsencePattern;
use crate::rules::schema::AbsenceDoc;

impl Checker<'_> {
    pub(super) fn absence(&mut self, doc: &AbsenceDoc) -> Option<AbsencePattern> {
        let scope = Scope::default();
        // `Err` when `after` is given but does not compile.
        let after = match doc.after.as_deref() {
            None => Ok(None),
            Some(source) => self
                .expression("absence.after", source, &scope)
                .map(Some)
                .ok_or(()),
        };
        let expect = self.expression("absence.expect", &doc.expect, &scope);
        let within = self.duration("absence.within", &doc.within);
        // NB: every part is checked before any is required, so all problems are reported.
        Some(AbsencePattern {
            after: after.ok()?,
            expect: expect?,
            within: within?,
        })
    }
}
