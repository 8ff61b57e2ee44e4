//! `profiles.yml`: which warehouse to connect to. Looked up as dbt does: `--profiles-dir`,
//! then `DBT_PROFILES_DIR`, then the project folder, then `~/.dbt/`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
use weir_core::Location;

use crate::error::ProjectError;
use crate::project::render_static;
use crate::yaml::{self, Node};

/// The chosen output of a profile, with every value rendered (`env_var()` resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub profile_name: String,
    pub name: String,
    /// The adapter: `duckdb` or `postgres`.
    pub adapter_type: String,
    pub threads: usize,
    /// Every field of the output, as written (rendered).
    pub fields: Map<String, J>,
    /// The profiles.yml this came from.
    pub file: PathBuf,
}

impl Target {
    pub fn field(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            J::String(s) => Some(s.clone()),
            J::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether stream jobs register their sink topics' schemas in the schema registry when
    /// a subject lacks them: the target's `auto_register_schemas`, else on, except on a
    /// target named `prod` or `production`, where schemas are registered on purpose
    /// (`weir registry register`) and a job whose output does not match one stops.
    pub fn auto_register_schemas(&self) -> bool {
        match self.fields.get("auto_register_schemas") {
            Some(J::Bool(b)) => *b,
            Some(J::String(s)) => !matches!(s.to_ascii_lowercase().as_str(), "false" | "no" | "off" | "0"),
            _ => !matches!(self.name.to_ascii_lowercase().as_str(), "prod" | "production"),
        }
    }

    /// The default schema models are built in.
    pub fn schema(&self) -> String {
        self.field("schema").unwrap_or_else(|| if self.adapter_type == "duckdb" { "main".into() } else { "public".into() })
    }

    /// The database name as dbt reports it (`target.database`). For DuckDB it is the file's
    /// stem (`dev.duckdb` -> `dev`) or `memory`, as dbt-duckdb names it.
    pub fn database(&self) -> String {
        if let Some(db) = self.field("database").or_else(|| self.field("dbname")) {
            return db;
        }
        if self.adapter_type == "duckdb" {
            return match self.field("path") {
                Some(p) if p != ":memory:" => {
                    Path::new(&p).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "memory".into())
                }
                _ => "memory".into(),
            };
        }
        "postgres".into()
    }

    /// `target` in Jinja: every field but secrets, plus the derived ones.
    pub fn to_jinja(&self) -> J {
        let mut m = Map::new();
        for (k, v) in &self.fields {
            if !matches!(k.as_str(), "password" | "pass") {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("name".into(), J::from(self.name.clone()));
        m.insert("target_name".into(), J::from(self.name.clone()));
        m.insert("profile_name".into(), J::from(self.profile_name.clone()));
        m.insert("type".into(), J::from(self.adapter_type.clone()));
        m.insert("schema".into(), J::from(self.schema()));
        m.insert("database".into(), J::from(self.database()));
        m.insert("threads".into(), J::from(self.threads));
        J::Object(m)
    }
}

/// Where to look for `profiles.yml`, in dbt's order.
pub fn profiles_dirs(explicit: Option<&Path>, project_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
        return dirs;
    }
    if let Ok(d) = std::env::var("DBT_PROFILES_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(project_dir.to_path_buf());
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".dbt"));
    }
    dirs
}

/// Reads the profile `profile_name` and picks `target` (or the profile's default target).
pub fn load_target(dirs: &[PathBuf], profile_name: &str, target: Option<&str>, cli_vars: &Map<String, J>) -> Result<Target, ProjectError> {
    let file = dirs.iter().map(|d| d.join("profiles.yml")).find(|p| p.exists()).ok_or_else(|| {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        ProjectError::Profile(format!(
            "no profiles.yml found (looked in: {}); create one with a '{profile_name}' profile, or pass --profiles-dir",
            looked.join(", ")
        ))
    })?;
    let text = std::fs::read_to_string(&file).map_err(|e| ProjectError::io(&file, e))?;
    let doc = yaml::parse(&file, &text)?.ok_or_else(|| ProjectError::invalid(Location::file(&file), "profiles.yml is empty"))?;
    let profile = doc.get(profile_name).ok_or_else(|| {
        let names: Vec<String> =
            doc.as_map().unwrap_or_default().iter().filter_map(|(k, _)| k.key_text()).filter(|k| k != "config").collect();
        ProjectError::Profile(format!(
            "{}: profile '{profile_name}' not found (profiles there: {})",
            file.display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
    })?;
    let render = |n: &Node| -> Result<Option<String>, ProjectError> {
        n.scalar_text().map(|s| render_static(&s, cli_vars).map_err(|m| ProjectError::invalid_at(n.location(&file), m, &text))).transpose()
    };
    let target_name = match target {
        Some(t) => t.to_string(),
        None => match profile.get("target") {
            Some(n) => render(n)?.unwrap_or_else(|| "dev".into()),
            None => "dev".into(),
        },
    };
    let outputs = profile
        .get("outputs")
        .ok_or_else(|| ProjectError::invalid_at(profile.location(&file), format!("profile '{profile_name}' has no 'outputs'"), &text))?;
    let output = outputs.get(&target_name).ok_or_else(|| {
        let names: Vec<String> = outputs.as_map().unwrap_or_default().iter().filter_map(|(k, _)| k.key_text()).collect();
        ProjectError::invalid_at(
            outputs.location(&file),
            format!("target '{target_name}' not found in profile '{profile_name}' (targets: {})", names.join(", ")),
            &text,
        )
    })?;
    let Some(entries) = output.as_map() else {
        return Err(ProjectError::invalid_at(output.location(&file), "a target must be a mapping", &text));
    };
    let mut fields = Map::new();
    for (k, v) in entries {
        let key = k.key_text().unwrap_or_default();
        let value = match &v.value {
            yaml::Value::Str(_) => J::String(render(v)?.unwrap_or_default()),
            _ => v.to_json(),
        };
        fields.insert(key, value);
    }
    let adapter_type = fields
        .get("type")
        .and_then(J::as_str)
        .map(str::to_string)
        .ok_or_else(|| ProjectError::invalid_at(output.location(&file), format!("target '{target_name}' has no 'type'"), &text))?;
    if !matches!(adapter_type.as_str(), "duckdb" | "postgres") {
        let loc = output.get("type").map(|n| n.location(&file)).unwrap_or_else(|| output.location(&file));
        return Err(ProjectError::invalid_at(
            loc,
            format!("target type '{adapter_type}' is not supported; Weir runs on 'duckdb' and 'postgres'"),
            &text,
        ));
    }
    let threads = match fields.get("threads") {
        Some(J::Number(n)) => n.as_u64().unwrap_or(1).max(1) as usize,
        Some(J::String(s)) => s.parse().unwrap_or(1),
        _ => 1,
    };
    Ok(Target { profile_name: profile_name.to_string(), name: target_name, adapter_type, threads, fields, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("profiles.yml"), text).unwrap();
        dir
    }

    #[test]
    fn picks_the_default_target_and_renders_env_vars() {
        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("WEIR_TEST_PROFILE_PATH", "x/dev.duckdb") };
        let dir = profiles(
            "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: \"{{ env_var('WEIR_TEST_PROFILE_PATH') }}\"\n      threads: 4\n",
        );
        let t = load_target(&[dir.path().to_path_buf()], "shop", None, &Map::new()).unwrap();
        assert_eq!(t.field("path").as_deref(), Some("x/dev.duckdb"));
        assert_eq!((t.database().as_str(), t.schema().as_str(), t.threads), ("dev", "main", 4));
    }

    #[test]
    fn a_missing_target_lists_the_ones_there() {
        let dir = profiles("shop:\n  outputs:\n    dev:\n      type: duckdb\n");
        let err = load_target(&[dir.path().to_path_buf()], "shop", Some("prod"), &Map::new()).unwrap_err().to_string();
        assert!(err.contains("target 'prod' not found") && err.contains("targets: dev"), "{err}");
    }

    #[test]
    fn an_unset_env_var_without_default_is_an_error_at_its_line() {
        let dir =
            profiles("shop:\n  outputs:\n    dev:\n      type: postgres\n      password: \"{{ env_var('WEIR_SURELY_UNSET_VAR') }}\"\n");
        let err = load_target(&[dir.path().to_path_buf()], "shop", None, &Map::new()).unwrap_err().to_string();
        assert!(err.contains("profiles.yml:5:17") && err.contains("WEIR_SURELY_UNSET_VAR"), "{err}");
    }
}
