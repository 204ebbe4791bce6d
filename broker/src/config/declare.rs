//! The one place a setting is declared, and the table every use of it is made from.
//!
//! [`settings!`] takes, per setting, its field name, type, default, [`Kind`](super::kind::Kind)
//! (unit and accepted range), doc comment (first paragraph: the one-line help; the rest: the long
//! explanation) and any names it had before. From that it writes the `Config` struct with its
//! `Default`, and one [`Setting`] per field: what the flag, the TOML key, `--help`,
//! `--print-config`, the validation error and `docs/config.md` are all made from.

use super::kind::Raw;
use super::Config;

/// Where a setting is listed in `--help` and in `docs/config.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// Addresses, directories, and the sync policy.
    Broker,
    /// Topics created by clients.
    Topics,
    /// Sizes and counts a client's requests are held to.
    Limits,
    /// Bytes per second each principal may move.
    Quotas,
    /// How long things may take.
    Timeouts,
    /// Consumer groups and their state log.
    Groups,
    /// Logs and metrics.
    Observability,
    /// The Kafka listener.
    Kafka,
    /// The local (Unix socket) listener for same-host readers.
    Local,
    /// TLS, authentication and permissions.
    Security,
}

impl Section {
    /// The heading.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Section::Broker => "Broker",
            Section::Topics => "Topics",
            Section::Limits => "Limits",
            Section::Quotas => "Quotas",
            Section::Timeouts => "Timeouts",
            Section::Groups => "Consumer groups",
            Section::Observability => "Observability",
            Section::Kafka => "Kafka listener",
            Section::Local => "Local listener (same-host readers)",
            Section::Security => "Security",
        }
    }
}

/// One setting, described for every place it appears.
#[derive(Debug)]
pub(crate) struct Setting {
    /// The field of [`Config`].
    pub(crate) field: &'static str,
    /// The TOML key: the field and its unit suffix (`idle_timeout_ms`).
    pub(crate) key: String,
    pub(crate) section: Section,
    /// The first paragraph of the doc comment, one line.
    pub(crate) help: String,
    /// The rest of the doc comment.
    pub(crate) long: String,
    /// Keys this setting had before (still accepted, reported as renamed).
    pub(crate) renamed: &'static [&'static str],
    pub(crate) value_name: &'static str,
    /// What is accepted, as the end of "expected ...".
    pub(crate) accepted: String,
    /// The default, as the flag would take it.
    pub(crate) default: String,
    /// A switch: `--flag` alone means true, and `--no-flag` exists.
    pub(crate) switch: bool,
    /// Checks `raw` and stores it in the configuration; `false` if it is not accepted.
    pub(crate) assign: fn(&mut Config, &Raw<'_>) -> bool,
    /// The setting's value in a configuration, as TOML.
    pub(crate) to_toml: fn(&Config) -> toml::Value,
}

impl Setting {
    /// The flag for a key: `--` and the key with dashes.
    pub(crate) fn flag_of(key: &str) -> String {
        format!("--{}", key.replace('_', "-"))
    }

    /// This setting's flag.
    pub(crate) fn flag(&self) -> String {
        Self::flag_of(&self.key)
    }
}

/// Splits doc comment lines into the one-line help and the long explanation (paragraphs joined
/// into lines, separated by blank lines).
pub(crate) fn split_doc(lines: &[&str]) -> (String, String) {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            if paragraphs.last().is_some_and(|last| !last.is_empty()) {
                paragraphs.push(String::new());
            }
            continue;
        }
        let last = paragraphs.last_mut().expect("starts with one paragraph");
        if !last.is_empty() {
            last.push(' ');
        }
        last.push_str(line);
    }
    let help = paragraphs.remove(0);
    let help = help.strip_suffix('.').unwrap_or(&help).to_owned();
    let long = paragraphs.into_iter().filter(|paragraph| !paragraph.is_empty()).collect::<Vec<_>>();
    (help, long.join("\n\n"))
}

/// Declares the broker's settings: see the module docs. Each setting reads
///
/// ```text
/// /// One-line help.
/// ///
/// /// Longer explanation.
/// field: Type = default, kind [, renamed "old_key"]*;
/// ```
///
/// grouped in sections: `Section { ...settings... }`.
macro_rules! settings {
    ($(
        $section:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $ty:ty = $default:expr, $kind:expr $(, renamed $old:literal)*;
            )*
        }
    )*) => {
        /// The effective configuration of a broker: every setting, checked. Each field is
        /// declared once, in `config/mod.rs`; `docs/config.md` lists them all.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $($(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*)*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $($($field: $default,)*)* }
            }
        }

        /// Every setting, in declaration order.
        pub(crate) fn settings() -> &'static [$crate::config::declare::Setting] {
            use $crate::config::declare::{split_doc, Section, Setting};
            use $crate::config::kind::{is_switch, unit_suffix, Kind, Raw};
            static SETTINGS: std::sync::OnceLock<Vec<Setting>> = std::sync::OnceLock::new();
            SETTINGS.get_or_init(|| {
                let defaults = Config::default();
                vec![$($({
                    let kind = $kind;
                    let (help, long) = split_doc(&[$($doc),+]);
                    Setting {
                        field: stringify!($field),
                        key: format!("{}{}", stringify!($field), unit_suffix(&kind)),
                        section: Section::$section,
                        help,
                        long,
                        renamed: &[$($old),*],
                        value_name: kind.value_name(),
                        accepted: kind.accepted(),
                        default: kind.show(&defaults.$field),
                        switch: is_switch(&kind),
                        assign: |config: &mut Config, raw: &Raw<'_>| match $kind.parse(raw) {
                            Some(value) => {
                                config.$field = value;
                                true
                            }
                            None => false,
                        },
                        to_toml: |config: &Config| $kind.to_toml(&config.$field),
                    }
                },)*)*]
            })
        }
    };
}

pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_comments_split_into_help_and_explanation() {
        let (help, long) =
            split_doc(&[" Address clients connect to.", "", " Longer", " text.", "", " More."]);
        assert_eq!(help, "Address clients connect to");
        assert_eq!(long, "Longer text.\n\nMore.");
        assert_eq!(split_doc(&[" Only help."]), ("Only help".to_owned(), String::new()));
    }
}
