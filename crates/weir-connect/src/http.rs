//! HTTP JSON API sources: requests page after page, takes the records at a path of each
//! response, and writes them as JSON lines for the destination's JSON reader, which infers
//! their types like any other JSON-lines file.
//!
//! What users of dlt's REST API source expect is here: pagination by page number, offset,
//! cursor, `Link` header or a next URL in the body; bearer, basic and API-key auth with the
//! secrets from `env_var()` and never shown (every message is scrubbed of them); retries with
//! exponential backoff on 429, 5xx and dropped connections, honouring `Retry-After`. A 4xx
//! other than 429 fails at once: asking again would not help.

use std::io::{BufWriter, Write};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, LINK, RETRY_AFTER};
use serde_json::Value as J;
use weir_core::duration::parse_duration;
pub use weir_graph::loads::http::{Auth, HttpSource, Paginate};

/// What was fetched: records as JSON lines in a temporary file.
pub struct Fetched {
    pub file: tempfile::NamedTempFile,
    pub records: u64,
    pub pages: u64,
    pub bytes: u64,
}

/// Walks the endpoint and writes every record as one JSON line. `extra` adds query
/// parameters (an incremental cursor). `progress` hears (pages, records, bytes) after each page.
pub fn fetch(src: &HttpSource, extra: &[(String, String)], progress: &mut dyn FnMut(u64, u64, u64)) -> Result<Fetched, String> {
    let secrets = src.secrets();
    let scrub = |m: String| scrub(m, &secrets);
    let client = Client::builder()
        .timeout(src.timeout)
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| scrub(format!("cannot make an HTTP client: {e}")))?;
    let file = tempfile::Builder::new().prefix("weir-http-").suffix(".jsonl").tempfile().map_err(|e| e.to_string())?;
    let mut out = BufWriter::new(file.as_file().try_clone().map_err(|e| e.to_string())?);
    let mut fetched = Fetched { file, records: 0, pages: 0, bytes: 0 };
    let mut url = src.url.clone();
    let mut params: Vec<(String, String)> = src.params.iter().chain(extra).cloned().collect();
    if let Some(Auth::ApiKey { name, value, in_query: true }) = &src.auth {
        params.push((name.clone(), value.clone()));
    }
    let mut page = match &src.paginate {
        Paginate::PageNumber { start, .. } => *start,
        _ => 0,
    };
    let mut offset = 0u64;
    loop {
        let mut query = params.clone();
        match &src.paginate {
            Paginate::PageNumber { param, size, .. } => {
                query.push((param.clone(), page.to_string()));
                if let Some((p, n)) = size {
                    query.push((p.clone(), n.to_string()));
                }
            }
            Paginate::Offset { param, limit_param, limit, .. } => {
                query.push((param.clone(), offset.to_string()));
                query.push((limit_param.clone(), limit.to_string()));
            }
            _ => {}
        }
        let (body, headers, size) = get(&client, src, &url, &query).map_err(scrub)?;
        fetched.pages += 1;
        fetched.bytes += size;
        let shown_page = fetched.pages;
        let records = records_of(&body, src.records.as_deref()).map_err(|m| scrub(format!("page {shown_page} of {url}: {m}")))?;
        let n = records.len() as u64;
        for r in records {
            let line = match r {
                J::Object(_) => r.to_string(),
                other => serde_json::json!({ "value": other }).to_string(),
            };
            out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(|e| e.to_string())?;
        }
        fetched.records += n;
        progress(fetched.pages, fetched.records, fetched.bytes);
        if fetched.pages >= src.max_pages {
            break;
        }
        let more = match &src.paginate {
            Paginate::None => false,
            Paginate::PageNumber { size, total_path, .. } => {
                let last = total_path.as_deref().and_then(|p| at_path(&body, p)).and_then(number);
                page += 1;
                n > 0 && size.as_ref().is_none_or(|(_, s)| n >= *s) && last.is_none_or(|l| page <= l)
            }
            Paginate::Offset { limit, total_path, .. } => {
                let total = total_path.as_deref().and_then(|p| at_path(&body, p)).and_then(number);
                offset += n;
                n > 0 && n >= *limit && total.is_none_or(|t| offset < t)
            }
            Paginate::Cursor { path, param } => match at_path(&body, path) {
                None | Some(J::Null) => false,
                Some(J::String(s)) if s.is_empty() => false,
                Some(v) => {
                    let v = match v {
                        J::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    params.retain(|(k, _)| k != param);
                    params.push((param.clone(), v));
                    true
                }
            },
            Paginate::LinkHeader => match next_link(&headers) {
                Some(next) => {
                    url = join(&url, &next)?;
                    // The next URL carries the query; only a key in the query is added again.
                    params.retain(|(k, _)| matches!(&src.auth, Some(Auth::ApiKey { name, in_query: true, .. }) if name == k));
                    true
                }
                None => false,
            },
            Paginate::NextUrl { path } => match at_path(&body, path) {
                Some(J::String(next)) if !next.is_empty() => {
                    url = join(&url, next)?;
                    params.retain(|(k, _)| matches!(&src.auth, Some(Auth::ApiKey { name, in_query: true, .. }) if name == k));
                    true
                }
                _ => false,
            },
        };
        if !more {
            break;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(fetched)
}

/// The mark an API is sent under a `lookback`: `mark` moved back by it, in the mark's own
/// form, since the API parses what it sent. A number less a number; a date or a timestamp
/// (ISO 8601 with `T` or a space, its zone kept as written: `Z`, `+02`, `+02:00`) less an
/// amount of time (`2 hours`, `30 minutes`, `1 day`, `1 month`, or `90s`, `1d12h`). A date less
/// part of a day is the day before: a lookback may extract more, never less.
pub fn mark_before(mark: &str, lookback: &str) -> Result<String, String> {
    use chrono::{Months, NaiveDate, NaiveDateTime, TimeDelta};
    let mark = mark.trim();
    if let (Ok(m), Ok(l)) = (mark.parse::<i64>(), lookback.trim().parse::<i64>()) {
        return m.checked_sub(l).map(|v| v.to_string()).ok_or_else(|| format!("the mark {mark} less {l} is out of range"));
    }
    if let (Ok(m), Ok(l)) = (mark.parse::<f64>(), lookback.trim().parse::<f64>()) {
        return Ok((m - l).to_string());
    }
    if mark.parse::<f64>().is_ok() {
        return Err(format!("lookback '{lookback}' must be a number for the numeric mark {mark}"));
    }
    let amount = time_amount(lookback).ok_or_else(|| {
        format!("lookback '{lookback}' must be a number or an amount of time (30 minutes, 2 hours, 1 day, 1 month) for an API's mark")
    })?;
    // In the mark's own zone, moving the wall time back moves the instant back as much.
    let back = |t: NaiveDateTime| match amount {
        TimeAmount::Months(m) => t.checked_sub_months(Months::new(m)),
        TimeAmount::Seconds(s) => TimeDelta::try_milliseconds((s * 1000.0).round() as i64).and_then(|d| t.checked_sub_signed(d)),
    };
    let out_of_range = || format!("the mark {mark} less {lookback} is out of range");
    let (stamp, zone) = split_zone(mark);
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(stamp, format) {
            return Ok(format!("{}{zone}", back(t).ok_or_else(out_of_range)?.format(format)));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(mark, "%Y-%m-%d") {
        let moved = back(d.and_time(chrono::NaiveTime::MIN)).ok_or_else(out_of_range)?;
        return Ok(moved.date().format("%Y-%m-%d").to_string());
    }
    Err(format!("cannot move the mark '{mark}' back by {lookback}: it is not a number, a date or an ISO 8601 timestamp"))
}

/// A timestamp's text and its zone suffix (`Z`, `+02`, `-05:30`, or nothing).
fn split_zone(mark: &str) -> (&str, &str) {
    if mark.ends_with(['Z', 'z']) {
        return mark.split_at(mark.len() - 1);
    }
    // The date's own dashes come before the time; a sign after it starts the zone.
    match mark.rfind(['+', '-']) {
        Some(i) if i > 10 && mark[..i].contains(':') => mark.split_at(i),
        _ => (mark, ""),
    }
}

/// An amount of time: months (whose length varies) apart from the rest.
enum TimeAmount {
    Months(u32),
    Seconds(f64),
}

fn time_amount(s: &str) -> Option<TimeAmount> {
    if let Some(secs) = parse_duration(s) {
        return Some(TimeAmount::Seconds(secs));
    }
    let (n, unit) = weir_core::duration::parse_interval(s)?;
    let seconds: u32 = match unit {
        "month" => return Some(TimeAmount::Months(n)),
        "year" => return Some(TimeAmount::Months(n.checked_mul(12)?)),
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        _ => return None,
    };
    Some(TimeAmount::Seconds(f64::from(n) * f64::from(seconds)))
}

fn scrub(mut message: String, secrets: &[String]) -> String {
    for s in secrets {
        message = message.replace(s.as_str(), "***");
    }
    message
}

/// One page: the body as JSON, the headers, and its size. Retries what may pass on a
/// second try.
fn get(client: &Client, src: &HttpSource, url: &str, query: &[(String, String)]) -> Result<(J, HeaderMap, u64), String> {
    let mut attempt = 0u32;
    loop {
        let mut req = client.get(url).query(query).header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &src.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match &src.auth {
            Some(Auth::Bearer(t)) => req.bearer_auth(t),
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
            Some(Auth::ApiKey { name, value, in_query: false }) => req.header(name.as_str(), value.as_str()),
            _ => req,
        };
        let failure = match req.send() {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    let headers = resp.headers().clone();
                    match resp.bytes() {
                        Ok(body) => {
                            let json = serde_json::from_slice(&body).map_err(|e| {
                                format!("the response of {url} is not JSON ({e}): {}", excerpt(&String::from_utf8_lossy(&body)))
                            })?;
                            return Ok((json, headers, body.len() as u64));
                        }
                        // The connection dropped mid-page: the page is asked for again.
                        Err(e) => Failure { message: format!("the response of {url} broke off: {e}"), wait: None },
                    }
                } else if status.as_u16() == 429 || status.is_server_error() {
                    let wait = retry_after(&resp);
                    Failure { message: format!("HTTP {status} from {url}: {}", excerpt(&resp.text().unwrap_or_default())), wait }
                } else {
                    return Err(format!("HTTP {status} from {url}: {}", excerpt(&resp.text().unwrap_or_default())));
                }
            }
            Err(e) if e.is_builder() => return Err(format!("invalid request to {url}: {e}")),
            Err(e) => Failure { message: format!("request to {url} failed: {}", weir_core::error_chain(&e)), wait: None },
        };
        if attempt >= src.retries {
            let tries = attempt + 1;
            return Err(format!("{} (after {tries} attempt{})", failure.message, if tries == 1 { "" } else { "s" }));
        }
        let backoff = src.retry_delay.saturating_mul(2u32.saturating_pow(attempt));
        std::thread::sleep(failure.wait.unwrap_or(backoff).min(src.max_retry_delay));
        attempt += 1;
    }
}

struct Failure {
    message: String,
    /// What the server asked for in `Retry-After`.
    wait: Option<Duration>,
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 200 { format!("{}...", t.chars().take(200).collect::<String>()) } else { t.to_string() }
}

/// The records of one response.
fn records_of(body: &J, path: Option<&str>) -> Result<Vec<J>, String> {
    let found = match path {
        Some(p) => at_path(body, p).ok_or_else(|| format!("no `{p}` in the response"))?,
        None => body,
    };
    match found {
        J::Array(items) => Ok(items.clone()),
        J::Null => Ok(vec![]),
        J::Object(map) if path.is_none() => {
            let lists: Vec<&String> = map.iter().filter(|(_, v)| v.is_array()).map(|(k, _)| k).collect();
            for name in ["data", "items", "results", "records", "rows"] {
                if let Some(J::Array(items)) = map.get(name) {
                    return Ok(items.clone());
                }
            }
            match lists.as_slice() {
                [one] => Ok(map[one.as_str()].as_array().cloned().unwrap_or_default()),
                [] => Ok(vec![body.clone()]),
                many => Err(format!(
                    "the response has several lists ({}); say which holds the records with `records:`",
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        // One object at the path is one record.
        J::Object(_) => Ok(vec![found.clone()]),
        other => Err(format!("`{}` is {other}, not a list of records", path.unwrap_or("the response"))),
    }
}

/// The value at a dotted path (`meta.next`, `data.0.id`).
fn at_path<'a>(body: &'a J, path: &str) -> Option<&'a J> {
    path.split('.').filter(|p| !p.is_empty()).try_fold(body, |v, part| match v {
        J::Object(m) => m.get(part),
        J::Array(a) => a.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

fn number(v: &J) -> Option<u64> {
    match v {
        J::Number(n) => n.as_u64(),
        J::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let text = value.to_str().ok()?;
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let close = open + rest[open..].find('>')?;
            let target = &rest[open + 1..close];
            let params_end = rest[close..].find('<').map(|i| close + i).unwrap_or(rest.len());
            let params = &rest[close + 1..params_end];
            if params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.strip_prefix("rel=").is_some_and(|r| r.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
            }) {
                return Some(target.to_string());
            }
            rest = &rest[params_end..];
        }
    }
    None
}

fn join(base: &str, next: &str) -> Result<String, String> {
    let base = reqwest::Url::parse(base).map_err(|e| format!("invalid URL {base}: {e}"))?;
    base.join(next).map(|u| u.to_string()).map_err(|e| format!("invalid next-page URL {next}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_lookback_moves_the_mark_back_in_its_own_form() {
        let back = |m: &str, l: &str| mark_before(m, l);
        assert_eq!(back("1000", "10").as_deref(), Ok("990"));
        assert_eq!(back("10.5", "0.5").as_deref(), Ok("10"));
        assert_eq!(back("2024-01-03T10:00:00Z", "2 hours").as_deref(), Ok("2024-01-03T08:00:00Z"));
        assert_eq!(back("2024-01-03T01:00:00+02:00", "90m").as_deref(), Ok("2024-01-02T23:30:00+02:00"));
        assert_eq!(back("2024-01-03 10:00:00.250-05", "1 day").as_deref(), Ok("2024-01-02 10:00:00.250-05"));
        assert_eq!(back("2024-01-03 10:00:00", "30 minutes").as_deref(), Ok("2024-01-03 09:30:00"));
        assert_eq!(back("2024-03-31T00:00", "1 month").as_deref(), Ok("2024-02-29T00:00"));
        assert_eq!(back("2024-01-03", "1 day").as_deref(), Ok("2024-01-02"));
        assert_eq!(back("2024-01-03", "1 hour").as_deref(), Ok("2024-01-02"), "part of a day goes back a whole one");
        assert!(back("1000", "1 hour").unwrap_err().contains("must be a number for the numeric mark"));
        assert!(back("2024-01-03", "soon").unwrap_err().contains("an amount of time"));
        assert!(back("abc", "1 hour").unwrap_err().contains("cannot move the mark 'abc'"));
        assert!(back("-9223372036854775808", "1").unwrap_err().contains("out of range"));
    }

    #[test]
    fn finds_records_and_paths() {
        let body: J = serde_json::json!({"meta": {"next": "abc", "total": 3}, "data": [{"id": 1}, {"id": 2}]});
        assert_eq!(records_of(&body, None).unwrap().len(), 2);
        assert_eq!(at_path(&body, "meta.next"), Some(&J::from("abc")));
        assert_eq!(at_path(&body, "data.1.id"), Some(&J::from(2)));
        assert!(records_of(&body, Some("nope")).unwrap_err().contains("no `nope`"));
        let two: J = serde_json::json!({"a": [1], "b": [2]});
        assert!(records_of(&two, None).unwrap_err().contains("several lists (a, b)"));
        assert_eq!(records_of(&serde_json::json!([1, 2, 3]), None).unwrap().len(), 3);
    }

    #[test]
    fn reads_link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://x/r?page=1>; rel="prev", <https://x/r?page=3>; rel="next", <https://x/r?page=9>; rel="last""#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x/r?page=3"));
        h.insert(LINK, HeaderValue::from_static(r#"<https://x/r?page=1>; rel="first""#));
        assert_eq!(next_link(&h), None);
        assert_eq!(join("http://h/a/b?x=1", "/c?page=2").unwrap(), "http://h/c?page=2");
    }

    #[test]
    fn secrets_are_scrubbed() {
        assert_eq!(scrub("GET http://h/?key=s3cr3t failed".into(), &["s3cr3t".into()]), "GET http://h/?key=*** failed");
    }
}
