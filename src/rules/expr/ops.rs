//! Operators on values: equality, ordering, arithmetic and `in`.
//!
//! Numbers of different kinds (int, uint, double) compare by their exact
//! mathematical value, as CEL's heterogeneous comparison does, so
//! `data.amount > 1000` holds for `1000.5` and `1001` alike. Arithmetic is
//! more lenient than CEL's: mixing a double with an int or uint computes in
//! doubles, and mixing an int with a uint computes exactly and gives an int
//! when the result fits (a uint when only that fits).

use std::borrow::Cow;
use std::cmp::Ordering;

use super::error::EvalError;
use super::value::{key_equals, List, MapVal, Val};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// The operator that gives the same answer with its operands swapped
    /// (`1 < x` is `x > 1`).
    pub(crate) fn swapped(self) -> Cmp {
        match self {
            Cmp::Eq => Cmp::Eq,
            Cmp::Ne => Cmp::Ne,
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    /// `+`: numbers, string and list concatenation, time plus duration.
    Add,
    /// `-`: numbers, timestamps and durations.
    Sub,
    /// `*`
    Mul,
    /// `/`: integer division truncates; dividing an integer by zero fails.
    Div,
    /// `%`: integers only.
    Rem,
}

impl Arith {
    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Rem => "%",
        }
    }
}

/// Applies a comparison. Equality never fails (values of different types are
/// unequal); ordering fails for types without an order. Comparisons with
/// NaN are false.
pub(crate) fn compare(a: &Val<'_>, op: Cmp, b: &Val<'_>) -> Result<bool, EvalError> {
    match op {
        Cmp::Eq => Ok(equals(a, b)),
        Cmp::Ne => Ok(!equals(a, b)),
        _ => {
            let Some(ord) = order(a, b).ok_or(EvalError::WrongTypes(op.symbol()))? else {
                return Ok(false);
            };
            Ok(match op {
                Cmp::Lt => ord == Ordering::Less,
                Cmp::Le => ord != Ordering::Greater,
                Cmp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
    }
}

/// CEL equality: numbers by value across int, uint and double; lists
/// element by element; maps by keys and values; everything else only
/// against the same type.
pub(crate) fn equals(a: &Val<'_>, b: &Val<'_>) -> bool {
    if let Some(ord) = numeric_order(a, b) {
        return ord == Some(Ordering::Equal);
    }
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Timestamp(x), Val::Timestamp(y)) => x == y,
        (Val::Duration(x), Val::Duration(y)) => x == y,
        (Val::Event(x), Val::Event(y)) => x == y,
        (Val::List(x), Val::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equals(&p, &q))
        }
        (Val::Map(x), Val::Map(y)) => {
            x.len() == y.len()
                && x.entries()
                    .all(|(k, v)| y.get(&k).is_some_and(|w| equals(&v, &w)))
        }
        _ => false,
    }
}

/// The order of two values: `None` when the types have no common order,
/// `Some(None)` when they are unordered numbers (NaN).
fn order(a: &Val<'_>, b: &Val<'_>) -> Option<Option<Ordering>> {
    if let Some(ord) = numeric_order(a, b) {
        return Some(ord);
    }
    Some(Some(match (a, b) {
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::Timestamp(x), Val::Timestamp(y)) => x.cmp(y),
        (Val::Duration(x), Val::Duration(y)) => x.cmp(y),
        _ => return None,
    }))
}

/// The exact order of two numbers of any kinds; `None` unless both are
/// numbers.
fn numeric_order(a: &Val<'_>, b: &Val<'_>) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Uint(x), Val::Uint(y)) => Some(x.cmp(y)),
        (Val::Double(x), Val::Double(y)) => x.partial_cmp(y),
        (Val::Int(x), Val::Uint(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Val::Uint(x), Val::Int(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Val::Int(x), Val::Double(y)) => int_vs_double(i128::from(*x), *y),
        (Val::Uint(x), Val::Double(y)) => int_vs_double(i128::from(*x), *y),
        (Val::Double(x), Val::Int(y)) => int_vs_double(i128::from(*y), *x).map(Ordering::reverse),
        (Val::Double(x), Val::Uint(y)) => int_vs_double(i128::from(*y), *x).map(Ordering::reverse),
        _ => return None,
    })
}

/// Compares an integer (any i64 or u64, widened) with a double exactly,
/// without the rounding of converting the integer to a double.
fn int_vs_double(i: i128, d: f64) -> Option<Ordering> {
    // 2^64: every i64 and u64 lies strictly inside (-2^64, 2^64).
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if d.is_nan() {
        return None;
    }
    if d >= LIMIT {
        return Some(Ordering::Less);
    }
    if d <= -LIMIT {
        return Some(Ordering::Greater);
    }
    let whole = d.trunc();
    // NB: exact: `whole` is integral and within ±2^64, which i128 holds.
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(d - whole)),
        other => Some(other),
    }
}

/// `needle in container`: membership in a list, or among a map's keys.
pub(crate) fn contains(container: &Val<'_>, needle: &Val<'_>) -> Result<bool, EvalError> {
    match container {
        Val::List(list) => Ok(list.iter().any(|item| equals(&item, needle))),
        Val::Map(map) => match needle {
            Val::Str(_) | Val::Int(_) | Val::Uint(_) | Val::Bool(_) | Val::Double(_) => {
                Ok(map.contains_key(needle) || numeric_key_match(map, needle))
            }
            // As CEL: a value that cannot be a key is an error, not absent.
            _ => Err(EvalError::WrongTypes("in")),
        },
        _ => Err(EvalError::WrongTypes("in")),
    }
}

/// A double needle such as `1.0` finds the integer key `1`, as CEL's
/// heterogeneous equality implies.
fn numeric_key_match(map: &MapVal<'_>, needle: &Val<'_>) -> bool {
    match needle {
        Val::Double(d) if d.fract() == 0.0 => map.entries().any(|(k, _)| {
            matches!(k, Val::Int(_) | Val::Uint(_))
                && numeric_order(&k, needle) == Some(Some(Ordering::Equal))
        }),
        _ => false,
    }
}

/// Applies an arithmetic operator.
pub(crate) fn arith<'a>(op: Arith, a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
    let wrong = EvalError::WrongTypes(op.symbol());
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => int_op(op, x, y).map(Val::Int),
        (Val::Uint(x), Val::Uint(y)) => uint_op(op, x, y).map(Val::Uint),
        (Val::Int(x), Val::Uint(y)) => wide_op(op, i128::from(x), i128::from(y)),
        (Val::Uint(x), Val::Int(y)) => wide_op(op, i128::from(x), i128::from(y)),
        (
            a @ (Val::Int(_) | Val::Uint(_) | Val::Double(_)),
            b @ (Val::Int(_) | Val::Uint(_) | Val::Double(_)),
        ) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => double_op(op, x, y).map(Val::Double).ok_or(wrong),
            _ => Err(wrong),
        },
        (Val::Str(x), Val::Str(y)) if op == Arith::Add => {
            let mut joined = String::with_capacity(x.len() + y.len());
            joined.push_str(&x);
            joined.push_str(&y);
            Ok(Val::Str(Cow::Owned(joined)))
        }
        (Val::List(x), Val::List(y)) if op == Arith::Add => Ok(Val::List(concat(x, y))),
        (Val::Timestamp(t), Val::Duration(d)) | (Val::Duration(d), Val::Timestamp(t))
            if op == Arith::Add =>
        {
            t.0.checked_add(d.0)
                .map(|ms| Val::Timestamp(crate::time::Timestamp(ms)))
                .ok_or(EvalError::Overflow)
        }
        (Val::Timestamp(t), Val::Duration(d)) if op == Arith::Sub => {
            t.0.checked_sub(d.0)
                .map(|ms| Val::Timestamp(crate::time::Timestamp(ms)))
                .ok_or(EvalError::Overflow)
        }
        (Val::Timestamp(x), Val::Timestamp(y)) if op == Arith::Sub => {
            x.0.checked_sub(y.0)
                .map(|ms| Val::Duration(crate::time::Duration(ms)))
                .ok_or(EvalError::Overflow)
        }
        (Val::Duration(x), Val::Duration(y)) if matches!(op, Arith::Add | Arith::Sub) => {
            let ms = if op == Arith::Add {
                x.0.checked_add(y.0)
            } else {
                x.0.checked_sub(y.0)
            };
            ms.map(|ms| Val::Duration(crate::time::Duration(ms)))
                .ok_or(EvalError::Overflow)
        }
        _ => Err(wrong),
    }
}

fn concat<'a>(x: List<'a>, y: List<'a>) -> List<'a> {
    let mut items = Vec::with_capacity(x.len() + y.len());
    items.extend(x.into_items());
    items.extend(y.into_items());
    List::Owned(items)
}

fn int_op(op: Arith, x: i64, y: i64) -> Result<i64, EvalError> {
    if matches!(op, Arith::Div | Arith::Rem) && y == 0 {
        return Err(EvalError::DivisionByZero);
    }
    match op {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        Arith::Mul => x.checked_mul(y),
        Arith::Div => x.checked_div(y),
        Arith::Rem => x.checked_rem(y),
    }
    .ok_or(EvalError::Overflow)
}

fn uint_op(op: Arith, x: u64, y: u64) -> Result<u64, EvalError> {
    if matches!(op, Arith::Div | Arith::Rem) && y == 0 {
        return Err(EvalError::DivisionByZero);
    }
    match op {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        Arith::Mul => x.checked_mul(y),
        Arith::Div => x.checked_div(y),
        Arith::Rem => x.checked_rem(y),
    }
    .ok_or(EvalError::Overflow)
}

/// Int with uint: computed exactly, then narrowed to an int if it fits, a
/// uint if only that fits.
fn wide_op(op: Arith, x: i128, y: i128) -> Result<Val<'static>, EvalError> {
    if matches!(op, Arith::Div | Arith::Rem) && y == 0 {
        return Err(EvalError::DivisionByZero);
    }
    // NB: no overflow possible: both operands are within ±2^64.
    let wide = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x.checked_mul(y).ok_or(EvalError::Overflow)?,
        Arith::Div => x / y,
        Arith::Rem => x % y,
    };
    if let Ok(i) = i64::try_from(wide) {
        Ok(Val::Int(i))
    } else {
        u64::try_from(wide)
            .map(Val::Uint)
            .map_err(|_| EvalError::Overflow)
    }
}

/// Float arithmetic; `None` for `%`, which CEL defines for integers only.
fn double_op(op: Arith, x: f64, y: f64) -> Option<f64> {
    match op {
        Arith::Add => Some(x + y),
        Arith::Sub => Some(x - y),
        Arith::Mul => Some(x * y),
        Arith::Div => Some(x / y),
        Arith::Rem => None,
    }
}

/// Unary minus.
pub(crate) fn negate(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match v {
        Val::Int(i) => i.checked_neg().map(Val::Int).ok_or(EvalError::Overflow),
        Val::Double(d) => Ok(Val::Double(-d)),
        Val::Duration(d) => {
            d.0.checked_neg()
                .map(|ms| Val::Duration(crate::time::Duration(ms)))
                .ok_or(EvalError::Overflow)
        }
        _ => Err(EvalError::WrongTypes("-")),
    }
}

/// `container[index]`: a list element by integer position, or a map value by key.
pub(crate) fn index<'a>(container: Val<'a>, index: Val<'_>) -> Result<Val<'a>, EvalError> {
    match container {
        Val::List(list) => {
            let position = match index {
                Val::Int(i) => usize::try_from(i).ok(),
                Val::Uint(u) => usize::try_from(u).ok(),
                Val::Double(d) if d.fract() == 0.0 && d >= 0.0 => Some(d as usize),
                _ => return Err(EvalError::WrongTypes("[]")),
            };
            position
                .and_then(|p| list.into_item(p))
                .ok_or(EvalError::IndexOutOfRange)
        }
        Val::Map(map) => {
            let key = match index {
                Val::Double(d) if d.fract() == 0.0 && d.abs() < 9.2e18 => Val::Int(d as i64),
                other => other,
            };
            map.into_value(&key).ok_or(EvalError::NoSuchKey)
        }
        _ => Err(EvalError::WrongTypes("[]")),
    }
}

/// Checks that the keys of a map literal are distinct and of a key type.
pub(crate) fn check_map_keys(entries: &[(Val<'_>, Val<'_>)]) -> Result<(), EvalError> {
    for (i, (key, _)) in entries.iter().enumerate() {
        if !matches!(key, Val::Str(_) | Val::Int(_) | Val::Uint(_) | Val::Bool(_)) {
            return Err(EvalError::BadMapKey);
        }
        if entries[..i]
            .iter()
            .any(|(earlier, _)| key_equals(earlier, key))
        {
            return Err(EvalError::BadMapKey);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(text))
    }

    #[test]
    fn numbers_compare_exactly_across_kinds() {
        assert!(equals(&Val::Int(3), &Val::Double(3.0)));
        assert!(equals(&Val::Uint(3), &Val::Int(3)));
        assert!(!equals(&Val::Int(-1), &Val::Uint(u64::MAX)));
        assert!(compare(&Val::Int(1001), Cmp::Gt, &Val::Double(1000.5)).unwrap());
        assert!(compare(&Val::Double(1000.5), Cmp::Gt, &Val::Int(1000)).unwrap());
        // 2^53 + 1 is not representable as a double; a naive conversion would say equal.
        assert!(compare(
            &Val::Int((1 << 53) + 1),
            Cmp::Gt,
            &Val::Double((1u64 << 53) as f64)
        )
        .unwrap());
        assert!(compare(&Val::Uint(u64::MAX), Cmp::Lt, &Val::Double(1e20)).unwrap());
        assert!(compare(&Val::Int(i64::MIN), Cmp::Gt, &Val::Double(-1e20)).unwrap());
        assert!(!compare(&Val::Double(f64::NAN), Cmp::Lt, &Val::Int(1)).unwrap());
        assert!(!equals(&Val::Double(f64::NAN), &Val::Double(f64::NAN)));
    }

    #[test]
    fn different_types_are_unequal_but_unordered() {
        assert!(!equals(&Val::Int(1), &s("1")));
        assert!(compare(&Val::Int(1), Cmp::Ne, &s("1")).unwrap());
        assert_eq!(
            compare(&Val::Int(1), Cmp::Lt, &s("1")),
            Err(EvalError::WrongTypes("<"))
        );
        assert!(compare(&s("abc"), Cmp::Lt, &s("abd")).unwrap());
        assert!(equals(&Val::Null, &Val::Null));
        assert!(!equals(&Val::Null, &Val::Int(0)));
    }

    #[test]
    fn integer_arithmetic_is_checked() {
        assert_eq!(
            arith(Arith::Add, Val::Int(i64::MAX), Val::Int(1)).unwrap_err(),
            EvalError::Overflow
        );
        assert_eq!(
            arith(Arith::Div, Val::Int(1), Val::Int(0)).unwrap_err(),
            EvalError::DivisionByZero
        );
        assert_eq!(
            arith(Arith::Div, Val::Int(i64::MIN), Val::Int(-1)).unwrap_err(),
            EvalError::Overflow
        );
        assert_eq!(
            arith(Arith::Sub, Val::Uint(1), Val::Uint(2)).unwrap_err(),
            EvalError::Overflow
        );
        assert!(matches!(
            arith(Arith::Div, Val::Int(7), Val::Int(2)),
            Ok(Val::Int(3))
        ));
        assert!(matches!(
            arith(Arith::Rem, Val::Int(-7), Val::Int(2)),
            Ok(Val::Int(-1))
        ));
        assert_eq!(negate(Val::Int(i64::MIN)).unwrap_err(), EvalError::Overflow);
    }

    #[test]
    fn mixed_arithmetic_is_lenient() {
        assert!(
            matches!(arith(Arith::Add, Val::Int(1), Val::Double(0.5)), Ok(Val::Double(d)) if d == 1.5)
        );
        assert!(matches!(
            arith(Arith::Sub, Val::Int(1), Val::Uint(2)),
            Ok(Val::Int(-1))
        ));
        assert!(matches!(
            arith(Arith::Add, Val::Int(1), Val::Uint(u64::MAX - 1)),
            Ok(Val::Uint(u64::MAX))
        ));
        assert_eq!(
            arith(Arith::Add, Val::Int(2), Val::Uint(u64::MAX)).unwrap_err(),
            EvalError::Overflow
        );
        assert_eq!(
            arith(Arith::Rem, Val::Double(1.0), Val::Int(2)).unwrap_err(),
            EvalError::WrongTypes("%")
        );
        assert!(
            matches!(arith(Arith::Div, Val::Double(1.0), Val::Int(0)), Ok(Val::Double(d)) if d.is_infinite())
        );
        assert_eq!(
            arith(Arith::Add, Val::Int(1), s("a")).unwrap_err(),
            EvalError::WrongTypes("+")
        );
    }

    #[test]
    fn strings_and_lists_concatenate() {
        assert_eq!(
            arith(Arith::Add, s("ab"), s("cd"))
                .unwrap()
                .to_text()
                .as_deref(),
            Some("abcd")
        );
        let list = |v: Vec<Val<'static>>| Val::List(List::Owned(v));
        let joined = arith(Arith::Add, list(vec![Val::Int(1)]), list(vec![Val::Int(2)])).unwrap();
        assert_eq!(joined.to_json(), Some(serde_json::json!([1, 2])));
    }

    #[test]
    fn membership_in_lists_and_map_keys() {
        let list = Val::List(List::Owned(vec![Val::Int(1), s("a")]));
        assert!(contains(&list, &Val::Double(1.0)).unwrap());
        assert!(contains(&list, &s("a")).unwrap());
        assert!(!contains(&list, &s("b")).unwrap());
        let map = Val::Map(MapVal::Owned(vec![
            (Val::Int(1), Val::Null),
            (s("k"), Val::Null),
        ]));
        assert!(contains(&map, &Val::Uint(1)).unwrap());
        assert!(contains(&map, &Val::Double(1.0)).unwrap());
        assert!(contains(&map, &s("k")).unwrap());
        assert_eq!(
            contains(&s("abc"), &s("a")),
            Err(EvalError::WrongTypes("in"))
        );
    }

    #[test]
    fn map_literal_keys_are_checked() {
        assert_eq!(
            check_map_keys(&[(Val::Int(1), Val::Null), (Val::Uint(1), Val::Null)]),
            Err(EvalError::BadMapKey)
        );
        assert_eq!(
            check_map_keys(&[(Val::Double(1.0), Val::Null)]),
            Err(EvalError::BadMapKey)
        );
        assert_eq!(
            check_map_keys(&[(s("a"), Val::Null), (Val::Bool(true), Val::Null)]),
            Ok(())
        );
    }
}
