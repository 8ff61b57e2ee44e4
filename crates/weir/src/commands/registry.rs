//! `weir registry subjects|show|check|register`: the schema registry for people, reading and
//! writing the same metadata store `weir serve` answers Confluent's clients from.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value as J, json};
use weir_registry::{Reference, Registered, Registry, SchemaRequest, SchemaType, VersionRef};
use weir_store::Store;

use crate::cli::{Global, LogFormat, RegistryCommand, SchemaFile};
use crate::output::Output;
use crate::workspace::{Error, project_dir, require_project, store_settings};

pub fn run(g: &Global, cmd: &RegistryCommand, out: &Arc<Output>) -> Result<u8, Error> {
    let root = project_dir(g);
    require_project(&root)?;
    let (url, schema) = store_settings(&root)?;
    let registry = Registry::new(Arc::new(Store::open(&url, &root, schema.as_deref())?));
    let json_out = out.format == LogFormat::Json;
    match cmd {
        RegistryCommand::Subjects { prefix, deleted } => {
            let subjects = registry.subjects(prefix.as_deref(), *deleted)?;
            if json_out {
                println!("{}", json!(subjects));
            } else if subjects.is_empty() {
                out.info("No subjects");
            } else {
                for s in &subjects {
                    let versions = registry.versions(s, *deleted)?;
                    let latest = registry.version(s, VersionRef::Latest, *deleted)?;
                    let level = registry.compatibility(Some(s), true)?;
                    println!(
                        "{s}  {} version{}, latest {} (id {}, {}), {}",
                        versions.len(),
                        if versions.len() == 1 { "" } else { "s" },
                        latest.version,
                        latest.id,
                        latest.schema_type.name(),
                        level.name()
                    );
                }
            }
            Ok(0)
        }
        RegistryCommand::Show { subject, version, id } => {
            let found = match (subject, id) {
                (_, Some(id)) => registry.schema(*id, subject.as_deref())?,
                (Some(s), None) => registry.version(s, VersionRef::parse(version.as_deref().unwrap_or("latest"))?, true)?,
                (None, None) => return Err("name a subject, or a schema with --id".into()),
            };
            print_schema(&found, json_out);
            Ok(0)
        }
        RegistryCommand::Check { subject, schema, version } => {
            let req = request(schema)?;
            let at = version.as_deref().map(VersionRef::parse).transpose()?;
            let messages = registry.check(subject, at, &req)?;
            let level = registry.compatibility(Some(subject), true)?;
            if json_out {
                println!("{}", json!({"is_compatible": messages.is_empty(), "level": level.name(), "messages": messages}));
            } else if messages.is_empty() {
                out.info(format!("{}: compatible with '{subject}' under {}", schema.file.display(), level.name()));
            } else {
                out.error(&format!("{}: incompatible with '{subject}' under {}:", schema.file.display(), level.name()));
                for m in &messages {
                    out.info(format!("  {m}"));
                }
            }
            Ok(if messages.is_empty() { 0 } else { 1 })
        }
        RegistryCommand::Register { subject, schema } => {
            let req = request(schema)?;
            let done = registry.register(subject, &req)?;
            if json_out {
                println!("{}", json!({"subject": done.subject, "version": done.version, "id": done.id}));
            } else {
                out.info(format!("'{subject}' version {} is schema id {}", done.version, done.id));
            }
            Ok(0)
        }
    }
}

/// A schema file as a registration: its type from `--type` or its extension (`.avsc`,
/// `.proto`, `.json`), its references from `--reference NAME=SUBJECT:VERSION`.
fn request(f: &SchemaFile) -> Result<SchemaRequest, Error> {
    let text = std::fs::read_to_string(&f.file).map_err(|e| format!("{}: {e}", f.file.display()))?;
    let kind = match &f.schema_type {
        Some(t) => SchemaType::parse(t).ok_or_else(|| format!("--type {t}: avro, json or protobuf"))?,
        None => type_of(&f.file)?,
    };
    let mut references = vec![];
    for r in &f.references {
        let parsed = r.split_once('=').and_then(|(name, target)| {
            let (subject, version) = target.rsplit_once(':')?;
            Some(Reference { name: name.to_string(), subject: subject.to_string(), version: version.parse().ok()? })
        });
        references.push(parsed.ok_or_else(|| format!("--reference {r}: expected NAME=SUBJECT:VERSION"))?);
    }
    Ok(SchemaRequest { schema: text, schema_type: Some(kind.name().to_string()), references, id: None, version: None })
}

fn type_of(file: &Path) -> Result<SchemaType, Error> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("avsc") => Ok(SchemaType::Avro),
        Some("proto") => Ok(SchemaType::Protobuf),
        Some("json") => Ok(SchemaType::Json),
        _ => Err(format!("{}: say --type avro, json or protobuf (the extension does not tell)", file.display()).into()),
    }
}

fn print_schema(r: &Registered, json_out: bool) {
    let body = serde_json::from_str::<J>(&r.schema).ok();
    if json_out {
        println!(
            "{}",
            json!({"subject": r.subject, "version": r.version, "id": r.id, "schemaType": r.schema_type.name(), "references": r.references, "schema": r.schema})
        );
        return;
    }
    println!("subject {} version {} id {} ({})", r.subject, r.version, r.id, r.schema_type.name());
    for reference in &r.references {
        println!("reference {} = {} version {}", reference.name, reference.subject, reference.version);
    }
    match body {
        Some(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| r.schema.clone())),
        None => println!("{}", r.schema),
    }
}
