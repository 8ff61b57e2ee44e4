//! The `server:` section of `weir.yml`: where `weir serve` listens and who may use its API.
//!
//! ```yaml
//! server:
//!   bind: 127.0.0.1:8080      # --bind overrides it
//!   token: "{{ env_var('WEIR_API_TOKEN') }}"   # or set $WEIR_API_TOKEN
//!   open_reads: false          # true: GET endpoints need no token
//!   read_timeout: 30           # seconds a client may take to send a request's head, or
//!                              # pause inside its body, before the connection is closed
//! ```
//!
//! The token is best kept out of the file: `$WEIR_API_TOKEN` wins over `token:`, and a
//! `token:` of the form `{{ env_var('NAME') }}` reads that variable.

use std::path::Path;
use std::time::Duration;

use weir_project::yaml::{Node, Value};

use crate::ServerError;

/// How the API is reached and guarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub bind: String,
    /// `None`: no token is configured, so every guarded endpoint refuses.
    pub token: Option<String>,
    /// Reads (GET) are open to anyone who can reach the address.
    pub open_reads: bool,
    /// How long a connection may wait before sending a request's head, or pause inside its
    /// body: an idle or stalled client is cut off after it.
    pub read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig { bind: "127.0.0.1:8080".into(), token: None, open_reads: false, read_timeout: Duration::from_secs(30) }
    }
}

const KEYS: &[&str] = &["bind", "token", "open_reads", "read_timeout"];

impl ServerConfig {
    /// The project's settings: defaults, then `weir.yml`, then `$WEIR_API_TOKEN`.
    pub fn for_project(root: &Path) -> Result<ServerConfig, ServerError> {
        let mut c = ServerConfig::default();
        let file = root.join("weir.yml");
        if file.exists() {
            let text = std::fs::read_to_string(&file).map_err(|e| ServerError::Config(format!("{}: {e}", file.display())))?;
            let root_node = weir_project::yaml::parse(&file, &text).map_err(|e| ServerError::Config(e.to_string()))?;
            if let Some(section) = root_node.and_then(|n| n.get("server").cloned()) {
                read_section(&mut c, &section, &file)?;
            }
        }
        if let Ok(t) = std::env::var("WEIR_API_TOKEN")
            && !t.is_empty()
        {
            c.token = Some(t);
        }
        Ok(c)
    }
}

fn read_section(c: &mut ServerConfig, section: &Node, file: &Path) -> Result<(), ServerError> {
    let err = |n: &Node, m: String| ServerError::Config(format!("{}: {m}", n.location(file)));
    let Some(entries) = section.as_map() else { return Err(err(section, "server must be a mapping".into())) };
    for (k, v) in entries {
        match k.key_text().unwrap_or_default().as_str() {
            "bind" => c.bind = v.scalar_text().ok_or_else(|| err(v, "bind must be HOST:PORT".into()))?,
            "open_reads" => {
                c.open_reads = match v.value {
                    Value::Bool(b) => b,
                    _ => return Err(err(v, "open_reads must be true or false".into())),
                }
            }
            "read_timeout" => {
                let seconds = match v.value {
                    Value::Int(n) => n as f64,
                    Value::Float(f) => f,
                    _ => f64::NAN,
                };
                c.read_timeout = Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err(v, "read_timeout must be a number of seconds above 0".into()))?;
            }
            "token" => {
                let text = v.scalar_text().ok_or_else(|| err(v, "token must be text".into()))?;
                c.token = match env_reference(&text) {
                    Some(name) => std::env::var(name).ok().filter(|t| !t.is_empty()),
                    None => Some(text).filter(|t| !t.is_empty()),
                };
            }
            other => return Err(err(k, format!("unknown key '{other}' in server (known: {})", KEYS.join(", ")))),
        }
    }
    Ok(())
}

/// `{{ env_var('NAME') }}` → `NAME`.
fn env_reference(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let arg = inner.strip_prefix("env_var(")?.strip_suffix(')')?.trim();
    arg.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')).or_else(|| arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_yml_sets_the_address_and_the_token_comes_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), None), Ok(ServerConfig::default()));
        let yml = "server:\n  bind: 0.0.0.0:9000\n  token: \"{{ env_var('WEIR_TEST_SERVER_TOKEN_UNSET') }}\"\n  open_reads: true\n";
        let c = read(dir.path(), Some(yml)).unwrap();
        assert_eq!((c.bind.as_str(), c.token, c.open_reads), ("0.0.0.0:9000", None, true));
        let c = read(dir.path(), Some("server:\n  token: s3cret\n  read_timeout: 2.5\n")).unwrap();
        assert_eq!((c.token.as_deref(), c.read_timeout), (Some("s3cret"), Duration::from_millis(2500)));
        let e = read(dir.path(), Some("server:\n  read_timeout: 0\n")).unwrap_err();
        assert!(e.contains("weir.yml:2:17") && e.contains("read_timeout must be"), "{e}");
        let e = read(dir.path(), Some("server:\n  bnd: x\n")).unwrap_err();
        assert!(e.contains("weir.yml:2:3") && e.contains("unknown key 'bnd'"), "{e}");
    }

    fn read(dir: &Path, yml: Option<&str>) -> Result<ServerConfig, String> {
        match yml {
            Some(y) => std::fs::write(dir.join("weir.yml"), y).unwrap(),
            None => {
                let _ = std::fs::remove_file(dir.join("weir.yml"));
            }
        }
        let mut c = ServerConfig::default();
        let file = dir.join("weir.yml");
        if let Some(y) = yml {
            let node = weir_project::yaml::parse(&file, y).unwrap().unwrap();
            if let Some(s) = node.get("server") {
                read_section(&mut c, s, &file).map_err(|e| e.to_string())?;
            }
        }
        Ok(c)
    }
}
