//! Agent query rules: which pool serves a job, and which tags its agent gets.
//!
//! Buildkite's rule is that every `key=value` of the job must be satisfied by the agent's tags; a job value
//! may contain `*` wildcards (`os=*`, `queue=deploy-*`). A pool tag with the value `*` serves any value of
//! its key (the agent then gets the job's value). The pool's flavor tag is not matched: it picks a size.
//! A job without a `queue` rule targets the cluster's default queue (`_default`).
//!
//! GitHub Actions labels go through the same matcher ([`PoolTags::labels`], [`job_label_rules`]): a job's
//! `runs-on` labels must all be among the runner's, compared without case, as GitHub does. A plain label
//! `linux` is the rule `linux=` (a key with an empty value) and a `key=value` label is itself; a pool label
//! `arch=*` serves any `arch=…` label of a job (the runner then gets the job's), the flavor label
//! `flavor=large` picks a size, and there is no queue. A job label is literal to GitHub, so a job label with
//! a `*` (or one ending in `=`, which would read as a plain label) is never served.
use crate::common::glob::{glob, Wildcards};

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
    /// Buildkite: a job targets a queue (`_default` without a `queue` rule); GitHub has none.
    queues: bool,
}

/// Why a pool's GitHub label cannot be used (`Ok` when it can).
pub fn check_pool_label(label: &str) -> Result<(), &'static str> {
    let l = label.trim();
    if l.is_empty() || l != label {
        return Err("is empty or has spaces around it");
    }
    if l.contains(',') || l.chars().any(char::is_control) {
        return Err("has a comma or a control character");
    }
    match l.split_once('=') {
        None if l.contains('*') => Err("has a * (only a whole value, key=*, is a wildcard)"),
        None => Ok(()),
        Some((k, v)) if k.is_empty() || v.is_empty() => Err("key=value needs both a key and a value"),
        Some((_, v)) if v.contains('*') && v != "*" => Err("has a * (only a whole value, key=*, is a wildcard)"),
        Some((k, _)) if k.contains('*') => Err("has a * in its key"),
        Some(_) => Ok(()),
    }
}

/// The rule of one GitHub label (lower case; a plain label is `label=`); `None` for a label GitHub would take
/// literally where the matcher would not (a `*`, a trailing `=`, an empty label).
fn label_rule(label: &str) -> Option<String> {
    let l = label.trim().to_lowercase();
    if l.is_empty() || l.contains('*') || l.ends_with('=') || l.starts_with('=') {
        return None;
    }
    Some(if l.contains('=') { l } else { format!("{l}=") })
}

/// A job's `runs-on` labels as rules for [`PoolTags::matches`]; `None` when one of them cannot be served.
pub fn job_label_rules(labels: &[String]) -> Option<Vec<String>> {
    labels.iter().map(|l| label_rule(l)).collect()
}

/// The runner label of an agent tag that a [`PoolTags::labels`] match gave (`linux=` → `linux`).
pub fn tag_label(tag: &str) -> String {
    tag.strip_suffix('=').filter(|k| !k.contains('=')).unwrap_or(tag).to_string()
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
        PoolTags {
            tags: tags.iter().filter_map(|t| Rule::parse(t)).collect(),
            flavor_key: flavor_key.to_string(),
            queues: true,
        }
    }

    /// A GitHub pool's runner labels (see the module's text).
    pub fn labels(labels: &[String], flavor_key: &str) -> PoolTags {
        let rules: Vec<String> = labels
            .iter()
            .filter_map(|l| {
                let l = l.trim().to_lowercase();
                match l.split_once('=') {
                    Some(_) => Some(l),
                    None if l.is_empty() => None,
                    None => Some(format!("{l}=")),
                }
            })
            .collect();
        PoolTags {
            tags: rules.iter().filter_map(|t| Rule::parse(t)).collect(),
            flavor_key: flavor_key.to_lowercase(),
            queues: false,
        }
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
        if self.queues
            && !has_queue
            && !self.tags.iter().any(|t| t.key == "queue" && (t.value == "_default" || t.value == "*"))
        {
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

    #[test]
    fn github_labels_against_pool_labels() {
        let p = PoolTags::labels(&s(&["self-hosted", "Linux", "x64", "arch=*"]), "flavor");
        let job = |l: &[&str]| job_label_rules(&s(l)).and_then(|r| p.matches(&r));
        // every label of the job is the pool's, compared without case; no queue is needed
        let m = job(&["self-hosted", "linux"]).unwrap();
        assert_eq!(m.agent_tags.iter().map(|t| tag_label(t)).collect::<Vec<_>>(), s(&["self-hosted", "linux", "x64"]));
        assert!(job(&["SELF-HOSTED", "LINUX", "X64"]).is_some());
        // a label the pool does not have: GitHub-hosted jobs (ubuntu-latest) and other pools' jobs
        assert!(job(&["ubuntu-latest"]).is_none());
        assert!(job(&["self-hosted", "gpu"]).is_none());
        // arch=* takes any value and the runner gets it; flavor=… picks a size and the runner gets it too
        let m = job(&["self-hosted", "arch=arm64", "flavor=large"]).unwrap();
        assert_eq!(m.flavor.as_deref(), Some("large"));
        let labels: Vec<String> = m.agent_tags.iter().map(|t| tag_label(t)).collect();
        assert_eq!(labels, s(&["self-hosted", "linux", "x64", "arch=arm64", "flavor=large"]));
        // GitHub takes job labels literally: a * or a trailing = cannot be served
        assert!(job_label_rules(&s(&["self-hosted", "lin*"])).is_none());
        assert!(job_label_rules(&s(&["arch=*"])).is_none());
        assert!(job_label_rules(&s(&["x64="])).is_none());
        assert!(job_label_rules(&s(&[""])).is_none());
        assert_eq!(tag_label("a=b=c"), "a=b=c");
        for (l, ok) in [
            ("linux", true),
            ("arch=*", true),
            ("k=v", true),
            ("lin*", false),
            ("a,b", false),
            (" x", false),
            ("=v", false),
            ("k=", false),
            ("k=a*", false),
        ] {
            assert_eq!(check_pool_label(l).is_ok(), ok, "{l}");
        }
    }
}
