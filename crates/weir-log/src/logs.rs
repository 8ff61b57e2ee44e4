//! A project's event logs: the embedded one under `.weir/log/`, and a Kafka cluster for the
//! topics declared on it. Each is opened on first use, so a project that never touches Kafka
//! never needs it reachable.
//!
//! A reader or writer asks for the log of the topics it uses together: one atomic commit
//! cannot span two logs, so topics declared on both are refused, naming which is where. A
//! topic not declared goes with the declared ones it is used with (a job's sink topic with
//! the topic it reads), or alone on the embedded log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{EmbeddedLog, KafkaConfig, KafkaLog, Log, LogError};

/// Where a project's topics live.
pub struct Logs {
    embedded_root: PathBuf,
    kafka_config: Option<KafkaConfig>,
    /// The declared topics, each on its log.
    declared: HashMap<String, Backend>,
    embedded: OnceLock<Arc<EmbeddedLog>>,
    /// Made once; a failed connection is tried again at the next call.
    kafka: Mutex<Option<Arc<KafkaLog>>>,
}

/// Which log a topic is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Kafka,
}

impl Logs {
    /// `embedded_root` is the embedded log's folder; `declared` the declared topics and
    /// their logs; Kafka is reached with `kafka`.
    pub fn new(embedded_root: PathBuf, kafka: Option<KafkaConfig>, declared: HashMap<String, Backend>) -> Logs {
        Logs { embedded_root, kafka_config: kafka, declared, embedded: OnceLock::new(), kafka: Mutex::new(None) }
    }

    /// The log a declared topic is on.
    pub fn declared(&self, topic: &str) -> Option<Backend> {
        self.declared.get(topic).copied()
    }

    /// Whether any topic is declared on Kafka.
    pub fn uses_kafka(&self) -> bool {
        self.declared.values().any(|b| *b == Backend::Kafka)
    }

    pub fn kafka_config(&self) -> Option<&KafkaConfig> {
        self.kafka_config.as_ref()
    }

    pub fn embedded(&self) -> Result<Arc<EmbeddedLog>, LogError> {
        if let Some(log) = self.embedded.get() {
            return Ok(log.clone());
        }
        let log = Arc::new(EmbeddedLog::open(&self.embedded_root)?);
        Ok(self.embedded.get_or_init(|| log).clone())
    }

    pub fn kafka(&self) -> Result<Arc<KafkaLog>, LogError> {
        let mut kafka = self.kafka.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = kafka.as_ref() {
            return Ok(log.clone());
        }
        let config = self.kafka_config.clone().ok_or_else(|| {
            LogError::Invalid(format!(
                "topic(s) {} are declared with `log: kafka`, but weir.yml has no `kafka:` section saying where the cluster is \
                 (kafka: {{bootstrap_servers: host:9092}}, or $WEIR_KAFKA_BOOTSTRAP_SERVERS)",
                self.kafka_names()
            ))
        })?;
        let log = Arc::new(KafkaLog::connect(config)?);
        *kafka = Some(log.clone());
        Ok(log)
    }

    /// The log `topics` are used on together: the one their declarations name (the embedded
    /// log for none).
    pub fn for_topics(&self, topics: &[&str]) -> Result<Arc<dyn Log>, LogError> {
        let on = |b: Backend| -> Vec<&str> { topics.iter().copied().filter(|t| self.declared(t) == Some(b)).collect() };
        let (kafka, embedded) = (on(Backend::Kafka), on(Backend::Embedded));
        match (kafka.is_empty(), embedded.is_empty()) {
            (true, _) => Ok(self.embedded()?),
            (false, true) => Ok(self.kafka()?),
            (false, false) => Err(LogError::Invalid(format!(
                "{} on Kafka and {} on the embedded log are used together, but one atomic commit cannot span two logs: \
                 declare them on the same log (`log: kafka` in streams/*.yml)",
                kafka.join(", "),
                embedded.join(", ")
            ))),
        }
    }

    /// The log of one topic.
    pub fn for_topic(&self, topic: &str) -> Result<Arc<dyn Log>, LogError> {
        self.for_topics(&[topic])
    }

    fn kafka_names(&self) -> String {
        let mut names: Vec<&str> = self.declared.iter().filter(|(_, b)| **b == Backend::Kafka).map(|(t, _)| t.as_str()).collect();
        names.sort();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_used_together_share_the_log_their_declarations_name() {
        let dir = tempfile::tempdir().unwrap();
        let declared = HashMap::from([("orders".to_string(), Backend::Kafka), ("clicks".to_string(), Backend::Embedded)]);
        let logs = Logs::new(dir.path().to_path_buf(), None, declared);
        assert!(logs.uses_kafka());
        // Undeclared: alone on the embedded log, or with the declared ones it is used with.
        assert!(logs.for_topics(&["scratch"]).is_ok());
        assert!(logs.for_topics(&["clicks", "scratch"]).is_ok());
        let e = logs.for_topics(&["orders", "clicks"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("orders on Kafka and clicks on the embedded log"), "{e}");
        // Kafka wanted, no cluster named: said so, naming the topics declared there.
        let e = logs.for_topics(&["orders", "revenue_out"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("orders are declared with `log: kafka`") && e.contains("weir.yml has no `kafka:` section"), "{e}");
    }
}
