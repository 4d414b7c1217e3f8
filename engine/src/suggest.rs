//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `word`, if it is close enough to be a typo:
/// case-insensitive normalised Damerau-Levenshtein similarity above 0.6.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                strsim::normalized_damerau_levenshtein(&word, &c.to_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score > 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_only_close_names() {
        let names = ["extract", "features", "StringIndexer"];
        assert_eq!(closest("extrct", &names), Some("extract"));
        assert_eq!(closest("stringindexr", &names), Some("StringIndexer"));
        assert_eq!(closest("Zebra", &names), None);
    }
}
