//! Retention: which backups `prune` keeps. As restic's `forget --keep-daily/weekly/monthly`:
//! newest first, each policy keeps the newest backup of each of its last N periods (UTC
//! days, ISO weeks starting Monday, calendar months) that hold a backup; a backup kept by
//! any policy stays. The newest verified backup always stays, whatever the policy says.

use std::collections::BTreeSet;

use crate::spec::Retention;

/// One backup as retention sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: String,
    /// Seconds since the epoch.
    pub at: u64,
    pub verified: bool,
    /// Taken by a restore, to undo it.
    pub safety: bool,
}

/// How long a restore's safety copy is kept, whatever the policy.
pub const SAFETY_GRACE: u64 = 7 * 86_400;

/// The period a time falls in, as a number that grows with time.
type Period = fn(u64) -> i64;

/// The ids to keep, and why each is kept.
pub fn keep(entries: &[Entry], policy: &Retention) -> Vec<(String, String)> {
    // Only backups that can be restored fill the policy's periods: an unverified one
    // would push a good one out.
    let mut newest_first: Vec<&Entry> =
        entries.iter().filter(|e| e.verified && !e.safety).collect();
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
            let (y, m, _) = crate::state::civil(at);
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
    // A restore's safety copy is its way back: kept for a while whatever the policy.
    let newest = entries.iter().map(|e| e.at).max().unwrap_or(0);
    for e in entries
        .iter()
        .filter(|e| e.safety && newest.saturating_sub(e.at) < SAFETY_GRACE)
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
        let kept = keep(&all, &policy);
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
        );
        assert_eq!(ids(&kept), ["d15-0", "d19-0"]);
        assert_eq!(kept[0].1, "safety copy of a restore");
    }
}
