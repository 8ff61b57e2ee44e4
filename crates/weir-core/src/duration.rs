//! Durations as users write them in YAML (`1d12h`, `30m`, `90s`, `250ms`) and as reports
//! show them (`1d 12h`): one spelling for check thresholds, retry delays and timeouts.

/// `1d`, `6h`, `30m`, `90s`, `250ms`, `1d12h` as seconds; `None` for anything else
/// (a bare number included: its unit would be a guess).
pub fn parse_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut any = false;
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86400.0,
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

/// Seconds as `1d 2h`, `5m 3s`, for reports.
pub fn show_duration(secs: f64) -> String {
    let s = secs.round() as i64;
    let (sign, s) = if s < 0 { ("-", -s) } else { ("", s) };
    let parts = [(s / 86400, "d"), (s % 86400 / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")];
    let shown: Vec<String> = parts.iter().filter(|(n, _)| *n > 0).take(2).map(|(n, u)| format!("{n}{u}")).collect();
    if shown.is_empty() { "0s".into() } else { format!("{sign}{}", shown.join(" ")) }
}

/// An interval as SQL writes it and lookbacks are written (`2 hours`, `1 day`, `3 months`):
/// the count and the unit, singular (`second`, `minute`, `hour`, `day`, `week`, `month`,
/// `year`); `None` for anything else.
pub fn parse_interval(s: &str) -> Option<(u32, &'static str)> {
    let mut parts = s.split_whitespace();
    let n: u32 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.to_ascii_lowercase();
    if parts.next().is_some() {
        return None;
    }
    let unit = ["second", "minute", "hour", "day", "week", "month", "year"].into_iter().find(|u| unit.trim_end_matches('s') == *u)?;
    Some((n, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print() {
        assert_eq!(parse_duration("1d12h"), Some(129_600.0));
        assert_eq!(parse_duration("90s"), Some(90.0));
        assert_eq!(parse_duration("250ms"), Some(0.25));
        assert_eq!(parse_duration("1m30s"), Some(90.0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(show_duration(129_600.0), "1d 12h");
        assert_eq!(show_duration(0.4), "0s");
        assert_eq!(parse_interval("2 Hours"), Some((2, "hour")));
        assert_eq!(parse_interval("1 day"), Some((1, "day")));
        assert_eq!(parse_interval("2 fortnights"), None);
        assert_eq!(parse_interval("soon"), None);
        assert_eq!(parse_interval("1 day ago"), None);
    }
}
