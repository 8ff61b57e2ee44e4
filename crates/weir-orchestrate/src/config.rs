//! The `orchestrator:` section of `weir.yml`: limits, pools and where logs go.
//!
//! ```yaml
//! orchestrator:
//!   parallelism: 32          # attempts running at once, all pipelines together
//!   pools: {api: 4, warehouse: 1}
//!   logs_dir: .weir/logs
//!   xcom_max_bytes: 65536
//!   max_log_bytes: 16777216
//!   heartbeat_interval: 5s   # how often a worker records it is alive
//!   worker_timeout: 30s      # silence after which its runs are taken over
//! ```

use std::path::Path;

use weir_project::yaml::{Node, Value};

use crate::OrchestrateError;
use crate::executor::Settings;

const KEYS: &[&str] = &["parallelism", "pools", "logs_dir", "xcom_max_bytes", "max_log_bytes", "heartbeat_interval", "worker_timeout"];

impl Settings {
    /// Settings for a project: the defaults, overridden by `weir.yml`'s `orchestrator:`.
    pub fn for_project(root: &Path) -> Result<Settings, OrchestrateError> {
        let mut s = Settings::new(root.to_path_buf());
        let file = root.join("weir.yml");
        if !file.exists() {
            return Ok(s);
        }
        let text = std::fs::read_to_string(&file).map_err(|source| OrchestrateError::Io { path: file.display().to_string(), source })?;
        let Some(section) = weir_project::yaml::parse(&file, &text)?.and_then(|n| n.get("orchestrator").cloned()) else {
            return Ok(s);
        };
        let err = |n: &Node, m: String| {
            let location = n.location(&file);
            let snippet = location.snippet(&text).map(|s| s.to_string());
            OrchestrateError::Invalid { location, message: m, snippet }
        };
        let Some(entries) = section.as_map() else {
            return Err(err(&section, "orchestrator must be a mapping".into()));
        };
        let count = |n: &Node, what: &str| match n.value {
            Value::Int(i) if i >= 1 => Ok(i as u64),
            _ => Err(err(n, format!("{what} must be a whole number of at least 1"))),
        };
        for (k, v) in entries {
            match k.key_text().unwrap_or_default().as_str() {
                "parallelism" => s.parallelism = count(v, "parallelism")? as usize,
                "xcom_max_bytes" => s.xcom_max_bytes = count(v, "xcom_max_bytes")? as usize,
                "max_log_bytes" => s.max_log_bytes = count(v, "max_log_bytes")?,
                "heartbeat_interval" | "worker_timeout" => {
                    let text = v.scalar_text().unwrap_or_default();
                    let secs = weir_core::duration::parse_duration(&text)
                        .filter(|s| *s > 0.0)
                        .ok_or_else(|| err(v, format!("'{text}' is not a duration (like 5s, 1m)")))?;
                    let d = std::time::Duration::from_secs_f64(secs);
                    if k.key_text().as_deref() == Some("heartbeat_interval") {
                        s.heartbeat_interval = d;
                    } else {
                        s.worker_timeout = d;
                    }
                }
                "logs_dir" => {
                    let dir = v.scalar_text().ok_or_else(|| err(v, "logs_dir must be a folder".into()))?;
                    s.logs_dir = root.join(dir);
                }
                "pools" => {
                    let pools = v.as_map().ok_or_else(|| err(v, "pools must map pool names to slot counts, like {api: 4}".into()))?;
                    for (name, slots) in pools {
                        s.pools.insert(name.key_text().unwrap_or_default(), count(slots, "a pool's slots")? as usize);
                    }
                }
                other => return Err(err(k, format!("unknown key '{other}' in orchestrator (known: {})", KEYS.join(", ")))),
            }
        }
        if s.worker_timeout < s.heartbeat_interval * 2 {
            let n = section.get("worker_timeout").unwrap_or(&section);
            return Err(err(n, "worker_timeout must be at least twice heartbeat_interval, or live workers are declared dead".into()));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_yml_sets_limits_and_pools_and_refuses_typos() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::for_project(dir.path()).unwrap().parallelism, 32);
        std::fs::write(dir.path().join("weir.yml"), "orchestrator:\n  parallelism: 4\n  pools: {api: 2}\n  logs_dir: logs\n").unwrap();
        let s = Settings::for_project(dir.path()).unwrap();
        assert_eq!((s.parallelism, s.pools.get("api").copied(), s.logs_dir.ends_with("logs")), (4, Some(2), true));
        std::fs::write(dir.path().join("weir.yml"), "orchestrator:\n  paralellism: 4\n").unwrap();
        let e = Settings::for_project(dir.path()).unwrap_err().to_string();
        assert!(e.contains("weir.yml:2:3") && e.contains("unknown key 'paralellism'"), "{e}");
    }
}
