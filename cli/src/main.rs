//! `ringmq-cli`: create topics, produce and consume from the command line.
//!
//! Errors are one readable line on stderr (`error: topic "orders" does not exist`) and exit code 1.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use ringmq_client::{
    Acks, Client, ClientError, Compression, ConsumerRecord, LocalConsumer, ProducerRecord,
    StartOffset, TopicConfig,
};

#[derive(Debug, Parser)]
#[command(name = "ringmq-cli", version, about = "Command-line client for the ringmq broker")]
struct Cli {
    /// Broker address.
    #[arg(long, global = true, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    broker: String,
    /// Timeout of each call to the broker, ms.
    #[arg(long, global = true, default_value_t = 30_000, value_name = "MS")]
    timeout_ms: u64,
    /// Connect with TLS; the broker's certificate must chain to --ca-file and name the host of
    /// --broker.
    #[arg(long, global = true, requires = "ca_file")]
    tls: bool,
    /// PEM file of the CA certificates that vouch for the broker (implies --tls).
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// PEM file of this client's certificate chain, for a broker that asks for one (mutual TLS).
    #[arg(long, global = true, value_name = "FILE", requires_all = ["ca_file", "key_file"])]
    cert_file: Option<std::path::PathBuf>,
    /// PEM file of the private key of --cert-file.
    #[arg(long, global = true, value_name = "FILE", requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,
    /// Log in as this user (SCRAM-SHA-256), with the password from the RINGMQ_PASSWORD
    /// environment variable (never a flag: flags show in `ps`).
    #[arg(long, global = true, value_name = "NAME")]
    user: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send one message per line of stdin (or of --file); prints how many were acknowledged.
    Produce(ProduceArgs),
    /// Print messages, one value per line (with --group, as a member of a consumer group).
    Consume(ConsumeArgs),
    /// List, describe and reset consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// List, add and remove users, and change their passwords (needs describe or alter on the
    /// cluster).
    #[command(subcommand)]
    User(UserCommand),
    /// List, add and remove access rules and superusers (needs describe or alter on the
    /// cluster).
    #[command(subcommand)]
    Acl(AclCommand),
    /// List the broker's quotas, and give principals quotas of their own in place of its
    /// defaults (needs describe or alter on the cluster).
    #[command(subcommand)]
    Quota(QuotaCommand),
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// List the broker's defaults (principal *) and every principal's own quotas
    /// ("default": the broker's value; "none": no limit).
    List,
    /// Give a principal its own quotas (0: no limit); in force for its connections at once.
    #[command(group(clap::ArgGroup::new("quota").required(true).multiple(true).args(["produce", "fetch", "connections", "topic_bytes"])))]
    Set {
        /// Who: a user name, a client certificate's subject (CN=...,O=...), or ANONYMOUS.
        principal: String,
        /// Record batch bytes per second it may produce, e.g. 50MiB.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        produce: Option<u64>,
        /// Record batch bytes per second it may fetch, e.g. 50MiB.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        fetch: Option<u64>,
        /// Most connections it may have open at once.
        #[arg(long, value_name = "N")]
        connections: Option<u64>,
        /// Most ring bytes (partitions x capacity) of the topics it created, e.g. 10GiB.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        topic_bytes: Option<u64>,
    },
    /// Put a principal's quotas back to the broker's defaults.
    Remove {
        /// Who.
        principal: String,
        /// Which: produce, fetch, connections, topic-bytes, or all (every one it has).
        #[arg(required = true, value_name = "QUOTA", value_parser = ["produce", "fetch", "connections", "topic-bytes", "all"])]
        quotas: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List users.
    List,
    /// Add a user; the password is read from stdin (one line), never from a flag.
    Add {
        /// User name: 1-200 characters of A-Z a-z 0-9 . _ @ -.
        name: String,
        /// Read the password from the first line of stdin (required: flags show in `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Change a user's password, read from stdin (one line).
    Passwd {
        /// User name.
        name: String,
        /// Read the new password from the first line of stdin (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a user (the rules naming it stay).
    Remove {
        /// User name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// List every rule, superusers first.
    List,
    /// Add a rule (takes effect on the next request).
    Add(RuleArgs),
    /// Remove a rule (exactly as listed).
    Remove(RuleArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("resource").required(true).args(["topic", "group", "cluster", "superuser"])))]
struct RuleArgs {
    /// Who: a user name, a client certificate's subject (CN=...,O=...), or * for every
    /// authenticated principal.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: String,
    /// The rule is about this topic (* for every topic).
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
    /// The rule is about this consumer group (* for every group).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// The rule is about the cluster (creating topics, listing groups, counters, users and
    /// rules).
    #[arg(long)]
    cluster: bool,
    /// Make the principal a superuser (allowed everything) instead; only a superuser may.
    #[arg(long)]
    superuser: bool,
    /// Match every topic or group whose name starts with --topic or --group.
    #[arg(long)]
    prefix: bool,
    /// What is allowed: all, produce, consume (topics), read (groups), create, delete,
    /// describe, alter, idempotent-write (cluster).
    #[arg(long, value_name = "OP", value_parser = parse_operation, required_unless_present = "superuser")]
    operation: Option<ringmq_client::access::RuleOperation>,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups: topic, live members, generation.
    List,
    /// Show a group's members and partitions, and per partition its committed offset, the end
    /// offset and the lag.
    Describe {
        /// Group name.
        group: String,
    },
    /// Set a group's committed offsets on every partition of a topic (the group must have no
    /// live members).
    Reset {
        /// Group name.
        group: String,
        /// Where to: earliest, latest, or an offset.
        #[arg(long, value_name = "WHERE", value_parser = parse_start)]
        to: StartOffset,
        /// Topic [default: the one topic the group has offsets on].
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic (its rings are allocated on disk before this returns).
    Create {
        /// Topic name: 1-200 characters of A-Z a-z 0-9 . _ - (not starting with '.').
        name: String,
        /// Number of partitions [default: the broker's].
        #[arg(long, value_name = "N")]
        partitions: Option<u32>,
        /// Ring capacity per partition, e.g. 256MiB or 1GiB: how much each partition retains
        /// [default: the broker's].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        capacity: Option<u64>,
    },
    /// List topics and their partition counts.
    List,
    /// Show a topic's settings and each partition's earliest and next offset.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Topic to send to.
    topic: String,
    /// Key for every message (picks the partition by hash unless --partition is given).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Send every message to this partition.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Durability to wait for: none (no acknowledgement), written (survives a broker crash),
    /// synced (survives an OS crash).
    #[arg(long, value_enum, default_value_t = AcksArg::Written)]
    acks: AcksArg,
    /// Read messages from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// How long a batch waits for more messages, ms.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Compress batches: none, gzip, snappy, lz4 or zstd (the broker stores them compressed;
    /// consumers decompress).
    #[arg(long, value_enum, default_value_t = CompressionArg::None, value_name = "CODEC")]
    compression: CompressionArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AcksArg {
    None,
    Written,
    Synced,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition [default: every partition].
    #[arg(long, value_name = "P", conflicts_with = "group")]
    partition: Option<u32>,
    /// Where to start: earliest, latest, or an offset. With --group: where partitions without
    /// a committed offset start (earliest or latest).
    #[arg(long, default_value = "earliest", value_name = "WHERE", value_parser = parse_start)]
    from: StartOffset,
    /// Stop after this many messages (across partitions).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new messages instead of stopping at the end of the log (with --group:
    /// instead of stopping once none has arrived for --idle-ms). Ctrl-C stops (with --group,
    /// Ctrl-C or SIGTERM first commits what was printed and leaves the group).
    #[arg(long)]
    follow: bool,
    /// Consume as a member of this consumer group: read the partitions the broker assigns,
    /// resume from the group's committed offsets, commit what was printed (about every second
    /// and on exit).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// With --group and without --follow: stop once no message has arrived for this long, ms.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    idle_ms: u64,
    /// With --group: the session timeout, ms (a member killed without leaving keeps its
    /// partitions this long).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    session_timeout_ms: u64,
    /// Output: value (the value alone), offset (partition, offset, value), full (partition,
    /// offset, timestamp, key, value), tab-separated.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
    /// Read on the broker's own host, straight from its mapped ring, through its local socket
    /// at PATH (the broker's --local-listen) instead of --broker: no request per fetch. With
    /// --group, the member reads the partitions it is assigned this way, and joins, heartbeats
    /// and commits over the same socket.
    #[arg(long, value_name = "PATH")]
    local: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Value,
    Offset,
    Full,
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("expected a size like 64MiB or 1GiB, got {text:?}"))
}

fn parse_start(text: &str) -> Result<StartOffset, String> {
    match text {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        _ => text
            .parse()
            .map(StartOffset::Offset)
            .map_err(|_| format!("expected earliest, latest or an offset, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // A command group named without its subcommand (`ringmq-cli quota`): its help,
            // which lists them.
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = error.print();
                return ExitCode::from(2);
            }
            // Clap's message is several lines: what is wrong (a missing argument is named on the
            // indented lines after the first), then a blank line, the usage and a hint. The
            // first paragraph, on one line.
            let rendered = error.render().to_string();
            let what: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = if what.is_empty() {
                "error: invalid arguments".to_owned()
            } else {
                what.join(" ")
            };
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("error: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): stop quietly, as other tools do.
        Err(error)
            if error.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                == Some(std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(cli.timeout_ms);
    let tls = match &cli.ca_file {
        None => None,
        Some(ca_file) => {
            let identity = cli.cert_file.as_deref().zip(cli.key_file.as_deref());
            Some(ringmq_client::Tls::from_files(ca_file, identity)?)
        }
    };
    let mut options = ringmq_client::ConnectOptions::default().timeout(timeout);
    if let Some(tls) = tls {
        options = options.tls(tls);
    }
    if let Some(user) = &cli.user {
        let password = std::env::var("RINGMQ_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "--user {user} needs the password in the RINGMQ_PASSWORD environment variable"
            )
        })?;
        options = options.credentials(ringmq_client::Credentials::new(user, &password));
    }
    if let Command::Consume(args) = &cli.command {
        if let Some(path) = &args.local {
            let mut client = Client::connect_local(path, options.clone()).await?;
            let Command::Consume(args) = cli.command else { unreachable!("matched above") };
            if args.group.is_some() {
                return consume_group(&client, args, timeout).await;
            }
            return consume_local(&mut client, args, options).await;
        }
    }
    let mut client = Client::connect_with(&cli.broker, options).await?;
    match cli.command {
        Command::Topic(command) => topic(&mut client, command).await,
        Command::Produce(args) => produce(&client, args, timeout).await,
        Command::Consume(args) if args.group.is_some() => {
            consume_group(&client, args, timeout).await
        }
        Command::Consume(args) => consume(&mut client, args, timeout).await,
        Command::Group(command) => group(&mut client, command).await,
        Command::User(command) => user(&mut client, command).await,
        Command::Acl(command) => acl(&mut client, command).await,
        Command::Quota(command) => quota(&mut client, command).await,
    }
}

fn parse_operation(text: &str) -> Result<ringmq_client::access::RuleOperation, String> {
    use ringmq_client::access::RuleOperation;
    RuleOperation::from_name(text).ok_or_else(|| {
        let names: Vec<&str> =
            RuleOperation::ALL.iter().map(|operation| operation.name()).collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}

/// The first line of stdin, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    Ok(password)
}

async fn user(client: &mut Client, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::List => {
            let mut out = std::io::stdout().lock();
            for name in client.list_users().await? {
                writeln!(out, "{name}")?;
            }
        }
        UserCommand::Add { name, .. } => {
            client.add_user(&name, &password_from_stdin()?).await?;
            eprintln!("user {name} added");
        }
        UserCommand::Passwd { name, .. } => {
            client.set_password(&name, &password_from_stdin()?).await?;
            eprintln!("password of {name} changed");
        }
        UserCommand::Remove { name } => {
            client.remove_user(&name).await?;
            eprintln!("user {name} removed");
        }
    }
    Ok(())
}

async fn acl(client: &mut Client, command: AclCommand) -> anyhow::Result<()> {
    use ringmq_client::access::RuleOperation;
    use ringmq_client::Rule;
    let rule_of = |args: RuleArgs| -> Rule {
        let operation = args.operation.unwrap_or(RuleOperation::All);
        let rule = if args.superuser {
            Rule::superuser(&args.principal)
        } else if let Some(topic) = &args.topic {
            Rule::topic(&args.principal, topic, operation)
        } else if let Some(group) = &args.group {
            Rule::group(&args.principal, group, operation)
        } else {
            Rule::cluster(&args.principal, operation)
        };
        if args.prefix {
            rule.prefixed()
        } else {
            rule
        }
    };
    match command {
        AclCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "principal\tresource\tpattern\tname\toperation")?;
            for rule in client.list_rules().await? {
                let name = if rule.name.is_empty() { "-" } else { &rule.name };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{name}\t{}",
                    rule.principal,
                    rule.resource.name(),
                    rule.pattern.name(),
                    rule.operation.name()
                )?;
            }
        }
        AclCommand::Add(args) => {
            let rule = rule_of(args);
            client.add_rule(&rule).await?;
            eprintln!("added: {rule}");
        }
        AclCommand::Remove(args) => {
            let rule = rule_of(args);
            client.remove_rule(&rule).await?;
            eprintln!("removed: {rule}");
        }
    }
    Ok(())
}

async fn quota(client: &mut Client, command: QuotaCommand) -> anyhow::Result<()> {
    use ringmq_client::access::{Quota, QuotaKind};
    match command {
        QuotaCommand::List => {
            let quotas = client.list_quotas().await?;
            let mut out = std::io::stdout().lock();
            let names: Vec<&str> = QuotaKind::ALL.iter().map(|kind| kind.name()).collect();
            writeln!(out, "principal\t{}", names.join("\t"))?;
            let shown = |value: Option<u64>| match value {
                None => "default".to_owned(),
                Some(0) => "none".to_owned(),
                Some(value) => value.to_string(),
            };
            let defaults: Vec<String> = QuotaKind::ALL
                .iter()
                .map(|kind| {
                    let value = quotas.defaults.iter().find(|(found, _)| found == kind);
                    shown(Some(value.map_or(0, |(_, value)| *value)))
                })
                .collect();
            writeln!(out, "*\t{}", defaults.join("\t"))?;
            let mut principals: Vec<&str> =
                quotas.own.iter().map(|quota| quota.principal.as_str()).collect();
            principals.dedup();
            for principal in principals {
                let values: Vec<String> = QuotaKind::ALL
                    .iter()
                    .map(|kind| {
                        shown(
                            quotas
                                .own
                                .iter()
                                .find(|quota| quota.principal == principal && quota.kind == *kind)
                                .map(|quota| quota.value),
                        )
                    })
                    .collect();
                writeln!(out, "{principal}\t{}", values.join("\t"))?;
            }
        }
        QuotaCommand::Set { principal, produce, fetch, connections, topic_bytes } => {
            let asked = [
                (QuotaKind::Produce, produce),
                (QuotaKind::Fetch, fetch),
                (QuotaKind::Connections, connections),
                (QuotaKind::TopicBytes, topic_bytes),
            ];
            for (kind, value) in asked {
                if let Some(value) = value {
                    client.set_quota(&Quota::new(&principal, kind, value)).await?;
                    eprintln!("{principal}: {} quota {value}", kind.name());
                }
            }
        }
        QuotaCommand::Remove { principal, quotas } => {
            let kinds: Vec<QuotaKind> = if quotas.iter().any(|name| name == "all") {
                let own = client.list_quotas().await?.own;
                let kinds: Vec<QuotaKind> = own
                    .iter()
                    .filter(|quota| quota.principal == principal)
                    .map(|quota| quota.kind)
                    .collect();
                anyhow::ensure!(!kinds.is_empty(), "{principal} has no quotas of its own");
                kinds
            } else {
                let mut kinds: Vec<QuotaKind> =
                    quotas.iter().filter_map(|name| QuotaKind::from_name(name)).collect();
                kinds.sort_by_key(|kind| kind.to_u8());
                kinds.dedup();
                kinds
            };
            for kind in kinds {
                client.remove_quota(&principal, kind).await?;
                eprintln!("{principal}: {} quota back to the default", kind.name());
            }
        }
    }
    Ok(())
}

/// Creates a topic, waiting as long as the broker takes to allocate its rings, with the
/// allocation's progress (from the broker's `Stats`, on a second connection, which also notices a
/// broker that stopped answering).
async fn create_topic(client: &mut Client, name: &str, config: TopicConfig) -> anyhow::Result<()> {
    let mut watcher = Client::connect_with(client.address(), client.options()).await?;
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} allocating the rings of {msg}: {bytes} of {total_bytes} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.set_message(name.to_owned());
    let creating = client.create_topic(name, config);
    tokio::pin!(creating);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let created = loop {
        tokio::select! {
            created = &mut creating => break created,
            _ = tick.tick() => match watcher.stats().await {
                Ok(stats) => {
                    progress.set_length(stats.creating_file_bytes);
                    progress.set_position(stats.creating_written_bytes);
                }
                Err(error) => {
                    progress.finish_and_clear();
                    anyhow::bail!("the broker stopped answering while topic {name} was being created: {error}");
                }
            },
        }
    };
    progress.finish_and_clear();
    Ok(created?)
}

async fn group(client: &mut Client, command: GroupCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        GroupCommand::List => {
            writeln!(out, "group\ttopic\tmembers\tgeneration")?;
            for group in client.list_groups().await? {
                let topic = if group.topic.is_empty() { "-" } else { &group.topic };
                writeln!(out, "{}\t{topic}\t{}\t{}", group.group, group.members, group.generation)?;
            }
        }
        GroupCommand::Describe { group } => {
            let info = client.describe_group(&group).await?;
            let topic = if info.topic.is_empty() { "-" } else { &info.topic };
            writeln!(out, "group {}", info.group)?;
            writeln!(out, "topic {topic}")?;
            writeln!(out, "generation {}", info.generation)?;
            writeln!(out, "members {}", info.members.len())?;
            for member in &info.members {
                let partitions: Vec<String> =
                    member.partitions.iter().map(ToString::to_string).collect();
                writeln!(
                    out,
                    "  {}\t{}\tpartitions {}",
                    member.member_id,
                    member.client,
                    if partitions.is_empty() { "-".to_owned() } else { partitions.join(",") }
                )?;
            }
            writeln!(out, "topic\tpartition\tcommitted\tend\tlag")?;
            for offset in &info.offsets {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    offset.topic, offset.partition, offset.committed, offset.end, offset.lag
                )?;
            }
        }
        GroupCommand::Reset { group, to, topic } => {
            let topic = match topic {
                Some(topic) => topic,
                None => {
                    let info = client.describe_group(&group).await?;
                    let mut topics: Vec<&str> =
                        info.offsets.iter().map(|offset| offset.topic.as_str()).collect();
                    topics.dedup();
                    match topics.as_slice() {
                        [one] => (*one).to_owned(),
                        [] => anyhow::bail!(
                            "group {group:?} has no committed offsets; name the topic with --topic"
                        ),
                        several => anyhow::bail!(
                            "group {group:?} has offsets on {} topics ({}); name one with --topic",
                            several.len(),
                            several.join(", ")
                        ),
                    }
                }
            };
            let offsets = client.reset_group_offsets(&group, &topic, to).await?;
            for (partition, offset) in &offsets {
                writeln!(out, "{topic}\t{partition}\t{offset}")?;
            }
            writeln!(out, "reset group {group} on {topic}: {} partition(s)", offsets.len())?;
        }
    }
    Ok(())
}

/// How often `consume --group` commits what it printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// `consume --group`: prints records as a group member and commits what it printed (flushed
/// first, so a crash never commits a record that did not reach the output).
async fn consume_group(
    client: &Client,
    args: ConsumeArgs,
    timeout: Duration,
) -> anyhow::Result<()> {
    let group = args.group.as_deref().unwrap_or_default();
    let mut builder = client
        .group_consumer(group, &args.topic)
        .start(args.from)
        .auto_commit(None)
        .session_timeout(Duration::from_millis(args.session_timeout_ms))
        .timeout(timeout);
    if let Some(path) = &args.local {
        builder = builder.read_locally(path);
    }
    let mut consumer = builder.build().await?;
    let idle = Duration::from_millis(args.idle_ms);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    // Printed but not yet committed.
    let mut pending = false;
    let mut next_commit = tokio::time::Instant::now() + COMMIT_INTERVAL;
    // Ctrl-C or SIGTERM (a service manager, `timeout`): commit what was printed, leave the group.
    let interrupted = stop_signal();
    tokio::pin!(interrupted);
    loop {
        // Without --follow, a long idle wait ends the run.
        let wait = if args.follow { Duration::MAX } else { idle };
        let next = tokio::select! {
            _ = &mut interrupted => break,
            () = tokio::time::sleep_until(next_commit), if pending => {
                out.flush()?;
                // A refused commit (a partition just moved) is retried at the next one.
                let _ = consumer.commit().await;
                pending = false;
                next_commit = tokio::time::Instant::now() + COMMIT_INTERVAL;
                continue;
            }
            next = tokio::time::timeout(wait, consumer.next()) => match next {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let record = next?;
        print_record(&mut out, args.format, record.partition, &record)?;
        if args.follow {
            out.flush()?;
        }
        printed += 1;
        pending = true;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    out.flush()?;
    let committed = consumer.commit().await;
    let closed = consumer.close().await;
    committed?;
    closed?;
    Ok(())
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    partition: u32,
    record: &ConsumerRecord,
) -> std::io::Result<()> {
    match format {
        Format::Value => {}
        Format::Offset => write!(out, "{partition}\t{}\t", record.offset)?,
        Format::Full => {
            write!(out, "{partition}\t{}\t{}\t", record.offset, record.timestamp)?;
            out.write_all(record.key.as_deref().unwrap_or_default())?;
            out.write_all(b"\t")?;
        }
    }
    out.write_all(&record.value)?;
    out.write_all(b"\n")
}

async fn topic(client: &mut Client, command: TopicCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        TopicCommand::Create { name, partitions, capacity } => {
            create_topic(client, &name, TopicConfig { partitions, capacity, chunk_size: None })
                .await?;
            let info = client.describe_topic(&name).await?;
            writeln!(
                out,
                "created topic {name} with {} partition(s) of {} each",
                info.partitions.len(),
                bytesize::ByteSize::b(info.capacity).display().iec()
            )?;
        }
        TopicCommand::List => {
            for topic in client.list_topics().await? {
                writeln!(out, "{}\t{} partition(s)", topic.name, topic.partitions)?;
            }
        }
        TopicCommand::Describe { name } => {
            let info = client.describe_topic(&name).await?;
            writeln!(out, "topic {}", info.name)?;
            writeln!(
                out,
                "capacity per partition {}",
                bytesize::ByteSize::b(info.capacity).display().iec()
            )?;
            writeln!(
                out,
                "chunk size {}",
                bytesize::ByteSize::b(u64::from(info.chunk_size)).display().iec()
            )?;
            writeln!(
                out,
                "largest batch {}",
                bytesize::ByteSize::b(u64::from(info.batch_size_max)).display().iec()
            )?;
            writeln!(out, "partition\tearliest\tnext\tmessages")?;
            for partition in info.partitions {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    partition.partition,
                    partition.earliest_offset,
                    partition.next_offset,
                    partition.next_offset - partition.earliest_offset
                )?;
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            writeln!(out, "deleted topic {name}")?;
        }
    }
    Ok(())
}

async fn produce(client: &Client, args: ProduceArgs, timeout: Duration) -> anyhow::Result<()> {
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Written => Acks::Written,
        AcksArg::Synced => Acks::Synced,
    };
    let producer = client
        .producer()
        .acks(acks)
        .linger(Duration::from_millis(args.linger_ms))
        .compression(match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        })
        .timeout(timeout)
        .build()
        .await?;
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    // Deliveries are awaited by a second task so sending never waits for acknowledgements.
    let (deliveries, mut acknowledged) = mpsc::channel::<ringmq_client::Delivery>(4096);
    let counter = tokio::spawn(async move {
        let (mut ok, mut first_error) = (0u64, None::<ClientError>);
        while let Some(delivery) = acknowledged.recv().await {
            match delivery.await {
                Ok(_) => ok += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (ok, first_error)
    });
    let mut sent = 0u64;
    // Bytes up to each newline, as they are: not UTF-8 checked, a carriage return kept (as
    // kcat -P does), so what is sent is what the file holds.
    let mut lines = input.split(b'\n');
    loop {
        let line = tokio::task::block_in_place(|| lines.next());
        let Some(line) = line else { break };
        let line = line.map_err(|error| anyhow::anyhow!("cannot read input: {error}"))?;
        let mut record = ProducerRecord::new(&args.topic, &line[..]);
        if let Some(key) = &args.key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        let delivery = producer.send(record).await?;
        sent += 1;
        if sent.is_multiple_of(1000) {
            progress.set_message(format!("sent {sent} message(s)"));
        }
        if deliveries.send(delivery).await.is_err() {
            break;
        }
    }
    drop(deliveries);
    // With acks=none a failed batch has no delivery to report it; `close` does.
    let closed = producer.close().await;
    let (ok, first_error) = counter.await?;
    progress.finish_and_clear();
    let noun = if acks == Acks::None { "sent without acknowledgement" } else { "acknowledged" };
    println!("{ok} of {sent} message(s) {noun}");
    match (first_error, closed) {
        (Some(error), _) => Err(anyhow::anyhow!("{} message(s) failed: {error}", sent - ok)),
        (None, Err(error)) => Err(anyhow::anyhow!("the broker rejected a batch: {error}")),
        (None, Ok(())) => Ok(()),
    }
}

/// The partitions `consume` reads: `--partition`, or every partition of the topic.
async fn partitions_to_read(client: &mut Client, args: &ConsumeArgs) -> anyhow::Result<Vec<u32>> {
    let info = client.describe_topic(&args.topic).await?;
    Ok(match args.partition {
        Some(partition) => vec![partition],
        None => info.partitions.iter().map(|state| state.partition).collect(),
    })
}

async fn consume(client: &mut Client, args: ConsumeArgs, timeout: Duration) -> anyhow::Result<()> {
    let partitions = partitions_to_read(client, &args).await?;
    let (records, mut received) = mpsc::channel::<Result<(u32, ConsumerRecord), ClientError>>(1024);
    for partition in partitions {
        let builder = client.consumer(&args.topic, partition).start(args.from).timeout(timeout);
        let records = records.clone();
        let follow = args.follow;
        tokio::spawn(async move {
            match builder.build().await {
                Ok(consumer) => pump(consumer, partition, follow, records).await,
                Err(error) => {
                    let _ = records.send(Err(error)).await;
                }
            }
        });
    }
    drop(records);
    print_received(&mut received, &args).await
}

/// `consume --local`: each partition read in place by a `LocalConsumer`, printed as `consume`
/// prints (without --follow, up to each partition's end when it was opened).
async fn consume_local(
    client: &mut Client,
    args: ConsumeArgs,
    options: ringmq_client::ConnectOptions,
) -> anyhow::Result<()> {
    let path = args.local.clone().unwrap_or_default();
    let partitions = partitions_to_read(client, &args).await?;
    let (records, mut received) = mpsc::channel::<Result<(u32, ConsumerRecord), ClientError>>(1024);
    for partition in partitions {
        let builder = LocalConsumer::builder(&path, &args.topic, partition)
            .start(args.from)
            .options(options.clone());
        let records = records.clone();
        let follow = args.follow;
        tokio::spawn(async move {
            match builder.build().await {
                Ok(consumer) => pump(consumer, partition, follow, records).await,
                Err(error) => {
                    let _ = records.send(Err(error)).await;
                }
            }
        });
    }
    drop(records);
    print_received(&mut received, &args).await
}

/// The next record of a [`PartitionReader`].
type NextRecord<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ConsumerRecord, ClientError>> + Send + 'a>,
>;

/// A reader of one partition, over TCP or in place.
trait PartitionReader: Send {
    fn high_watermark(&self) -> u64;
    fn position(&self) -> u64;
    fn next_record(&mut self) -> NextRecord<'_>;
}

impl PartitionReader for ringmq_client::Consumer {
    fn high_watermark(&self) -> u64 {
        ringmq_client::Consumer::high_watermark(self)
    }
    fn position(&self) -> u64 {
        ringmq_client::Consumer::position(self)
    }
    fn next_record(&mut self) -> NextRecord<'_> {
        Box::pin(self.next())
    }
}

impl PartitionReader for LocalConsumer {
    fn high_watermark(&self) -> u64 {
        LocalConsumer::high_watermark(self)
    }
    fn position(&self) -> u64 {
        LocalConsumer::position(self)
    }
    fn next_record(&mut self) -> NextRecord<'_> {
        Box::pin(self.next())
    }
}

/// Sends a partition's records to `records`: without `follow`, up to the end of the log as it
/// was when the reader started; stops at the first error (sent too).
async fn pump(
    mut consumer: impl PartitionReader,
    partition: u32,
    follow: bool,
    records: mpsc::Sender<Result<(u32, ConsumerRecord), ClientError>>,
) {
    let end = consumer.high_watermark();
    while follow || consumer.position() < end {
        match consumer.next_record().await {
            Ok(record) => {
                if records.send(Ok((partition, record))).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = records.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Prints what the partitions' readers send until they are done or --count is reached.
async fn print_received(
    received: &mut mpsc::Receiver<Result<(u32, ConsumerRecord), ClientError>>,
    args: &ConsumeArgs,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    while let Some(next) = received.recv().await {
        let (partition, record) = next?;
        print_record(&mut out, args.format, partition, &record)?;
        if args.follow {
            out.flush()?;
        }
        printed += 1;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops it gracefully.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
