//! "Did you mean …?" for misspelt field and value names.

/// The candidate closest to `word`, when it is close enough to be the likely
/// intent: a small edit distance (ignoring case), or one being a prefix of
/// the other (`step` for `steps`).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for &candidate in candidates {
        let distance = edit_distance(&word, candidate);
        // NB: short words get a tolerance of one edit, longer ones a third of
        // their length, so `id` does not suggest `if` but `withn` finds `within`.
        let tolerance = (candidate.chars().count() / 3).max(1);
        let prefix = word.len() >= 3
            && (candidate.starts_with(word.as_str()) || word.starts_with(candidate));
        if (distance <= tolerance || prefix) && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when a close candidate exists, else nothing; ready
/// to append to a message.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// Levenshtein distance over characters, with a transposition counted as
/// one edit (`wihtin` is one edit from `within`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the dynamic-programming table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["within", "contiguity", "any_order", "skip", "steps"];

    #[test]
    fn finds_typos_transpositions_and_prefixes() {
        assert_eq!(closest("withn", FIELDS), Some("within"));
        assert_eq!(closest("wihtin", FIELDS), Some("within"));
        assert_eq!(closest("step", FIELDS), Some("steps"));
        assert_eq!(closest("Steps", FIELDS), Some("steps"));
        assert_eq!(closest("contiguty", FIELDS), Some("contiguity"));
        assert_eq!(closest("anyorder", FIELDS), Some("any_order"));
    }

    #[test]
    fn stays_quiet_for_unrelated_words() {
        assert_eq!(closest("color", FIELDS), None);
        assert_eq!(closest("x", &["id"]), None);
        assert_eq!(did_you_mean("zzz", FIELDS), "");
        assert_eq!(did_you_mean("skp", FIELDS), " (did you mean `skip`?)");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
