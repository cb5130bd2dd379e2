//! Checks the keyword arguments of `MailboxServer(...)` and turns them into
//! a server [`Config`]; every bad value becomes a `ValueError` naming it.

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;
use std::path::PathBuf;
use std::time::Duration;
use wormhole_mailbox_server::{Config, Durability};

/// The raw arguments, as pyo3 extracted them (types already checked, values
/// not yet); each field is the keyword argument of the same name.
pub struct RawOptions {
    pub host: String,
    pub port: i64,
    pub channel_db: Option<PathBuf>,
    pub usage_db: Option<PathBuf>,
    pub motd: Option<String>,
    pub advertise_version: Option<String>,
    pub signal_error: Option<String>,
    pub disallow_list: bool,
    pub blur_usage: Option<i64>,
    pub prune_interval: Option<f64>,
    pub channel_expiration: Option<f64>,
    pub ping_interval: Option<f64>,
    pub ping_timeout: Option<f64>,
    pub durability: Option<String>,
    pub max_message_size: Option<i64>,
    pub max_connections: Option<i64>,
    pub handshake_timeout: Option<f64>,
}

/// Checked options: where to listen and what to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host name or address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Everything else, as the server library takes it.
    pub config: Config,
}

fn value_error(msg: String) -> pyo3::PyErr {
    PyValueError::new_err(msg)
}

/// A path argument as the UTF-8 string the server's config holds.
fn path(name: &str, p: Option<PathBuf>) -> PyResult<Option<String>> {
    let Some(p) = p else { return Ok(None) };
    let s = p
        .into_os_string()
        .into_string()
        .map_err(|_| value_error(format!("{name} must be a UTF-8 path")))?;
    if s.is_empty() {
        return Err(value_error(format!(
            "{name} must be a non-empty path (use None for no database)"
        )));
    }
    Ok(Some(s))
}

/// Seconds as a [`Duration`]; `allow_zero` for settings where 0 makes sense.
fn seconds(name: &str, v: Option<f64>, allow_zero: bool, default: Duration) -> PyResult<Duration> {
    let Some(s) = v else { return Ok(default) };
    let ok = s.is_finite() && (s > 0.0 || (allow_zero && s == 0.0));
    if !ok {
        let want = if allow_zero { ">= 0" } else { "> 0" };
        return Err(value_error(format!(
            "{name} must be a finite number of seconds {want}, got {s}"
        )));
    }
    Duration::try_from_secs_f64(s).map_err(|e| value_error(format!("{name}: {e}")))
}

/// A count that must be at least 1 and fit in `usize`.
fn count(name: &str, v: Option<i64>, default: usize) -> PyResult<usize> {
    let Some(n) = v else { return Ok(default) };
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| value_error(format!("{name} must be a positive integer, got {n}")))
}

impl RawOptions {
    /// Validates every argument, in signature order.
    pub fn check(self) -> PyResult<Options> {
        let defaults = Config::default();
        if self.host.trim().is_empty() {
            return Err(value_error(
                "host must be a non-empty host name or address".into(),
            ));
        }
        let port = u16::try_from(self.port)
            .map_err(|_| value_error(format!("port must be in 0..=65535, got {}", self.port)))?;
        let channel_db = path("channel_db", self.channel_db)?;
        let usage_db = path("usage_db", self.usage_db)?;
        let blur_usage = match self.blur_usage {
            None => None,
            Some(b) => Some(u64::try_from(b).ok().filter(|b| *b > 0).ok_or_else(|| {
                value_error(format!(
                    "blur_usage must be a positive number of seconds, got {b}"
                ))
            })?),
        };
        let durability = match self.durability.as_deref() {
            None => defaults.durability,
            Some("process") => Durability::Process,
            Some("power-loss") => Durability::PowerLoss,
            Some(other) => {
                return Err(value_error(format!(
                    "durability must be 'process' or 'power-loss', got {other:?}"
                )))
            }
        };
        let config = Config {
            channel_db,
            usage_db,
            blur_usage,
            motd: self.motd,
            advertise_version: self.advertise_version,
            signal_error: self.signal_error,
            disallow_list: self.disallow_list,
            prune_interval: seconds(
                "prune_interval",
                self.prune_interval,
                false,
                defaults.prune_interval,
            )?,
            channel_expiration: seconds(
                "channel_expiration",
                self.channel_expiration,
                true,
                defaults.channel_expiration,
            )?,
            ping_interval: seconds(
                "ping_interval",
                self.ping_interval,
                false,
                defaults.ping_interval,
            )?,
            ping_timeout: seconds(
                "ping_timeout",
                self.ping_timeout,
                false,
                defaults.ping_timeout,
            )?,
            durability,
            max_message_size: count(
                "max_message_size",
                self.max_message_size,
                defaults.max_message_size,
            )?,
            max_connections: count(
                "max_connections",
                self.max_connections,
                defaults.max_connections,
            )?,
            handshake_timeout: seconds(
                "handshake_timeout",
                self.handshake_timeout,
                false,
                defaults.handshake_timeout,
            )?,
            // Settings this binding doesn't expose keep the server's
            // defaults (and new ones need no change here).
            ..defaults
        };
        Ok(Options {
            host: self.host,
            port,
            config,
        })
    }
}
