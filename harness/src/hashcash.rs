//! Hashcash v1 stamps for the permissions extension (protocol.md §9): the
//! `{"$hashcash": {...}}` value generator of send messages, which mints a
//! stamp for a resource captured from the welcome, or a deliberately bad
//! one (wrong resource, too few bits claimed, a wrong version, a hash with
//! less work than claimed, extra fields).
//!
//! A stamp is `version:bits:date:resource:ext:rand:counter`; a server
//! checks that the SHA-1 of the whole string starts with at least `bits`
//! zero bits. The harness mints by trying counters (lower-case hex) until
//! the digest has the wanted number of leading zero bits.

use rand::Rng;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

/// The most work (leading zero bits) the generator will do: 2^24 SHA-1
/// computations on average is already seconds in a debug build.
pub const MAX_WORK: u32 = 24;

/// The most bits a stamp may claim (a SHA-1 digest has 160).
pub const MAX_BITS: u32 = 160;

/// The keys of a `$hashcash` generator object.
pub const KEYS: [&str; 8] = [
    "resource", "bits", "work", "version", "date", "ext", "rand", "as",
];

/// The number of leading zero bits of a digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
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

/// The leading zero bits of a stamp's SHA-1: the work it carries.
pub fn stamp_work(stamp: &str) -> u32 {
    leading_zero_bits(&Sha1::digest(stamp.as_bytes()))
}

/// What to mint: every field of the stamp but the counter, and how much
/// work the digest must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampSpec {
    /// Field 1, `"1"` for a valid stamp.
    pub version: String,
    /// Field 2: the bits the stamp claims.
    pub bits: u32,
    /// Field 3, `YYMMDD` (UTC) by default.
    pub date: String,
    /// Field 4: the resource the server issued (welcome
    /// `permission-required.hashcash.resource`).
    pub resource: String,
    /// Field 5, empty by default.
    pub ext: String,
    /// Field 6: random characters by default.
    pub rand: String,
    /// The SHA-1 of the stamp has at least this many leading zero bits, and
    /// when `work < bits` fewer than `bits` (a stamp claiming more work
    /// than it carries). At most [`MAX_WORK`].
    pub work: u32,
}

impl StampSpec {
    /// A valid stamp's spec: version 1, today's date, random `rand`, and
    /// exactly the claimed work.
    pub fn new(resource: impl Into<String>, bits: u32) -> Self {
        StampSpec {
            version: "1".to_owned(),
            bits,
            date: today_yymmdd(),
            resource: resource.into(),
            ext: String::new(),
            rand: random_rand(),
            work: bits,
        }
    }

    /// Finds a counter that gives the wanted work and returns the stamp.
    pub fn mint(&self) -> Result<String, String> {
        if self.work > MAX_WORK {
            return Err(format!(
                "a hashcash stamp with {} bits of work would take too long to mint (at most {MAX_WORK}; set \"work\" lower)",
                self.work
            ));
        }
        let prefix = format!(
            "{}:{}:{}:{}:{}:{}:",
            self.version, self.bits, self.date, self.resource, self.ext, self.rand
        );
        let weak = self.work < self.bits;
        // 2^work tries on average; 64 times that without a hit is
        // practically impossible (e^-64).
        let limit = 64u64 << self.work;
        for counter in 0..limit {
            let stamp = format!("{prefix}{counter:x}");
            let got = stamp_work(&stamp);
            if got >= self.work && (!weak || got < self.bits) {
                return Ok(stamp);
            }
        }
        Err(format!("no hashcash counter found in {limit} tries"))
    }
}

/// Today's date (UTC) as `YYMMDD`, the hashcash date format.
pub fn today_yymmdd() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!(
        "{:02}{:02}{:02}",
        d.year().rem_euclid(100),
        u8::from(d.month()),
        d.day()
    )
}

/// 16 random characters of the base64 alphabet (what real clients put in
/// the `rand` field; never a `:`).
pub fn random_rand() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Builds the spec of a `$hashcash` generator object whose variables have
/// been substituted already (`resource` etc. are strings, `bits`/`work`
/// integers). Errors name the key.
pub fn spec_from_json(obj: &Map<String, Value>) -> Result<StampSpec, String> {
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "$hashcash: unknown key {k:?} (use {})",
            KEYS.join(", ")
        ));
    }
    let string = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("$hashcash: {key} must be a string, got {other}")),
        }
    };
    let integer = |key: &str, max: u32| -> Result<Option<u32>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(format!(
                    "$hashcash: {key} must be an integer from 0 to {max}, got {v}"
                )),
            },
        }
    };
    let resource = string("resource")?.ok_or("$hashcash: resource is required")?;
    let bits = integer("bits", MAX_BITS)?.ok_or("$hashcash: bits is required")?;
    let mut spec = StampSpec::new(resource, bits);
    if let Some(w) = integer("work", MAX_BITS)? {
        spec.work = w;
    }
    if let Some(v) = string("version")? {
        spec.version = v;
    }
    if let Some(v) = string("date")? {
        spec.date = v;
    }
    if let Some(v) = string("ext")? {
        spec.ext = v;
    }
    if let Some(v) = string("rand")? {
        spec.rand = v;
    }
    if spec.work > MAX_WORK {
        return Err(format!(
            "$hashcash: {} bits of work would take too long to mint (at most {MAX_WORK}; set \"work\" to claim more than is done)",
            spec.work
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(stamp: &str) -> Vec<&str> {
        stamp.split(':').collect()
    }

    #[test]
    fn counts_leading_zero_bits() {
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0x80, 0]), 0);
        assert_eq!(leading_zero_bits(&[0x7f]), 1);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0x00, 0xff]), 8);
        assert_eq!(leading_zero_bits(&[0x00, 0x0f]), 12);
        assert_eq!(leading_zero_bits(&[0x00, 0x00, 0x20]), 18);
        assert_eq!(leading_zero_bits(&[0u8; 20]), 160);
        // a known digest: SHA-1("abc") = a9993e36…, no leading zero bit
        assert_eq!(stamp_work("abc"), 0);
    }

    /// The check a server does (protocol.md §9), independently of the
    /// minting code: seven fields, version 1, the resource, claimed bits
    /// at least `required`, and that much work in the digest.
    fn verifies(stamp: &str, resource: &str, required: u32) -> bool {
        let f = fields(stamp);
        if f.len() != 7 || f[0] != "1" || f[3] != resource {
            return false;
        }
        let Ok(claimed) = f[1].parse::<u32>() else {
            return false;
        };
        if claimed < required {
            return false;
        }
        let digest = Sha1::digest(stamp.as_bytes());
        // count zero bits one by one, unlike leading_zero_bits
        let zeros = digest
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .take_while(|bit| *bit == 0)
            .count();
        zeros >= claimed as usize
    }

    #[test]
    fn minted_stamps_verify() {
        for bits in [0, 1, 7, 8, 9, 12, 16] {
            let stamp = StampSpec::new("res0urce", bits).mint().expect("mints");
            assert!(verifies(&stamp, "res0urce", bits), "{stamp} ({bits} bits)");
            assert!(stamp_work(&stamp) >= bits);
            let f = fields(&stamp);
            assert_eq!(f.len(), 7, "{stamp}");
            assert_eq!(f[0], "1");
            assert_eq!(f[1], bits.to_string());
            assert_eq!(f[2].len(), 6);
            assert!(f[2].chars().all(|c| c.is_ascii_digit()));
            assert_eq!(f[3], "res0urce");
            assert_eq!(f[4], "");
            assert_eq!(f[5].len(), 16);
            assert!(!verifies(&stamp, "other", bits));
        }
    }

    #[test]
    fn stamps_are_fresh() {
        let a = StampSpec::new("r", 4).mint().expect("mints");
        let b = StampSpec::new("r", 4).mint().expect("mints");
        assert_ne!(a, b, "random rand field");
    }

    #[test]
    fn weak_stamps_claim_more_than_they_carry() {
        for _ in 0..20 {
            let mut spec = StampSpec::new("res", 10);
            spec.work = 3;
            let stamp = spec.mint().expect("mints");
            let work = stamp_work(&stamp);
            assert!((3..10).contains(&work), "{stamp}: {work}");
            assert!(!verifies(&stamp, "res", 10), "{stamp}");
            assert!(!verifies(&stamp, "res", 0), "claims 10, carries {work}");
        }
    }

    #[test]
    fn bad_variants() {
        let json = |v: Value| spec_from_json(v.as_object().expect("object"));
        let s = json(json!({"resource": "r", "bits": 8, "version": "2"}))
            .and_then(|s| s.mint())
            .expect("mints");
        assert!(s.starts_with("2:8:"), "{s}");
        assert!(stamp_work(&s) >= 8);
        assert!(!verifies(&s, "r", 8), "version 2");
        let s = json(json!({"resource": "r", "bits": 8, "ext": "a:b"}))
            .and_then(|s| s.mint())
            .expect("mints");
        assert_eq!(fields(&s).len(), 8, "{s}");
        assert!(!verifies(&s, "r", 8), "eight fields");
        let s = json(json!({"resource": "r", "bits": 4, "work": 8, "date": "260101", "rand": "x"}))
            .and_then(|s| s.mint())
            .expect("mints");
        assert!(s.starts_with("1:4:260101:r::x:"), "{s}");
        assert!(stamp_work(&s) >= 8);
        assert!(verifies(&s, "r", 4));
        assert!(!verifies(&s, "r", 8), "claims 4 < 8");
    }

    #[test]
    fn spec_errors_name_the_key() {
        let err = |v: Value| spec_from_json(v.as_object().expect("object")).expect_err("bad");
        assert!(err(json!({"bits": 8})).contains("resource"));
        assert!(err(json!({"resource": "r"})).contains("bits"));
        assert!(err(json!({"resource": "r", "bits": "8"})).contains("bits"));
        assert!(err(json!({"resource": 1, "bits": 8})).contains("resource"));
        assert!(err(json!({"resource": "r", "bits": 8, "colour": 1})).contains("colour"));
        assert!(err(json!({"resource": "r", "bits": 30})).contains("work"));
        assert!(err(json!({"resource": "r", "bits": 200, "work": 1})).contains("bits"));
        spec_from_json(
            json!({"resource": "r", "bits": 30, "work": 4})
                .as_object()
                .expect("object"),
        )
        .expect("a claim above MAX_WORK is fine with less work");
    }

    #[test]
    fn dates() {
        let today = today_yymmdd();
        assert_eq!(today.len(), 6, "{today}");
        assert!(today.chars().all(|c| c.is_ascii_digit()), "{today}");
    }
}
