//! Usage statistics: the rows the Python server writes to its usage DB
//! (protocol.md §8), computed purely from side timestamps and moods.

/// How a nameplate or mailbox ended, as stored in the usage DB `result` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageResult {
    Happy,
    Lonely,
    Errory,
    Scary,
    Pruney,
    Crowded,
    Quiet,
}

impl UsageResult {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageResult::Happy => "happy",
            UsageResult::Lonely => "lonely",
            UsageResult::Errory => "errory",
            UsageResult::Scary => "scary",
            UsageResult::Pruney => "pruney",
            UsageResult::Crowded => "crowded",
            UsageResult::Quiet => "quiet",
        }
    }
}

/// One usage-DB row. Times are seconds since the epoch (unblurred: the usage
/// writer applies `--blur-usage`, as the Python server does at write time).
#[derive(Debug, Clone, PartialEq)]
pub enum UsageRecord {
    ClientVersion {
        app_id: String,
        side: String,
        connect_time: f64,
        implementation: Option<String>,
        version: Option<String>,
    },
    Nameplate {
        app_id: String,
        started: f64,
        waiting_time: Option<f64>,
        total_time: f64,
        result: UsageResult,
    },
    Mailbox {
        app_id: String,
        for_nameplate: bool,
        started: f64,
        waiting_time: Option<f64>,
        total_time: f64,
        result: UsageResult,
    },
}

/// Start, waiting and total times from the sides' join times.
pub fn timings(added: &[f64], retired: f64) -> (f64, Option<f64>, f64) {
    let mut times = added.to_vec();
    times.sort_by(f64::total_cmp);
    let started = times.first().copied().unwrap_or(retired);
    let waiting = times.get(1).map(|t| t - started);
    (started, waiting, retired - started)
}

/// Nameplate result: 1 side lonely, 2 happy, pruned pruney, crowded wins.
pub fn nameplate_result(sides: usize, pruned: bool, crowded: bool) -> UsageResult {
    if crowded || sides > 2 {
        UsageResult::Crowded
    } else if pruned {
        UsageResult::Pruney
    } else if sides == 2 {
        UsageResult::Happy
    } else {
        UsageResult::Lonely
    }
}

/// Mailbox result: by side count, then moods (lonely < errory < scary), then
/// pruney, then crowded, each overriding the previous.
pub fn mailbox_result<'a>(
    moods: impl IntoIterator<Item = Option<&'a str>>,
    sides: usize,
    pruned: bool,
    crowded: bool,
) -> UsageResult {
    let mut result = match sides {
        0 => UsageResult::Quiet,
        1 => UsageResult::Lonely,
        _ => UsageResult::Happy,
    };
    let moods: Vec<&str> = moods.into_iter().flatten().collect();
    for (mood, r) in [
        ("lonely", UsageResult::Lonely),
        ("errory", UsageResult::Errory),
        ("scary", UsageResult::Scary),
    ] {
        if moods.contains(&mood) {
            result = r;
        }
    }
    if pruned {
        result = UsageResult::Pruney;
    }
    if crowded || sides > 2 {
        result = UsageResult::Crowded;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_summary_table() {
        // Summary.test_mailbox
        let r = |m: &[Option<&str>], pruned, crowded| {
            mailbox_result(m.iter().copied(), m.len(), pruned, crowded)
        };
        assert_eq!(
            r(&[Some("happy"), Some("happy")], false, false),
            UsageResult::Happy
        );
        assert_eq!(
            r(&[Some("errory"), Some("happy")], false, false),
            UsageResult::Errory
        );
        assert_eq!(
            r(&[Some("scary"), Some("errory")], false, false),
            UsageResult::Scary
        );
        assert_eq!(r(&[Some("lonely")], false, false), UsageResult::Lonely);
        assert_eq!(
            r(&[None, Some("mood-ignored")], false, false),
            UsageResult::Happy
        );
        assert_eq!(r(&[Some("scary"), None], true, false), UsageResult::Pruney);
        assert_eq!(r(&[None, None], true, true), UsageResult::Crowded);
        // Summary.test_nameplate
        assert_eq!(nameplate_result(1, false, false), UsageResult::Lonely);
        assert_eq!(nameplate_result(2, false, false), UsageResult::Happy);
        assert_eq!(nameplate_result(2, true, false), UsageResult::Pruney);
        assert_eq!(nameplate_result(3, false, false), UsageResult::Crowded);
        assert_eq!(nameplate_result(2, true, true), UsageResult::Crowded);
    }

    #[test]
    fn worked_timings() {
        // test_stats: claims s1@1, s2@3, last release @10 -> 1, 2, 9
        assert_eq!(timings(&[3.0, 1.0], 10.0), (1.0, Some(2.0), 9.0));
        assert_eq!(timings(&[1.0], 6.0), (1.0, None, 5.0));
    }
}
