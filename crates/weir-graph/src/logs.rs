//! How a project reaches its event logs: topics declared `log: kafka` in `streams/*.yml` are
//! on the cluster `weir.yml`'s `kafka:` section names, the rest in the embedded log under
//! `.weir/log/`. Nothing is connected here; [`weir_log::Logs`] connects on first use.
//!
//! ```yaml
//! # weir.yml
//! kafka:
//!   bootstrap_servers: broker1:9092,broker2:9092    # or $WEIR_KAFKA_BOOTSTRAP_SERVERS
//!   security_protocol: sasl_ssl       # plaintext (default), ssl, sasl_plaintext, sasl_ssl
//!   sasl_mechanism: SCRAM-SHA-512     # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
//!   username: "{{ env_var('KAFKA_USER') }}"
//!   password: "{{ env_var('KAFKA_PASSWORD') }}"
//!   ssl_ca_location: /etc/ssl/certs/kafka-ca.pem
//!   replication_factor: 3             # of topics Weir makes; the broker's default if unset
//!   timeout: 30s                      # how long a request may take
//!   properties: {compression.type: zstd}   # any other librdkafka property
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_log::{KafkaConfig, Logs};
use weir_project::yaml::{Node, Value};

use crate::GraphError;
use crate::streams::Topic;

/// The environment variable that names the cluster's servers, over `bootstrap_servers`.
pub const BOOTSTRAP_ENV: &str = "WEIR_KAFKA_BOOTSTRAP_SERVERS";

/// The project's logs: `topics` (as `streams/*.yml` declares them) on the log each names.
pub fn project_logs(root: &Path, topics: &[Topic]) -> Result<Logs, GraphError> {
    let declared = topics.iter().map(|t| (t.name.clone(), t.log)).collect();
    Ok(Logs::new(root.join(".weir").join("log"), kafka_config(root)?, declared))
}

/// Friendly keys and the librdkafka property each sets.
const PROPERTIES: &[(&str, &str)] = &[
    ("security_protocol", "security.protocol"),
    ("sasl_mechanism", "sasl.mechanism"),
    ("username", "sasl.username"),
    ("password", "sasl.password"),
    ("ssl_ca_location", "ssl.ca.location"),
    ("ssl_certificate_location", "ssl.certificate.location"),
    ("ssl_key_location", "ssl.key.location"),
    ("ssl_key_password", "ssl.key.password"),
];

/// `weir.yml`'s `kafka:` section, with `$WEIR_KAFKA_BOOTSTRAP_SERVERS` over its servers;
/// `None` when neither says where a cluster is.
pub fn kafka_config(root: &Path) -> Result<Option<KafkaConfig>, GraphError> {
    let env = std::env::var(BOOTSTRAP_ENV).ok().filter(|s| !s.trim().is_empty());
    let file = root.join("weir.yml");
    let shown = Path::new("weir.yml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(GraphError::io(&file, e)),
    };
    let section = weir_project::yaml::parse(shown, &text)?.and_then(|n| n.get("kafka").cloned());
    let Some(section) = section else { return Ok(env.map(KafkaConfig::new)) };
    let err = |n: &Node, m: String| GraphError::at(n.location(shown), m, Some(&text));
    let entries = section.as_map().ok_or_else(|| err(&section, "`kafka` must be a mapping (bootstrap_servers: host:9092)".into()))?;
    let render = |n: &Node, key: &str| -> Result<String, GraphError> {
        let raw = n.scalar_text().ok_or_else(|| err(n, format!("`{key}` must be a text")))?;
        weir_project::project::render_static(&raw, &serde_json::Map::new()).map_err(|m| err(n, m))
    };
    let mut config = KafkaConfig::new(String::new());
    let mut properties = BTreeMap::new();
    for (k, v) in entries {
        let key = k.key_text().unwrap_or_default();
        match key.as_str() {
            "bootstrap_servers" => config.bootstrap_servers = render(v, &key)?,
            "replication_factor" => {
                config.replication_factor = match v.value {
                    Value::Int(n) if (1..=i32::MAX as i64).contains(&n) => n as i32,
                    _ => return Err(err(v, "`replication_factor` must be a whole number of 1 or more".into())),
                }
            }
            "timeout" => {
                let t = render(v, &key)?;
                // `30s`, `2 minutes`, or a bare number of seconds.
                let ms = crate::streams::interval_ms(&t).or_else(|| t.parse::<f64>().ok().map(|s| (s * 1000.0) as i64));
                config.timeout = ms
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(ms as u64))
                    .ok_or_else(|| err(v, format!("`timeout` '{t}' is not an amount of time (30s, 2 minutes)")))?;
            }
            "properties" => {
                let m = v.as_map().ok_or_else(|| err(v, "`properties` maps librdkafka properties to values".into()))?;
                for (pk, pv) in m {
                    let name = pk.key_text().unwrap_or_default();
                    properties.insert(name.clone(), render(pv, &name)?);
                }
            }
            other => match PROPERTIES.iter().find(|(k, _)| *k == other) {
                Some((_, property)) => {
                    properties.insert(property.to_string(), render(v, other)?);
                }
                None => {
                    let known: Vec<&str> = ["bootstrap_servers", "replication_factor", "timeout", "properties"]
                        .into_iter()
                        .chain(PROPERTIES.iter().map(|(k, _)| *k))
                        .collect();
                    let hint = weir_project::error::closest(other, known.iter().copied())
                        .map(|c| format!("; did you mean '{c}'?"))
                        .unwrap_or_default();
                    return Err(err(k, format!("unknown key '{other}' in kafka{hint} (known: {})", known.join(", "))));
                }
            },
        }
    }
    if let Some(servers) = env {
        config.bootstrap_servers = servers;
    }
    if config.bootstrap_servers.trim().is_empty() {
        return Err(err(&section, format!("`kafka` needs `bootstrap_servers` (host:9092), or ${BOOTSTRAP_ENV}")));
    }
    config.properties = properties;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yml: &str) -> Result<Option<KafkaConfig>, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weir.yml"), yml).unwrap();
        kafka_config(dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn weir_yml_names_the_cluster_and_its_credentials() {
        // SAFETY: no other test of this crate reads or sets these variables.
        unsafe { std::env::set_var("WEIR_TEST_KAFKA_SECRET", "s3cret") };
        let c = config(
            "kafka:\n  bootstrap_servers: b1:9092,b2:9092\n  security_protocol: sasl_ssl\n  sasl_mechanism: SCRAM-SHA-256\n  \
             username: weir\n  password: \"{{ env_var('WEIR_TEST_KAFKA_SECRET') }}\"\n  replication_factor: 3\n  timeout: 5s\n  \
             properties: {compression.type: zstd}\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.bootstrap_servers, "b1:9092,b2:9092");
        assert_eq!(c.properties.get("sasl.password").map(String::as_str), Some("s3cret"));
        assert_eq!(c.properties.get("security.protocol").map(String::as_str), Some("sasl_ssl"));
        assert_eq!(c.properties.get("compression.type").map(String::as_str), Some("zstd"));
        assert_eq!((c.replication_factor, c.timeout), (3, Duration::from_secs(5)));
        assert!(!format!("{c:?}").contains("s3cret"), "the password is never shown: {c:?}");
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let e = config("kafka:\n  bootstrap_servers: b:9092\n  pasword: x\n").unwrap_err();
        assert!(e.contains("weir.yml:3:3") && e.contains("did you mean 'password'"), "{e}");
        let e = config("kafka:\n  security_protocol: ssl\n").unwrap_err();
        assert!(e.contains("weir.yml:2:3") && e.contains("needs `bootstrap_servers`"), "{e}");
        let e = config("kafka:\n  bootstrap_servers: b:9092\n  timeout: soon\n").unwrap_err();
        assert!(e.contains("weir.yml:3:12") && e.contains("'soon'"), "{e}");
        assert_eq!(config("server:\n  bind: 127.0.0.1:1\n").unwrap(), None);
    }
}
