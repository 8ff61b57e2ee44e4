//! The Redis sink: a job's results as an online feature store. Each group key gets one hash,
//! `<key_prefix><key>[:<key>...]`, holding the output columns of its latest window (or its
//! running result); applications read a key's features with one `HGETALL`.
//!
//! Writes are idempotent, so the job's exactly-once path carries over: the rows are written
//! before the warehouse transaction that moves the positions, and a restarted job that emits
//! a window again writes the same hash with the same values. A window older than the one a
//! hash holds never replaces it (a Lua script compares their ends in Redis), so a late update
//! or a replay cannot put a key's features back in time. With `ttl`, a key expires that long
//! after its last write.
//!
//! A worker's task writes under its claim on its partition: a fence key
//! (`weir:fence:<job>:<topic>:<partition>`) holds the latest claim's number, and the script
//! refuses a write under an older one, so a worker that lost the partition without knowing it
//! cannot put a key back after its new owner wrote it.

use redis::{Commands, Connection, RedisError};

use crate::StreamError;
use crate::job::sink::Layout;

/// Writes a row's hash unless the hash holds a later window, or the writer's claim is not the
/// latest. KEYS[1]: the hash; KEYS[2] (a worker's task): its fence key; ARGV[1]: the TTL in
/// ms (0: none); ARGV[2], ARGV[3]: the window-end column and the row's value ('' for a job
/// without windows); ARGV[4]: the claim's number ('' without one); then field, value pairs.
/// Returns -1 when the claim is refused.
const UPSERT: &str = r"
if ARGV[4] ~= '' then
  local latest = redis.call('GET', KEYS[2])
  if latest and tonumber(latest) > tonumber(ARGV[4]) then return -1 end
end
if ARGV[2] ~= '' then
  local stored = redis.call('HGET', KEYS[1], ARGV[2])
  if stored and stored > ARGV[3] then return 0 end
end
redis.call('DEL', KEYS[1])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
";

/// Raises a fence key to a claim's number (never lowers it). KEYS[1]: the key; ARGV[1]: the
/// number.
const FENCE: &str = r"
local latest = redis.call('GET', KEYS[1])
if latest and tonumber(latest) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

pub struct RedisSink {
    client: redis::Client,
    conn: Option<Connection>,
    /// The script's SHA1, once loaded on the current connection.
    sha: Option<String>,
    url: String,
    prefix: String,
    ttl_ms: Option<i64>,
    columns: Vec<String>,
    keys: Vec<usize>,
    window_end: Option<usize>,
    /// A worker's task's fence key and claim.
    fence: Option<Fence>,
}

struct Fence {
    key: String,
    epoch: i64,
    job: String,
    topic: String,
    partition: u32,
}

impl RedisSink {
    /// Connects, so a wrong URL or a Redis that is down is said before anything is read.
    pub fn open(url: &str, prefix: &str, ttl_ms: Option<i64>, layout: &Layout) -> Result<RedisSink, StreamError> {
        let client = redis::Client::open(url).map_err(|e| failed(url, e))?;
        let mut sink = RedisSink {
            client,
            conn: None,
            sha: None,
            url: url.to_string(),
            prefix: prefix.to_string(),
            ttl_ms,
            columns: layout.columns.iter().map(|(n, _)| n.clone()).collect(),
            keys: layout.keys.clone(),
            window_end: layout.window.map(|(_, e)| e),
            fence: None,
        };
        sink.connection()?;
        Ok(sink)
    }

    /// Writes from now on under a worker's task's claim `epoch` on `partition` of `topic`,
    /// raising the partition's fence to it: writes under earlier claims are refused.
    pub fn fence(&mut self, job: &str, topic: &str, partition: u32, epoch: i64) -> Result<(), StreamError> {
        let key = format!("weir:fence:{job}:{topic}:{partition}");
        let conn = self.connection()?;
        let raised: Result<i64, RedisError> = redis::cmd("EVAL").arg(FENCE).arg(1).arg(&key).arg(epoch).query(conn);
        raised.map_err(|e| failed(&self.url, e))?;
        self.fence = Some(Fence { key, epoch, job: job.to_string(), topic: topic.to_string(), partition });
        Ok(())
    }

    /// Upserts each row's hash, in one round trip. Refused, writing nothing more, once a
    /// later claim raised the fence.
    pub fn write(&mut self, rows: &[(Vec<Option<String>>, bool)]) -> Result<(), StreamError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (fence_key, claim) = match &self.fence {
            Some(f) => (f.key.clone(), f.epoch.to_string()),
            None => (String::new(), String::new()),
        };
        let ttl = self.ttl_ms.unwrap_or(0).to_string();
        let (end_column, ends) = match self.window_end {
            Some(e) => (self.columns[e].clone(), Some(e)),
            None => (String::new(), None),
        };
        let mut pipe = redis::pipe();
        for (row, _) in rows {
            let key =
                format!("{}{}", self.prefix, self.keys.iter().map(|k| row[*k].as_deref().unwrap_or("")).collect::<Vec<_>>().join(":"));
            let end = ends.and_then(|e| row[e].clone()).unwrap_or_default();
            let cmd = pipe.cmd("EVALSHA").arg(self.sha.as_deref().unwrap_or("")).arg(2).arg(key).arg(&fence_key);
            cmd.arg(&ttl).arg(&end_column).arg(end).arg(&claim);
            for (name, value) in self.columns.iter().zip(row) {
                if let Some(v) = value {
                    cmd.arg(name).arg(v);
                }
            }
        }
        let result: Result<Vec<i64>, RedisError> = match self.connection() {
            Ok(conn) => pipe.query(conn),
            Err(e) => return Err(e),
        };
        let written = result.map_err(|e| {
            // A connection that failed is opened afresh (and the script loaded) for the retry.
            self.conn = None;
            failed(&self.url, e)
        })?;
        if let Some(f) = self.fence.as_ref().filter(|_| written.contains(&-1)) {
            return Err(StreamError::Moved { job: f.job.clone(), topic: f.topic.clone(), partition: f.partition });
        }
        Ok(())
    }

    /// Deletes every key of the job (`<key_prefix>*`) and its partitions' fences.
    pub fn reset(url: &str, prefix: &str, job: &str) -> Result<usize, StreamError> {
        let client = redis::Client::open(url).map_err(|e| failed(url, e))?;
        let mut conn = client.get_connection().map_err(|e| failed(url, e))?;
        let escape = |s: &str| s.replace('\\', "\\\\").replace('*', "\\*").replace('?', "\\?").replace('[', "\\[");
        let mut keys = vec![];
        for pattern in [format!("{}*", escape(prefix)), format!("weir:fence:{}:*", escape(job))] {
            let found: Vec<String> = conn
                .scan_match::<_, String>(&pattern)
                .map_err(|e| failed(url, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| failed(url, e))?;
            keys.extend(found);
        }
        for chunk in keys.chunks(1000) {
            let _: () = conn.del(chunk).map_err(|e| failed(url, e))?;
        }
        Ok(keys.len())
    }

    fn connection(&mut self) -> Result<&mut Connection, StreamError> {
        if self.conn.is_none() {
            let mut conn = self.client.get_connection().map_err(|e| failed(&self.url, e))?;
            let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(UPSERT).query(&mut conn).map_err(|e| failed(&self.url, e))?;
            self.sha = Some(sha);
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| StreamError::Job("the Redis connection did not open".into()))
    }
}

fn failed(url: &str, e: RedisError) -> StreamError {
    // The URL without its password, if it has one.
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    };
    StreamError::Job(format!("Redis at {shown}: {e}"))
}
