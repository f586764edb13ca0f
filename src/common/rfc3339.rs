//! RFC 3339 dates in UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`): the one place that turns Unix time into dates and
//! back, for log lines, the launcher's Buildkite queries and the job ages it reads. The calendar arithmetic
//! is Howard Hinnant's (days ⇄ proleptic Gregorian year, month, day).
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` seconds after the Unix epoch.
pub fn format(secs: u64) -> String {
    let (date, time) = split(secs as i64);
    format!("{date}T{time}Z")
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ` for now (log lines).
pub fn now_millis() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, time) = split(now.as_secs() as i64);
    format!("{date}T{time}.{:03}Z", now.subsec_millis())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` into Unix seconds (fractional); `None` for anything else.
pub fn parse(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?;
    let (frac, tz) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (format!("0.{}", &r[..end]).parse::<f64>().ok()?, &r[end..])
        }
        None => (0.0, rest),
    };
    if tz != "Z" && tz != "+00:00" {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

/// (`YYYY-MM-DD`, `HH:MM:SS`) of a Unix time.
fn split(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60))
}

/// Days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_both_ways() {
        for (days, date) in [(0, (1970, 1, 1)), (20_778, (2026, 11, 21)), (11_016, (2000, 2, 29)), (-1, (1969, 12, 31))]
        {
            assert_eq!(civil_from_days(days), date);
            assert_eq!(days_from_civil(date.0, date.1, date.2), days);
        }
    }

    #[test]
    fn formats_and_parses() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_767_607_201), "2026-01-05T10:00:01Z");
        assert_eq!(parse(&format(951_868_800)), Some(951_868_800.0));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse("2026-01-05T10:00:01.500Z"), Some(1_767_607_201.5));
        assert_eq!(parse("2000-03-01T00:00:00+00:00"), Some(951_868_800.0));
        assert_eq!(parse("2026-01-05 10:00:01"), None);
        assert_eq!(parse("2026-01-05T10:00:01+02:00"), None);
        assert_eq!(parse("2026-01-05T10:00:0é"), None);
        let now = now_millis();
        assert_eq!((now.len(), &now[10..11], &now[23..]), (24, "T", "Z"));
    }
}
