//! The compatibility table: per format, each change with the answer its specification gives
//! for reading old data with the new schema (backward) and new data with the old (forward),
//! checked under every level; then the registry's operations on a real store.

use std::sync::Arc;

use super::*;

/// (change, old schema, new schema, new reads old, old reads new)
type Case = (&'static str, String, String, bool, bool);

fn avro_record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"User","namespace":"shop","fields":[{{"name":"id","type":"long"}}{fields}]}}"#)
}

fn avro_cases() -> Vec<Case> {
    let base = avro_record(r#",{"name":"email","type":"string"}"#);
    vec![
        (
            "field added with a default",
            base.clone(),
            avro_record(r#",{"name":"email","type":"string"},{"name":"age","type":"int","default":0}"#),
            true,
            true,
        ),
        (
            "field added without a default",
            base.clone(),
            avro_record(r#",{"name":"email","type":"string"},{"name":"age","type":"int"}"#),
            false,
            true,
        ),
        ("field with a default removed", avro_record(r#",{"name":"email","type":"string","default":""}"#), avro_record(""), true, true),
        ("field without a default removed", base.clone(), avro_record(""), true, false),
        ("field renamed with an alias", base.clone(), avro_record(r#",{"name":"mail","aliases":["email"],"type":"string"}"#), true, false),
        ("field renamed without an alias", base.clone(), avro_record(r#",{"name":"mail","type":"string"}"#), false, false),
        ("int promoted to long", avro_record(r#",{"name":"n","type":"int"}"#), avro_record(r#",{"name":"n","type":"long"}"#), true, false),
        ("string to int", avro_record(r#",{"name":"n","type":"string"}"#), avro_record(r#",{"name":"n","type":"int"}"#), false, false),
        (
            "enum symbol added",
            avro_record(r#",{"name":"s","type":{"type":"enum","name":"S","symbols":["A","B"]}}"#),
            avro_record(r#",{"name":"s","type":{"type":"enum","name":"S","symbols":["A","B","C"]}}"#),
            true,
            false,
        ),
        (
            "enum symbol added, old reader has a default",
            avro_record(r#",{"name":"s","type":{"type":"enum","name":"S","symbols":["A","B"],"default":"A"}}"#),
            avro_record(r#",{"name":"s","type":{"type":"enum","name":"S","symbols":["A","B","C"],"default":"A"}}"#),
            true,
            true,
        ),
        (
            "union widened",
            avro_record(r#",{"name":"u","type":["null","string"]}"#),
            avro_record(r#",{"name":"u","type":["null","string","int"]}"#),
            true,
            false,
        ),
        (
            "field made nullable",
            avro_record(r#",{"name":"u","type":"string"}"#),
            avro_record(r#",{"name":"u","type":["null","string"]}"#),
            true,
            false,
        ),
        (
            "record renamed with an alias",
            base.clone(),
            base.replace(r#""name":"User""#, r#""name":"Person","aliases":["shop.User"]"#),
            true,
            false,
        ),
    ]
}

fn json_obj(props: &str, required: &str, closed: bool) -> String {
    let extra = if closed { r#","additionalProperties":false"# } else { "" };
    format!(r#"{{"type":"object","properties":{{"id":{{"type":"integer"}}{props}}},"required":["id"{required}]{extra}}}"#)
}

fn json_cases() -> Vec<Case> {
    vec![
        ("optional property added, closed model", json_obj("", "", true), json_obj(r#","age":{"type":"integer"}"#, "", true), true, false),
        ("optional property added, open model", json_obj("", "", false), json_obj(r#","age":{"type":"integer"}"#, "", false), false, true),
        (
            "required property added, closed model",
            json_obj("", "", true),
            json_obj(r#","age":{"type":"integer"}"#, r#","age""#, true),
            false,
            false,
        ),
        ("property removed, open model", json_obj(r#","age":{"type":"integer"}"#, "", false), json_obj("", "", false), true, false),
        ("property removed, closed model", json_obj(r#","age":{"type":"integer"}"#, "", true), json_obj("", "", true), false, true),
        (
            "integer widened to number",
            json_obj(r#","n":{"type":"integer"}"#, "", true),
            json_obj(r#","n":{"type":"number"}"#, "", true),
            true,
            false,
        ),
        (
            "enum value added",
            json_obj(r#","s":{"enum":["a","b"]}"#, "", true),
            json_obj(r#","s":{"enum":["a","b","c"]}"#, "", true),
            true,
            false,
        ),
        (
            "maxLength decreased",
            json_obj(r#","s":{"type":"string","maxLength":10}"#, "", true),
            json_obj(r#","s":{"type":"string","maxLength":5}"#, "", true),
            false,
            true,
        ),
        ("model closed", json_obj("", "", false), json_obj("", "", true), false, true),
    ]
}

fn proto(body: &str) -> String {
    format!("syntax = \"proto3\";\npackage shop;\n\nmessage User {{\n{body}\n}}\n")
}

fn proto_cases() -> Vec<Case> {
    let base = proto("  int64 id = 1;\n  string email = 2;");
    vec![
        ("field added", base.clone(), proto("  int64 id = 1;\n  string email = 2;\n  int32 age = 3;"), true, true),
        ("field removed", base.clone(), proto("  int64 id = 1;"), true, true),
        ("field renamed", base.clone(), proto("  int64 id = 1;\n  string mail = 2;"), true, true),
        ("field renumbered", base.clone(), proto("  int64 id = 1;\n  string email = 3;"), false, false),
        ("int64 to int32 (same wire type)", base.clone(), proto("  int32 id = 1;\n  string email = 2;"), true, true),
        ("int64 to string", base.clone(), proto("  string id = 1;\n  string email = 2;"), false, false),
        ("reserved number reused", proto("  int64 id = 1;\n  reserved 2;"), proto("  int64 id = 1;\n  int32 age = 2;"), false, true),
        ("message removed", format!("{base}\nmessage Order {{\n  int64 id = 1;\n}}\n"), base.clone(), false, true),
        (
            "map value type changed",
            proto("  int64 id = 1;\n  map<string, int64> counts = 2;"),
            proto("  int64 id = 1;\n  map<string, string> counts = 2;"),
            false,
            false,
        ),
        (
            "two fields moved into a oneof",
            proto("  int64 id = 1;\n  string email = 2;\n  string phone = 3;"),
            proto("  int64 id = 1;\n  oneof contact {\n    string email = 2;\n    string phone = 3;\n  }"),
            false,
            true,
        ),
    ]
}

fn parse(kind: SchemaType, text: &str) -> Parsed {
    match Parsed::parse(kind, text, &[]) {
        Ok((p, _)) => p,
        Err(e) => panic!("{text}\ndoes not parse: {}", e.message),
    }
}

#[test]
fn every_case_gets_its_specifications_answer_under_every_level() {
    for (kind, cases) in [(SchemaType::Avro, avro_cases()), (SchemaType::Json, json_cases()), (SchemaType::Protobuf, proto_cases())] {
        for (change, old, new, backward, forward) in cases {
            let (old, new) = (parse(kind, &old), parse(kind, &new));
            assert_eq!(new.can_read(&old).is_empty(), backward, "{kind:?} {change}: new reads old: {:?}", new.can_read(&old));
            assert_eq!(old.can_read(&new).is_empty(), forward, "{kind:?} {change}: old reads new: {:?}", old.can_read(&new));
            for level in Level::ALL {
                let expected = (!level.backward() || backward) && (!level.forward() || forward);
                let messages = check_level(level, &new, &[(1, old.clone())]);
                assert_eq!(messages.is_empty(), expected, "{kind:?} {change} under {}: {messages:?}", level.name());
            }
        }
    }
}

#[test]
fn transitive_levels_check_every_version_and_the_others_only_the_latest() {
    let v1 = parse(SchemaType::Avro, &avro_record(""));
    let v2 = parse(SchemaType::Avro, &avro_record(r#",{"name":"age","type":"int","default":0}"#));
    // Drops the default: reads v2's data, not v1's (which has no age).
    let v3 = parse(SchemaType::Avro, &avro_record(r#",{"name":"age","type":"int"}"#));
    let history = [(1, v1), (2, v2)];
    assert!(check_level(Level::Backward, &v3, &history).is_empty());
    let messages = check_level(Level::BackwardTransitive, &v3, &history);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].starts_with("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/age"), "{}", messages[0]);
    assert!(messages[0].ends_with("written with version 1)"), "{}", messages[0]);
}

#[test]
fn a_refusal_names_the_rule_the_place_and_the_fields() {
    let old = parse(SchemaType::Protobuf, &proto("  int64 id = 1;\n  string email = 2;"));
    let new = parse(SchemaType::Protobuf, &proto("  string id = 1;\n  string email = 2;"));
    let breaks = new.can_read(&old);
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].to_string(), "FIELD_SCALAR_KIND_CHANGED at #/User/1: field id is string, was int64: they differ on the wire");
    let old = parse(SchemaType::Json, &json_obj("", "", false));
    let new = parse(SchemaType::Json, &json_obj(r#","age":{"type":"integer"}"#, "", false));
    assert_eq!(
        new.can_read(&old)[0].to_string(),
        "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/age: the writer's open model may already carry 'age' with any value"
    );
}

#[test]
fn invalid_schemas_say_where() {
    let e = Parsed::parse(SchemaType::Avro, "{\"type\": \"record\",\n \"name\": }", &[]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(10)), "{}", e.message);
    let e = Parsed::parse(SchemaType::Avro, r#"{"type":"record","name":"R","fields":[{"name":"a","type":"strin"}]}"#, &[]).unwrap_err();
    assert!(e.message.contains("strin"), "{}", e.message);
    let e = Parsed::parse(SchemaType::Protobuf, "syntax = \"proto3\";\nmessage A {\n  int32 a = 1\n}\n", &[]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(4), Some(1)), "{}", e.message);
    let e = Parsed::parse(SchemaType::Json, "[1]", &[]).unwrap_err();
    assert!(e.message.contains("object or a boolean"), "{}", e.message);
    let e = Parsed::parse(SchemaType::Json, r##"{"properties":{"a":{"$ref":"#/definitions/missing"}}}"##, &[]).unwrap_err();
    assert!(e.message.contains("#/definitions/missing"), "{}", e.message);
}

#[test]
fn protobuf_message_indexes_follow_the_files_order() {
    let p = parse(
        SchemaType::Protobuf,
        "syntax = \"proto3\";\npackage p;\nmessage A { message B { int32 x = 1; } message C { int32 y = 1; } }\nmessage D { int32 z = 1; }\n",
    );
    assert_eq!(p.message_indexes("p.A"), Some(vec![0]));
    assert_eq!(p.message_indexes("p.A.C"), Some(vec![0, 1]));
    assert_eq!(p.message_indexes("p.D"), Some(vec![1]));
    assert_eq!(p.message_indexes("p.E"), None);
}

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let store = weir_store::Store::sqlite(&dir.path().join("weir.db")).unwrap();
    (dir, Registry::new(Arc::new(store)))
}

fn req(schema: &str) -> SchemaRequest {
    SchemaRequest { schema: schema.into(), ..Default::default() }
}

#[test]
fn registering_gives_stable_global_ids_and_refuses_breaking_versions() {
    let (_dir, r) = registry();
    let v1 = avro_record("");
    let a = r.register("users-value", &req(&v1)).unwrap();
    assert_eq!((a.id, a.version), (1, 1));
    let spaced = v1.replace(',', ", ");
    assert_eq!(r.register("users-value", &req(&spaced)).unwrap(), a, "the same schema, laid out otherwise, is the same version");
    let other = r.register("audit-value", &req(&v1)).unwrap();
    assert_eq!((other.id, other.version), (1, 1), "one id wherever it is registered");

    let breaking = avro_record(r#",{"name":"age","type":"int"}"#);
    let err = r.register("users-value", &req(&breaking)).unwrap_err();
    assert_eq!((err.code(), err.status()), (409, 409));
    assert!(err.to_string().contains("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/age"), "{err}");
    assert_eq!(r.versions("users-value", false).unwrap(), vec![1], "nothing registered");
    assert!(!r.check("users-value", Some(VersionRef::Latest), &req(&breaking)).unwrap().is_empty());

    r.set_compatibility(Some("users-value"), "none").unwrap();
    let b = r.register("users-value", &req(&breaking)).unwrap();
    assert_eq!((b.id, b.version), (2, 2));
    assert_eq!(r.compatibility(Some("users-value"), false).unwrap(), Level::None);
    assert_eq!(r.compatibility(Some("audit-value"), false).unwrap_err().code(), 40408);
    assert_eq!(r.compatibility(Some("audit-value"), true).unwrap(), Level::Backward);

    assert_eq!(r.schema(2, None).unwrap().schema, serde_json::from_str::<serde_json::Value>(&breaking).unwrap().to_string());
    assert_eq!(r.lookup("users-value", &req(&spaced), false).unwrap().version, 1);
    assert_eq!(r.lookup("users-value", &req(&avro_record(r#",{"name":"x","type":"int"}"#)), false).unwrap_err().code(), 40403);
    assert_eq!(r.version("nobody", VersionRef::Latest, false).unwrap_err().code(), 40401);
    assert_eq!(r.version("users-value", VersionRef::Number(9), false).unwrap_err().code(), 40402);
    assert_eq!(VersionRef::parse("0").unwrap_err().code(), 42202);
    assert_eq!(r.schema(99, None).unwrap_err().code(), 40403);
    let bad = r.register("users-value", &req("{\"type\": \"recrd\"}")).unwrap_err();
    assert_eq!(bad.code(), 42201, "{bad}");
}

#[test]
fn references_resolve_and_hold_their_target() {
    let (_dir, r) = registry();
    let address = r#"{"type":"record","name":"Address","namespace":"shop","fields":[{"name":"city","type":"string"}]}"#;
    r.register("address", &req(address)).unwrap();
    let user = r#"{"type":"record","name":"User","namespace":"shop","fields":[{"name":"home","type":"shop.Address"}]}"#;
    let mut with_ref = req(user);
    with_ref.references = vec![Reference { name: "shop.Address".into(), subject: "address".into(), version: 1 }];
    let u = r.register("user-value", &with_ref).unwrap();
    assert_eq!(u.id, 2);
    assert_eq!(r.referenced_by("address", VersionRef::Number(1)).unwrap(), vec![2]);
    assert_eq!(r.register("user-value", &req(user)).unwrap_err().code(), 42201, "without its reference the type is unknown");
    assert_eq!(r.delete_version("address", VersionRef::Number(1), false).unwrap_err().code(), 42206);
    // A second version checked against the first resolves the reference inside the write.
    let user2 = user.replace(r#"}]}"#, r#"},{"name":"note","type":"string","default":""}]}"#);
    let mut with_ref2 = req(&user2);
    with_ref2.references = with_ref.references.clone();
    assert_eq!(r.register("user-value", &with_ref2).unwrap().version, 2);
}

#[test]
fn deletes_are_soft_then_permanent_and_modes_guard_writes() {
    let (_dir, r) = registry();
    r.register("a", &req("\"string\"")).unwrap();
    r.register("a", &req("[\"null\",\"string\"]")).unwrap();
    assert_eq!(r.delete_version("a", VersionRef::Number(2), true).unwrap_err().code(), 40407);
    assert_eq!(r.delete_version("a", VersionRef::Latest, false).unwrap(), 2);
    assert_eq!(r.delete_version("a", VersionRef::Number(2), false).unwrap_err().code(), 40406);
    assert_eq!(r.versions("a", false).unwrap(), vec![1]);
    assert_eq!(r.versions("a", true).unwrap(), vec![1, 2]);
    assert_eq!(r.schema(2, None).unwrap().version, 2, "a soft-deleted version's schema is still read by id");
    assert_eq!(r.delete_subject("a", true).unwrap_err().code(), 40405);
    assert_eq!(r.delete_subject("a", false).unwrap(), vec![1]);
    assert_eq!(r.delete_subject("a", false).unwrap_err().code(), 40404);
    assert!(r.subjects(None, false).unwrap().is_empty());
    assert_eq!(r.subjects(None, true).unwrap(), vec!["a"]);
    assert_eq!(r.delete_subject("a", true).unwrap(), vec![1, 2]);
    assert_eq!(r.schema(1, None).unwrap_err().code(), 40403);
    assert_eq!(r.register("a", &req("\"long\"")).unwrap().id, 3, "ids are not reused");

    r.set_mode(Some("a"), "READONLY", false).unwrap();
    assert_eq!(r.register("a", &req("\"int\"")).unwrap_err().code(), 42205);
    assert_eq!(r.set_mode(None, "IMPORT", false).unwrap_err().code(), 42205, "import wants an empty registry");
    assert_eq!(r.set_mode(None, "SOMETIMES", false).unwrap_err().code(), 42204);
    assert_eq!(r.set_compatibility(None, "SIDEWAYS").unwrap_err().code(), 42203);
    r.delete_mode(Some("a")).unwrap();

    r.set_mode(Some("b"), "IMPORT", false).unwrap();
    let mut imported = req("\"double\"");
    imported.id = Some(100);
    imported.version = Some(7);
    let i = r.register("b", &imported).unwrap();
    assert_eq!((i.id, i.version), (100, 7));
    let mut clash = req("\"float\"");
    clash.id = Some(100);
    assert_eq!(r.register("b", &clash).unwrap_err().code(), 42205, "an id names one schema");
    r.delete_mode(Some("b")).unwrap();
    assert_eq!(r.register("c", &req("\"boolean\"")).unwrap().id, 101, "new ids continue past imported ones");
}
