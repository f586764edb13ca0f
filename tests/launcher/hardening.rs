//! Issue 19, item 7 (the launcher's part): what the launcher sends to Buildkite passes through the redactor,
//! and a Buildkite endpoint in clear text or a token file that others can read is refused, by `run` and by
//! `check-config` alike.
use super::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn run_cmd(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(launcher_bin()).args(args).arg("--config").arg(&s.config).env("BK_TOKEN", TOKEN).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn edit_config(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&s.config, text.replacen(from, to, 1)).unwrap();
}

/// A CPI whose error text echoes its request (and so the VM's secret): the detail the launcher finishes the
/// job with on Buildkite, and its log, carry `<redacted>` instead.
#[test]
fn launcher_redacts_cpi_error_text_before_posting_it_to_buildkite() {
    let s = Setup::new("", POOL);
    s.script(json!({"create_vm": {"fail": 2, "echo_env": true}}));
    let j = s.bk.add_job(&["queue=vm", "os=linux"], 0);
    let _l = s.spawn();
    wait_for(20, "the job to be failed", &|| s.log(), || s.bk.job(&j).finish.is_some());
    let (status, detail) = s.bk.job(&j).finish.unwrap();
    assert_eq!(status, -1);
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.cpi_dir().join("failed_env.json")).unwrap()).unwrap();
    let secret = env["agent_launcher"]["secret"].as_str().unwrap();
    assert!(secret.len() >= 16, "{env}");
    assert!(detail.contains("injected failure 2"), "{detail}");
    assert!(!detail.contains(secret), "the VM's secret went to Buildkite: {detail}");
    assert!(detail.contains("<redacted>"), "{detail}");
    assert!(!s.log().contains(secret), "{}", s.log());
}

/// `http://` to Buildkite is refused unless the host is this machine's loopback or the config says
/// `allow_http = true` (then with a warning); a token file that group or others may read is refused.
#[test]
fn launcher_refuses_cleartext_buildkite_endpoints_and_open_token_files() {
    let s = Setup::new("", POOL);
    // the fake Buildkite is on 127.0.0.1: loopback, allowed
    let (ok, out, err) = run_cmd(&s, &["check-config"]);
    assert!(ok, "{out}{err}");
    assert!(!err.contains("WARN"), "{err}");

    let good = std::fs::read_to_string(&s.config).unwrap();
    for (from, to, key) in [
        (s.bk.url.clone(), "http://buildkite-proxy.example.invalid/v3".to_string(), "buildkite.endpoint"),
        (
            "stack_key = \"test-stack\"".to_string(),
            "stack_key = \"test-stack\"\nagent_endpoint = \"http://10.0.2.2:8080/v3\"".to_string(),
            "buildkite.agent_endpoint",
        ),
    ] {
        std::fs::write(&s.config, &good).unwrap();
        edit_config(&s, &from, &to);
        let (ok, out, err) = run_cmd(&s, &["check-config"]);
        assert!(!ok, "check-config accepted {to}: {out}");
        assert!(err.contains(key) && err.contains("https") && err.contains("allow_http"), "{err}");
        // `run` refuses the same config before it does anything
        let (ok, _, err) = run_cmd(&s, &["run"]);
        assert!(!ok && err.contains(key), "{err}");
        // an explicit allow_http = true: accepted, with a warning naming the endpoint
        edit_config(&s, "[buildkite]\n", "[buildkite]\nallow_http = true\n");
        let (ok, out, err) = run_cmd(&s, &["check-config"]);
        assert!(ok, "{out}{err}");
        assert!(err.contains("WARN") && err.contains(key) && err.contains("clear text"), "{err}");
    }
    std::fs::write(&s.config, &good).unwrap();

    // the token from a file: 0600 is fine; readable by group or others is not
    let tok = s.dir.path().join("cluster-token");
    std::fs::write(&tok, format!("{TOKEN}\n")).unwrap();
    edit_config(&s, "token_env = \"BK_TOKEN\"", &format!("token_file = \"{}\"", tok.display()));
    for mode in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(mode)).unwrap();
        let (ok, out, err) = run_cmd(&s, &["check-config"]);
        assert!(!ok, "check-config accepted a token file of mode {mode:o}: {out}");
        assert!(err.contains(&tok.display().to_string()) && err.contains("chmod 600"), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
        let (ok, _, err) = run_cmd(&s, &["run"]);
        assert!(!ok && err.contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out, err) = run_cmd(&s, &["check-config"]);
    assert!(ok, "{out}{err}");
}
