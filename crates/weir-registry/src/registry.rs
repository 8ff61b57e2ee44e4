//! The registry's operations, each answering as Confluent's registry does (the same
//! results, the same error codes), over the metadata store.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use weir_store::{NewSchema, Placement, RegistryTx, Store, StoreError, StoredSchema, SubjectVersion};

use crate::{Level, Mode, Parsed, Reference, SchemaType, check_level};

/// A registry over one metadata store; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Registry {
    store: Arc<Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("store", &self.store.description()).finish()
    }
}

/// A schema as clients send it to register, look up or check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    pub schema: String,
    #[serde(default)]
    pub schema_type: Option<String>,
    #[serde(default)]
    pub references: Vec<Reference>,
    /// The id to keep, in IMPORT mode.
    #[serde(default)]
    pub id: Option<i64>,
    /// The version to keep, in IMPORT mode.
    #[serde(default)]
    pub version: Option<i64>,
}

/// A version of a subject with its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub subject: String,
    pub version: i64,
    pub id: i64,
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
}

/// A version as paths name it: a number, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(i64),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<VersionRef, Error> {
        match s {
            "latest" | "-1" => Ok(VersionRef::Latest),
            _ => match s.parse::<i64>() {
                Ok(n) if (1..=i32::MAX as i64).contains(&n) => Ok(VersionRef::Number(n)),
                _ => Err(Error::InvalidVersion(s.to_string())),
            },
        }
    }
}

/// What went wrong, each with Confluent's error code (see [`Error::code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {1} of subject '{0}' not found.")]
    VersionNotFound(String, String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i64),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i64),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    NoSubjectCompatibility(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    NoSubjectMode(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", messages.join("; "))]
    Incompatible { subject: String, messages: Vec<String> },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level '{0}'. Valid values are none, backward, backward_transitive, forward, forward_transitive, full and full_transitive"
    )]
    InvalidCompatibility(String),
    #[error("Invalid mode '{0}'. Valid values are READWRITE, READONLY and IMPORT")]
    InvalidMode(String),
    #[error("{0}")]
    NotPermitted(String),
    #[error("One or more references exist to the schema {{subject={0}, version={1}}}: schemas {2:?}")]
    ReferenceExists(String, i64, Vec<i64>),
    #[error(
        "subject '{subject}' has no version with the schema written, and auto-registration is off: register it \
         (`weir registry register {subject} FILE`) or turn `auto_register` on; the schema: {schema}"
    )]
    NotRegistered { subject: String, schema: String },
    #[error("Error in the backend data store: {0}")]
    Store(#[from] StoreError),
}

impl Error {
    /// Confluent's error code: the HTTP status followed by a detail, or 409 alone.
    pub fn code(&self) -> u32 {
        match self {
            Error::SubjectNotFound(_) => 40401,
            Error::VersionNotFound(..) => 40402,
            Error::SchemaNotFound(_) | Error::NotRegistered { .. } => 40403,
            Error::SubjectSoftDeleted(_) => 40404,
            Error::SubjectNotSoftDeleted(_) => 40405,
            Error::VersionSoftDeleted(..) => 40406,
            Error::VersionNotSoftDeleted(..) => 40407,
            Error::NoSubjectCompatibility(_) => 40408,
            Error::NoSubjectMode(_) => 40409,
            Error::Incompatible { .. } => 409,
            Error::InvalidSchema(_) => 42201,
            Error::InvalidVersion(_) => 42202,
            Error::InvalidCompatibility(_) => 42203,
            Error::InvalidMode(_) => 42204,
            Error::NotPermitted(_) => 42205,
            Error::ReferenceExists(..) => 42206,
            Error::Store(_) => 50001,
        }
    }

    /// The HTTP status the code stands for.
    pub fn status(&self) -> u16 {
        match self.code() {
            409 => 409,
            c => (c / 100) as u16,
        }
    }
}

const COMPATIBILITY: &str = "compatibility";
const MODE: &str = "mode";

impl Registry {
    pub fn new(store: Arc<Store>) -> Registry {
        Registry { store }
    }

    /// The schema with `id`, while some version (deleted or not) names it; with `subject`,
    /// described as that subject's version when it has one.
    pub fn schema(&self, id: i64, subject: Option<&str>) -> Result<Registered, Error> {
        let s = self.store.registry_schema(id)?.ok_or_else(|| Error::SchemaNotFound(id.to_string()))?;
        let uses = self.store.registry_schema_versions(id)?;
        // A subject names where to look, as Confluent's does (its context): an id is global,
        // so a deserializer whose subject strategy differs from the writer's still finds it.
        let version = subject
            .and_then(|subject| uses.iter().find(|v| v.subject == subject))
            .or_else(|| uses.first())
            .ok_or_else(|| Error::SchemaNotFound(id.to_string()))?;
        Ok(registered(version, s))
    }

    /// A schema's text in a format clients ask for: `serialized` gives a Protobuf schema as
    /// a base64 `FileDescriptorProto`; anything else, the text as registered.
    pub fn formatted(&self, r: &Registered, format: Option<&str>) -> Result<String, Error> {
        if format != Some("serialized") || r.schema_type != SchemaType::Protobuf {
            return Ok(r.schema.clone());
        }
        let deps = dependencies(&r.references, &mut |s, v| self.stored(s, v), &mut vec![])?;
        let (parsed, _) = Parsed::parse(r.schema_type, &r.schema, &deps).map_err(|e| Error::InvalidSchema(e.message))?;
        Ok(parsed.serialized().unwrap_or_else(|| r.schema.clone()))
    }

    /// The texts of the schemas `r` refers to, and theirs, dependencies first (name, text).
    pub fn references_of(&self, r: &Registered) -> Result<Vec<(String, String)>, Error> {
        dependencies(&r.references, &mut |s, v| self.stored(s, v), &mut vec![])
    }

    /// The subjects and versions that name schema `id`.
    pub fn schema_versions(&self, id: i64, deleted: bool) -> Result<Vec<SubjectVersion>, Error> {
        self.store.registry_schema(id)?.ok_or_else(|| Error::SchemaNotFound(id.to_string()))?;
        Ok(self.store.registry_schema_versions(id)?.into_iter().filter(|v| deleted || !v.deleted).collect())
    }

    /// The subjects, those starting with `prefix` when given; soft-deleted ones with `deleted`.
    pub fn subjects(&self, prefix: Option<&str>, deleted: bool) -> Result<Vec<String>, Error> {
        let all = self.store.registry_subjects(deleted)?;
        Ok(all.into_iter().filter(|s| prefix.is_none_or(|p| s.starts_with(p))).collect())
    }

    /// A subject's version numbers, oldest first.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i64>, Error> {
        let versions = self.live(subject, deleted)?;
        Ok(versions.iter().map(|v| v.version).collect())
    }

    /// One version of a subject with its schema.
    pub fn version(&self, subject: &str, at: VersionRef, deleted: bool) -> Result<Registered, Error> {
        let versions = self.live(subject, deleted)?;
        let v = pick(subject, &versions, at)?;
        let s = self.store.registry_schema_any(v.schema_id)?.ok_or_else(|| Error::SchemaNotFound(v.schema_id.to_string()))?;
        Ok(registered(v, s))
    }

    /// The ids of the schemas that refer to a version.
    pub fn referenced_by(&self, subject: &str, at: VersionRef) -> Result<Vec<i64>, Error> {
        let v = self.version(subject, at, true)?;
        Ok(self.store.registry_referenced_by(subject, v.version)?)
    }

    /// Registers a schema under `subject`: the version it already has there, or a new
    /// version that passes the subject's compatibility level (none is checked in IMPORT).
    pub fn register(&self, subject: &str, req: &SchemaRequest) -> Result<Registered, Error> {
        valid_subject(subject)?;
        let kind = schema_type(req)?;
        let (parsed, new) = self.prepare(kind, req)?;
        self.store.registry_write(|tx| Ok(register_in(tx, subject, req, kind, &parsed, &new)))?
    }
    /// The version of `subject` holding this schema.
    pub fn lookup(&self, subject: &str, req: &SchemaRequest, deleted: bool) -> Result<Registered, Error> {
        let versions = self.live(subject, deleted)?;
        let kind = schema_type(req)?;
        let (_, new) = self.prepare(kind, req)?;
        let ids = self.store.registry_ids_of(&new)?;
        let Some(v) = versions.iter().rev().find(|v| ids.contains(&v.schema_id)) else {
            return Err(Error::SchemaNotFound(format!("not found under this subject: {subject}")));
        };
        let s = self.store.registry_schema_any(v.schema_id)?.ok_or_else(|| Error::SchemaNotFound(v.schema_id.to_string()))?;
        Ok(registered(v, s))
    }

    /// Whether the schema passes the subject's level against one version (or, with `None`,
    /// against those the level names); the reasons when it does not.
    pub fn check(&self, subject: &str, at: Option<VersionRef>, req: &SchemaRequest) -> Result<Vec<String>, Error> {
        let kind = schema_type(req)?;
        let (parsed, _) = self.prepare(kind, req)?;
        let level = self.compatibility(Some(subject), true)?;
        let versions: Vec<SubjectVersion> = match self.live(subject, false) {
            Ok(v) => v,
            // A subject with no versions yet takes any schema.
            Err(Error::SubjectNotFound(_)) if at.is_none() => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let chosen: Vec<&SubjectVersion> = match at {
            Some(at) => vec![pick(subject, &versions, at)?],
            None => checked_against(level, &versions),
        };
        let mut previous = vec![];
        for v in chosen {
            let stored = self.store.registry_schema_any(v.schema_id)?.ok_or_else(|| Error::SchemaNotFound(v.schema_id.to_string()))?;
            previous.push((v.version, reparse(&stored, &mut |s, v| self.stored(s, v))?));
        }
        // Against one named version, the level's direction applies to it alone.
        let level = if at.is_some() { non_transitive(level) } else { level };
        Ok(check_level(level, &parsed, &previous))
    }

    /// Soft-deletes a subject's versions (or, once they are, deletes them for good); gives
    /// the versions deleted.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i64>, Error> {
        self.writable(Some(subject))?;
        let subject = subject.to_string();
        self.store
            .registry_write(move |tx| {
                let versions = tx.versions(&subject)?;
                if versions.is_empty() {
                    return Ok(Err(Error::SubjectNotFound(subject.clone())));
                }
                let live: Vec<&SubjectVersion> = versions.iter().filter(|v| !v.deleted).collect();
                if permanent && !live.is_empty() {
                    return Ok(Err(Error::SubjectNotSoftDeleted(subject.clone())));
                }
                if !permanent && live.is_empty() {
                    return Ok(Err(Error::SubjectSoftDeleted(subject.clone())));
                }
                let targets: Vec<i64> =
                    if permanent { versions.iter().map(|v| v.version).collect() } else { live.iter().map(|v| v.version).collect() };
                for v in &targets {
                    let refs = tx.referenced_by(&subject, *v)?;
                    if !refs.is_empty() {
                        return Ok(Err(Error::ReferenceExists(subject.clone(), *v, refs)));
                    }
                }
                for v in &targets {
                    tx.delete_version(&subject, *v, permanent)?;
                }
                if permanent {
                    tx.delete_setting(Some(&subject), COMPATIBILITY)?;
                    tx.delete_setting(Some(&subject), MODE)?;
                }
                Ok(Ok(targets))
            })
            .map_err(Error::from)?
    }

    /// Soft-deletes one version (or, once it is, deletes it for good); gives its number.
    pub fn delete_version(&self, subject: &str, at: VersionRef, permanent: bool) -> Result<i64, Error> {
        self.writable(Some(subject))?;
        let subject = subject.to_string();
        self.store
            .registry_write(move |tx| {
                let versions = tx.versions(&subject)?;
                if versions.is_empty() {
                    return Ok(Err(Error::SubjectNotFound(subject.clone())));
                }
                // `latest` names the latest live version; a number may name a deleted one.
                let v = match at {
                    VersionRef::Latest => versions.iter().rev().find(|v| !v.deleted),
                    VersionRef::Number(n) => versions.iter().find(|v| v.version == n),
                };
                let Some(v) = v else { return Ok(Err(Error::VersionNotFound(subject.clone(), render(at)))) };
                if permanent && !v.deleted {
                    return Ok(Err(Error::VersionNotSoftDeleted(subject.clone(), v.version)));
                }
                if !permanent && v.deleted {
                    return Ok(Err(Error::VersionSoftDeleted(subject.clone(), v.version)));
                }
                let refs = tx.referenced_by(&subject, v.version)?;
                if !refs.is_empty() {
                    return Ok(Err(Error::ReferenceExists(subject.clone(), v.version, refs)));
                }
                tx.delete_version(&subject, v.version, permanent)?;
                Ok(Ok(v.version))
            })
            .map_err(Error::from)?
    }

    /// The compatibility level of `subject` (the global one with `None`); a subject with
    /// none of its own answers 40408 unless `default_to_global`.
    pub fn compatibility(&self, subject: Option<&str>, default_to_global: bool) -> Result<Level, Error> {
        let value = self.setting(subject, COMPATIBILITY, default_to_global, Error::NoSubjectCompatibility)?;
        Ok(value.and_then(|l| Level::parse(&l)).unwrap_or_default())
    }

    /// A setting of `subject`, else (with `default_to_global`, or for the global one) the
    /// global one; `None` when neither is set. A subject without its own answers `missing`.
    fn setting(
        &self,
        subject: Option<&str>,
        name: &str,
        default_to_global: bool,
        missing: fn(String) -> Error,
    ) -> Result<Option<String>, Error> {
        if let Some(s) = subject {
            match self.store.registry_setting(Some(s), name)? {
                Some(v) => return Ok(Some(v)),
                None if !default_to_global => return Err(missing(s.to_string())),
                None => {}
            }
        }
        Ok(self.store.registry_setting(None, name)?)
    }

    pub fn set_compatibility(&self, subject: Option<&str>, level: &str) -> Result<Level, Error> {
        let level = Level::parse(level).ok_or_else(|| Error::InvalidCompatibility(level.to_string()))?;
        if let Some(s) = subject {
            valid_subject(s)?;
        }
        let subject = subject.map(str::to_string);
        self.store.registry_write(move |tx| Ok(Ok::<_, Error>(tx.put_setting(subject.as_deref(), COMPATIBILITY, level.name())?)))??;
        Ok(level)
    }

    /// Forgets a subject's level (or resets the global one); gives the level it had.
    pub fn delete_compatibility(&self, subject: Option<&str>) -> Result<Level, Error> {
        let before = self.compatibility(subject, subject.is_none())?;
        let subject = subject.map(str::to_string);
        self.store.registry_write(move |tx| Ok(Ok::<_, Error>(tx.delete_setting(subject.as_deref(), COMPATIBILITY)?)))??;
        Ok(before)
    }

    /// The mode of `subject` (the global one with `None`); 40409 for a subject with none
    /// of its own unless `default_to_global`.
    pub fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<Mode, Error> {
        let value = self.setting(subject, MODE, default_to_global, Error::NoSubjectMode)?;
        Ok(value.and_then(|m| Mode::parse(&m)).unwrap_or_default())
    }

    /// Sets a mode; IMPORT only on an empty registry (or subject) unless `force`.
    pub fn set_mode(&self, subject: Option<&str>, mode: &str, force: bool) -> Result<Mode, Error> {
        let mode = Mode::parse(mode).ok_or_else(|| Error::InvalidMode(mode.to_string()))?;
        let subject = subject.map(str::to_string);
        self.store
            .registry_write(move |tx| {
                if mode == Mode::Import && !force {
                    let empty = match &subject {
                        Some(s) => tx.versions(s)?.is_empty(),
                        None => tx.is_empty()?,
                    };
                    if !empty {
                        return Ok(Err(Error::NotPermitted("Cannot import since found existing subjects".into())));
                    }
                }
                tx.put_setting(subject.as_deref(), MODE, mode.name())?;
                Ok(Ok(mode))
            })
            .map_err(Error::from)?
    }

    pub fn delete_mode(&self, subject: Option<&str>) -> Result<Mode, Error> {
        let before = self.mode(subject, subject.is_none())?;
        let subject = subject.map(str::to_string);
        self.store.registry_write(move |tx| Ok(Ok::<_, Error>(tx.delete_setting(subject.as_deref(), MODE)?)))??;
        Ok(before)
    }

    /// Parses a request's schema with its references and fingerprints it.
    fn prepare(&self, kind: SchemaType, req: &SchemaRequest) -> Result<(Parsed, NewSchema), Error> {
        let deps = dependencies(&req.references, &mut |s, v| self.stored(s, v), &mut vec![])?;
        let (parsed, normal) = Parsed::parse(kind, &req.schema, &deps).map_err(|e| Error::InvalidSchema(e.message))?;
        let new = NewSchema {
            schema_type: kind.name().to_string(),
            fingerprint: fingerprint(kind, &normal),
            schema: normal,
            references: req.references.clone(),
        };
        Ok((parsed, new))
    }

    /// The schema of `subject` version `version`, deleted or not, read from the store.
    fn stored(&self, subject: &str, version: i64) -> Result<Option<StoredSchema>, Error> {
        let found = self.store.registry_versions(subject)?.into_iter().find(|v| v.version == version);
        Ok(match found {
            Some(v) => self.store.registry_schema_any(v.schema_id)?,
            None => None,
        })
    }

    /// The subject's versions (live ones, or all with `deleted`); 40401 when there are none.
    fn live(&self, subject: &str, deleted: bool) -> Result<Vec<SubjectVersion>, Error> {
        let versions: Vec<SubjectVersion> = self.store.registry_versions(subject)?.into_iter().filter(|v| deleted || !v.deleted).collect();
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    fn writable(&self, subject: Option<&str>) -> Result<(), Error> {
        if self.mode(subject, true)? == Mode::ReadOnly {
            return Err(Error::NotPermitted(format!("Subject {} is in read-only mode", subject.unwrap_or("(global)"))));
        }
        Ok(())
    }
}

/// A registration inside the registry's write transaction: the settings, the subject's
/// versions and the check all read what the write will be added to.
fn register_in(
    tx: &mut RegistryTx<'_>,
    subject: &str,
    req: &SchemaRequest,
    kind: SchemaType,
    parsed: &Parsed,
    new: &NewSchema,
) -> Result<Registered, Error> {
    let setting = |tx: &mut RegistryTx<'_>, name: &str| -> Result<Option<String>, StoreError> {
        Ok(match tx.setting(Some(subject), name)? {
            Some(v) => Some(v),
            None => tx.setting(None, name)?,
        })
    };
    let level = setting(tx, COMPATIBILITY)?.and_then(|l| Level::parse(&l)).unwrap_or_default();
    let mode = setting(tx, MODE)?.and_then(|m| Mode::parse(&m)).unwrap_or_default();
    if mode == Mode::ReadOnly {
        return Err(Error::NotPermitted(format!("Subject {subject} is in read-only mode")));
    }
    let versions = tx.versions(subject)?;
    let existing = tx.find(new)?;
    let made = |v: SubjectVersion| Registered {
        subject: subject.to_string(),
        version: v.version,
        id: v.schema_id,
        schema_type: kind,
        schema: new.schema.clone(),
        references: new.references.clone(),
    };
    if mode == Mode::Import {
        let id = req.id.ok_or_else(|| Error::NotPermitted("a schema registered in IMPORT mode must give its id".into()))?;
        if let Some(other) = tx.schema(id)?
            && Some(other.id) != existing
        {
            return Err(Error::NotPermitted(format!("Overwrite new schema with id {id} is not permitted.")));
        }
        if let Some(version) = req.version
            && let Some(v) = versions.iter().find(|v| v.version == version)
        {
            return if v.schema_id == id {
                Ok(made(v.clone()))
            } else {
                Err(Error::NotPermitted(format!("Version {version} of subject {subject} already holds schema {}", v.schema_id)))
            };
        }
        let v = tx.add_version(subject, new, Placement { id: Some(id), version: req.version })?;
        return Ok(made(v));
    }
    if req.id.is_some() || req.version.is_some() {
        return Err(Error::NotPermitted("a schema's id and version may be given only in IMPORT mode".into()));
    }
    if let Some(v) = versions.iter().find(|v| !v.deleted && Some(v.schema_id) == existing) {
        return Ok(made(v.clone()));
    }
    if level != Level::None {
        let mut previous = vec![];
        for v in checked_against(level, &versions) {
            let stored = tx.schema(v.schema_id)?.ok_or_else(|| Error::SchemaNotFound(v.schema_id.to_string()))?;
            // Inside the write the store is held: references are read through it.
            let mut lookup = |subject: &str, version: i64| -> Result<Option<StoredSchema>, Error> {
                let found = tx.versions(subject)?.into_iter().find(|v| v.version == version);
                Ok(match found {
                    Some(v) => tx.schema(v.schema_id)?,
                    None => None,
                })
            };
            previous.push((v.version, reparse(&stored, &mut lookup)?));
        }
        let messages = check_level(level, parsed, &previous);
        if !messages.is_empty() {
            return Err(Error::Incompatible { subject: subject.to_string(), messages });
        }
    }
    let v = tx.add_version(subject, new, Placement { id: None, version: None })?;
    Ok(made(v))
}

/// Reads a version's schema: from the store, or through the write transaction holding it.
type Lookup<'a> = dyn FnMut(&str, i64) -> Result<Option<StoredSchema>, Error> + 'a;

/// A stored schema parsed again (to compare a new one with).
fn reparse(s: &StoredSchema, lookup: &mut Lookup<'_>) -> Result<Parsed, Error> {
    let kind = SchemaType::parse(&s.schema_type).unwrap_or_default();
    let deps = dependencies(&s.references, lookup, &mut vec![])?;
    let (parsed, _) =
        Parsed::parse(kind, &s.schema, &deps).map_err(|e| Error::InvalidSchema(format!("stored schema {}: {}", s.id, e.message)))?;
    Ok(parsed)
}

/// The texts of `refs` and everything they refer to, dependencies first.
fn dependencies(refs: &[Reference], lookup: &mut Lookup<'_>, visiting: &mut Vec<(String, i64)>) -> Result<Vec<(String, String)>, Error> {
    let mut out: Vec<(String, String)> = vec![];
    for r in refs {
        let key = (r.subject.clone(), r.version);
        if visiting.contains(&key) {
            continue;
        }
        visiting.push(key);
        let Some(target) = lookup(&r.subject, r.version)? else {
            return Err(Error::InvalidSchema(format!("reference {}: subject '{}' has no version {}", r.name, r.subject, r.version)));
        };
        for d in dependencies(&target.references, lookup, visiting)? {
            if !out.iter().any(|(n, _)| n == &d.0) {
                out.push(d);
            }
        }
        if !out.iter().any(|(n, _)| n == &r.name) {
            out.push((r.name.clone(), target.schema));
        }
    }
    Ok(out)
}

fn schema_type(req: &SchemaRequest) -> Result<SchemaType, Error> {
    match &req.schema_type {
        None => Ok(SchemaType::Avro),
        Some(t) => SchemaType::parse(t).ok_or_else(|| Error::InvalidSchema(format!("unknown schema type '{t}': AVRO, JSON or PROTOBUF"))),
    }
}

fn valid_subject(subject: &str) -> Result<(), Error> {
    if subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(Error::NotPermitted(format!("'{subject}' is not a valid subject name")));
    }
    Ok(())
}

fn pick<'v>(subject: &str, versions: &'v [SubjectVersion], at: VersionRef) -> Result<&'v SubjectVersion, Error> {
    match at {
        VersionRef::Latest => versions.last(),
        VersionRef::Number(n) => versions.iter().find(|v| v.version == n),
    }
    .ok_or_else(|| Error::VersionNotFound(subject.to_string(), render(at)))
}

fn render(at: VersionRef) -> String {
    match at {
        VersionRef::Latest => "latest".into(),
        VersionRef::Number(n) => n.to_string(),
    }
}

/// The live versions a level checks a new schema against: all of them if it is
/// transitive, else the latest (only those are parsed again).
fn checked_against(level: Level, versions: &[SubjectVersion]) -> Vec<&SubjectVersion> {
    let mut live = versions.iter().filter(|v| !v.deleted);
    if level.transitive() { live.collect() } else { live.next_back().into_iter().collect() }
}

fn non_transitive(level: Level) -> Level {
    match level {
        Level::BackwardTransitive => Level::Backward,
        Level::ForwardTransitive => Level::Forward,
        Level::FullTransitive => Level::Full,
        other => other,
    }
}

fn registered(v: &SubjectVersion, s: StoredSchema) -> Registered {
    Registered {
        subject: v.subject.clone(),
        version: v.version,
        id: s.id,
        schema_type: SchemaType::parse(&s.schema_type).unwrap_or_default(),
        schema: s.schema,
        references: s.references,
    }
}

/// Two registrations are one schema when their type and normalised text agree (references
/// are compared beside it).
fn fingerprint(kind: SchemaType, normal: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.name());
    h.update([0]);
    h.update(normal);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
