//! `weir deps`: installs a project's packages into `dbt_packages/` as `dbt deps` does, so a
//! dbt project that uses dbt_utils, dbt_date or audit_helper builds without dbt installed.
//!
//! The same files and rules as dbt-core: `packages.yml` or `dependencies.yml`; hub, git,
//! local and tarball packages; the packages' own packages resolved with them (hub version
//! requirements narrowed together, one revision per git repository); every package side by side
//! in `dbt_packages/`, each folder named by the package's project name; and `package-lock.yml`,
//! written with dbt's hash of the package list and honoured while that list is unchanged, so a
//! lock written by dbt installs the same packages here and the other way round.

mod fetch;
pub mod semver;
pub mod spec;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value as J};
use weir_core::Location;

use crate::error::ProjectError;
use crate::project::Settings;
use fetch::Fetcher;
use semver::{Range, Requirement, Version};
pub use spec::{Source, Spec};

/// Where hub packages come from unless `DBT_PACKAGE_HUB_URL` says otherwise.
pub const DEFAULT_HUB: &str = "https://hub.getdbt.com/";

/// How to run `weir deps`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resolve again even when `package-lock.yml` matches the package list (`--upgrade`).
    pub upgrade: bool,
    /// Write `package-lock.yml` only; install nothing (`--lock`).
    pub lock_only: bool,
    /// The Hub's base URL.
    pub hub_url: String,
    pub cli_vars: Map<String, J>,
}

impl Options {
    /// The defaults, with the Hub from `DBT_PACKAGE_HUB_URL` as dbt reads it.
    pub fn new(cli_vars: Map<String, J>) -> Options {
        let hub_url = std::env::var("DBT_PACKAGE_HUB_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_HUB.to_string());
        Options { upgrade: false, lock_only: false, hub_url, cli_vars }
    }
}

/// What `weir deps` did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Whether `package-lock.yml` was written (else it was up to date and followed).
    pub lock_written: bool,
    pub packages: Vec<InstalledPackage>,
    pub warnings: Vec<String>,
    pub install_dir: PathBuf,
}

/// One package in the lock, and where it was installed from.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledPackage {
    /// Its project name: its folder under `dbt_packages/`.
    pub name: String,
    /// `hub`, `git`, `local` or `tarball`.
    pub kind: &'static str,
    /// The hub package, URL or folder it came from.
    pub from: String,
    /// The hub version or the git commit.
    pub version: Option<String>,
    /// The newest hub version that runs with this dbt version, when it is not `version`.
    pub newer: Option<String>,
}

/// Why `weir deps` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{location}: {message}")]
    At { location: Location, message: String },
    #[error("{0}")]
    Failed(String),
}

/// Resolves and installs the packages of the project at `root`.
pub fn install(root: &Path, opts: &Options) -> Result<Report, DepsError> {
    let root = root.canonicalize().map_err(|e| ProjectError::io(root, e))?;
    let mut ignored = vec![];
    let settings = Settings::load(&root, &opts.cli_vars, &mut ignored)?;
    let install_dir = install_dir(&root, &settings.packages_install_path)?;
    let specs = spec::read_specs(&root, &opts.cli_vars)?.map(|f| f.specs).unwrap_or_default();
    let mut warnings = vec![];
    let mut fetcher = Fetcher::new(&root, &opts.hub_url).map_err(DepsError::Failed)?;

    let wanted_hash = spec::hash(&specs);
    let lock = spec::read_lock(&root, &opts.cli_vars)?;
    let current_lock = lock.filter(|l| !opts.upgrade && l.sha1_hash.as_deref() == Some(wanted_hash.as_str()));
    let (pinned, lock_written) = if specs.is_empty() {
        (vec![], false)
    } else if let Some(lock) = current_lock {
        (pinned_from_lock(&lock.specs, &root, &opts.cli_vars, &mut fetcher)?, false)
    } else {
        let pinned = resolve(&specs, &settings.name, &root, &opts.cli_vars, &mut fetcher, &mut warnings)?;
        let entries: Vec<spec::LockEntry> = pinned.iter().map(Pinned::lock_entry).collect();
        spec::write_lock(&root, &entries, &wanted_hash).map_err(|e| ProjectError::io(root.join("package-lock.yml"), e))?;
        (pinned, true)
    };
    let mut report = Report { lock_written, packages: vec![], warnings, install_dir: install_dir.clone() };
    if opts.lock_only {
        report.packages = pinned.iter().map(|p| p.report(&mut fetcher)).collect();
        return Ok(report);
    }
    // As dbt does: the install folder holds exactly what the lock lists.
    match std::fs::symlink_metadata(&install_dir) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&install_dir).map_err(|e| ProjectError::io(&install_dir, e))?,
        Ok(_) => std::fs::remove_dir_all(&install_dir).map_err(|e| ProjectError::io(&install_dir, e))?,
        Err(_) => {}
    }
    std::fs::create_dir_all(&install_dir).map_err(|e| ProjectError::io(&install_dir, e))?;
    for p in &pinned {
        p.install(&install_dir, &root, &mut fetcher).map_err(|m| DepsError::At { location: p.location.clone(), message: m })?;
        report.packages.push(p.report(&mut fetcher));
    }
    Ok(report)
}

/// The install folder, which must stay inside the project (it is emptied on every install).
fn install_dir(root: &Path, configured: &str) -> Result<PathBuf, DepsError> {
    let rel = Path::new(configured);
    if configured.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(DepsError::Failed(format!(
            "packages-install-path '{configured}' must be a folder inside the project; `weir deps` empties it on every install"
        )));
    }
    Ok(root.join(rel))
}

/// A package pinned to one version, commit, folder or URL.
#[derive(Debug, Clone)]
struct Pinned {
    source: PinnedSource,
    /// The project name, once known.
    name: String,
    location: Location,
}

#[derive(Debug, Clone)]
enum PinnedSource {
    Hub { package: String, version: String },
    Git { git: String, git_raw: String, revision: String, subdirectory: Option<String> },
    Local { local: String },
    Tarball { tarball: String, tarball_raw: String },
}

/// A package's name and the packages it needs.
struct Meta {
    name: String,
    packages: Vec<Spec>,
    /// The commit a git revision resolved to.
    commit: Option<String>,
}

impl Pinned {
    fn lock_entry(&self) -> spec::LockEntry {
        let fields = match &self.source {
            PinnedSource::Hub { package, version } => vec![("package", package.clone()), ("version", version.clone())],
            PinnedSource::Git { git_raw, revision, subdirectory, .. } => {
                let mut f = vec![("git", git_raw.clone()), ("revision", revision.clone())];
                if let Some(s) = subdirectory {
                    f.push(("subdirectory", s.clone()));
                }
                f
            }
            PinnedSource::Local { local } => vec![("local", local.clone())],
            PinnedSource::Tarball { tarball_raw, .. } => vec![("tarball", tarball_raw.clone())],
        };
        spec::LockEntry { name: self.name.clone(), fields }
    }

    fn report(&self, fetcher: &mut Fetcher) -> InstalledPackage {
        let (kind, from, version, newer) = match &self.source {
            PinnedSource::Hub { package, version } => {
                let newer = fetcher.hub_package(package).ok().and_then(|info| {
                    let compatible = installable(&info, false);
                    Range::default().best(compatible.iter().map(String::as_str), false).filter(|v| v != version).map(str::to_string)
                });
                ("hub", package.clone(), Some(version.clone()), newer)
            }
            PinnedSource::Git { git, revision, subdirectory, .. } => {
                let from = subdirectory.as_ref().map(|s| format!("{git} ({s})")).unwrap_or_else(|| git.clone());
                ("git", from, Some(revision.clone()), None)
            }
            PinnedSource::Local { local } => ("local", local.clone(), None, None),
            PinnedSource::Tarball { tarball, .. } => ("tarball", tarball.clone(), None, None),
        };
        InstalledPackage { name: self.name.clone(), kind, from, version, newer }
    }

    /// Puts the package in `install_dir/<name>`: a hub or tarball archive unpacked, a git
    /// checkout moved, a local folder linked (copied where links are not possible).
    fn install(&self, install_dir: &Path, root: &Path, fetcher: &mut Fetcher) -> Result<(), String> {
        check_name(&self.name)?;
        let dest = install_dir.join(&self.name);
        match &self.source {
            PinnedSource::Hub { package, version } => {
                let info = fetcher.hub_package(package)?;
                let v = info.versions.get(version).ok_or_else(|| format!("version {version} of '{package}' is not on the dbt Hub"))?;
                let dir = fetcher.tarball(&v.tarball)?;
                fetch::move_dir(&dir, &dest)
            }
            PinnedSource::Git { git, revision, subdirectory, .. } => {
                let (dir, _) = fetcher.checkout(git, revision, subdirectory.as_deref())?;
                fetch::move_dir(&dir, &dest)
            }
            PinnedSource::Tarball { tarball, .. } => {
                let dir = fetcher.tarball(tarball)?;
                fetch::move_dir(&dir, &dest)
            }
            PinnedSource::Local { local } => {
                let src = root.join(local);
                let src = src.canonicalize().map_err(|e| format!("local package {}: {e}", src.display()))?;
                #[cfg(unix)]
                if std::os::unix::fs::symlink(&src, &dest).is_ok() {
                    return Ok(());
                }
                fetch::copy_dir(&src, &dest).map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dest.display()))
            }
        }
    }
}

/// A package's folder name must be one plain name: it is joined to `dbt_packages/`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) || Path::new(name).components().count() != 1 {
        return Err(format!("'{name}' cannot be a package's folder name under dbt_packages/"));
    }
    Ok(())
}

/// Every package asked for under one key, with all its requirements so far.
struct Wanted {
    first: Spec,
    versions: Vec<String>,
    revisions: Vec<String>,
    install_prerelease: bool,
    warn_unpinned: bool,
}

/// dbt's resolution: take the packages asked for, pin each with every requirement seen so
/// far, read what the pinned package needs, and repeat until nothing new is asked for; then
/// pin every package once more with all requirements known.
fn resolve(
    specs: &[Spec],
    root_name: &str,
    root: &Path,
    cli_vars: &Map<String, J>,
    fetcher: &mut Fetcher,
    warnings: &mut Vec<String>,
) -> Result<Vec<Pinned>, DepsError> {
    let mut wanted: IndexMap<String, Wanted> = IndexMap::new();
    let mut expanded: HashSet<String> = HashSet::new();
    let mut pending: Vec<Spec> = specs.to_vec();
    while !pending.is_empty() {
        let mut next = vec![];
        for spec in pending {
            let key = incorporate(&mut wanted, spec)?;
            let pinned = pin(&wanted[&key], fetcher)?;
            let identity = pinned.identity();
            if expanded.insert(identity) {
                let meta = metadata(&pinned, root, cli_vars, fetcher)?;
                next.extend(meta.packages);
            }
        }
        pending = next;
    }
    let mut out: Vec<Pinned> = vec![];
    for w in wanted.values() {
        let mut pinned = pin(w, fetcher)?;
        let meta = metadata(&pinned, root, cli_vars, fetcher)?;
        pinned.name = meta.name;
        if let (PinnedSource::Git { revision, git, .. }, Some(commit)) = (&mut pinned.source, meta.commit) {
            if w.warn_unpinned && ["HEAD", "main", "master"].contains(&revision.as_str()) {
                warnings.push(format!(
                    "{}: git package {git} is not pinned (revision {revision}); pin a tag or commit so every install gets the same code",
                    pinned.location
                ));
            }
            *revision = commit;
        }
        if pinned.name == root_name {
            return Err(DepsError::At {
                location: pinned.location,
                message: format!("package '{}' has the root project's own name", pinned.name),
            });
        }
        if let Some(other) = out.iter().find(|o| o.name == pinned.name) {
            return Err(DepsError::At {
                location: pinned.location.clone(),
                message: format!(
                    "two packages are both named '{}' ({} and {}); dbt_packages/ can hold only one",
                    pinned.name,
                    other.report(fetcher).from,
                    pinned.report(fetcher).from
                ),
            });
        }
        if let Some(info) = match &pinned.source {
            PinnedSource::Hub { package, .. } => fetcher.hub_package(package).ok(),
            _ => None,
        } && let Some(moved) = &info.moved_to
        {
            warnings.push(format!("{}: the dbt Hub says this package moved to {moved}", pinned.location));
        }
        out.push(pinned);
    }
    Ok(out)
}

/// Files `spec` under its package's key, merging requirements with earlier entries.
fn incorporate(wanted: &mut IndexMap<String, Wanted>, spec: Spec) -> Result<String, DepsError> {
    let key = spec.source.aliases().into_iter().find(|k| wanted.contains_key(k)).unwrap_or_else(|| spec.source.key());
    let (versions, revisions, install_prerelease, warn_unpinned) = match &spec.source {
        Source::Hub { versions, install_prerelease, .. } => (versions.clone(), vec![], *install_prerelease, true),
        Source::Git { revision, warn_unpinned, .. } => (vec![], revision.iter().cloned().collect(), false, *warn_unpinned),
        _ => (vec![], vec![], false, true),
    };
    match wanted.get_mut(&key) {
        Some(w) => {
            if w.first.source.kind() != spec.source.kind() {
                return Err(DepsError::At {
                    location: spec.location.clone(),
                    message: format!(
                        "'{key}' is asked for as a {} package here and as a {} package at {}",
                        spec.source.kind(),
                        w.first.source.kind(),
                        w.first.location
                    ),
                });
            }
            w.versions.extend(versions);
            w.revisions.extend(revisions);
            w.warn_unpinned &= warn_unpinned;
        }
        None => {
            wanted.insert(key.clone(), Wanted { first: spec, versions, revisions, install_prerelease, warn_unpinned });
        }
    }
    Ok(key)
}

/// Pins what is wanted: the highest hub version every requirement allows, the one git
/// revision asked for (`HEAD` if none).
fn pin(w: &Wanted, fetcher: &mut Fetcher) -> Result<Pinned, DepsError> {
    let at = |message: String| DepsError::At { location: w.first.location.clone(), message };
    let source = match &w.first.source {
        Source::Hub { package, .. } => {
            let requirements: Vec<Requirement> = w.versions.iter().filter_map(|v| Requirement::parse(v)).collect();
            let asked = w.versions.join(", ");
            let range =
                Range::of(&requirements).ok_or_else(|| at(format!("no version of '{package}' meets every requirement on it: {asked}")))?;
            let info = fetcher.hub_package(package).map_err(at)?;
            let prerelease = w.install_prerelease || requirements.iter().any(|r| r.version.is_prerelease());
            let candidates = installable(&info, prerelease);
            let version = range.best(candidates.iter().map(String::as_str), prerelease).ok_or_else(|| {
                at(format!(
                    "no version of '{package}' on the Hub meets {range} (asked for: {asked}); versions that run with dbt {}: {}",
                    crate::jinja::DBT_VERSION,
                    if candidates.is_empty() { "none".to_string() } else { candidates.join(", ") }
                ))
            })?;
            PinnedSource::Hub { package: package.clone(), version: version.to_string() }
        }
        Source::Git { git, git_raw, subdirectory, .. } => {
            let mut revisions: Vec<&String> = w.revisions.iter().collect();
            revisions.sort();
            revisions.dedup();
            let revision = match revisions.as_slice() {
                [] => "HEAD".to_string(),
                [one] => one.to_string(),
                many => {
                    return Err(at(format!(
                        "git package {git} is asked for at {} revisions ({}); every package that needs it must agree on one",
                        many.len(),
                        many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            };
            PinnedSource::Git { git: git.clone(), git_raw: git_raw.clone(), revision, subdirectory: subdirectory.clone() }
        }
        Source::Local { local } => PinnedSource::Local { local: local.clone() },
        Source::Tarball { tarball, tarball_raw } => PinnedSource::Tarball { tarball: tarball.clone(), tarball_raw: tarball_raw.clone() },
    };
    Ok(Pinned { source, name: w.first.name.clone().unwrap_or_default(), location: w.first.location.clone() })
}

/// The versions of a hub package that run with the dbt version Weir stands in for, oldest
/// first; pre-releases only when asked for.
fn installable(info: &fetch::HubPackage, prerelease: bool) -> Vec<String> {
    let dbt = Version::parse(crate::jinja::DBT_VERSION);
    info.versions
        .iter()
        .filter(|(v, details)| {
            let Some(version) = Version::parse(v) else { return false };
            let runs = match &dbt {
                Some(dbt) => details
                    .require_dbt_version
                    .iter()
                    .filter_map(|r| Requirement::parse(r))
                    .all(|r| Range::of(&[r, Requirement { matcher: semver::Matcher::Exact, version: dbt.clone() }]).is_some()),
                None => true,
            };
            runs && (prerelease || !version.is_prerelease())
        })
        .map(|(v, _)| v.clone())
        .collect()
}

impl Pinned {
    fn identity(&self) -> String {
        match &self.source {
            PinnedSource::Hub { package, version } => format!("hub {package} {version}"),
            PinnedSource::Git { git, revision, subdirectory, .. } => {
                format!("git {git} {} {revision}", subdirectory.as_deref().unwrap_or(""))
            }
            PinnedSource::Local { local } => format!("local {local}"),
            PinnedSource::Tarball { tarball, .. } => format!("tarball {tarball}"),
        }
    }
}

/// A pinned package's project name and packages: from the Hub's record for hub packages,
/// from the package's own files for the rest.
fn metadata(p: &Pinned, root: &Path, cli_vars: &Map<String, J>, fetcher: &mut Fetcher) -> Result<Meta, DepsError> {
    let at = |message: String| DepsError::At { location: p.location.clone(), message };
    let (dir, commit) = match &p.source {
        PinnedSource::Hub { package, version } => {
            let info = fetcher.hub_package(package).map_err(at)?;
            let v = info.versions.get(version).ok_or_else(|| at(format!("version {version} of '{package}' is not on the dbt Hub")))?;
            let origin = PathBuf::from(format!("hub:{package}@{version}"));
            let packages = spec::entries_from_json(&v.packages, &origin, cli_vars)?;
            return Ok(Meta { name: v.name.clone(), packages, commit: None });
        }
        PinnedSource::Git { git, revision, subdirectory, .. } => {
            let (dir, sha) = fetcher.checkout(git, revision, subdirectory.as_deref()).map_err(at)?;
            (dir, Some(sha))
        }
        PinnedSource::Local { local } => (root.join(local), None),
        PinnedSource::Tarball { tarball, .. } => (fetcher.tarball(tarball).map_err(at)?, None),
    };
    if !dir.join("dbt_project.yml").exists() {
        return Err(at(format!("{} has no dbt_project.yml, so it is not a dbt package", dir.display())));
    }
    let mut ignored = vec![];
    let settings = Settings::load(&dir, cli_vars, &mut ignored)?;
    // A downloaded package's files live in a scratch folder that is gone afterwards: its
    // entries are placed by where the package came from.
    let shown = match &p.source {
        PinnedSource::Git { git, revision, subdirectory, .. } => {
            Some(format!("{git}@{revision}{}", subdirectory.as_ref().map(|s| format!("/{s}")).unwrap_or_default()))
        }
        PinnedSource::Tarball { tarball, .. } => Some(tarball.clone()),
        _ => None,
    };
    let placed = |file: &Path| match &shown {
        Some(from) => PathBuf::from(format!("{from}/{}", file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())),
        None => file.to_path_buf(),
    };
    let packages = match spec::read_specs(&dir, cli_vars) {
        Ok(file) => file.map(|f| f.specs).unwrap_or_default(),
        Err(ProjectError::Invalid { location, message, snippet }) => {
            let location = Location { file: placed(&location.file), ..location };
            return Err(ProjectError::Invalid { location, message, snippet }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let packages = packages
        .into_iter()
        .map(|mut s| {
            s.location.file = placed(&s.location.file);
            s
        })
        .collect();
    // A tarball package is named by its entry, as dbt does.
    let name = match &p.source {
        PinnedSource::Tarball { .. } if !p.name.is_empty() => p.name.clone(),
        _ => settings.name,
    };
    Ok(Meta { name, packages, commit })
}

/// Pins the entries of `package-lock.yml` as they are; entries without a `name` (older
/// locks) are named from the package.
fn pinned_from_lock(specs: &[Spec], root: &Path, cli_vars: &Map<String, J>, fetcher: &mut Fetcher) -> Result<Vec<Pinned>, DepsError> {
    let mut out = vec![];
    for s in specs {
        let source = match &s.source {
            Source::Hub { package, versions, .. } => match versions.as_slice() {
                [one] if Version::parse(one).is_some() => PinnedSource::Hub { package: package.clone(), version: one.clone() },
                _ => {
                    return Err(DepsError::At {
                        location: s.location.clone(),
                        message: format!("a locked hub package has one exact version; found {}", versions.join(", ")),
                    });
                }
            },
            Source::Git { git, git_raw, revision, subdirectory, .. } => PinnedSource::Git {
                git: git.clone(),
                git_raw: git_raw.clone(),
                revision: revision.clone().unwrap_or_else(|| "HEAD".into()),
                subdirectory: subdirectory.clone(),
            },
            Source::Local { local } => PinnedSource::Local { local: local.clone() },
            Source::Tarball { tarball, tarball_raw } => {
                PinnedSource::Tarball { tarball: tarball.clone(), tarball_raw: tarball_raw.clone() }
            }
        };
        let mut p = Pinned { source, name: s.name.clone().unwrap_or_default(), location: s.location.clone() };
        if p.name.is_empty() {
            p.name = metadata(&p, root, cli_vars, fetcher)?.name;
        }
        out.push(p);
    }
    Ok(out)
}
