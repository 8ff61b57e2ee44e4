//! The `http` source of a load: one JSON API endpoint, how to page through it and how to
//! authenticate, read from `loads/*.yml`. The load executor (`weir-connect`) walks it.

use std::time::Duration;

use weir_core::duration::parse_duration;
use weir_project::yaml::Node;

use super::Parser;
use crate::GraphError;

/// One API endpoint and how to walk it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSource {
    pub url: String,
    /// Query parameters sent with the first request (and every page, but for link pagination).
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Dotted path to the list of records in each response (`data.items`); without it, the
    /// response itself when it is a list, else its one list-valued field.
    pub records: Option<String>,
    pub auth: Option<Auth>,
    pub paginate: Paginate,
    /// Pages at most, a guard against an API that never says it is done.
    pub max_pages: u64,
    /// Attempts after the first, for 429, 5xx and dropped connections.
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// A key in a header (`X-API-Key`) or a query parameter.
    ApiKey {
        name: String,
        value: String,
        in_query: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Paginate {
    /// One request.
    None,
    /// `?page=1,2,...` until a page is empty or short, or `total_path` pages were read.
    PageNumber { param: String, start: u64, size: Option<(String, u64)>, total_path: Option<String> },
    /// `?offset=0,100,...&limit=100` until a page is empty or short, or `total_path` records.
    Offset { param: String, limit_param: String, limit: u64, total_path: Option<String> },
    /// The next page's cursor at `path` in the body, sent back as `param`, until it is null.
    Cursor { path: String, param: String },
    /// The `Link: <...>; rel="next"` header (GitHub's style).
    LinkHeader,
    /// The next page's URL at `path` in the body, until it is null.
    NextUrl { path: String },
}

impl HttpSource {
    /// The values that must never appear in a message.
    pub fn secrets(&self) -> Vec<String> {
        match &self.auth {
            Some(Auth::Bearer(t)) => vec![t.clone()],
            Some(Auth::Basic { password, .. }) => vec![password.clone()],
            Some(Auth::ApiKey { value, .. }) => vec![value.clone()],
            None => vec![],
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// Reads an `http` source of a load file.
pub(super) fn parse_source(p: &Parser, node: &Node) -> Result<HttpSource, GraphError> {
    const KEYS: &[&str] = &[
        "kind",
        "url",
        "params",
        "headers",
        "records",
        "auth",
        "paginate",
        "max_pages",
        "retries",
        "retry_delay",
        "max_retry_delay",
        "timeout",
    ];
    let entries = p.map(node, "an http source", KEYS)?;
    let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
    let url_node = get("url").ok_or_else(|| p.err(node, "an http source needs a `url`"))?;
    let url = p.text(url_node, "url")?;
    if let Err(e) = reqwest::Url::parse(&url) {
        return Err(p.err(url_node, format!("'{url}' is not a URL: {e}")));
    }
    let pairs = |k: &str| -> Result<Vec<(String, String)>, GraphError> {
        let Some(n) = get(k) else { return Ok(vec![]) };
        let m = n.as_map().ok_or_else(|| p.err(n, format!("`{k}` maps names to values")))?;
        m.iter().map(|(k2, v)| Ok((k2.key_text().unwrap_or_default(), p.text(v, k)?))).collect()
    };
    let duration = |k: &str, default: f64| -> Result<Duration, GraphError> {
        match get(k) {
            None => Ok(Duration::from_secs_f64(default)),
            Some(n) => {
                let t = p.text(n, k)?;
                parse_duration(&t)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| p.err(n, format!("`{k}` '{t}' is not a duration (250ms, 5s, 1m)")))
            }
        }
    };
    let count = |k: &str, default: u64| -> Result<u64, GraphError> {
        match get(k) {
            None => Ok(default),
            Some(n) => {
                let t = p.text(n, k)?;
                t.parse().map_err(|_| p.err(n, format!("`{k}` must be a whole number, not '{t}'")))
            }
        }
    };
    Ok(HttpSource {
        params: pairs("params")?,
        headers: pairs("headers")?,
        records: get("records").map(|n| p.text(n, "records")).transpose()?,
        auth: get("auth").map(|n| auth(p, n)).transpose()?,
        paginate: get("paginate").map(|n| paginate(p, n)).transpose()?.unwrap_or(Paginate::None),
        max_pages: count("max_pages", 10_000)?,
        retries: u32::try_from(count("retries", 5)?).unwrap_or(u32::MAX),
        retry_delay: duration("retry_delay", 1.0)?,
        max_retry_delay: duration("max_retry_delay", 60.0)?,
        timeout: duration("timeout", 30.0)?,
        url,
    })
}

fn auth(p: &Parser, node: &Node) -> Result<Auth, GraphError> {
    let entries = p.map(node, "`auth`", &["bearer", "basic", "api_key"])?;
    let [(key, value)] = entries else {
        return Err(p.err(node, "`auth` takes one of bearer, basic, api_key"));
    };
    match key.key_text().as_deref() {
        Some("bearer") => Ok(Auth::Bearer(p.text(value, "bearer")?)),
        Some("basic") => {
            let m = p.map(value, "`basic`", &["username", "password"])?;
            let get = |k: &str| m.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
            Ok(Auth::Basic {
                username: get("username")
                    .map(|n| p.text(n, "username"))
                    .transpose()?
                    .ok_or_else(|| p.err(value, "`basic` needs a `username`"))?,
                password: get("password").map(|n| p.text(n, "password")).transpose()?.unwrap_or_default(),
            })
        }
        _ => {
            let m = p.map(value, "`api_key`", &["name", "value", "in"])?;
            let get = |k: &str| m.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
            let in_query = match get("in").map(|n| p.text(n, "in")).transpose()?.as_deref() {
                None | Some("header") => false,
                Some("query") => true,
                Some(other) => return Err(p.err(value, format!("api_key `in` is header or query, not '{other}'"))),
            };
            Ok(Auth::ApiKey {
                name: get("name").map(|n| p.text(n, "name")).transpose()?.ok_or_else(|| p.err(value, "`api_key` needs a `name`"))?,
                value: get("value").map(|n| p.text(n, "value")).transpose()?.ok_or_else(|| p.err(value, "`api_key` needs a `value`"))?,
                in_query,
            })
        }
    }
}

fn paginate(p: &Parser, node: &Node) -> Result<Paginate, GraphError> {
    const KEYS: &[&str] =
        &["kind", "param", "start", "page_size", "page_size_param", "limit", "limit_param", "total_path", "cursor_path", "path"];
    let entries = p.map(node, "`paginate`", KEYS)?;
    let get = |k: &str| entries.iter().find(|(key, _)| key.key_text().as_deref() == Some(k)).map(|(_, v)| v);
    let text = |k: &str| get(k).map(|n| p.text(n, k)).transpose();
    let number = |k: &str| -> Result<Option<u64>, GraphError> {
        match get(k) {
            None => Ok(None),
            Some(n) => {
                let t = p.text(n, k)?;
                t.parse().map(Some).map_err(|_| p.err(n, format!("`{k}` must be a whole number, not '{t}'")))
            }
        }
    };
    let kind_node =
        get("kind").ok_or_else(|| p.err(node, "`paginate` needs a `kind`: page_number, offset, cursor, link_header or next_url"))?;
    let needs = |k: &str, kind: &str| p.err(node, format!("{kind} pagination needs `{k}`"));
    Ok(match p.text(kind_node, "kind")?.as_str() {
        "none" => Paginate::None,
        "page_number" | "page" => Paginate::PageNumber {
            param: text("param")?.unwrap_or_else(|| "page".into()),
            start: number("start")?.unwrap_or(1),
            size: number("page_size")?
                .map(|n| Ok::<_, GraphError>((text("page_size_param")?.unwrap_or_else(|| "per_page".into()), n)))
                .transpose()?,
            total_path: text("total_path")?,
        },
        "offset" => Paginate::Offset {
            param: text("param")?.unwrap_or_else(|| "offset".into()),
            limit_param: text("limit_param")?.unwrap_or_else(|| "limit".into()),
            limit: number("limit")?.unwrap_or(100),
            total_path: text("total_path")?,
        },
        "cursor" => Paginate::Cursor {
            path: text("cursor_path")?.ok_or_else(|| needs("cursor_path", "cursor"))?,
            param: text("param")?.unwrap_or_else(|| "cursor".into()),
        },
        "link_header" | "link" => Paginate::LinkHeader,
        "next_url" => Paginate::NextUrl { path: text("path")?.ok_or_else(|| needs("path", "next_url"))? },
        other => {
            return Err(
                p.err(kind_node, format!("pagination '{other}' is not one of page_number, offset, cursor, link_header, next_url, none"))
            );
        }
    })
}
