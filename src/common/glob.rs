//! Wildcard matching of whole strings: the one matcher of vmcpi (vSphere datastore patterns) and
//! agent-launcher (Buildkite agent query rules against pool tags).
//!
//! `*` matches any run of characters (none included); with [`Wildcards::StarAndQuestion`], `?` matches any one
//! character. Characters, not bytes: `?` matches `é` whole. The match is greedy with one backtrack point, so
//! it takes time linear in the text for each `*` and never recurses or allocates.

/// Which characters of a pattern are wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wildcards {
    /// `*` only; `?` is an ordinary character (Buildkite's agent query rules).
    Star,
    /// `*` and `?` (the vSphere datastore patterns of `cpi.json`, like govc's).
    StarAndQuestion,
}

/// Whether `text` as a whole matches `pattern`.
pub fn glob(pattern: &str, text: &str, wildcards: Wildcards) -> bool {
    let any_one = |c: char| c == '?' && wildcards == Wildcards::StarAndQuestion;
    // byte offsets into `pattern` and `text`, always on character boundaries
    let (mut p, mut t) = (0, 0);
    // after a `*`: where the pattern goes on, and where in the text that `*` stops for now
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = text[t..].chars().next() {
        match pattern[p..].chars().next() {
            Some('*') => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            Some(pc) if pc == tc || any_one(pc) => {
                p += pc.len_utf8();
                t += tc.len_utf8();
                continue;
            }
            _ => {}
        }
        // a mismatch: the last `*` takes one more character, or there is no match
        let Some((after_star, taken)) = star else { return false };
        let next = taken + text[taken..].chars().next().map_or(0, char::len_utf8);
        star = Some((after_star, next));
        (p, t) = (after_star, next);
    }
    pattern[p..].chars().all(|c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Wildcards::{Star, StarAndQuestion};

    /// What the launcher's rules had: `*` only, whole strings.
    #[test]
    fn stars_match_any_run() {
        for w in [Star, StarAndQuestion] {
            assert!(glob("*", "", w));
            assert!(glob("deploy-*", "deploy-eu", w));
            assert!(!glob("deploy-*", "build-eu", w));
            assert!(glob("*-eu", "deploy-eu", w));
            assert!(glob("a*c*e", "abcde", w));
            assert!(!glob("a*c*e", "abcd", w));
            assert!(glob("linux", "linux", w));
            assert!(!glob("linux", "linux2", w));
            assert!(!glob("linux2", "linux", w));
            assert!(glob("", "", w) && !glob("", "x", w));
            // backtracking: the first `b` is not the one the pattern needs
            assert!(glob("*bc", "abbc", w));
            assert!(glob("a**b", "ab", w));
            assert!(glob("*é*", "caféine", w));
        }
    }

    /// What vSphere's datastore patterns had: `?` too.
    #[test]
    fn question_marks_match_one_character_when_asked() {
        assert!(glob("LocalDS_*", "LocalDS_0", StarAndQuestion));
        assert!(glob("ds?", "ds1", StarAndQuestion));
        assert!(!glob("ds?", "ds12", StarAndQuestion));
        assert!(!glob("ds?", "ds", StarAndQuestion));
        assert!(glob("*", "anything", StarAndQuestion));
        assert!(!glob("a*b", "acd", StarAndQuestion));
        assert!(glob("caf?", "café", StarAndQuestion));
        assert!(glob("?*?", "ab", StarAndQuestion) && !glob("?*?", "a", StarAndQuestion));
        // a Buildkite rule's `?` is the character itself
        assert!(!glob("ds?", "ds1", Star));
        assert!(glob("ds?", "ds?", Star));
    }
}
