//! Client-visible protocol errors: one enum whose `Display` is the exact wire string.

use std::fmt;

/// An `error` reply. The strings of the variants taken from the Python server
/// 0.8.0 are byte-exact (protocol.md §4.1); the rest cover input that the
/// Python server answers by dropping the TCP connection (§4.2), where we reply
/// with an error instead (§4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    MissingType,
    PingRequiresPing,
    AlreadyBound,
    BindRequiresAppid,
    BindRequiresSide,
    MustBindFirst,
    UnknownType,
    AlreadyAllocated,
    ClaimRequiresNameplate,
    OnlyOneClaim,
    Crowded,
    Reclaimed,
    OnlyOneRelease,
    ReleaseClaimMismatch,
    ReleaseWithoutNameplate,
    OnlyOneOpen,
    OpenRequiresMailbox,
    MustOpenBeforeAdding,
    MissingPhase,
    MissingBody,
    OnlyOneClose,
    OpenCloseMismatch,
    CloseWithoutMailbox,
    // --- ours: answers where the Python server drops the connection ---
    /// A field that must be a string was some other JSON type.
    NotAString(&'static str),
    /// `add` fields must be JSON scalars (they are stored and replayed as-is).
    NotAScalar(&'static str),
    /// A nameplate that is not 1 to 40 ASCII digits.
    InvalidNameplate(InvalidNameplate),
    /// `client_version` that is not a list of at least two elements.
    BadClientVersion,
    /// Every id from 1 to 999999 is in use in this app.
    NoFreeNameplate,
    /// An operator limit was hit (message text says which).
    Limit(String),
    /// `submit-permission` named a method the server doesn't offer:
    /// (method, the offered names).
    UnknownPermissionMethod(String, String),
    /// The stamp didn't verify (or was reused).
    PermissionFailed,
    /// `bind` before a permission was granted, where one is required.
    PermissionFirst,
}

/// Why a nameplate was rejected; the wording follows the Python server's
/// `ValueError` messages, so logs read the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidNameplate {
    TooLong { repr: String, len: usize },
    NonDigits { repr: String },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        let s = match self {
            MissingType => "missing 'type'",
            PingRequiresPing => "ping requires 'ping'",
            AlreadyBound => "already bound",
            BindRequiresAppid => "bind requires 'appid'",
            BindRequiresSide => "bind requires 'side'",
            MustBindFirst => "must bind first",
            UnknownType => "unknown type",
            AlreadyAllocated => "you already allocated one, don't be greedy",
            ClaimRequiresNameplate => "claim requires 'nameplate'",
            OnlyOneClaim => "only one claim per connection",
            Crowded => "crowded",
            Reclaimed => "reclaimed",
            OnlyOneRelease => "only one release per connection",
            ReleaseClaimMismatch => "release and claim must use same nameplate",
            ReleaseWithoutNameplate => "release without nameplate must follow claim",
            OnlyOneOpen => "only one open per connection",
            OpenRequiresMailbox => "open requires 'mailbox'",
            MustOpenBeforeAdding => "must open mailbox before adding",
            MissingPhase => "missing 'phase'",
            MissingBody => "missing 'body'",
            OnlyOneClose => "only one close per connection",
            OpenCloseMismatch => "open and close must use same mailbox",
            CloseWithoutMailbox => "close without mailbox must follow open",
            NotAString(field) => return write!(f, "'{field}' must be a string"),
            NotAScalar(field) => {
                return write!(f, "'{field}' must be a string, number, boolean or null")
            }
            InvalidNameplate(self::InvalidNameplate::TooLong { repr, len }) => {
                return write!(f, "nameplate {repr} is too long, {len}>40")
            }
            InvalidNameplate(self::InvalidNameplate::NonDigits { repr }) => {
                return write!(f, "nameplate {repr} has non-digits")
            }
            NoFreeNameplate => "unable to find a free nameplate-id",
            BadClientVersion => "'client_version' must be a list: [implementation, version]",
            Limit(text) => return f.write_str(text),
            UnknownPermissionMethod(method, names) => {
                return write!(f, "'{method}' is not one of: {names}")
            }
            PermissionFailed => "submit-permission failed",
            PermissionFirst => "must submit-permission first",
        };
        f.write_str(s)
    }
}

impl std::error::Error for ProtocolError {}

/// Longest nameplate accepted (the Python server's limit).
pub const MAX_NAMEPLATE_LEN: usize = 40;

/// Checks a claimed nameplate: 1 to 40 ASCII digits (protocol.md §12.3: the
/// Python server also accepts Unicode digits and a trailing newline; we don't).
pub fn check_nameplate(name: &str) -> Result<(), ProtocolError> {
    let repr = serde_json::Value::String(name.to_owned()).to_string();
    if name.chars().count() > MAX_NAMEPLATE_LEN {
        return Err(ProtocolError::InvalidNameplate(InvalidNameplate::TooLong {
            repr,
            len: name.chars().count(),
        }));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::InvalidNameplate(
            InvalidNameplate::NonDigits { repr },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_byte_exact() {
        assert_eq!(
            ProtocolError::AlreadyAllocated.to_string(),
            "you already allocated one, don't be greedy"
        );
        assert_eq!(ProtocolError::MissingType.to_string(), "missing 'type'");
        assert_eq!(
            ProtocolError::CloseWithoutMailbox.to_string(),
            "close without mailbox must follow open"
        );
    }

    #[test]
    fn nameplate_validation() {
        assert!(check_nameplate("1").is_ok());
        assert!(check_nameplate("007").is_ok());
        assert!(check_nameplate(&"9".repeat(40)).is_ok());
        assert_eq!(
            check_nameplate(&"9".repeat(41)).unwrap_err().to_string(),
            format!("nameplate \"{}\" is too long, 41>40", "9".repeat(41))
        );
        assert_eq!(
            check_nameplate("abc").unwrap_err().to_string(),
            "nameplate \"abc\" has non-digits"
        );
        assert!(check_nameplate("").is_err());
        assert!(check_nameplate("5\n").is_err());
        assert!(check_nameplate("٣").is_err());
    }
}
