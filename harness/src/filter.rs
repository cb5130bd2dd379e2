//! Selecting vectors by id: glob patterns (`nameplate/*`, `*/claim-?`) or,
//! without wildcards, a substring (like libtest's filters).

/// True if `id` is selected by `filter`: a glob when the filter contains
/// `*` or `?` (`*` also crosses `/`), otherwise a substring match.
pub fn id_matches(filter: &str, id: &str) -> bool {
    if filter.contains(['*', '?']) {
        glob(filter.as_bytes(), id.as_bytes())
    } else {
        id.contains(filter)
    }
}

/// True if any filter selects `id` (or there are no filters).
pub fn selected(filters: &[String], id: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| id_matches(f, id))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_substrings() {
        assert!(id_matches("nameplate/*", "nameplate/claim-twice"));
        assert!(!id_matches("nameplate/*", "mailbox/open"));
        assert!(id_matches("*claim*", "nameplate/claim-twice"));
        assert!(id_matches("*/claim-twic?", "nameplate/claim-twice"));
        assert!(!id_matches("claim", "mailbox/open"));
        assert!(id_matches("claim", "nameplate/claim-twice"));
        assert!(id_matches("*", "a/b"));
        assert!(!id_matches("a/*/c", "a/b"));
        assert!(selected(&[], "x/y"));
        assert!(selected(&["zz".into(), "x/*".into()], "x/y"));
    }
}
