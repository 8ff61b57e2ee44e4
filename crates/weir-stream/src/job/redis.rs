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

use redis::{Commands, Connection, RedisError};

use crate::StreamError;
use crate::job::sink::Layout;

/// Writes a row's hash unless the hash holds a later window. KEYS[1]: the hash; ARGV[1]: the
/// TTL in ms (0: none); ARGV[2], ARGV[3]: the window-end column and the row's value ('' for a
/// job without windows); then field, value pairs.
const UPSERT: &str = r"
if ARGV[2] ~= '' then
  local stored = redis.call('HGET', KEYS[1], ARGV[2])
  if stored and stored > ARGV[3] then return 0 end
end
redis.call('DEL', KEYS[1])
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
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
        };
        sink.connection()?;
        Ok(sink)
    }

    /// Upserts each row's hash, in one round trip.
    pub fn write(&mut self, rows: &[(Vec<Option<String>>, bool)]) -> Result<(), StreamError> {
        if rows.is_empty() {
            return Ok(());
        }
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
            let cmd = pipe.cmd("EVALSHA").arg(self.sha.as_deref().unwrap_or("")).arg(1).arg(key).arg(&ttl).arg(&end_column).arg(end);
            for (name, value) in self.columns.iter().zip(row) {
                if let Some(v) = value {
                    cmd.arg(name).arg(v);
                }
            }
            cmd.ignore();
        }
        let result: Result<(), RedisError> = match self.connection() {
            Ok(conn) => pipe.query(conn),
            Err(e) => return Err(e),
        };
        result.map_err(|e| {
            // A connection that failed is opened afresh (and the script loaded) for the retry.
            self.conn = None;
            failed(&self.url, e)
        })
    }

    /// Deletes every key of the job (`<key_prefix>*`).
    pub fn reset(url: &str, prefix: &str) -> Result<usize, StreamError> {
        let client = redis::Client::open(url).map_err(|e| failed(url, e))?;
        let mut conn = client.get_connection().map_err(|e| failed(url, e))?;
        let pattern = format!("{}*", prefix.replace('\\', "\\\\").replace('*', "\\*").replace('?', "\\?").replace('[', "\\["));
        let keys: Vec<String> =
            conn.scan_match::<_, String>(&pattern).map_err(|e| failed(url, e))?.collect::<Result<_, _>>().map_err(|e| failed(url, e))?;
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
