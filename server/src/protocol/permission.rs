//! The permissions extension (protocol.md §9): what the welcome offers, and
//! hashcash stamp verification. Off by default, which changes nothing on the wire.

use rand::RngCore;
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

/// Which permission methods the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Clients may bind without proving anything (`none`).
    pub allow_none: bool,
    /// Hashcash with this many bits of work, when offered.
    pub hashcash_bits: Option<u32>,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            allow_none: true,
            hashcash_bits: None,
        }
    }
}

impl Permissions {
    /// True when the welcome must carry `permission-required`.
    pub fn advertised(&self) -> bool {
        self.hashcash_bits.is_some() || !self.allow_none
    }

    /// The offered method names, sorted, as the error message lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.hashcash_bits.is_some() {
            names.push("hashcash");
        }
        if self.allow_none {
            names.push("none");
        }
        names
    }

    /// The welcome's `permission-required` value for one connection. The
    /// `none` key is always present (`{}` allowed, `null` not) because the
    /// Rust client refuses a welcome without it.
    pub fn welcome_value(&self, resource: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert(
            "none".into(),
            if self.allow_none {
                json!({})
            } else {
                Value::Null
            },
        );
        if let (Some(bits), Some(resource)) = (self.hashcash_bits, resource) {
            m.insert(
                "hashcash".into(),
                json!({"bits": bits, "resource": resource}),
            );
        }
        Value::Object(m)
    }
}

/// A fresh per-connection hashcash resource: 16 random bytes, base32
/// (no `:` so it fits in a stamp field).
pub fn new_resource(rng: &mut dyn RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Verifies a Hashcash v1 stamp `1:bits:date:resource:ext:rand:counter`:
/// seven fields, version 1, our resource, claimed bits at least `required`,
/// and SHA-1 of the stamp with at least the claimed leading zero bits.
pub fn verify_hashcash(stamp: &str, resource: &str, required: u32) -> bool {
    let fields: Vec<&str> = stamp.split(':').collect();
    if fields.len() != 7 || fields[0] != "1" || fields[3] != resource {
        return false;
    }
    let Ok(claimed) = fields[1].parse::<u32>() else {
        return false;
    };
    if claimed < required || claimed > 160 {
        return false;
    }
    leading_zero_bits(&Sha1::digest(stamp.as_bytes())) >= claimed
}

/// Makes a stamp by brute force (tests and the load tool; `bits` small).
pub fn mint_hashcash(resource: &str, bits: u32) -> String {
    (0u64..)
        .map(|counter| format!("1:{bits}:261124:{resource}::mailbox-test:{counter:x}"))
        .find(|s| leading_zero_bits(&Sha1::digest(s.as_bytes())) >= bits)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_verify() {
        let stamp = mint_hashcash("res", 10);
        assert!(verify_hashcash(&stamp, "res", 10));
        assert!(verify_hashcash(&stamp, "res", 8));
        assert!(!verify_hashcash(&stamp, "other", 10));
        assert!(
            !verify_hashcash(&stamp, "res", 11),
            "claimed bits below required"
        );
        let forged = stamp.replacen(":10:", ":30:", 1);
        assert!(
            !verify_hashcash(&forged, "res", 10),
            "claimed more work than done"
        );
        assert!(!verify_hashcash("1:10:x:res::r", "res", 10), "six fields");
        assert!(!verify_hashcash(&stamp.replacen('1', "2", 1), "res", 10));
    }

    #[test]
    fn welcome_always_has_none() {
        let p = Permissions {
            allow_none: false,
            hashcash_bits: Some(20),
        };
        assert_eq!(
            p.welcome_value(Some("r")),
            json!({"none": null, "hashcash": {"bits": 20, "resource": "r"}})
        );
        assert_eq!(p.names(), vec!["hashcash"]);
        assert!(!Permissions::default().advertised());
    }
}
