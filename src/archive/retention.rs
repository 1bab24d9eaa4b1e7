//! Retention: which backups `prune` keeps. As restic's `forget --keep-daily/weekly/monthly`:
//! newest first, each policy keeps the newest backup of each of its last N periods (UTC
//! days, ISO weeks starting Monday, calendar months) that hold a backup; a backup kept by
//! any policy stays. The newest verified backup always stays, whatever the policy says.
//!
//! Only backups that verify and whose time can be trusted count: a damaged one takes no
//! place, and one whose manifest claims a time its data file contradicts (or a time in the
//! future) is kept, said so, and never counted as the newest.

use std::collections::BTreeSet;

use crate::spec::Retention;

/// One backup as retention sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: String,
    /// Seconds since the epoch, as its manifest says.
    pub at: u64,
    /// It can be restored: verified (for `prune`: read back whole just now).
    pub verified: bool,
    /// Taken by a restore, to undo it.
    pub safety: bool,
    /// Why its time is not trusted ([`untrusted_time`]); `None` when it is.
    pub untrusted: Option<String>,
}

/// How long a restore's safety copy is kept, whatever the policy.
pub const SAFETY_GRACE: u64 = 7 * 86_400;

/// How far a manifest's time may be from its data file's modification time.
pub const TIME_SLACK: u64 = 86_400;

/// Why a manifest's time cannot be trusted for retention, or `None` when it can: it is in
/// the future, or more than a day away from when its data file was written (`modified`,
/// `None` when that is unknown).
pub fn untrusted_time(at: u64, modified: Option<u64>, now: u64) -> Option<String> {
    if at > now {
        return Some(format!(
            "untrusted time: its manifest says {}, in the future",
            crate::clock::format_time(at)
        ));
    }
    let Some(modified) = modified else {
        return Some("untrusted time: its data file is missing or unreadable".into());
    };
    (at.abs_diff(modified) > TIME_SLACK).then(|| {
        format!(
            "untrusted time: its manifest says {}, its data file was written {}",
            crate::clock::format_time(at),
            crate::clock::format_time(modified)
        )
    })
}

/// The period a time falls in, as a number that grows with time.
type Period = fn(u64) -> i64;

/// The ids to keep, and why each is kept. `now` is the time of the prune (a safety copy is
/// kept until [`SAFETY_GRACE`] after it was taken).
pub fn keep(entries: &[Entry], policy: &Retention, now: u64) -> Vec<(String, String)> {
    // Only backups that can be restored, at a trusted time, fill the policy's periods: an
    // unverified one would push a good one out, and a forged time would evict the newest.
    let mut newest_first: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.verified && !e.safety && e.untrusted.is_none())
        .collect();
    newest_first.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    let mut reasons: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |id: &str, why: String| match reasons.iter_mut().find(|(i, _)| i == id) {
        Some((_, w)) => w.push(why),
        None => reasons.push((id.to_owned(), vec![why])),
    };
    let buckets: [(&str, Option<u32>, Period); 3] = [
        ("daily", policy.daily, |at| (at / 86_400) as i64),
        ("weekly", policy.weekly, |at| ((at / 86_400) as i64 + 3) / 7),
        ("monthly", policy.monthly, |at| {
            let (y, m, _) = crate::clock::civil(at);
            y * 12 + m
        }),
    ];
    for (name, n, period) in buckets {
        let Some(n) = n else { continue };
        let mut seen = BTreeSet::new();
        for e in &newest_first {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(period(e.at)) {
                add(&e.id, format!("{name} {}", seen.len()));
            }
        }
    }
    if let Some(v) = newest_first.first() {
        add(&v.id, "newest verified".into());
    }
    // A backup whose time is not trusted cannot be placed in a period: it is kept, and
    // takes no place (a person decides).
    for e in entries {
        if let Some(why) = &e.untrusted {
            add(&e.id, why.clone());
        }
    }
    // A restore's safety copy is its way back: kept for a while whatever the policy.
    for e in entries
        .iter()
        .filter(|e| e.safety && e.untrusted.is_none() && now.saturating_sub(e.at) < SAFETY_GRACE)
    {
        add(&e.id, "safety copy of a restore".into());
    }
    let mut out: Vec<(String, String)> = reasons
        .into_iter()
        .map(|(id, why)| (id, why.join(", ")))
        .collect();
    out.sort();
    out
}

/// Which of the kept backups count as restorable for the policy (a period or the newest
/// verified): those that `prune` must read back whole before it deletes anything.
pub fn counted<'a>(kept: &'a [(String, String)], entries: &[Entry]) -> Vec<&'a str> {
    kept.iter()
        .filter(|(id, _)| {
            entries
                .iter()
                .any(|e| &e.id == id && e.verified && !e.safety && e.untrusted.is_none())
        })
        .map(|(id, _)| id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    /// 2026-01-05 00:00 UTC, a Monday.
    const START: u64 = 1_767_571_200;

    fn entries(days: u64, per_day: u64) -> Vec<Entry> {
        (0..days)
            .flat_map(|d| {
                (0..per_day).map(move |k| Entry {
                    id: format!("d{d:02}-{k}"),
                    at: START + d * DAY + 3600 * (1 + k),
                    verified: true,
                    safety: false,
                    untrusted: None,
                })
            })
            .collect()
    }

    fn ids(kept: &[(String, String)]) -> Vec<&str> {
        kept.iter().map(|(i, _)| i.as_str()).collect()
    }

    #[test]
    fn ninety_days_with_daily_weekly_monthly() {
        // 2026-01-05 (Monday) .. 2026-04-04, two backups a day.
        let all = entries(90, 2);
        let policy = Retention {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(3),
        };
        let kept = keep(&all, &policy, START + 90 * DAY);
        let mut want: Vec<String> = Vec::new();
        // The last 7 days: their newest backup (k = 1).
        want.extend((83..90).map(|d| format!("d{d:02}-1")));
        // The last 4 ISO weeks: the newest backup of each. Day 89 is Saturday 2026-04-04
        // (week of 03-30), then Sundays 03-29 (day 83), 03-22 (day 76), 03-15 (day 69).
        want.extend(["d89-1", "d83-1", "d76-1", "d69-1"].map(String::from));
        // The last 3 months: April (day 89), March 31 (day 85), February 28 (day 54).
        want.extend(["d89-1", "d85-1", "d54-1"].map(String::from));
        want.sort();
        want.dedup();
        assert_eq!(ids(&kept), want);
        let why = &kept.iter().find(|(i, _)| i == "d89-1").unwrap().1;
        assert_eq!(why, "daily 1, weekly 1, monthly 1, newest verified");
    }

    #[test]
    fn unverified_backups_take_no_place_and_the_newest_verified_one_stays() {
        let mut all = entries(10, 1);
        for e in all.iter_mut().skip(3) {
            e.verified = false; // the last 7 failed their verification
        }
        let kept = keep(
            &all,
            &Retention {
                daily: Some(2),
                weekly: None,
                monthly: None,
            },
            START + 10 * DAY,
        );
        // The two days kept are the last two with a good backup, not the broken ones.
        assert_eq!(ids(&kept), ["d01-0", "d02-0"]);
        assert_eq!(kept[1].1, "daily 1, newest verified");
    }

    #[test]
    fn a_safety_copy_is_kept_for_a_week() {
        let mut all = entries(20, 1);
        all[5].safety = true; // 14 days before the newest: gone
        all[15].safety = true; // 4 days before: kept
        let kept = keep(
            &all,
            &Retention {
                daily: Some(1),
                weekly: None,
                monthly: None,
            },
            START + 20 * DAY,
        );
        assert_eq!(ids(&kept), ["d15-0", "d19-0"]);
        assert_eq!(kept[0].1, "safety copy of a restore");
    }

    #[test]
    fn a_time_in_the_future_or_far_from_the_file_is_not_trusted_and_evicts_nothing() {
        let now = START + 10 * DAY;
        let mut all = entries(10, 1);
        for e in &mut all {
            e.untrusted = untrusted_time(e.at, Some(e.at + 60), now);
        }
        assert!(all.iter().all(|e| e.untrusted.is_none()));
        // A copy of the newest, dated 2100; another dated 1970; both written just now.
        for (id, at) in [("future", 4_102_444_800), ("epoch", 0)] {
            all.push(Entry {
                id: id.into(),
                at,
                verified: true,
                safety: false,
                untrusted: untrusted_time(at, Some(now - 60), now),
            });
        }
        let policy = Retention {
            daily: Some(1),
            weekly: None,
            monthly: None,
        };
        let kept = keep(&all, &policy, now);
        assert_eq!(ids(&kept), ["d09-0", "epoch", "future"]);
        assert_eq!(kept[0].1, "daily 1, newest verified");
        assert!(kept[1].1.starts_with("untrusted time"), "{}", kept[1].1);
        assert!(kept[2].1.contains("in the future"), "{}", kept[2].1);
        assert_eq!(counted(&kept, &all), ["d09-0"]);
        // Within a day of its file's time, a manifest's time is trusted; not beyond.
        assert!(untrusted_time(now - DAY, Some(now), now).is_none());
        assert!(untrusted_time(now - DAY - 1, Some(now), now).is_some());
        assert!(untrusted_time(now, None, now).is_some());
    }
}
