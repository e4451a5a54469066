//! Static facts about a compiled expression that the engine uses to skip
//! work: which event types it can accept, and which sequence steps it reads.

use std::collections::BTreeSet;

use super::node::{Node, Path, Root};
use super::value::Val;

/// The event types for which `node` can possibly be true; `None` when it
/// could be true for any type.
///
/// Derived from `type == "x"` and `type in [...]` through `&&`
/// (intersection: both must hold) and `||` (union: either may); anything
/// else is "any type", except the constant `false`, which accepts none.
pub(crate) fn accepted_types(node: &Node) -> Option<BTreeSet<String>> {
    match node {
        Node::TypeIs(t) => Some(BTreeSet::from([t.to_string()])),
        Node::TypeIn(ts) => Some(ts.iter().map(|t| t.to_string()).collect()),
        Node::Const(Val::Bool(false)) => Some(BTreeSet::new()),
        Node::And(items) => items
            .iter()
            .filter_map(accepted_types)
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Node::Or(items) => {
            let mut union = BTreeSet::new();
            for item in items.iter() {
                union.extend(accepted_types(item)?);
            }
            Some(union)
        }
        _ => None,
    }
}

/// Adds to `slots` every binding slot `node` reads.
pub(crate) fn binding_slots(node: &Node, slots: &mut BTreeSet<usize>) {
    let read = match node {
        Node::Attr(source, _) | Node::BoundEvent(source) => source.slot(),
        Node::Path(path) | Node::HasPath(path) => path_slot(path),
        Node::Count(slot) | Node::Bound(slot) => Some(*slot),
        _ => None,
    };
    slots.extend(read);
    node.for_each_child(&mut |child| binding_slots(child, slots));
}

fn path_slot(path: &Path) -> Option<usize> {
    match path.root {
        Root::Data(source) => source.slot(),
        Root::Entity | Root::Variable(_) => None,
    }
}
