//! The words vmcpi's own messages are made of: every word of every string literal in its source (outside
//! tests), collected by `build.rs`. The logger's safety net ([`crate::common::logger`]) masks only secrets that hold
//! at least one word that is *not* here, so it can never mask text that vmcpi itself wrote (a masked own
//! word would give the secret away). Secrets made only of these words — `finished`, `default` — are
//! scrubbed where outside text enters instead ([`crate::common::logger::redact`]).
mod generated {
    include!(concat!(env!("OUT_DIR"), "/vocabulary.rs"));
}

/// Whether `word` is a word of vmcpi's own string literals.
pub fn is_own_word(word: &str) -> bool {
    generated::WORDS.binary_search(&word).is_ok()
}

/// Whether every word of `text` (runs of letters, digits and `_`) is one of vmcpi's own.
pub fn all_own_words(text: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).all(is_own_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_of_vmcpis_messages_are_known() {
        assert!(generated::WORDS.windows(2).all(|w| w[0] < w[1]), "sorted, for binary_search");
        for w in ["finished", "has_vm", "in", "ms", "cannot", "redacted", "vmcpi_vms"] {
            assert!(is_own_word(w), "{w}");
        }
        assert!(all_own_words("has_vm finished in"));
        for secret in ["CANARY-mbus-pw-7f3a9c", "hunter2-xyzzy", "c0rrect-h0rse"] {
            assert!(!all_own_words(secret), "{secret}");
        }
    }
}
