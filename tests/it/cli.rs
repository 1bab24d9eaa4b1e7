//! The command line as a user meets it: exit codes, formats, colour, errors.

use crate::common;

use common::{Berth, repo};

const QUICKSTART: &str = "examples/quickstart/berth.yaml";
const MR_V1: &str = "examples/multi-region/berth.yaml";
const MR_V2: &str = "examples/multi-region/berth.v2.yaml";

#[test]
fn validate_clean_spec_exits_zero() {
    let r = Berth::new().args(["validate", QUICKSTART]).run().code(0);
    assert!(r.stderr().contains("is valid"), "{}", r.stderr());
}

#[test]
fn validate_takes_the_file_from_dash_f_too() {
    Berth::new()
        .args(["-f", QUICKSTART, "validate"])
        .run()
        .code(0);
    Berth::new()
        .args(["validate", "-f", QUICKSTART])
        .run()
        .code(0);
}

#[test]
fn validate_invalid_spec_exits_one_with_every_diagnostic() {
    let r = Berth::new()
        .args(["validate", "fixtures/invalid/five-mistakes.yaml"])
        .run()
        .code(1);
    let err = r.stderr();
    assert_eq!(err.matches("  × ").count(), 5, "{err}");
    assert!(err.contains("5 error(s)"), "{err}");
}

#[test]
fn validate_json_is_machine_readable() {
    let r = Berth::new()
        .args([
            "validate",
            "--format",
            "json",
            "fixtures/invalid/dependency-cycle.yaml",
        ])
        .run()
        .code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).expect("json");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "dependency-cycle");
    assert_eq!(d["severity"], "error");
    assert!(d["line"].as_u64().unwrap() > 1);
    assert!(d["message"].as_str().unwrap().contains(" -> "));
    assert!(d["help"].is_string());

    let r = Berth::new()
        .args(["validate", "--format", "json", QUICKSTART])
        .run()
        .code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout()).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 0);
}

#[test]
fn warnings_do_not_fail_validate_but_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("berth.yaml");
    std::fs::write(
        &spec,
        "version: 1\nproject: dev\nenvironment: development\npods:\n  api:\n    image: api:1\n    env: { API_TOKEN: abc123 }\n",
    )
    .unwrap();
    let r = Berth::new()
        .dir(dir.path())
        .args(["validate"])
        .run()
        .code(0);
    assert!(
        r.stderr().contains("lint::plaintext-credential"),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().contains("1 warning(s)"), "{}", r.stderr());
    // The flagged value itself is never printed, not even in the source snippet.
    assert!(!r.stderr().contains("abc123"), "{}", r.stderr());
    assert!(r.stderr().contains("API_TOKEN: ******"), "{}", r.stderr());

    std::fs::write(
        &spec,
        "version: 1\nproject: dev\nenvironment: production\npods:\n  api:\n    image: api:1\n    env: { API_TOKEN: abc123 }\n",
    )
    .unwrap();
    Berth::new()
        .dir(dir.path())
        .args(["validate"])
        .run()
        .code(1);
}

#[test]
fn a_missing_spec_is_a_diagnostic_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let r = Berth::new()
        .dir(dir.path())
        .args(["validate"])
        .run()
        .code(1);
    let err = r.stderr();
    assert!(err.contains("cannot read spec `berth.yaml`"), "{err}");
    assert!(err.contains("-f FILE"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn plan_detailed_exitcode() {
    Berth::new()
        .args([
            "plan",
            "-f",
            MR_V1,
            "--against",
            MR_V1,
            "--detailed-exitcode",
        ])
        .run()
        .code(0);
    Berth::new()
        .args([
            "plan",
            "-f",
            MR_V2,
            "--against",
            MR_V1,
            "--detailed-exitcode",
        ])
        .run()
        .code(2);
    // Without the flag, changes are success.
    Berth::new()
        .args(["plan", "-f", MR_V2, "--against", MR_V1])
        .run()
        .code(0);
    // An invalid side is an error, with its diagnostics.
    let r = Berth::new()
        .args([
            "plan",
            "-f",
            MR_V2,
            "--against",
            "fixtures/invalid/dependency-cycle.yaml",
            "--detailed-exitcode",
        ])
        .run()
        .code(1);
    assert!(r.stderr().contains("dependency cycle"), "{}", r.stderr());
}

#[test]
fn plan_against_an_empty_file_is_a_first_deployment() {
    let r = Berth::new()
        .args([
            "plan",
            "-f",
            QUICKSTART,
            "--against",
            "/dev/null",
            "--format",
            "json",
            "--detailed-exitcode",
        ])
        .run()
        .code(2);
    let plan: berth::plan::Plan = serde_json::from_str(&r.stdout()).expect("plan json");
    assert!(
        plan.changes
            .iter()
            .all(|c| c.action == berth::plan::Action::Create)
    );
    assert_eq!(plan.summary.create, plan.changes.len());
    assert!(!r.stderr().contains("warning"), "{}", r.stderr());
}

#[test]
fn plan_against_an_empty_base_file_warns_of_a_first_deployment() {
    // What a pull-request job gets when the base spec could not be read (a shallow
    // checkout): the plan is still made, but the job's log says why everything is new.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    std::fs::write(&base, "").unwrap();
    let r = Berth::new()
        .args(["plan", "-f", QUICKSTART, "--against"])
        .args([&base])
        .args(["--format", "markdown", "--detailed-exitcode"])
        .run()
        .code(2);
    assert!(
        r.stderr()
            .contains("is empty, so this plans a first deployment"),
        "{}",
        r.stderr()
    );
    assert!(r.stdout().contains("to create"), "{}", r.stdout());
}

#[test]
fn plan_reads_the_old_revision_from_a_pipe() {
    // `--against <(git show main:berth.yaml)` hands berth a pipe it can read only once.
    let old = std::fs::read(repo().join(MR_V1)).unwrap();
    let piped = Berth::new()
        .args([
            "plan",
            "-f",
            MR_V2,
            "--against",
            "/dev/stdin",
            "--format",
            "json",
        ])
        .stdin(old)
        .run()
        .code(0);
    let from_file = Berth::new()
        .args(["plan", "-f", MR_V2, "--against", MR_V1, "--format", "json"])
        .run()
        .code(0);
    let a: berth::plan::Plan = serde_json::from_str(&piped.stdout()).unwrap();
    let b: berth::plan::Plan = serde_json::from_str(&from_file.stdout()).unwrap();
    assert_eq!(a.changes, b.changes);
}

#[test]
fn a_pull_request_that_fixes_a_lint_can_be_planned() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |debug: &str| {
        format!(
            "version: 1\nproject: p\nenvironment: production\npods:\n  api:\n    image: api:1\n    env: {{ DEBUG: \"{debug}\" }}\n"
        )
    };
    std::fs::write(dir.path().join("old.yaml"), spec("true")).unwrap();
    std::fs::write(dir.path().join("new.yaml"), spec("false")).unwrap();
    let r = Berth::new()
        .dir(dir.path())
        .args([
            "plan",
            "-f",
            "new.yaml",
            "--against",
            "old.yaml",
            "--detailed-exitcode",
        ])
        .run()
        .code(2);
    assert!(
        r.stdout().contains("env.DEBUG: \"true\" -> \"false\""),
        "{}",
        r.stdout()
    );
    // The new revision is held to every rule: the other way round is refused.
    Berth::new()
        .dir(dir.path())
        .args(["plan", "-f", "old.yaml", "--against", "new.yaml"])
        .run()
        .code(1);
}

#[test]
fn plan_json_parses_and_round_trips() {
    let r = Berth::new()
        .args(["plan", "-f", MR_V2, "--against", MR_V1, "--format", "json"])
        .run()
        .code(0);
    let plan: berth::plan::Plan = serde_json::from_str(&r.stdout()).expect("plan json");
    assert_eq!(plan.format_version, berth::plan::PLAN_FORMAT_VERSION);
    assert!(plan.has_changes());
    let again = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    assert_eq!(again, r.stdout());
}

#[test]
fn colour_only_on_request_and_never_with_no_color() {
    let args = ["plan", "-f", MR_V2, "--against", MR_V1];
    let piped = Berth::new().args(args).run().code(0);
    assert!(!piped.stdout().contains('\x1b'), "no colour into a pipe");
    let forced = Berth::new()
        .args(args)
        .env("CLICOLOR_FORCE", "1")
        .run()
        .code(0);
    assert!(forced.stdout().contains('\x1b'), "CLICOLOR_FORCE colours");
    let no_color = Berth::new()
        .args(args)
        .env("CLICOLOR_FORCE", "1")
        .env("NO_COLOR", "1")
        .run()
        .code(0);
    assert!(!no_color.stdout().contains('\x1b'), "NO_COLOR wins");
    assert_eq!(no_color.stdout(), piped.stdout());
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dot = Berth::new()
        .args(["graph", "-f", MR_V1])
        .run()
        .code(0)
        .stdout();
    assert!(dot.starts_with("digraph berth {"), "{dot}");
    assert!(
        dot.contains("\"pod.api[0]@fra\" -> \"network.default@fra\""),
        "{dot}"
    );
    let mermaid = Berth::new()
        .args(["graph", "-f", MR_V1, "--format", "mermaid"])
        .run()
        .code(0)
        .stdout();
    assert!(mermaid.starts_with("flowchart RL\n"), "{mermaid}");
    assert!(mermaid.contains("[\"proxy@ord\"]"), "{mermaid}");
}

#[test]
fn schema_write_renews_both_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    Berth::new()
        .args(["schema", "--write"])
        .arg_path(dir.path())
        .run()
        .code(0);
    for f in ["schemas/berth.schema.json", "docs/spec.md"] {
        let fresh = std::fs::read_to_string(dir.path().join(f)).unwrap();
        let checked_in = std::fs::read_to_string(repo().join(f)).unwrap();
        assert_eq!(
            fresh, checked_in,
            "{f} is stale: run `cargo run -- schema --write`"
        );
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    // 1, not clap's usual 2, which `--detailed-exitcode` reserves for "changes".
    let r = Berth::new().args(["plan", "--format", "xml"]).run().code(1);
    assert!(r.stderr().contains("invalid value 'xml'"), "{}", r.stderr());
}

trait ArgPath {
    fn arg_path(self, p: &std::path::Path) -> Self;
}

impl ArgPath for Berth {
    fn arg_path(self, p: &std::path::Path) -> Self {
        self.args([p])
    }
}

#[test]
fn show_refuses_what_is_not_a_saved_plan_with_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    // A plan's JSON (what `plan --format json` prints) is not a saved plan either.
    std::fs::write(
        dir.path().join("plan.json"),
        r#"{"format_version": 1, "project": "x", "changes": []}"#,
    )
    .unwrap();
    for file in ["plan.json", "missing.json"] {
        let r = Berth::new()
            .dir(dir.path())
            .args(["show", file])
            .run()
            .code(1);
        let err = r.stderr_flat();
        assert!(err.contains(file), "{err}");
        assert!(err.contains("berth plan --out FILE"), "{err}");
        assert!(r.stdout().is_empty(), "{}", r.stdout());
    }
}

#[test]
fn completions_and_the_manual_page_come_from_the_commands_themselves() {
    for shell in ["bash", "zsh", "fish"] {
        let script = Berth::new()
            .args(["completions", shell])
            .run()
            .code(0)
            .stdout();
        for word in [
            "status",
            "logs",
            "exec",
            "rollback",
            "follow",
            "delete-volumes",
        ] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    // bash itself reads the script without a syntax error.
    let script = Berth::new()
        .args(["completions", "bash"])
        .run()
        .code(0)
        .stdout();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.bash");
    std::fs::write(&file, script).unwrap();
    let bash = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash runs");
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    // A shell berth does not know: the choices are named.
    let err = Berth::new()
        .args(["completions", "tcsh"])
        .run()
        .code(1)
        .stderr();
    assert!(err.contains("possible values: bash"), "{err}");

    let man = Berth::new().args(["man"]).run().code(0).stdout();
    assert!(
        man.starts_with(".ie"),
        "roff: {}",
        &man[..man.len().min(80)]
    );
    assert!(man.contains(".TH berth 1"), "{man}");
    assert!(man.contains("status"), "{man}");

    // `-y` is `--yes` (apply, destroy and rollback share it).
    let help = Berth::new()
        .args(["apply", "--help"])
        .run()
        .code(0)
        .stdout();
    assert!(help.contains("-y, --yes"), "{help}");
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = Berth::new().args(["--version"]).run().code(0).stdout();
    // The witness: git, in the checkout the tests were built from ("unknown" outside one).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    assert_eq!(
        out.trim(),
        format!("berth {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// A spec of `n` independent pods, each with a few fields.
fn many_pods(n: usize) -> String {
    let mut s = String::from("version: 1\nproject: wide\npods:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  app{i}:\n    image: registry.internal/app:{i}\n    env: {{ ROLE: worker, SHARD: \"{i}\" }}\n"
        ));
    }
    s
}

fn markdown_plan(spec: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yaml");
    std::fs::write(&file, spec).unwrap();
    let r = Berth::new()
        .args([
            "plan",
            "--against",
            "/dev/null",
            "--format",
            "markdown",
            "-f",
        ])
        .args([&file])
        .run()
        .code(0);
    r.stdout()
}

#[test]
fn a_markdown_plan_fits_a_pull_request_comment() {
    // 300 pods: the table fits, their field changes do not.
    let md = markdown_plan(&many_pods(300));
    assert!(md.len() <= 65_536, "{} bytes", md.len());
    assert!(
        md.contains("| `+` | `pod.app299` | create |"),
        "the whole table"
    );
    assert!(
        md.contains("**Cut to fit a pull-request comment** (65536 characters at most): the field changes show their first"),
        "{}",
        &md[md.len() - 600..]
    );
    assert_eq!(md.matches("```").count(), 2, "the diff block is closed");
    assert!(md.contains("</details>"));
    // Every line of the block is whole: the last one before the fence is a field's.
    let block = &md[md.find("```diff\n").unwrap() + 8..md.rfind("```").unwrap()];
    assert!(
        block.lines().all(|l| l.starts_with('+')),
        "created: one `+` in the first column"
    );
    assert!(
        !block.contains("+ +") && !block.contains("+      +"),
        "no doubled sign"
    );

    // 3,000 pods: not even the table fits.
    let md = markdown_plan(&many_pods(3000));
    assert!(md.len() <= 65_536, "{} bytes", md.len());
    assert!(
        md.contains("the table shows its first"),
        "{}",
        &md[md.len() - 600..]
    );
    assert!(!md.contains("<details>"));

    // A plan that fits is not cut.
    let md = markdown_plan(&many_pods(3));
    assert!(!md.contains("Cut to fit"));
    assert!(md.ends_with("</details>\n"));
}

#[test]
fn berth_log_debug_logs_each_engine_request_with_its_time_and_nothing_else_changes() {
    if !crate::common::docker::available() {
        return;
    }
    let s = crate::common::Scene::new();
    s.spec("pods:\n  web: { image: \"x:1\" }\n");
    let quiet = s.berth(&["plan"]).code(0);
    assert!(
        !quiet.stderr().contains("engine request"),
        "{}",
        quiet.stderr()
    );
    let logged = s
        .berth_cmd(&["plan"])
        .env("BERTH_LOG", "debug")
        .run()
        .code(0);
    let err = logged.stderr();
    assert!(
        err.lines().any(|l| l.contains("engine request")
            && l.contains("region=\"local\"")
            && l.contains("call=\"list_containers\"")
            && l.contains("ms=")),
        "{err}"
    );
    assert!(err.contains("observed"), "{err}");
    assert_eq!(
        logged.stdout(),
        quiet.stdout(),
        "the plan itself is the same"
    );
    let bad = s
        .berth_cmd(&["plan"])
        .env("BERTH_LOG", "verbose")
        .run()
        .code(1);
    assert!(
        bad.stderr().contains("`verbose` is not one of"),
        "{}",
        bad.stderr()
    );
    let bad = s
        .berth_cmd(&["plan"])
        .env("BERTH_LOG", "berth[")
        .run()
        .code(1);
    assert!(
        bad.stderr().contains("is not a log level or filter"),
        "{}",
        bad.stderr()
    );
}
