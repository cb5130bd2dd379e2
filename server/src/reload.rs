//! Live reconfiguration: a TOML file whose settings overlay the command-line
//! flags, re-read on SIGHUP. A bad file is rejected whole; the old settings stay.

use crate::Config;
use serde::Deserialize;

/// The settings a config file may hold (all optional; absent keys keep the
/// flag's value). Names match the long flags.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub motd: Option<String>,
    pub advertise_version: Option<String>,
    pub signal_error: Option<String>,
    pub disallow_list: Option<bool>,
    pub max_mailbox_messages: Option<usize>,
    pub max_mailbox_bytes: Option<usize>,
    pub max_app_nameplates: Option<usize>,
    pub max_mailboxes: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

impl ConfigFile {
    /// Parses TOML text; errors name the line and the key.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `base` (from the flags) with this file's settings on top. An empty
    /// string clears an optional welcome text.
    pub fn overlay(&self, base: &Config) -> Config {
        let mut c = base.clone();
        let text = |v: &Option<String>, old: &Option<String>| match v {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s.clone()),
            None => old.clone(),
        };
        c.motd = text(&self.motd, &base.motd);
        c.advertise_version = text(&self.advertise_version, &base.advertise_version);
        c.signal_error = text(&self.signal_error, &base.signal_error);
        if let Some(v) = self.disallow_list {
            c.disallow_list = v;
        }
        if let Some(v) = self.max_mailbox_messages {
            c.limits.max_mailbox_messages = v;
        }
        if let Some(v) = self.max_mailbox_bytes {
            c.limits.max_mailbox_bytes = v;
        }
        if let Some(v) = self.max_app_nameplates {
            c.limits.max_app_nameplates = v;
        }
        if let Some(v) = self.max_mailboxes {
            c.limits.max_mailboxes = v;
        }
        if self.max_connections_per_ip.is_some() {
            c.max_connections_per_ip = self.max_connections_per_ip;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_rejects() {
        let base = Config {
            motd: Some("from flags".into()),
            ..Config::default()
        };
        let f = ConfigFile::parse("advertise-version = \"1.2\"\nmax-mailbox-messages = 5\n")
            .expect("ok");
        let c = f.overlay(&base);
        assert_eq!(c.motd.as_deref(), Some("from flags"));
        assert_eq!(c.advertise_version.as_deref(), Some("1.2"));
        assert_eq!(c.limits.max_mailbox_messages, 5);
        let cleared = ConfigFile::parse("motd = \"\"").expect("ok").overlay(&base);
        assert_eq!(cleared.motd, None);
        assert!(ConfigFile::parse("motd = 5").is_err());
        let err = ConfigFile::parse("unknown-key = 1").unwrap_err();
        assert!(err.contains("unknown"), "{err}");
    }
}
