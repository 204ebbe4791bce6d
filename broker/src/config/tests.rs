use super::*;

fn run(args: &[&str]) -> Result<Config, ConfigError> {
    loaded(args).map(|(config, _)| config)
}

fn loaded(args: &[&str]) -> Result<(Config, Vec<Renamed>), ConfigError> {
    match load(std::iter::once("ringmq").chain(args.iter().copied()))? {
        Loaded::Run { config, renamed } => Ok((*config, renamed)),
        Loaded::Print(text) => panic!("unexpected print: {text}"),
    }
}

fn with_file(text: &str, args: &[&str]) -> Result<(Config, Vec<Renamed>), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringmq.toml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    loaded(&all)
}

#[test]
fn no_flags_gives_the_documented_defaults() {
    let config = run(&[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:7878");
    assert_eq!(config.data_dir, PathBuf::from("./ringmq-data"));
}

#[test]
fn flags_parse_units() {
    let config = run(&[
        "--partition-capacity-default",
        "1GiB",
        "--sync",
        "interval=250",
        "--frame-size-max",
        "2MiB",
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout-ms",
        "1500",
    ])
    .unwrap();
    assert_eq!(config.partition_capacity_default, 1 << 30);
    assert_eq!(config.sync, SyncPolicy::Interval(Duration::from_millis(250)));
    assert_eq!(config.frame_size_max, 2 << 20);
    assert_eq!(config.listen.port(), 0);
    assert_eq!(config.idle_timeout, Duration::from_millis(1500));
}

#[test]
fn bad_values_name_the_key_the_value_and_what_is_accepted() {
    let cases: [(&[&str], &str); 11] = [
        (
            &["--default-capacity", "lots"],
            "invalid value \"lots\" for --default-capacity: expected a size like",
        ),
        (
            &["--sync", "sometimes"],
            "invalid value \"sometimes\" for --sync: expected none, always or interval=<ms>",
        ),
        (
            &["--listen", "localhost"],
            "invalid value \"localhost\" for --listen: expected an address",
        ),
        (
            &["--default-partitions", "0"],
            "invalid value \"0\" for --default-partitions: expected a whole number from 1 to 1024",
        ),
        (&["--prefault", "yes"], "invalid value \"yes\" for --prefault: expected true or false"),
        (&["--batch-size-max", "2MiB"], "for --batch-size-max"),
        (&["--data-dir", ""], "invalid value \"\" for --data-dir: expected a directory path"),
        (&["--auth", "maybe"], "invalid value \"maybe\" for --auth: expected off or required"),
        (
            &["--sync-method", "fsync"],
            "invalid value \"fsync\" for --sync-method: expected msync, fdatasync or range+fdatasync",
        ),
        (
            &["--local-listen-mode", "1777"],
            "invalid value \"1777\" for --local-listen-mode: expected an octal file mode from 0 to 777",
        ),
        (
            &["--local-listen-mode", "rw"],
            "invalid value \"rw\" for --local-listen-mode: expected an octal file mode",
        ),
    ];
    for (args, expected) in cases {
        let error = run(args).unwrap_err().to_string();
        assert!(error.contains(expected), "{args:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    let error = run(&["--no-such-flag"]).unwrap_err().to_string();
    assert!(error.contains("--no-such-flag") && !error.contains('\n'), "{error}");
}

#[test]
fn every_limit_a_setting_declares_is_enforced_at_both_ends() {
    for setting in settings() {
        if setting.switch
            || matches!(
                setting.value_name,
                "ADDR" | "DIR" | "FILE" | "POLICY" | "FORMAT" | "HOST" | "MODE" | "METHOD"
            )
        {
            continue;
        }
        // The accepted text ends "from MIN to MAX"; one past each end is refused.
        let range = setting.accepted.rsplit("from ").next().unwrap();
        let (min, max) = range.split_once(" to ").unwrap();
        for (edge, beyond) in [(min, -1i128), (max, 1)] {
            let edge = edge.trim();
            let bytes: i128 = match edge.parse::<bytesize::ByteSize>() {
                Ok(size) => i128::from(size.as_u64()),
                Err(_) => edge.parse().unwrap(),
            };
            let outside = (bytes + beyond).to_string();
            let inside = bytes.to_string();
            let flag = setting.flag();
            let error = run(&[&flag, &outside]);
            assert!(
                matches!(error, Err(ConfigError::InvalidValue { .. })),
                "{flag} {outside}: {error:?}"
            );
            // The edge itself is accepted, unless it conflicts with another setting's default.
            match run(&[&flag, &inside]) {
                Ok(_) | Err(ConfigError::Conflict { .. }) => {}
                Err(error) => panic!("{flag} {inside}: {error}"),
            }
        }
    }
}

#[test]
fn old_names_still_work_and_are_reported_as_renamed() {
    let (config, renamed) = loaded(&[
        "--default-partitions",
        "3",
        "--default-capacity",
        "8MiB",
        "--topic-capacity-max",
        "1GiB",
        "--topic-partitions-max",
        "8",
        "--connections-max",
        "7",
        "--in-flight-max",
        "9",
        "--read-buffers",
        "5",
    ])
    .unwrap();
    assert_eq!((config.partition_count_default, config.partition_capacity_default), (3, 8 << 20));
    assert_eq!((config.partition_capacity_max, config.partition_count_max), (1 << 30, 8));
    assert_eq!(
        (config.connection_count_max, config.in_flight_count_max, config.read_buffer_count),
        (7, 9, 5)
    );
    assert_eq!(renamed.len(), 7);
    assert_eq!(
        renamed[0].to_string(),
        "--default-partitions is now called --partition-count-default; the old name still works"
    );
    let (config, renamed) = with_file("read_buffers = 3\n", &[]).unwrap();
    assert_eq!(config.read_buffer_count, 3);
    assert_eq!(renamed[0].old, "config key read_buffers");
    assert_eq!(renamed[0].new, "config key read_buffer_count");
    // Under the old and the new name in one file: ambiguous, refused.
    let error = with_file("read_buffers = 3\nread_buffer_count = 4\n", &[]).unwrap_err();
    assert!(
        error.to_string().contains("read_buffers is the old name of read_buffer_count"),
        "{error}"
    );
    // On the command line the last one wins, as for a repeated flag.
    let config = run(&["--read-buffers", "3", "--read-buffer-count", "4"]).unwrap();
    assert_eq!(config.read_buffer_count, 4);
}

#[test]
fn switches_take_a_value_stand_alone_or_are_negated() {
    assert!(!run(&["--prefault", "false"]).unwrap().prefault);
    assert!(!run(&["--no-prefault"]).unwrap().prefault);
    assert!(run(&["--no-prefault", "--prefault"]).unwrap().prefault);
    assert!(!run(&["--prefault", "--no-prefault"]).unwrap().prefault);
    assert!(run(&["--metrics=true"]).unwrap().metrics);
}

#[test]
fn relations_between_settings_are_checked() {
    let error = run(&["--partition-capacity-default", "2GiB", "--partition-capacity-max", "1GiB"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid value \"2GiB\" for --partition-capacity-default: larger than partition_capacity_max (1GiB)"
    );
    // Only the maximum was given: it is the one named.
    let error = run(&["--partition-capacity-max", "1MiB"]).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid value \"1MiB\" for --partition-capacity-max: smaller than partition_capacity_default (256MiB)"
    );
    let error = run(&["--partition-count-max", "2", "--partition-count-default", "3"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("larger than partition_count_max (2)"), "{error}");
    // A smaller frame limit brings an unset batch limit down with it, but not a set one.
    let config = run(&["--frame-size-max", "64KiB"]).unwrap();
    assert_eq!(config.batch_size_max, (64 << 10) - 1024);
    let error =
        run(&["--frame-size-max", "64KiB", "--batch-size-max", "64KiB"]).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid value \"64KiB\" for --batch-size-max: larger than frame_size_max less 1KiB (63KiB)"
    );
}

#[test]
fn group_settings_are_checked() {
    let config =
        run(&["--group-log-capacity", "32MiB", "--group-session-timeout-min-ms", "100"]).unwrap();
    assert_eq!(config.group_log_capacity, 32 << 20);
    assert_eq!(config.group_session_timeout_min, Duration::from_millis(100));
    let error = run(&["--group-log-capacity", "1MiB"]).unwrap_err().to_string();
    assert!(error.contains("for --group-log-capacity"), "{error}");
    let error =
        run(&["--group-session-timeout-min-ms", "5000", "--group-session-timeout-max-ms", "1000"])
            .unwrap_err()
            .to_string();
    assert!(error.contains("larger than group_session_timeout_max_ms"), "{error}");
}

#[test]
fn file_settings_apply_and_flags_win() {
    let text = "default_partitions = 4\ndefault_capacity = \"64MiB\"\nsync = \"always\"\nprefault = false\n";
    let (config, _) = with_file(text, &["--default-partitions", "2"]).unwrap();
    assert_eq!((config.partition_count_default, config.partition_capacity_default), (2, 64 << 20));
    assert_eq!(config.sync, SyncPolicy::Always);
    assert!(!config.prefault);
}

#[test]
fn file_unknown_keys_and_bad_values_are_named() {
    let error = with_file("default_partitons = 4\n", &[]).unwrap_err().to_string();
    assert!(error.contains("default_partitons"), "{error}");
    let error = with_file("in_flight_max = -3\n", &[]).unwrap_err().to_string();
    assert!(error.contains("config key in_flight_max") && error.contains("\"-3\""), "{error}");
    let error = with_file("listen = \n", &[]).unwrap_err().to_string();
    assert!(error.starts_with("config file ") && !error.contains('\n'), "{error}");
}

#[test]
fn metrics_can_move_or_be_turned_off() {
    assert_eq!(run(&[]).unwrap().metrics_address().unwrap().to_string(), "127.0.0.1:9878");
    assert_eq!(
        run(&["--metrics-listen", "127.0.0.1:0"]).unwrap().metrics_address().unwrap().port(),
        0
    );
    assert_eq!(run(&["--no-metrics"]).unwrap().metrics_address(), None);
    let (config, _) = with_file("metrics = false\n", &[]).unwrap();
    assert_eq!(config.metrics_address(), None);
    let error = run(&["--metrics-listen", "nine"]).unwrap_err().to_string();
    assert!(error.contains("--metrics-listen"), "{error}");
}

#[test]
fn printed_config_loads_back_to_the_same() {
    for args in [
        &["--no-metrics"][..],
        &["--metrics-listen", "127.0.0.1:9999"],
        &["--sync", "interval=100", "--default-capacity", "48MiB", "--log-format", "json"],
    ] {
        let config = run(args).unwrap();
        let (again, renamed) = with_file(&to_toml(&config), &[]).unwrap();
        assert_eq!(again, config, "{args:?}");
        assert!(renamed.is_empty(), "printed with the current names");
    }
}

#[test]
fn help_explains_every_setting_and_hides_old_names() {
    let Loaded::Print(help) = load(["ringmq", "--help"]).unwrap() else { panic!("no help") };
    for setting in settings() {
        assert!(help.contains(&setting.flag()), "{} missing from --help", setting.flag());
        assert!(help.contains(&setting.help), "{} help missing", setting.key);
        for old in setting.renamed {
            assert!(!help.contains(&Setting::flag_of(old)), "old {old} shown in --help");
        }
    }
    let Loaded::Print(short) = load(["ringmq", "-h"]).unwrap() else { panic!("no help") };
    assert!(short.contains("--partition-count-default <N>"), "{short}");
    assert!(short.contains("[default: 256MiB]"), "{short}");
}

#[test]
fn read_buffer_help_matches_the_buffer_size() {
    let setting = settings().iter().find(|setting| setting.key == "read_buffer_count").unwrap();
    let expected = format!(
        "`frame_size_max` + {} KiB of read-ahead + the {}-byte frame header",
        READ_AHEAD >> 10,
        FRAME_HEADER_SIZE
    );
    assert!(setting.long.contains(&expected), "{}", setting.long);
    assert_eq!(read_buffer_size(4096), 4096 + READ_AHEAD + FRAME_HEADER_SIZE);
}

/// `docs/config.md` holds the tables [`reference_markdown`] makes, between two markers. Run with
/// `RINGMQ_BLESS=1` to write them after changing a setting.
#[test]
fn docs_config_md_is_current() {
    const START: &str = "<!-- settings: generated from broker/src/config/mod.rs -->\n";
    const END: &str = "<!-- end of settings -->";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = text.split_once(START).expect("start marker in docs/config.md");
    let (current, after) = rest.split_once(END).expect("end marker in docs/config.md");
    let wanted = format!("\n{}\n", reference_markdown());
    if current != wanted {
        if std::env::var_os("RINGMQ_BLESS").is_some() {
            std::fs::write(&path, format!("{before}{START}{wanted}{END}{after}")).unwrap();
        } else {
            panic!(
                "docs/config.md is out of date: run `RINGMQ_BLESS=1 cargo test -p ringmq-broker \
                 --lib docs_config_md_is_current` and commit the result"
            );
        }
    }
}

#[test]
fn the_shipped_example_files_load_with_current_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let deploy = std::fs::read_to_string(root.join("deploy/ringmq.toml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
    let example = docs.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next());
    for text in [deploy.as_str(), example.expect("a TOML example in docs/config.md")] {
        let (_, renamed) = with_file(text, &[]).unwrap();
        assert!(renamed.is_empty(), "old names in a shipped example: {renamed:?}");
    }
}

#[test]
fn file_modes_read_octal_and_print_back() {
    use super::FileMode;
    assert_eq!("600".parse::<FileMode>().ok(), Some(FileMode(0o600)));
    assert_eq!("0660".parse::<FileMode>().ok(), Some(FileMode(0o660)));
    assert_eq!("0o777".parse::<FileMode>().ok(), Some(FileMode(0o777)));
    assert_eq!(FileMode(0o640).to_string(), "0640");
    for bad in ["", "8", "1000", "+7", "-1", "rw-"] {
        assert!(bad.parse::<FileMode>().is_err(), "{bad:?}");
    }
}
