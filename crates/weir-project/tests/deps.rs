//! `weir deps` against real git repositories and a local HTTP server that answers as the
//! dbt Hub does (its `api/v1/<package>.json` records and release tarballs).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::json;
use weir_project::deps::{self, DepsError, Options};

/// Serves fixed bodies by path and counts the requests.
struct Hub {
    url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Hub {
    fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap_or_default();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = served.lock().unwrap().get(&path).cloned();
                let _ = match body {
                    Some(b) => write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len())
                        .and_then(|_| stream.write_all(&b)),
                    None => write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                };
            }
        });
        Hub { url, files }
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    /// Publishes `package` (`acme/utils`) with its versions: (version, project name, its
    /// packages, require_dbt_version), each with a tarball of one folder as GitHub makes them.
    fn publish(&self, package: &str, versions: &[(&str, &str, serde_json::Value, &[&str])]) {
        let mut record = serde_json::Map::new();
        for (v, name, packages, require) in versions {
            let tar_path = format!("/tarballs/{package}/{v}.tar.gz");
            let files = [
                ("dbt_project.yml", format!("name: {name}\nversion: '{v}'\nconfig-version: 2\n")),
                ("macros/version.sql", format!("{{% macro {name}_version() %}}{v}{{% endmacro %}}\n")),
            ];
            self.serve(&tar_path, tarball(&format!("{}-{v}", name.replace('_', "-")), &files));
            record.insert(
                v.to_string(),
                json!({"id": format!("{package}/{v}"), "name": name, "version": v, "packages": packages,
                       "require_dbt_version": require, "downloads": {"tarball": format!("{}{}", self.url, &tar_path[1..])}}),
            );
        }
        let (namespace, name) = package.split_once('/').unwrap();
        self.serve(
            &format!("/api/v1/{package}.json"),
            serde_json::to_vec(&json!({"name": name, "namespace": namespace, "versions": record})).unwrap(),
        );
    }
}

/// A `.tar.gz` holding `top/` with `files` in it.
fn tarball(top: &str, files: &[(&str, String)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("{top}/{path}"), text.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Weir", "-c", "user.email=weir@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with `files`, committed; returns its path.
fn repo(base: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    commit(&dir, files, "first");
    dir
}

fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (rel, text) in files {
        write(dir, rel, text);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn options(hub: &Hub) -> Options {
    Options { hub_url: hub.url.clone(), ..Options::new(Default::default()) }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn installs_every_kind_of_package_with_the_packages_they_need() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hub = Hub::start();
    let none = json!([]);
    hub.publish(
        "acme/utils",
        &[
            ("1.0.0", "utils", none.clone(), &[">=1.0.0"]),
            ("1.1.0", "utils", none.clone(), &[">=1.3.0", "<2.0.0"]),
            ("1.2.0-b1", "utils", none.clone(), &[]),
            ("1.3.0", "utils", none.clone(), &[">=99.0.0"]),
            ("2.0.0", "utils", none.clone(), &[]),
        ],
    );
    hub.publish("acme/dates", &[("0.5.0", "dates", json!([{"package": "acme/utils", "version": [">=1.0.0", "<1.2.0"]}]), &[])]);
    let tools = repo(
        base,
        "tools",
        &[
            ("dbt_project.yml", "name: tools\nversion: '1.0'\n"),
            ("packages.yml", "packages:\n  - package: acme/dates\n    version: 0.5.0\n"),
            ("macros/t.sql", "{% macro tool() %}v1{% endmacro %}\n"),
        ],
    );
    git(&tools, &["tag", "v1"]);
    commit(&tools, &[("macros/t.sql", "{% macro tool() %}v2{% endmacro %}\n")], "second");
    let mono = repo(base, "mono", &[("README.md", "many packages\n"), ("packages/sub/dbt_project.yml", "name: sub_pkg\n")]);
    let first_mono = git(&mono, &["rev-parse", "HEAD"]);
    write(base, "shared/dbt_project.yml", "name: shared\n");
    hub.serve("/archives/extra.tar.gz", tarball("extra-main", &[("dbt_project.yml", "name: extra_upstream\n".into())]));
    let root = base.join("shop");
    write(&root, "dbt_project.yml", "name: shop\nversion: '1.0'\nprofile: shop\n");
    let packages = format!(
        "packages:\n  - package: acme/utils\n    version: [\">=1.0.0\", \"<3.0.0\"]\n  - git: \"{}\"\n    revision: v1\n  - git: \"file://{}\"\n    subdirectory: packages/sub\n    warn-unpinned: false\n  - local: ../shared\n  - tarball: {}archives/extra.tar.gz\n    name: extra\n",
        tools.display(),
        mono.display(),
        hub.url
    );
    write(&root, "packages.yml", &packages);

    let report = deps::install(&root, &options(&hub)).unwrap();
    assert!(report.lock_written);
    let names: Vec<(&str, &str, Option<&str>)> = report.packages.iter().map(|p| (p.name.as_str(), p.kind, p.version.as_deref())).collect();
    let tools_v1 = git(&tools, &["rev-parse", "v1"]);
    assert_eq!(
        names,
        [
            ("utils", "hub", Some("1.1.0")),
            ("tools", "git", Some(tools_v1.as_str())),
            ("sub_pkg", "git", Some(first_mono.as_str())),
            ("shared", "local", None),
            ("extra", "tarball", None),
            ("dates", "hub", Some("0.5.0")),
        ],
        "utils: 2.0.0 is out of dates' range, 1.3.0 needs a newer dbt, 1.2.0-b1 is a pre-release"
    );
    assert_eq!(report.packages[0].newer.as_deref(), Some("2.0.0"));
    let dir = root.join("dbt_packages");
    assert!(read(dir.join("utils/macros/version.sql")).contains("1.1.0"));
    assert!(read(dir.join("tools/macros/t.sql")).contains("v1"));
    assert!(!dir.join("tools/.git").exists());
    assert_eq!(read(dir.join("sub_pkg/dbt_project.yml")), "name: sub_pkg\n");
    assert!(std::fs::symlink_metadata(dir.join("shared")).unwrap().file_type().is_symlink());
    assert_eq!(read(dir.join("extra/dbt_project.yml")), "name: extra_upstream\n");
    assert!(dir.join("dates/dbt_project.yml").exists());
    assert!(
        !std::fs::read_dir(&root).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".weir-deps")),
        "the scratch folder is gone"
    );

    let lock = read(root.join("package-lock.yml"));
    let wanted = weir_project::deps::spec::hash(&weir_project::deps::spec::read_specs(&root, &Default::default()).unwrap().unwrap().specs);
    assert_eq!(
        lock,
        format!(
            "packages:\n  - name: utils\n    package: acme/utils\n    version: 1.1.0\n  - git: {}\n    name: tools\n    revision: {tools_v1}\n  - git: file://{}\n    name: sub_pkg\n    revision: {first_mono}\n    subdirectory: packages/sub\n  - local: ../shared\n    name: shared\n  - name: extra\n    tarball: {}archives/extra.tar.gz\n  - name: dates\n    package: acme/dates\n    version: 0.5.0\nsha1_hash: {wanted}\n",
            tools.display(),
            mono.display(),
            hub.url
        )
    );
    // The project loads with every package, each found by its project name.
    let project = weir_project::Project::load(&root, Default::default()).unwrap();
    let mut loaded: Vec<&str> = project.packages.iter().map(|p| p.name.as_str()).collect();
    loaded.sort();
    assert_eq!(loaded, ["dates", "extra_upstream", "shared", "shop", "sub_pkg", "tools", "utils"]);

    // While the list is unchanged the lock is followed: new commits change nothing...
    let second_mono = commit(&mono, &[("packages/sub/macros/m.sql", "{% macro m() %}{% endmacro %}\n")], "more");
    std::fs::write(dir.join("stray.txt"), "left over").unwrap();
    let again = deps::install(&root, &options(&hub)).unwrap();
    assert!(!again.lock_written);
    assert_eq!(again.packages, report.packages);
    assert!(!dir.join("stray.txt").exists(), "the install folder holds exactly what the lock lists");
    assert!(!dir.join("sub_pkg/macros").exists());
    assert_eq!(read(root.join("package-lock.yml")), lock);
    // ...until --upgrade resolves again.
    let upgraded = deps::install(&root, &Options { upgrade: true, ..options(&hub) }).unwrap();
    assert!(upgraded.lock_written);
    assert_eq!(upgraded.packages[2].version.as_deref(), Some(second_mono.as_str()));
    assert!(dir.join("sub_pkg/macros/m.sql").exists());

    // A changed list resolves again; --lock writes the lock and installs nothing.
    write(&root, "packages.yml", &packages.replace("revision: v1", "revision: main"));
    let locked = deps::install(&root, &Options { lock_only: true, ..options(&hub) }).unwrap();
    assert!(locked.lock_written);
    let tools_main = git(&tools, &["rev-parse", "main"]);
    assert!(read(root.join("package-lock.yml")).contains(&format!("revision: {tools_main}")));
    assert!(read(dir.join("tools/macros/t.sql")).contains("v1"), "--lock installs nothing");
}

#[test]
fn what_cannot_be_resolved_is_named_with_its_place() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hub = Hub::start();
    hub.publish("acme/utils", &[("1.0.0", "utils", json!([]), &[]), ("1.1.0", "utils", json!([]), &[])]);
    let needs_old = repo(
        base,
        "needs_old",
        &[("dbt_project.yml", "name: needs_old\n"), ("packages.yml", "packages:\n  - package: acme/utils\n    version: \"<1.0.0\"\n")],
    );
    let needs_missing = repo(
        base,
        "needs_missing",
        &[("dbt_project.yml", "name: needs_missing\n"), ("packages.yml", "packages:\n  - package: acme/nope\n    version: 1.0.0\n")],
    );
    let root = base.join("p");
    write(&root, "dbt_project.yml", "name: p\n");
    let nested_at = format!("{}@HEAD/packages.yml:2:5", needs_missing.display());
    let cases = [
        (format!("packages:\n  - git: {}\n", needs_missing.display()), nested_at.as_str(), "'acme/nope' is not on the dbt Hub"),
        (
            format!("packages:\n  - package: acme/utils\n    version: \">=1.0.0\"\n  - git: {}\n    revision: main\n", needs_old.display()),
            "packages.yml:2:5",
            "no version of 'acme/utils' meets every requirement on it: >=1.0.0, <1.0.0",
        ),
        ("packages:\n  - package: acme/nope\n    version: 1.0.0\n".to_string(), "packages.yml:2:5", "'acme/nope' is not on the dbt Hub"),
        ("packages:\n  - package: acme/utils\n    version: \">=2.0.0\"\n".to_string(), "packages.yml:2:5", "versions that run with dbt"),
        (format!("packages:\n  - git: {}/missing\n", base.display()), "packages.yml:2:5", "does not exist"),
        (
            format!("packages:\n  - git: {}\n    revision: no-such-tag\n", needs_old.display()),
            "packages.yml:2:5",
            "at revision no-such-tag",
        ),
        (
            format!("packages:\n  - git: {0}\n    revision: main\n  - git: {0}.git\n    revision: v9\n", needs_old.display()),
            "packages.yml:2:5",
            "at 2 revisions (main, v9)",
        ),
        ("packages:\n  - local: ../p\n".to_string(), "packages.yml:2:5", "the root project's own name"),
    ];
    for (yml, at, says) in cases {
        write(&root, "packages.yml", &yml);
        let _ = std::fs::remove_file(root.join("package-lock.yml"));
        let err = deps::install(&root, &options(&hub)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DepsError::At { .. }), "{text}");
        assert!(text.contains(at) && text.contains(says), "{yml}\n{text}");
        assert!(!root.join("package-lock.yml").exists(), "{yml}: no lock is written when resolution fails");
    }
}

#[test]
fn a_lock_written_by_dbt_is_followed_and_a_project_without_packages_installs_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hub = Hub::start();
    hub.publish("acme/utils", &[("1.0.0", "utils", json!([]), &[]), ("1.1.0", "utils", json!([]), &[])]);
    let root = base.join("p");
    write(&root, "dbt_project.yml", "name: p\npackages-install-path: vendor\n");
    write(&root, "packages.yml", "packages:\n  - package: acme/utils\n    version: [\">=1.0.0\"]\n");
    // As dbt-core writes it: the hash of this list, and 1.0.0 pinned though 1.1.0 is out.
    let hash = deps::spec::hash(&deps::spec::read_specs(&root, &Default::default()).unwrap().unwrap().specs);
    write(&root, "package-lock.yml", &format!("packages:\n- package: acme/utils\n  version: 1.0.0\nsha1_hash: {hash}\n"));
    let report = deps::install(&root, &options(&hub)).unwrap();
    assert!(!report.lock_written);
    assert_eq!(report.packages[0].name, "utils", "named from the package when the lock has no name");
    assert_eq!(report.packages[0].newer.as_deref(), Some("1.1.0"));
    assert!(read(root.join("vendor/utils/macros/version.sql")).contains("1.0.0"));

    write(&root, "packages.yml", "packages: []\n");
    let report = deps::install(&root, &options(&hub)).unwrap();
    assert!(report.packages.is_empty());
    assert_eq!(std::fs::read_dir(root.join("vendor")).unwrap().count(), 0);
}
