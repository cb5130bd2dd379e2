//! Reports: which classes count for the verdict (`--profile`), the summary
//! counts, the `--json` and `--junit` files, and the terminal summary.

use crate::run::{Outcome, RunResult};
use crate::vector::Class;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

/// Which classes count for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// Only `required` vectors count.
    Required,
    /// `required` and `reference` vectors count (the default).
    #[default]
    Reference,
    /// Every vector counts, `informational` too.
    All,
}

impl Profile {
    /// Whether a failure of this class fails the run.
    pub fn counts(self, class: Class) -> bool {
        match self {
            Profile::Required => class == Class::Required,
            Profile::Reference => class != Class::Informational,
            Profile::All => true,
        }
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Required => "required",
            Profile::Reference => "reference",
            Profile::All => "all",
        }
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(Profile::Required),
            "reference" => Ok(Profile::Reference),
            "all" => Ok(Profile::All),
            _ => Err(format!("unknown profile {s:?} (required, reference, all)")),
        }
    }
}

/// Counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Per class, per outcome.
    pub by_class: BTreeMap<Class, BTreeMap<Outcome, usize>>,
    /// Failures that count under the profile.
    pub counted_failures: usize,
    /// The profile used.
    pub profile: Profile,
}

impl Summary {
    /// Counts results under a profile.
    pub fn new(results: &[RunResult], profile: Profile) -> Self {
        let mut s = Summary {
            profile,
            ..Summary::default()
        };
        for r in results {
            *s.by_class
                .entry(r.class)
                .or_default()
                .entry(r.outcome)
                .or_default() += 1;
            if r.outcome == Outcome::Fail && profile.counts(r.class) {
                s.counted_failures += 1;
            }
        }
        s
    }

    /// Total with this outcome.
    pub fn total(&self, outcome: Outcome) -> usize {
        self.by_class.values().filter_map(|m| m.get(&outcome)).sum()
    }

    /// True when no counted vector failed (exit status 0).
    pub fn ok(&self) -> bool {
        self.counted_failures == 0
    }

    /// The `summary` object of the JSON report.
    pub fn to_json(&self) -> Value {
        let outcomes = [Outcome::Pass, Outcome::Fail, Outcome::Skip];
        let mut by_class = Map::new();
        for class in Class::ALL {
            let mut m = Map::new();
            for o in outcomes {
                let n = self
                    .by_class
                    .get(&class)
                    .and_then(|c| c.get(&o))
                    .copied()
                    .unwrap_or(0);
                m.insert(o.as_str().to_owned(), json!(n));
            }
            by_class.insert(class.as_str().to_owned(), Value::Object(m));
        }
        json!({
            "total": outcomes.iter().map(|o| self.total(*o)).sum::<usize>(),
            "pass": self.total(Outcome::Pass),
            "fail": self.total(Outcome::Fail),
            "skip": self.total(Outcome::Skip),
            "by_class": by_class,
            "profile": self.profile.as_str(),
            "counted_failures": self.counted_failures,
            "ok": self.ok(),
        })
    }

    /// The closing lines for the terminal: per class, then
    /// `N passed, N failed, N skipped`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for class in Class::ALL {
            let get = |o| {
                self.by_class
                    .get(&class)
                    .and_then(|c| c.get(&o))
                    .copied()
                    .unwrap_or(0)
            };
            let counted = if self.profile.counts(class) {
                ""
            } else {
                "  (not counted)"
            };
            let _ = writeln!(
                out,
                "  {:<14} {:>4} pass  {:>4} fail  {:>4} skip{counted}",
                class.as_str(),
                get(Outcome::Pass),
                get(Outcome::Fail),
                get(Outcome::Skip)
            );
        }
        let _ = writeln!(
            out,
            "profile {}: {}",
            self.profile.as_str(),
            if self.ok() {
                "OK".to_owned()
            } else {
                format!("{} counted failure(s)", self.counted_failures)
            }
        );
        let _ = writeln!(
            out,
            "{} passed, {} failed, {} skipped",
            self.total(Outcome::Pass),
            self.total(Outcome::Fail),
            self.total(Outcome::Skip)
        );
        out
    }
}

/// The `--json` report: `{"summary": …, "results": [{id, class, outcome,
/// reason, diff, transcript, …}]}`.
pub fn json_report(results: &[RunResult], summary: &Summary) -> Value {
    json!({
        "summary": summary.to_json(),
        "results": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report: one `testsuite` per class, one `testcase` per
/// vector. Only counted failures are `<failure>`; uncounted ones are
/// reported in `<system-out>`; skips are `<skipped>`.
pub fn junit_report(results: &[RunResult], profile: Profile) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"wormhole-mailbox-conformance\">\n");
    for class in Class::ALL {
        let rs: Vec<&RunResult> = results.iter().filter(|r| r.class == class).collect();
        if rs.is_empty() {
            continue;
        }
        let failures = rs
            .iter()
            .filter(|r| r.outcome == Outcome::Fail && profile.counts(class))
            .count();
        let skipped = rs.iter().filter(|r| r.outcome == Outcome::Skip).count();
        let time: f64 = rs.iter().map(|r| r.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            class.as_str(),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                class.as_str(),
                xml_escape(&r.id),
                r.duration.as_secs_f64()
            );
            let reason = xml_escape(r.reason.as_deref().unwrap_or(""));
            match r.outcome {
                Outcome::Pass => out.push_str("/>\n"),
                Outcome::Skip => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{reason}\"/>\n    </testcase>"
                    );
                }
                Outcome::Fail => {
                    let body = format!(
                        "{}\n\ntranscript:\n{}",
                        r.diff.as_deref().unwrap_or(""),
                        r.transcript_text()
                    );
                    if profile.counts(class) {
                        let _ = writeln!(
                            out,
                            ">\n      <failure message=\"{reason}\">{}</failure>\n    </testcase>",
                            xml_escape(&body)
                        );
                    } else {
                        let _ = writeln!(
                            out,
                            ">\n      <system-out>not counted ({} class): {reason}\n{}</system-out>\n    </testcase>",
                            class.as_str(),
                            xml_escape(&body)
                        );
                    }
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::Variables;
    use std::time::Duration;

    fn result(id: &str, class: Class, outcome: Outcome) -> RunResult {
        RunResult {
            id: id.to_owned(),
            class,
            outcome,
            reason: (outcome != Outcome::Pass).then(|| "because <x>".to_owned()),
            diff: None,
            failed_step: None,
            transcript: Vec::new(),
            variables: Variables::default(),
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn profiles_decide_what_counts() {
        let rs = vec![
            result("a/1", Class::Required, Outcome::Pass),
            result("a/2", Class::Reference, Outcome::Fail),
            result("a/3", Class::Informational, Outcome::Fail),
            result("a/4", Class::Required, Outcome::Skip),
        ];
        assert_eq!(Summary::new(&rs, Profile::Required).counted_failures, 0);
        assert_eq!(Summary::new(&rs, Profile::Reference).counted_failures, 1);
        assert_eq!(Summary::new(&rs, Profile::All).counted_failures, 2);
        let s = Summary::new(&rs, Profile::Reference);
        assert_eq!(s.to_json()["by_class"]["informational"]["fail"], 1);
        assert!(s.render().ends_with("1 passed, 2 failed, 1 skipped\n"));
        let x = junit_report(&rs, Profile::Reference);
        assert_eq!(x.matches("<failure").count(), 1);
        assert!(x.contains("<skipped message=\"because &lt;x&gt;\"/>"));
        assert!(x.contains("not counted"));
    }
}
