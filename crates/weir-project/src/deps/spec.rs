//! What `packages.yml`, `dependencies.yml` and `package-lock.yml` say: one [`Spec`] per entry,
//! read with its place in the file, and the hash dbt keeps in the lock file to tell whether
//! the packages asked for changed since the lock was written.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
use sha1::{Digest, Sha1};
use weir_core::Location;

use crate::error::ProjectError;
use crate::project::render_static;
use crate::yaml::{self, Node};

/// One package entry.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: Source,
    /// The `name:` the entry gives (lock entries always give one).
    pub name: Option<String>,
    /// Where the entry was written.
    pub location: Location,
    /// The entry as dbt-core serialises it before hashing: the fields of its kind, rendered,
    /// plus the entry exactly as written under `unrendered`.
    hashed: J,
}

/// Where a package comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The dbt Hub: `package: dbt-labs/dbt_utils` with one or more version requirements.
    Hub { package: String, versions: Vec<String>, install_prerelease: bool },
    /// A git repository, at a branch, tag or commit, optionally from a subfolder.
    Git { git: String, git_raw: String, revision: Option<String>, subdirectory: Option<String>, warn_unpinned: bool },
    /// A folder, relative to the root project.
    Local { local: String },
    /// A `.tar.gz` at a URL holding one project folder.
    Tarball { tarball: String, tarball_raw: String },
}

/// A project's package list: the file it came from and its entries.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub path: PathBuf,
    pub specs: Vec<Spec>,
}

/// `package-lock.yml`: the pinned entries and the hash of the list they were resolved from.
#[derive(Debug, Clone)]
pub struct LockFile {
    pub specs: Vec<Spec>,
    pub sha1_hash: Option<String>,
}

impl Source {
    /// The key dbt files the package under while resolving: a hub package's name, a git URL
    /// (with its subfolder), a folder, a tarball URL.
    pub fn key(&self) -> String {
        match self {
            Source::Hub { package, .. } => package.clone(),
            Source::Git { git, subdirectory: Some(sub), .. } => format!("{git}/{sub}"),
            Source::Git { git, .. } => git.clone(),
            Source::Local { local } => local.clone(),
            Source::Tarball { tarball, .. } => tarball.clone(),
        }
    }

    /// The other spellings of the same key: a git URL with and without `.git`.
    pub fn aliases(&self) -> Vec<String> {
        match self {
            Source::Git { git, subdirectory, .. } => {
                let other = match git.strip_suffix(".git") {
                    Some(bare) => bare.to_string(),
                    None => format!("{git}.git"),
                };
                vec![self.key(), subdirectory.as_ref().map(|s| format!("{other}/{s}")).unwrap_or(other)]
            }
            _ => vec![self.key()],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Source::Hub { .. } => "hub",
            Source::Git { .. } => "git",
            Source::Local { .. } => "local",
            Source::Tarball { .. } => "tarball",
        }
    }
}

/// Reads the root's package list: `dependencies.yml`'s `packages:` if it has one, else
/// `packages.yml` (both at once is an error, as in dbt). `None` when there is neither.
pub fn read_specs(dir: &Path, cli_vars: &Map<String, J>) -> Result<Option<SpecFile>, ProjectError> {
    let packages = read_doc(&dir.join("packages.yml"))?;
    let dependencies = read_doc(&dir.join("dependencies.yml"))?;
    let (path, text, doc) = match (packages, dependencies) {
        (Some(p), Some(d)) if d.2.get("packages").is_some() => {
            return Err(ProjectError::invalid(
                Location::file(&p.0),
                "'packages:' is in both packages.yml and dependencies.yml; keep one list (dbt refuses both too)",
            ));
        }
        (_, Some(d)) if d.2.get("packages").is_some() => d,
        (Some(p), _) => {
            if let Some((key, _)) = p.2.entry("projects") {
                return Err(ProjectError::invalid_at(
                    key.location(&p.0),
                    "'projects:' belongs in dependencies.yml, not packages.yml",
                    &p.1,
                ));
            }
            p
        }
        _ => return Ok(None),
    };
    let Some(items) = doc.get("packages") else {
        return Err(ProjectError::invalid_at(doc.location(&path), format!("{} needs a 'packages:' list", file_name(&path)), &text));
    };
    if items.is_null() {
        return Ok(Some(SpecFile { path, specs: vec![] }));
    }
    let Some(items) = items.as_seq() else {
        return Err(ProjectError::invalid_at(items.location(&path), "'packages:' must be a list", &text));
    };
    let specs = items.iter().map(|item| parse_entry(item, &path, &text, cli_vars)).collect::<Result<_, _>>()?;
    Ok(Some(SpecFile { path, specs }))
}

/// Reads `package-lock.yml` in `dir`, if there is one.
pub fn read_lock(dir: &Path, cli_vars: &Map<String, J>) -> Result<Option<LockFile>, ProjectError> {
    let path = dir.join("package-lock.yml");
    let Some((path, text, doc)) = read_doc(&path)? else { return Ok(None) };
    let sha1_hash = doc.get("sha1_hash").and_then(Node::scalar_text);
    let specs = match doc.get("packages").and_then(Node::as_seq) {
        Some(items) => items.iter().map(|item| parse_entry(item, &path, &text, cli_vars)).collect::<Result<_, _>>()?,
        None => vec![],
    };
    Ok(Some(LockFile { specs, sha1_hash }))
}

/// `weir deps --add-package NAME[@VERSION]`: adds an entry to the project's package list
/// (`packages.yml`, created if missing, or `dependencies.yml` when that file holds the list),
/// dropping entries for the same package under any source, as `dbt deps --add-package` does.
/// The file is written anew, as dbt writes it (comments are not kept). Returns the file.
pub fn add_package(dir: &Path, spec: &str, source: &str) -> Result<PathBuf, ProjectError> {
    let (name, version) = match spec.rsplit_once('@') {
        Some((n, v)) if !n.is_empty() => (n.to_string(), Some(v.to_string())),
        _ => (spec.to_string(), None),
    };
    let key = match source {
        "hub" => "package",
        "git" | "local" | "tarball" => source,
        other => return Err(ProjectError::Profile(format!("--source must be hub, git, local or tarball, not '{other}'"))),
    };
    if source == "hub" && version.is_none() {
        return Err(ProjectError::Profile(format!("a hub package needs a version: --add-package {name}@1.0.0")));
    }
    let dependencies = dir.join("dependencies.yml");
    let path = match read_doc(&dependencies)? {
        Some((_, _, doc)) if doc.get("packages").is_some() => dependencies,
        _ => dir.join("packages.yml"),
    };
    // The file's other keys are kept; its list is read as JSON and written back.
    let mut other_keys = match read_doc(&path)?.map(|(_, _, doc)| doc.to_json()) {
        Some(J::Object(m)) => m,
        _ => Map::new(),
    };
    let mut entries: Vec<J> = match other_keys.remove("packages") {
        Some(J::Array(items)) => items,
        _ => vec![],
    };
    entries.retain(|e| !same_package(e, &name));
    let mut entry = Map::new();
    entry.insert(key.to_string(), J::String(name.clone()));
    if let Some(v) = version {
        let value = if v.contains(',') { J::Array(v.split(',').map(|p| J::String(p.trim().to_string())).collect()) } else { J::String(v) };
        entry.insert(if source == "git" { "revision" } else { "version" }.to_string(), value);
    }
    entries.push(J::Object(entry));
    let mut out = String::new();
    for (k, v) in &other_keys {
        out.push_str(&format!("{k}: {}\n", yaml_inline(v)));
    }
    out.push_str("packages:\n");
    for e in &entries {
        let Some(map) = e.as_object() else { continue };
        for (i, (k, v)) in map.iter().enumerate() {
            out.push_str(if i == 0 { "  - " } else { "    " });
            out.push_str(&format!("{k}: {}\n", yaml_inline(v)));
        }
    }
    std::fs::write(&path, out).map_err(|e| ProjectError::io(&path, e))?;
    Ok(path)
}

/// Whether an entry is for the package `name` (`dbt-labs/dbt_utils`), whatever its source: its
/// `package`, `git`, `local` or `tarball` value names it, `-` and `_` alike, at a `/` or `.`
/// boundary (dbt's rule, so `dbt-core` does not match `dbt-core-utils`).
fn same_package(entry: &J, name: &str) -> bool {
    let Some(id) = ["package", "git", "local", "tarball"].iter().find_map(|k| entry.get(*k).and_then(J::as_str)) else { return false };
    let id = id.replace('-', "_");
    let mut variants = vec![name.replace('-', "_")];
    if let Some((_, short)) = name.rsplit_once('/') {
        variants.push(short.replace('-', "_"));
    }
    variants.iter().any(|v| {
        id.match_indices(v.as_str()).any(|(i, _)| {
            let before = id[..i].chars().last();
            let after = id[i + v.len()..].chars().next();
            before.is_none_or(|c| c == '/' || c == '.') && after.is_none_or(|c| c == '/' || c == '.')
        })
    })
}

/// A value on one line of YAML: a scalar, or a list or mapping in flow style.
fn yaml_inline(v: &J) -> String {
    // Inside `[...]` and `{...}` a plain scalar may not hold these.
    let in_flow = |v: &J| match v {
        J::String(s) if s.contains([',', '[', ']', '{', '}']) => format!("'{}'", s.replace('\'', "''")),
        other => yaml_inline(other),
    };
    match v {
        J::String(s) => yaml_scalar(s),
        J::Array(items) => format!("[{}]", items.iter().map(in_flow).collect::<Vec<_>>().join(", ")),
        J::Object(m) => format!("{{{}}}", m.iter().map(|(k, v)| format!("{k}: {}", in_flow(v))).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// Package entries from JSON (what the Hub lists as a version's packages); `origin` names
/// where they came from in errors.
pub fn entries_from_json(items: &[J], origin: &Path, cli_vars: &Map<String, J>) -> Result<Vec<Spec>, ProjectError> {
    items.iter().map(|item| parse_entry(&yaml::Node::from_json(item), origin, "", cli_vars)).collect()
}

/// One pinned package as `package-lock.yml` records it.
pub struct LockEntry {
    pub name: String,
    /// (key, value) pairs besides `name`, such as ("package", "dbt-labs/dbt_utils").
    pub fields: Vec<(&'static str, String)>,
}

/// Writes `package-lock.yml` as dbt-core does: each entry's keys sorted, the hash last.
pub fn write_lock(dir: &Path, entries: &[LockEntry], sha1_hash: &str) -> std::io::Result<()> {
    let mut out = String::from("packages:\n");
    for e in entries {
        let mut fields: Vec<(&str, &str)> = e.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(("name", &e.name));
        fields.sort();
        for (i, (k, v)) in fields.iter().enumerate() {
            out.push_str(if i == 0 { "  - " } else { "    " });
            out.push_str(&format!("{k}: {}\n", yaml_scalar(v)));
        }
    }
    out.push_str(&format!("sha1_hash: {sha1_hash}\n"));
    std::fs::write(dir.join("package-lock.yml"), out)
}

/// A string as a YAML scalar: plain where it reads back as the same string, else quoted.
fn yaml_scalar(s: &str) -> String {
    let reserved = ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""];
    // What PyYAML would read as a number or a date (`1.0`, `12`, `1e3`, `.inf`, `2024-01-01`).
    static TYPED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(concat!(
            r"^(?:[-+]?(?:0b[01_]+|0[0-7_]+|0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+)",
            r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?:[eE][-+]?[0-9]+)",
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*)$"
        ))
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
    });
    let numeric = TYPED.is_match(s);
    let plain = !reserved.contains(&s.to_ascii_lowercase().as_str())
        && !numeric
        && s.trim() == s
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && s.chars().all(|c| !c.is_control());
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', "''")) }
}

/// dbt-core's `sha1_hash`: each entry as JSON with sorted keys (Python's `json.dumps`), the
/// lines sorted, joined with newlines, SHA-1 in hex. Equal hashes mean the list is unchanged,
/// so a lock written by dbt is honoured by Weir and the other way round.
pub fn hash(specs: &[Spec]) -> String {
    let mut lines: Vec<String> = specs.iter().map(|s| python_json(&s.hashed)).collect();
    lines.sort();
    let digest = Sha1::digest(lines.join("\n").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn read_doc(path: &Path) -> Result<Option<(PathBuf, String, Node)>, ProjectError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ProjectError::io(path, e)),
    };
    Ok(yaml::parse(path, &text)?.map(|doc| (path.to_path_buf(), text, doc)))
}

/// The keys each kind of entry may have.
const HUB_KEYS: &[&str] = &["package", "version", "install_prerelease", "name"];
const GIT_KEYS: &[&str] = &["git", "revision", "warn-unpinned", "subdirectory", "name"];
const LOCAL_KEYS: &[&str] = &["local", "name"];
const TARBALL_KEYS: &[&str] = &["tarball", "name"];

fn parse_entry(item: &Node, file: &Path, text: &str, cli_vars: &Map<String, J>) -> Result<Spec, ProjectError> {
    let fail = |node: &Node, message: String| ProjectError::invalid_at(node.location(file), message, text);
    if item.as_map().is_none() {
        return Err(fail(item, "a package entry is a mapping such as `- package: dbt-labs/dbt_utils`".into()));
    }
    let render = |key: &str| -> Result<Option<String>, ProjectError> {
        match item.get(key) {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => {
                let raw = n.scalar_text().ok_or_else(|| fail(n, format!("'{key}' must be text")))?;
                render_static(&raw, cli_vars).map(Some).map_err(|m| fail(n, format!("'{key}': {m}")))
            }
        }
    };
    let required = |key: &str, what: &str| -> Result<String, ProjectError> {
        match render(key)? {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(fail(item.get(key).unwrap_or(item), format!("{what} is missing its '{key}:' value"))),
        }
    };
    let raw = |key: &str| item.get(key).and_then(Node::scalar_text).unwrap_or_default();
    let name = render("name")?;
    let unrendered = item.to_json();
    let mut hashed = Map::new();
    let (source, keys) = if item.get("package").is_some() {
        let package = required("package", "a hub package")?;
        let Some(version) = item.get("version").filter(|v| !v.is_null()) else {
            return Err(fail(item, format!("hub package '{package}' needs a 'version:' (a version or a list of requirements)")));
        };
        let versions = match version.as_seq() {
            Some(items) => items.iter().map(|v| v.scalar_text()).collect::<Option<Vec<_>>>(),
            None => version.scalar_text().map(|v| vec![v]),
        }
        .ok_or_else(|| fail(version, "'version' must be a version or a list of requirements".into()))?;
        let versions: Vec<String> = versions
            .iter()
            .map(|v| render_static(v, cli_vars).map_err(|m| fail(version, format!("'version': {m}"))))
            .collect::<Result<_, _>>()?;
        for v in &versions {
            if super::semver::Requirement::parse(v).is_none() {
                return Err(fail(version, format!("'{v}' is not a version requirement such as \"1.3.0\" or \">=1.0.0\"")));
            }
        }
        let install_prerelease = match item.get("install_prerelease") {
            None => false,
            Some(n) => match n.value {
                yaml::Value::Bool(b) => b,
                yaml::Value::Null => false,
                _ => return Err(fail(n, "'install_prerelease' must be true or false".into())),
            },
        };
        hashed.insert("package".into(), J::String(package.clone()));
        hashed.insert("version".into(), version.to_json());
        hashed.insert("install_prerelease".into(), J::Bool(install_prerelease));
        (Source::Hub { package, versions, install_prerelease }, HUB_KEYS)
    } else if item.get("git").is_some() {
        let git = required("git", "a git package")?;
        let revision = render("revision")?;
        let subdirectory = render("subdirectory")?.filter(|s| !s.is_empty());
        if let Some(sub) = &subdirectory
            && (Path::new(sub).is_absolute() || Path::new(sub).components().any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            return Err(fail(
                item.get("subdirectory").unwrap_or(item),
                format!("subdirectory '{sub}' must be a folder inside the repository"),
            ));
        }
        let warn_unpinned = match item.get("warn-unpinned") {
            None => None,
            Some(n) => match n.value {
                yaml::Value::Bool(b) => Some(b),
                yaml::Value::Null => None,
                _ => return Err(fail(n, "'warn-unpinned' must be true or false".into())),
            },
        };
        hashed.insert("git".into(), J::String(git.clone()));
        hashed.insert("revision".into(), item.get("revision").map(Node::to_json).unwrap_or(J::Null));
        hashed.insert("subdirectory".into(), subdirectory.clone().map(J::String).unwrap_or(J::Null));
        hashed.insert("warn-unpinned".into(), warn_unpinned.map(J::Bool).unwrap_or(J::Null));
        let source = Source::Git { git, git_raw: raw("git"), revision, subdirectory, warn_unpinned: warn_unpinned != Some(false) };
        (source, GIT_KEYS)
    } else if item.get("local").is_some() {
        let local = required("local", "a local package")?;
        hashed.insert("local".into(), J::String(local.clone()));
        (Source::Local { local }, LOCAL_KEYS)
    } else if item.get("tarball").is_some() {
        let tarball = required("tarball", "a tarball package")?;
        if name.is_none() {
            return Err(fail(item, format!("tarball package '{tarball}' needs a 'name:' (its folder under dbt_packages/)")));
        }
        hashed.insert("tarball".into(), J::String(tarball.clone()));
        (Source::Tarball { tarball, tarball_raw: raw("tarball") }, TARBALL_KEYS)
    } else if let Some(p) = item.get("private") {
        return Err(fail(
            p,
            "a `private:` package needs dbt Cloud's git provider integration; write it as a `git:` package with the repository's URL"
                .into(),
        ));
    } else {
        return Err(fail(item, "a package entry needs 'package:', 'git:', 'local:' or 'tarball:'".into()));
    };
    for (key, _) in item.as_map().unwrap_or_default() {
        let k = key.key_text().unwrap_or_default();
        if k != "unrendered" && !keys.contains(&k.as_str()) {
            let hint = crate::error::closest(&k, keys.iter().copied()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
            return Err(fail(key, format!("unknown key '{k}' in a {} package entry{hint}", source.kind())));
        }
    }
    if let Some(n) = &name {
        hashed.insert("name".into(), J::String(n.clone()));
    }
    hashed.insert("unrendered".into(), unrendered);
    Ok(Spec { source, name, location: item.location(file), hashed: J::Object(hashed) })
}

/// Python's `json.dumps(value, sort_keys=True)`: `", "` and `": "` between items, keys sorted,
/// anything outside ASCII escaped.
fn python_json(v: &J) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &J, out: &mut String) {
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => write_str(s, out),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_json(&map[k], out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(yml: &str) -> Vec<Spec> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("packages.yml"), yml).unwrap();
        read_specs(dir.path(), &Map::new()).unwrap().unwrap().specs
    }

    /// The hashes below are what dbt-core 1.11 writes to package-lock.yml for the same lists.
    #[test]
    fn hashes_as_dbt_core_does() {
        let s = specs(
            "packages:\n  - package: dbt-labs/dbt_utils\n    version: [\">=1.0.0\", \"<2.0.0\"]\n  - git: \"https://github.com/dbt-labs/dbt-audit-helper.git\"\n    revision: 0.9.0\n    warn-unpinned: false\n  - local: ../my_pkg\n  - tarball: https://example.com/x.tar.gz\n    name: xpkg\n  - git: \"https://x/y.git\"\n    subdirectory: sub\n  - package: a/b\n    version: 1.2.0\n    install_prerelease: true\n",
        );
        assert_eq!(s.len(), 6);
        assert_eq!(hash(&s), "5b50cd7ce2258d514e54e567fe20ab1435cbef52");
        let s = specs("packages:\n  - local: ../pkg_a\n  - local: \"{{ env_var('PKGB', '../pkg_b') }}\"\n");
        assert_eq!(s[1].source, Source::Local { local: "../pkg_b".into() });
        assert_eq!(hash(&s), "459fd512aa3537bbc6f23c3a3677e05fac8f5bd3");
    }

    #[test]
    fn bad_entries_name_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("packages:\n  - package: dbt-labs/dbt_utils\n", "packages.yml:2:5", "needs a 'version:'"),
            ("packages:\n  - package: dbt-labs/dbt_utils\n    verison: 1.0.0\n", "packages.yml:2:5", "needs a 'version:'"),
            ("packages:\n  - git: https://x/y.git\n    revison: main\n", "packages.yml:3:5", "did you mean 'revision'"),
            ("packages:\n  - package: a/b\n    version: one\n", "packages.yml:3:14", "not a version requirement"),
            ("packages:\n  - tarball: https://x/y.tgz\n", "packages.yml:2:5", "needs a 'name:'"),
            ("packages:\n  - private: acme/x\n", "packages.yml:2:14", "git provider"),
            ("packages:\n  - dbt_utils\n", "packages.yml:2:5", "is a mapping"),
            ("packages:\n  - git: https://x/y.git\n    subdirectory: ../up\n", "packages.yml:3:19", "inside the repository"),
        ];
        for (yml, at, says) in cases {
            std::fs::write(dir.path().join("packages.yml"), yml).unwrap();
            let err = read_specs(dir.path(), &Map::new()).unwrap_err().to_string();
            assert!(err.contains(at) && err.contains(says), "{yml}: {err}");
        }
    }

    #[test]
    fn dependencies_yml_is_read_and_both_lists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dependencies.yml"), "projects:\n  - name: core\npackages:\n  - local: ../a\n").unwrap();
        let file = read_specs(dir.path(), &Map::new()).unwrap().unwrap();
        assert!(file.path.ends_with("dependencies.yml"));
        assert_eq!(file.specs[0].source, Source::Local { local: "../a".into() });
        std::fs::write(dir.path().join("packages.yml"), "packages:\n  - local: ../b\n").unwrap();
        let err = read_specs(dir.path(), &Map::new()).unwrap_err().to_string();
        assert!(err.contains("both packages.yml and dependencies.yml"), "{err}");
    }

    #[test]
    fn lock_scalars_are_quoted_only_where_yaml_would_read_something_else() {
        for plain in ["1.1.0", "dbt-labs/dbt_utils", "0.9.0-b1", "https://x/y.git", "3f2a9c", "../pkg"] {
            assert_eq!(yaml_scalar(plain), plain);
        }
        for (typed, quoted) in [
            ("1.0", "'1.0'"),
            ("12", "'12'"),
            ("1e3", "'1e3'"),
            ("yes", "'yes'"),
            ("2024-01-01", "'2024-01-01'"),
            ("it's: x", "'it''s: x'"),
        ] {
            assert_eq!(yaml_scalar(typed), quoted);
        }
    }

    #[test]
    fn added_packages_replace_the_same_package_from_any_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("packages.yml"),
            "packages:\n  - git: https://github.com/dbt-labs/dbt-utils.git\n    revision: 1.0.0\n  - package: dbt-labs/dbt_utils_extra\n    version: [\">=1.0.0\", \"<2.0.0\"]\n  - local: ../mine\n",
        )
        .unwrap();
        let path = add_package(dir.path(), "dbt-labs/dbt_utils@>=1.1.0,<2.0.0", "hub").unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "packages:\n  - package: dbt-labs/dbt_utils_extra\n    version: ['>=1.0.0', <2.0.0]\n  - local: ../mine\n  - package: dbt-labs/dbt_utils\n    version: ['>=1.1.0', <2.0.0]\n"
        );
        let specs = read_specs(dir.path(), &Map::new()).unwrap().unwrap().specs;
        assert_eq!(specs.len(), 3);
        assert!(add_package(dir.path(), "dbt-labs/dbt_date", "hub").unwrap_err().to_string().contains("needs a version"));
        let empty = tempfile::tempdir().unwrap();
        add_package(empty.path(), "https://example.com/acme/tools.git@v2", "git").unwrap();
        assert_eq!(
            std::fs::read_to_string(empty.path().join("packages.yml")).unwrap(),
            "packages:\n  - git: https://example.com/acme/tools.git\n    revision: v2\n"
        );
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = serde_json::json!({"b": [1, 2.5, null], "a": "é\"x\n", "c": {"z": true, "y": 1.0}});
        assert_eq!(python_json(&v), r#"{"a": "\u00e9\"x\n", "b": [1, 2.5, null], "c": {"y": 1.0, "z": true}}"#);
    }
}
