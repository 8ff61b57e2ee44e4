//! Getting packages: git checkouts through the `git` command (as dbt does, so credentials,
//! SSH keys and proxies work as they do for the user's own git), the dbt Hub's JSON API, and
//! `.tar.gz` downloads. Everything lands in one scratch folder inside the project, so a
//! finished package moves into `dbt_packages/` by a rename on the same disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value as J;

/// What the Hub says about one package: its project name and each version's details.
#[derive(Debug)]
pub struct HubPackage {
    pub versions: IndexMap<String, HubVersion>,
    /// Set when the Hub says the package moved (`redirectnamespace` / `redirectname`).
    pub moved_to: Option<String>,
}

#[derive(Debug)]
pub struct HubVersion {
    /// The package's project name: its folder under `dbt_packages/`.
    pub name: String,
    /// The packages this version needs, as package entries.
    pub packages: Vec<J>,
    pub tarball: String,
    pub require_dbt_version: Vec<String>,
}

pub struct Fetcher {
    root: PathBuf,
    hub: String,
    http: reqwest::blocking::Client,
    scratch: tempfile::TempDir,
    hub_cache: HashMap<String, Rc<HubPackage>>,
    /// Checked-out package folders by (URL, subfolder, revision or commit).
    checkouts: HashMap<String, (PathBuf, String)>,
    /// Unpacked package folders by URL.
    tarballs: HashMap<String, PathBuf>,
    next: usize,
}

impl Fetcher {
    pub fn new(root: &Path, hub: &str) -> Result<Fetcher, String> {
        let scratch = tempfile::Builder::new()
            .prefix(".weir-deps-")
            .tempdir_in(root)
            .map_err(|e| format!("cannot make a scratch folder in {}: {e}", root.display()))?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
        let hub = if hub.ends_with('/') { hub.to_string() } else { format!("{hub}/") };
        Ok(Fetcher {
            root: root.to_path_buf(),
            hub,
            http,
            scratch,
            hub_cache: HashMap::new(),
            checkouts: HashMap::new(),
            tarballs: HashMap::new(),
            next: 0,
        })
    }

    /// The Hub's record of `package` (`dbt-labs/dbt_utils`), fetched once per run.
    pub fn hub_package(&mut self, package: &str) -> Result<Rc<HubPackage>, String> {
        if let Some(p) = self.hub_cache.get(package) {
            return Ok(p.clone());
        }
        let url = format!("{}api/v1/{package}.json", self.hub);
        let body = self.get(&url).map_err(|e| {
            if e.contains("HTTP 404") { format!("package '{package}' is not on the dbt Hub ({url} answered 404)") } else { e }
        })?;
        let doc: J = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        let parsed = Rc::new(parse_hub(&doc).map_err(|m| format!("{url}: {m}"))?);
        self.hub_cache.insert(package.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// A checkout of `url` at `revision` (`HEAD`, a branch, a tag or a commit): the package's
    /// folder (the subfolder when given) and the commit it is at.
    pub fn checkout(&mut self, url: &str, revision: &str, subdirectory: Option<&str>) -> Result<(PathBuf, String), String> {
        let key = format!("{url}\n{}\n{revision}", subdirectory.unwrap_or(""));
        if let Some(found) = self.checkouts.get(&key) {
            return Ok(found.clone());
        }
        let dir = self.fresh("git");
        let repo = self.repo_arg(url);
        let dir_arg = dir.to_string_lossy().into_owned();
        let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
        if revision == "HEAD" {
            git(&["clone", "--depth", "1", &repo, &dir_arg], None).map_err(|e| clone_failed(url, revision, &e))?;
        } else if is_commit {
            git(&["clone", "--depth", "1", "--no-checkout", &repo, &dir_arg], None).map_err(|e| clone_failed(url, revision, &e))?;
            // A shallow fetch of one commit; servers that refuse it get a full fetch.
            if git(&["fetch", "--depth", "1", "origin", revision], Some(&dir)).is_err() {
                git(&["fetch", "--unshallow", "origin"], Some(&dir)).map_err(|e| clone_failed(url, revision, &e))?;
            }
            git(&["reset", "--hard", revision], Some(&dir)).map_err(|e| clone_failed(url, revision, &e))?;
        } else if git(&["clone", "--depth", "1", "--branch", revision, &repo, &dir_arg], None).is_err() {
            // Not a branch or tag (a short commit, say): the whole history, then that revision.
            let _ = std::fs::remove_dir_all(&dir);
            git(&["clone", "--no-checkout", &repo, &dir_arg], None).map_err(|e| clone_failed(url, revision, &e))?;
            git(&["-c", "advice.detachedHead=false", "checkout", revision], Some(&dir)).map_err(|e| clone_failed(url, revision, &e))?;
        }
        let sha = git(&["rev-parse", "HEAD"], Some(&dir)).map_err(|e| clone_failed(url, revision, &e))?.trim().to_string();
        let package_dir = match subdirectory {
            Some(sub) => {
                let p = dir.join(sub);
                if !p.is_dir() {
                    return Err(format!("git package {url}: there is no folder '{sub}' at revision {revision}"));
                }
                p
            }
            None => {
                let _ = std::fs::remove_dir_all(dir.join(".git"));
                dir
            }
        };
        let found = (package_dir, sha.clone());
        self.checkouts.insert(key, found.clone());
        self.checkouts.insert(format!("{url}\n{}\n{sha}", subdirectory.unwrap_or("")), found.clone());
        Ok(found)
    }

    /// Downloads a `.tar.gz` and unpacks it: the folder holding its `dbt_project.yml` (the
    /// archive's one top folder, as GitHub's archives have).
    pub fn tarball(&mut self, url: &str) -> Result<PathBuf, String> {
        if let Some(dir) = self.tarballs.get(url) {
            return Ok(dir.clone());
        }
        let bytes = self.get(url)?;
        let dir = self.fresh("tar");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        // `unpack` refuses entries that would land outside `dir`.
        archive.unpack(&dir).map_err(|e| format!("{url}: cannot unpack the archive: {e}"))?;
        let package_dir = if dir.join("dbt_project.yml").exists() {
            dir
        } else {
            let entries: Vec<PathBuf> = std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).collect();
            match entries.as_slice() {
                [one] if one.is_dir() => one.clone(),
                _ => {
                    return Err(format!(
                        "{url}: the archive holds {} entries at its top; a package archive holds one folder with dbt_project.yml in it",
                        entries.len()
                    ));
                }
            }
        };
        self.tarballs.insert(url.to_string(), package_dir.clone());
        Ok(package_dir)
    }

    /// Where a `git:` value points: URLs as they are, a relative folder from the root project.
    fn repo_arg(&self, url: &str) -> String {
        let is_url = url.contains("://") || (url.contains('@') && url.contains(':'));
        if !is_url && Path::new(url).is_relative() && self.root.join(url).exists() {
            return self.root.join(url).to_string_lossy().into_owned();
        }
        url.to_string()
    }

    fn fresh(&mut self, kind: &str) -> PathBuf {
        self.next += 1;
        self.scratch.path().join(format!("{kind}-{}", self.next))
    }

    /// A GET with three tries for what may pass (no connection, a timeout, a 5xx); `file://`
    /// URLs are read from disk.
    fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        if let Some(path) = url.strip_prefix("file://") {
            return std::fs::read(path).map_err(|e| format!("{url}: {e}"));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt == 3;
            match self.http.get(url).send() {
                Ok(resp) if resp.status().is_success() => {
                    return resp.bytes().map(|b| b.to_vec()).map_err(|e| format!("GET {url}: {e}"));
                }
                Ok(resp) if resp.status().is_server_error() && !last => {}
                Ok(resp) => return Err(format!("GET {url}: HTTP {}", resp.status().as_u16())),
                Err(e) if (e.is_connect() || e.is_timeout()) && !last => {}
                Err(e) => return Err(format!("GET {url}: {}", weir_core::error_chain(&e))),
            }
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
    }
}

/// Moves a finished package folder to its place, copying when a rename cannot.
pub fn move_dir(from: &Path, to: &Path) -> Result<(), String> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_dir(from, to).map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn parse_hub(doc: &J) -> Result<HubPackage, String> {
    let versions = doc.get("versions").and_then(J::as_object).ok_or("the Hub's answer has no 'versions'")?;
    let mut out = IndexMap::new();
    for (v, info) in versions {
        let name = info.get("name").and_then(J::as_str).ok_or(format!("version {v} has no 'name'"))?;
        let tarball = info.pointer("/downloads/tarball").and_then(J::as_str).ok_or(format!("version {v} has no 'downloads.tarball'"))?;
        let require_dbt_version = match info.get("require_dbt_version") {
            Some(J::String(s)) => vec![s.clone()],
            Some(J::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            _ => vec![],
        };
        let packages = info.get("packages").and_then(J::as_array).cloned().unwrap_or_default();
        out.insert(v.clone(), HubVersion { name: name.to_string(), packages, tarball: tarball.to_string(), require_dbt_version });
    }
    let moved_to = if doc.get("redirectnamespace").is_some() || doc.get("redirectname").is_some() {
        let pick = |a: &str, b: &str| doc.get(a).and_then(J::as_str).or_else(|| doc.get(b).and_then(J::as_str)).unwrap_or("").to_string();
        Some(format!("{}/{}", pick("redirectnamespace", "namespace"), pick("redirectname", "name")))
    } else {
        None
    };
    Ok(HubPackage { versions: out, moved_to })
}

fn git(args: &[&str], cwd: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C").stdin(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "git is not installed; Weir runs `git` to fetch git packages".to_string()
        } else {
            format!("cannot run git: {e}")
        }
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning:") && !l.starts_with("Cloning into")).collect();
        Err(lines.join("\n").trim().to_string())
    }
}

fn clone_failed(url: &str, revision: &str, git_says: &str) -> String {
    format!("git package {url} at revision {revision}: {git_says}")
}
