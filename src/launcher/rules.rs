//! Agent query rules: which pool serves a job, and which tags its agent gets.
//!
//! Buildkite's rule is that every `key=value` of the job must be satisfied by the agent's tags; a job value
//! may contain `*` wildcards (`os=*`, `queue=deploy-*`). A pool tag with the value `*` serves any value of
//! its key (the agent then gets the job's value). The pool's flavor tag is not matched: it picks a size.
//! A job without a `queue` rule targets the cluster's default queue (`_default`).
use crate::glob::{glob, Wildcards};

/// One `key=value` rule or tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub key: String,
    pub value: String,
}

impl Rule {
    pub fn parse(s: &str) -> Option<Rule> {
        let (k, v) = s.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        Some(Rule { key: k.to_string(), value: v.trim().to_string() })
    }
}

/// A pool's tags, parsed once.
#[derive(Debug, Clone)]
pub struct PoolTags {
    tags: Vec<Rule>,
    flavor_key: String,
}

/// The outcome of matching one job against one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The flavor the job asked for with the flavor tag, if any.
    pub flavor: Option<String>,
    /// The tags the job's agent starts with (they satisfy every rule of the job).
    pub agent_tags: Vec<String>,
}

impl PoolTags {
    pub fn new(tags: &[String], flavor_key: &str) -> PoolTags {
        PoolTags { tags: tags.iter().filter_map(|t| Rule::parse(t)).collect(), flavor_key: flavor_key.to_string() }
    }

    /// Whether this pool serves a job with these rules.
    pub fn matches(&self, job_rules: &[String]) -> Option<Match> {
        let parsed: Vec<Rule> = job_rules.iter().map(|r| Rule::parse(r)).collect::<Option<_>>()?;
        self.matches_rules(&parsed)
    }

    /// [`PoolTags::matches`] for rules parsed once (the planner tries every job against every pool).
    pub fn matches_rules(&self, rules: &[Rule]) -> Option<Match> {
        // decide first, without allocating: most pools do not match most jobs
        let mut has_queue = false;
        for rule in rules {
            if rule.key == self.flavor_key {
                continue;
            }
            has_queue |= rule.key == "queue";
            let tag = self.tags.iter().find(|t| t.key == rule.key)?;
            if tag.value == "*" {
                if rule.value.contains('*') {
                    return None; // the agent needs one concrete value and the job does not give one
                }
            } else if !glob(&rule.value, &tag.value, Wildcards::Star) {
                return None;
            }
        }
        if !has_queue && !self.tags.iter().any(|t| t.key == "queue" && (t.value == "_default" || t.value == "*")) {
            return None;
        }
        let mut flavor = None;
        let mut agent: Vec<String> =
            self.tags.iter().filter(|t| t.value != "*").map(|t| format!("{}={}", t.key, t.value)).collect();
        for rule in rules {
            if rule.key == self.flavor_key {
                flavor = Some(rule.value.clone());
            } else if self.tags.iter().any(|t| t.key == rule.key && t.value == "*") {
                agent.push(format!("{}={}", rule.key, rule.value));
            }
        }
        if let Some(f) = &flavor {
            agent.push(format!("{}={f}", self.flavor_key));
        }
        Some(Match { flavor, agent_tags: agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn job_rules_against_pool_tags() {
        let p = PoolTags::new(&s(&["queue=vm", "os=linux", "arch=*"]), "flavor");
        let m = p.matches(&s(&["queue=vm", "os=linux"])).unwrap();
        assert_eq!(m.agent_tags, s(&["queue=vm", "os=linux"]));
        assert_eq!(m.flavor, None);
        // wildcard in the job, concrete in the pool
        assert!(p.matches(&s(&["queue=vm", "os=lin*"])).is_some());
        // the pool's arch=* takes any concrete value and gives it to the agent
        let m = p.matches(&s(&["queue=vm", "arch=arm64", "flavor=large"])).unwrap();
        assert_eq!(m.agent_tags, s(&["queue=vm", "os=linux", "arch=arm64", "flavor=large"]));
        assert_eq!(m.flavor.as_deref(), Some("large"));
        // keys the pool lacks, wrong values, wrong queue
        assert!(p.matches(&s(&["queue=vm", "gpu=true"])).is_none());
        assert!(p.matches(&s(&["queue=vm", "os=windows"])).is_none());
        assert!(p.matches(&s(&["queue=other"])).is_none());
        // no queue rule means the default queue, which this pool does not serve
        assert!(p.matches(&s(&["os=linux"])).is_none());
        let d = PoolTags::new(&s(&["queue=_default"]), "flavor");
        assert!(d.matches(&[]).is_some());
        assert!(p.matches(&s(&["garbage"])).is_none());
    }
}
