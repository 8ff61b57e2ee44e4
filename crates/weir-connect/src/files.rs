//! Files for file loads: which ones a glob names, which of them changed since they were
//! loaded, and, for JSON lines, which lines are not JSON (kept as rejected rows, since the
//! engine's reader would either fail on them or drop them silently).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use weir_store::LoadedFile;

/// A file matched by a load's glob, with what recognises it later.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub path: PathBuf,
    /// The path as recorded: relative to the project when under it.
    pub shown: String,
    pub size: u64,
    pub modified: String,
}

/// A line that could not be read, with where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `file:line` (or another position in the source).
    pub position: String,
    pub raw: String,
    pub reason: String,
}

/// The files a glob matches, sorted; the glob is taken from `root` unless absolute.
pub fn expand(root: &Path, pattern: &str) -> Result<Vec<Found>, String> {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { root.join(pattern) };
    let text = full.to_string_lossy().into_owned();
    let paths = glob::glob(&text).map_err(|e| format!("path '{pattern}' is not a valid glob: {e}"))?;
    let mut found = vec![];
    for entry in paths {
        let path = entry.map_err(|e| format!("{}: {}", e.path().display(), e.error()))?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()).unwrap_or_default();
        let shown = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        found.push(Found { path, shown, size: meta.len(), modified });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// What a load does with the files its glob matches.
#[derive(Debug, Default)]
pub struct Changes {
    /// New or changed files, with the records they will have once loaded.
    pub load: Vec<(Found, LoadedFile)>,
    /// Files whose content is as loaded but whose time moved (a copy, a `touch`): not
    /// loaded again, only their records refreshed so the next run skips them unhashed.
    pub refresh: Vec<LoadedFile>,
    /// Files as they were loaded.
    pub unchanged: usize,
}

/// Compares `found` with the records of files already loaded. A file whose size and time
/// match its record is unchanged; one whose size or time moved is hashed. A new file's
/// record is left without its hash (empty), which the loader computes while the file loads.
pub fn changed(found: &[Found], loaded: &[LoadedFile]) -> Result<Changes, String> {
    let mut changes = Changes::default();
    for f in found {
        let before = loaded.iter().find(|l| l.path == f.shown);
        if before.is_some_and(|b| b.size == f.size && b.modified == f.modified) {
            changes.unchanged += 1;
            continue;
        }
        let content_hash = if before.is_some() { hash(&f.path)? } else { String::new() };
        let record = LoadedFile { path: f.shown.clone(), size: f.size, modified: f.modified.clone(), content_hash };
        let same = match before {
            // A hash recorded by an older Weir is a bare SHA-256: compare like with like.
            Some(b) if !b.content_hash.starts_with(HASH_PREFIX) => b.content_hash == legacy_sha256(&f.path)?,
            Some(b) => b.content_hash == record.content_hash,
            None => false,
        };
        if same {
            changes.refresh.push(record);
        } else {
            changes.load.push((f.clone(), record));
        }
    }
    Ok(changes)
}

const HASH_PREFIX: &str = "blake3:";

/// A file's content hash, `blake3:<hex>`: BLAKE3 because a load hashes every new file, and
/// it reads a gigabyte in a fraction of SHA-256's time.
pub fn hash(path: &Path) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("{HASH_PREFIX}{}", hasher.finalize().to_hex()))
}

/// The SHA-256 of a file's bytes, in hex, as older Weir recorded it.
fn legacy_sha256(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens a file, decompressing `.gz` and `.zst` by their extension.
pub fn open(path: &Path) -> Result<Box<dyn Read>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| format!("{}: {e}", path.display()))?)
    } else {
        Box::new(file)
    })
}

/// A file's first line (its header), without the line break; at most 1 MiB of it.
pub fn first_line(path: &Path) -> Result<String, String> {
    let mut line = vec![];
    BufReader::new(open(path)?.take(1 << 20)).read_until(b'\n', &mut line).map_err(|e| format!("{}: {e}", path.display()))?;
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads a JSON-lines file and returns its invalid lines. When there are some, the valid
/// lines are written to a new file the engine can read instead (returned with them). Two
/// passes, so memory stays flat whatever the file's size.
pub fn check_json_lines(path: &Path, shown: &str) -> Result<(Vec<Rejected>, Option<tempfile::NamedTempFile>), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let lines = || -> Result<_, String> { Ok(BufReader::with_capacity(1 << 20, open(path)?).split(b'\n').enumerate()) };
    let mut rejected = vec![];
    let mut bad_lines = std::collections::HashSet::new();
    for (i, line) in lines()? {
        let line = line.map_err(err)?;
        let text = String::from_utf8_lossy(&line);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let reason = match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(_)) => continue,
            Ok(_) => "a JSON line must hold an object".to_string(),
            Err(e) => format!("invalid JSON: {e}"),
        };
        bad_lines.insert(i);
        rejected.push(Rejected { position: format!("{shown}:{}", i + 1), raw: trimmed.to_string(), reason });
    }
    if rejected.is_empty() {
        return Ok((rejected, None));
    }
    let mut clean = tempfile::Builder::new().prefix("weir-jsonl-").suffix(".jsonl").tempfile().map_err(err)?;
    {
        let mut out = std::io::BufWriter::new(clean.as_file_mut());
        for (i, line) in lines()? {
            let line = line.map_err(err)?;
            if !bad_lines.contains(&i) && !line.iter().all(u8::is_ascii_whitespace) {
                out.write_all(&line).and_then(|_| out.write_all(b"\n")).map_err(err)?;
            }
        }
        out.flush().map_err(err)?;
    }
    Ok((rejected, Some(clean)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_new_changed_and_touched_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.csv"), "x\n1\n").unwrap();
        std::fs::write(dir.path().join("data/b.csv"), "x\n2\n").unwrap();
        std::fs::write(dir.path().join("data/c.txt"), "no").unwrap();
        let found = expand(dir.path(), "data/*.csv").unwrap();
        assert_eq!(found.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>(), vec!["data/a.csv", "data/b.csv"]);
        let first = changed(&found, &[]).unwrap();
        assert_eq!((first.load.len(), first.unchanged), (2, 0));
        // New files are hashed by the loader, as they load.
        assert!(first.load.iter().all(|(_, r)| r.content_hash.is_empty()));
        let records: Vec<LoadedFile> =
            first.load.into_iter().map(|(f, r)| LoadedFile { content_hash: hash(&f.path).unwrap(), ..r }).collect();
        assert_eq!(changed(&found, &records).unwrap().unchanged, 2);
        // Same content, another time: not loaded again, but its record is refreshed.
        let mut touched = records.clone();
        touched[0].modified = "2000-01-01T00:00:00+00:00".into();
        let c = changed(&found, &touched).unwrap();
        assert_eq!((c.load.len(), c.refresh.len(), c.unchanged), (0, 1, 1));
        assert!(records[0].content_hash.starts_with("blake3:"));
        // A SHA-256 recorded by an older Weir: the same content is still recognised, and
        // the refreshed record carries the new hash.
        touched[0].content_hash = legacy_sha256(&found[0].path).unwrap();
        let c = changed(&found, &touched).unwrap();
        assert_eq!((c.load.len(), c.refresh.len()), (0, 1));
        assert!(c.refresh[0].content_hash.starts_with("blake3:"));
        touched[0].content_hash = "00".repeat(32);
        assert_eq!(changed(&found, &touched).unwrap().load.len(), 1, "another old hash: changed");
        std::fs::write(dir.path().join("data/a.csv"), "x\n1\n3\n").unwrap();
        let found = expand(dir.path(), "data/*.csv").unwrap();
        let c = changed(&found, &records).unwrap();
        assert_eq!((c.load.len(), c.unchanged, c.load[0].0.shown.as_str()), (1, 1, "data/a.csv"));
        assert!(expand(dir.path(), "data/[").unwrap_err().contains("not a valid glob"));
    }

    #[test]
    fn invalid_json_lines_are_kept_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(b"{\"a\": 1}\n{\"a\": 2\n\n[1]\n{\"a\": 3}\n").unwrap();
        gz.finish().unwrap();
        let (rejected, clean) = check_json_lines(&path, "e.jsonl.gz").unwrap();
        assert_eq!(rejected.iter().map(|r| r.position.as_str()).collect::<Vec<_>>(), vec!["e.jsonl.gz:2", "e.jsonl.gz:4"]);
        assert!(rejected[0].reason.starts_with("invalid JSON"), "{}", rejected[0].reason);
        let clean = std::fs::read_to_string(clean.unwrap().path()).unwrap();
        assert_eq!(clean, "{\"a\": 1}\n{\"a\": 3}\n");
        let ok = dir.path().join("ok.jsonl");
        std::fs::write(&ok, "{\"a\": 1}\n").unwrap();
        assert_eq!(check_json_lines(&ok, "ok.jsonl").unwrap().0.len(), 0);
    }
}
