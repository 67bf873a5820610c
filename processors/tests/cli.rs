//! The `pipetel` binary as a shell step or an operator runs it, against moto: exit codes that
//! scripts can trust, one-line errors, `--json` output.

use std::process::{Command, Output};

use pipetel_processors::local::{repo_root, sdk_config, Moto};

struct Cli {
    moto: Moto,
}

impl Cli {
    fn start() -> Self {
        let moto =
            Moto::start(&repo_root()).expect("moto from .venv (run ./scripts/setup-venv.sh)");
        Self { moto }
    }

    /// The alert topic, as the deployment template would create it.
    fn create_topic(&self) -> String {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let config = sdk_config(&self.moto.endpoint).await;
            aws_sdk_sns::Client::new(&config)
                .create_topic()
                .name("sla-alerts")
                .send()
                .await
                .unwrap()
                .topic_arn
                .unwrap()
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pipetel"))
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env_remove("PIPETEL_TABLE_PREFIX")
            .env_remove("PIPETEL_SLA_RULES")
            .env_remove("PIPETEL_SLA_RULES_FILE")
            .output()
            .expect("the pipetel binary runs")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pipetel {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

const RUN: [&str; 6] = [
    "--source",
    "orders",
    "--stage",
    "extract",
    "--run-date",
    "20260625",
];

fn log(cli: &Cli, status: &str, at: &str, extra: &[&str]) -> Output {
    let mut args = vec!["log", status];
    args.extend(RUN);
    args.extend(["--at", at]);
    args.extend(extra);
    cli.run(&args)
}

#[test]
fn a_shell_step_logs_events_and_an_operator_sees_the_projections() {
    let cli = Cli::start();
    let created = cli.ok(&["tables", "create"]);
    assert_eq!(
        created.lines().filter(|l| l.starts_with("created")).count(),
        5
    );
    assert!(cli
        .ok(&["tables", "create"])
        .lines()
        .all(|l| l.starts_with("exists")));

    assert!(log(&cli, "start", "2026-06-25T03:00:00Z", &[])
        .status
        .success());
    let failed = log(
        &cli,
        "failed",
        "2026-06-25T03:05:00Z",
        &["--error", "source API returned 503"],
    );
    assert!(failed.status.success());
    // The same event again: still success (idempotent), and it says nothing was written.
    let again = log(
        &cli,
        "failed",
        "2026-06-25T03:05:00Z",
        &["--error", "source API returned 503"],
    );
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already logged"));

    let topic_arn = cli.create_topic();
    let consumed = cli.ok(&["consume", "--until-caught-up", "--topic-arn", &topic_arn]);
    let report: serde_json::Value = serde_json::from_str(&consumed).unwrap();
    assert_eq!(report["events"], 2);

    let jobs: serde_json::Value =
        serde_json::from_str(&cli.ok(&["jobs", "--date", "20260625", "--json"])).unwrap();
    assert_eq!(jobs[0]["job_id"], "orders#20260625");
    assert_eq!(jobs[0]["status"], "FAILED");
    let by_source: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "jobs", "--date", "20260625", "--source", "orders", "--status", "failed", "--json",
    ]))
    .unwrap();
    assert_eq!(by_source, jobs);
    let failed: serde_json::Value = serde_json::from_str(&cli.ok(&["failed", "--json"])).unwrap();
    assert_eq!(failed[0]["pk"], "orders#extract#20260625");
    assert_eq!(failed[0]["retry_state"], "PENDING");
    assert!(cli
        .ok(&["jobs", "--date", "20260625"])
        .contains("orders#20260625"));

    // The scheduled functions, run once by hand (dry runs change nothing).
    let sweep: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "sweep",
        "--dry-run",
        "--json",
        "--topic-arn",
        &topic_arn,
        "--now",
        "2026-06-25T03:30:00Z",
    ]))
    .unwrap();
    assert_eq!(sweep["dry_run"], true);
    let retry: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "retry",
        "--dry-run",
        "--json",
        "--now",
        "2026-06-25T03:30:00Z",
        "--state-machine-arn",
        "arn:aws:states:us-east-1:123456789012:stateMachine:etl",
    ]))
    .unwrap();
    assert_eq!(retry["dispatches"][0]["pk"], "orders#extract#20260625");
    assert_eq!(retry["dispatches"][0]["outcome"]["result"], "WOULD_SUBMIT");

    // verify: clean; then drift (exit 3) once the log has an event the projections lack (no
    // consumer ran); then clean after a rebuild.
    assert!(cli.ok(&["verify"]).contains("no drift"));
    let unconsumed = cli.run(&[
        "log",
        "done",
        "--source",
        "orders",
        "--stage",
        "extract",
        "--run-date",
        "20260625",
        "--at",
        "2026-06-25T04:00:00Z",
    ]);
    assert!(unconsumed.status.success());
    let drifted = cli.run(&["verify", "--json"]);
    assert_eq!(drifted.status.code(), Some(3));
    let drift: serde_json::Value = serde_json::from_slice(&drifted.stdout).unwrap();
    assert!(drift
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["key"] == "orders#20260625"));
    assert!(cli.ok(&["rebuild"]).contains("rebuilt 1 rollups"));
    assert!(cli.run(&["verify"]).status.success());
}

#[test]
fn bad_input_exits_1_with_one_line_and_misuse_exits_2() {
    let cli = Cli::start();
    cli.ok(&["tables", "create"]);
    let bad_date = cli.run(&[
        "log",
        "start",
        "--source",
        "orders",
        "--stage",
        "extract",
        "--run-date",
        "20260230",
    ]);
    assert_eq!(bad_date.status.code(), Some(1));
    let stderr = String::from_utf8(bad_date.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pipetel: error: invalid stage event"),
        "{stderr}"
    );
    assert!(stderr.contains("20260230"), "{stderr}");

    let bad_source = cli.run(&[
        "log",
        "start",
        "--source",
        "a#b",
        "--stage",
        "extract",
        "--run-date",
        "20260625",
    ]);
    assert_eq!(bad_source.status.code(), Some(1));

    let usage = cli.run(&["log", "start", "--source", "orders"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(cli.run(&["--help"]).status.success());
    for command in [
        "log", "consume", "rebuild", "verify", "jobs", "failed", "alerts", "tables", "demo",
    ] {
        assert!(
            cli.run(&[command, "--help"]).status.success(),
            "{command} --help"
        );
    }
}
