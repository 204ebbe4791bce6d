//! `ringmq-cli --help` explains every command and flag. (This integration test also makes
//! `cargo test --workspace` build the `ringmq-cli` binary that the broker's end-to-end CLI test
//! drives.)

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

use std::process::Command;

fn help(args: &[&str]) -> String {
    let output =
        Command::new(env!("CARGO_BIN_EXE_ringmq-cli")).args(args).arg("--help").output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn help_explains_every_command_and_flag() {
    let top = help(&[]);
    for word in ["topic", "produce", "consume", "--broker", "--timeout-ms"] {
        assert!(top.contains(word), "top-level help lacks {word}:\n{top}");
    }
    let produce = help(&["produce"]);
    for word in ["--key", "--partition", "--acks", "--file", "--linger-ms", "synced"] {
        assert!(produce.contains(word), "produce help lacks {word}:\n{produce}");
    }
    let consume = help(&["consume"]);
    for word in ["--partition", "--from", "--count", "--follow", "--format"] {
        assert!(consume.contains(word), "consume help lacks {word}:\n{consume}");
    }
    let user = help(&["user", "add"]);
    assert!(user.contains("--password-stdin"), "user add help lacks --password-stdin:\n{user}");
    let acl = help(&["acl", "add"]);
    for word in [
        "--principal",
        "--topic",
        "--group",
        "--cluster",
        "--superuser",
        "--prefix",
        "--operation",
        "idempotent-write",
    ] {
        assert!(acl.contains(word), "acl add help lacks {word}:\n{acl}");
    }
    let create = help(&["topic", "create"]);
    for word in ["--partitions", "--capacity"] {
        assert!(create.contains(word), "topic create help lacks {word}:\n{create}");
    }
}

#[test]
fn an_unreachable_broker_is_one_readable_line_and_exit_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-cli"))
        .args(["--broker", "127.0.0.1:1", "--timeout-ms", "2000", "topic", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot connect to 127.0.0.1:1"), "{stderr}");
}
