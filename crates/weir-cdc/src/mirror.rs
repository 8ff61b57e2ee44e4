//! Mirror tables: each source table kept in the warehouse (DuckDB or PostgreSQL) exactly as
//! the source holds it, by merging each micro-batch of collapsed changes in one transaction
//! with the position the batch ends at. After a crash, the mirror and the position are both
//! from the last batch or both from the one before: a restart reads again from the position
//! and never applies a change twice or skips one.
//!
//! A mirror table has the source table's columns, typed from PostgreSQL's types (anything
//! without a counterpart is kept as its text); a column added at the source is added to the
//! mirror when it first appears (a column dropped there stays, null in rows written since).
//! Values arrive in PostgreSQL's text form and are cast by the
//! warehouse. A value the source left unchanged (a TOAST value an update did not touch) is
//! taken from the mirror's row as it stood before the batch, never written as a null.

use std::collections::HashMap;
use std::sync::Arc;

use weir_core::{Datum, Relation};
use weir_warehouse::{Connection, Warehouse, WarehouseError, literal};

use crate::changes::{RowChange, TableChanges};
use crate::pgoutput::{Lsn, Relation as SourceTable, Value};

/// Why a batch could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

/// What a batch did to the mirrors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub upserted: u64,
    pub deleted: u64,
    pub truncated: u64,
}

/// The mirrors of one CDC source, in `schema` of the warehouse.
pub struct Mirror {
    wh: Arc<dyn Warehouse>,
    conn: Box<dyn Connection>,
    source: String,
    database: String,
    schema: String,
    positions: Relation,
    /// The columns each mirror table is known to have (by its rendered name): a batch asks
    /// the catalog only about a table it has not seen, or one whose source gained columns.
    known: HashMap<String, Vec<String>>,
}

impl Mirror {
    /// The mirrors of `source` in `database.schema`, with the positions table beside them.
    pub fn open(wh: Arc<dyn Warehouse>, source: &str, database: &str, schema: &str) -> Result<Mirror, MirrorError> {
        let mut conn = wh.connect()?;
        conn.execute(&wh.create_schema_sql(database, schema))?;
        let positions = Relation::new(database, schema, "_weir_cdc_positions");
        conn.execute(&format!(
            "create table if not exists {} (source varchar, lsn varchar, lsn_number bigint, changes bigint, updated_at timestamp)",
            wh.render(&positions)
        ))?;
        Ok(Mirror {
            wh,
            conn,
            source: source.to_string(),
            database: database.to_string(),
            schema: schema.to_string(),
            positions,
            known: HashMap::new(),
        })
    }

    /// Where the last batch merged ended: the position to stream from again.
    pub fn position(&mut self) -> Result<Option<Lsn>, MirrorError> {
        let sql = format!("select lsn_number from {} where source = {}", self.wh.render(&self.positions), literal(&self.source));
        let result = self.conn.query(&sql)?;
        Ok(result.scalar().and_then(Datum::as_i64).map(|n| Lsn(n as u64)))
    }

    /// The mirror of a source table: `schema.table`, or `schema.namespace_table` outside
    /// `public`.
    pub fn table_of(&self, t: &SourceTable) -> Relation {
        let name = if t.namespace == "public" { t.name.clone() } else { format!("{}_{}", t.namespace, t.name) };
        Relation::new(&self.database, &self.schema, name)
    }

    /// Merges `tables` and moves the position to `end`, in one transaction.
    pub fn apply(&mut self, tables: &[TableChanges], end: Lsn) -> Result<Applied, MirrorError> {
        let (mut statements, applied) = self.merges(tables)?;
        let changes = applied.upserted + applied.deleted;
        let positions = self.wh.render(&self.positions);
        statements.push(format!("delete from {positions} where source = {}", literal(&self.source)));
        statements.push(format!(
            "insert into {positions} values ({}, {}, {}, {changes}, current_timestamp)",
            literal(&self.source),
            literal(&end.to_string()),
            end.0 as i64
        ));
        self.conn.transaction(&statements)?;
        Ok(applied)
    }

    /// Merges `tables` in one transaction, leaving the position as it is (a snapshot's
    /// chunks: the position comes once all of it is in).
    pub fn load(&mut self, tables: &[TableChanges]) -> Result<Applied, MirrorError> {
        let (statements, applied) = self.merges(tables)?;
        self.conn.transaction(&statements)?;
        Ok(applied)
    }

    fn merges(&mut self, tables: &[TableChanges]) -> Result<(Vec<String>, Applied), MirrorError> {
        let mut applied = Applied::default();
        let mut statements = vec![];
        for t in tables {
            self.ensure(&t.relation)?;
            statements.extend(self.merge(t, &mut applied));
        }
        Ok((statements, applied))
    }

    /// Makes the mirror table, or adds the columns the source has gained.
    fn ensure(&mut self, t: &SourceTable) -> Result<(), MirrorError> {
        let rel = self.table_of(t);
        let name = self.wh.render(&rel);
        if self.known.get(&name).is_some_and(|have| t.columns.iter().all(|c| have.contains(&c.name))) {
            return Ok(());
        }
        // A table not made yet has no columns (some engines say so with an error).
        let mut have: Vec<String> = self.conn.columns(&rel).unwrap_or_default().into_iter().map(|c| c.name).collect();
        if have.is_empty() {
            let columns: Vec<String> =
                t.columns.iter().map(|c| format!("{} {}", self.wh.quote(&c.name), sql_type(c.type_oid, c.type_modifier))).collect();
            self.conn.execute(&format!("create table if not exists {name} ({})", columns.join(", ")))?;
            have = t.columns.iter().map(|c| c.name.clone()).collect();
        }
        for c in &t.columns {
            if !have.contains(&c.name) {
                self.conn.execute(&format!(
                    "alter table {name} add column {} {}",
                    self.wh.quote(&c.name),
                    sql_type(c.type_oid, c.type_modifier)
                ))?;
                have.push(c.name.clone());
            }
        }
        self.known.insert(name, have);
        Ok(())
    }

    /// The statements merging one table's changes: rows filled from the mirror as it stood,
    /// then every changed key deleted, then the rows inserted.
    fn merge(&self, t: &TableChanges, applied: &mut Applied) -> Vec<String> {
        let q = |s: &str| self.wh.quote(s);
        let name = self.wh.render(&self.table_of(&t.relation));
        let cols = &t.relation.columns;
        let typed = |c: &crate::pgoutput::Column| sql_type(c.type_oid, c.type_modifier);
        let keys: Vec<&crate::pgoutput::Column> = cols.iter().filter(|c| c.key).collect();
        let mut out = vec![];
        if t.truncated {
            out.push(format!("delete from {name}"));
            applied.truncated += 1;
        }
        let upserts: Vec<(&Vec<Value>, &Vec<Value>)> = t
            .rows
            .iter()
            .filter_map(|(_, c)| if let RowChange::Upsert { values, fill_from } = c { Some((values, fill_from)) } else { None })
            .collect();
        let (rows, filled) = (q(&format!("_weir_cdc_rows_{}", t.relation.oid)), q(&format!("_weir_cdc_filled_{}", t.relation.oid)));
        if !upserts.is_empty() {
            // Each row's values as text, which were left unchanged, and the key whose row in
            // the mirror holds those.
            let mut staged: Vec<String> = cols.iter().map(|c| format!("{} varchar", q(&format!("v_{}", c.name)))).collect();
            staged.extend(cols.iter().map(|c| format!("{} boolean", q(&format!("u_{}", c.name)))));
            staged.extend(keys.iter().map(|k| format!("{} varchar", q(&format!("f_{}", k.name)))));
            out.push(format!("drop table if exists {rows}"));
            out.push(format!("create temporary table {rows} ({})", staged.join(", ")));
            for chunk in upserts.chunks(500) {
                let values: Vec<String> = chunk
                    .iter()
                    .map(|(values, fill_from)| {
                        let mut fields: Vec<String> = values.iter().map(text_literal).collect();
                        fields.extend(values.iter().map(|v| (*v == Value::Unchanged).to_string()));
                        fields.extend(fill_from.iter().map(text_literal));
                        format!("({})", fields.join(", "))
                    })
                    .collect();
                out.push(format!("insert into {rows} values {}", values.join(", ")));
            }
            let select: Vec<String> = cols
                .iter()
                .map(|c| {
                    let (v, u, m) = (q(&format!("v_{}", c.name)), q(&format!("u_{}", c.name)), q(&c.name));
                    format!("case when s.{u} then m.{m} else cast(s.{v} as {}) end as {m}", typed(c))
                })
                .collect();
            let on: Vec<String> =
                keys.iter().map(|k| format!("m.{} = cast(s.{} as {})", q(&k.name), q(&format!("f_{}", k.name)), typed(k))).collect();
            out.push(format!("drop table if exists {filled}"));
            out.push(format!(
                "create temporary table {filled} as select {} from {rows} s left join {name} m on {}",
                select.join(", "),
                on.join(" and ")
            ));
        }
        // Every key the batch changed goes; then the rows it now has come back.
        let names: Vec<String> = keys.iter().map(|k| q(&format!("k_{}", k.name))).collect();
        let matches: Vec<String> = keys.iter().zip(&names).map(|(k, n)| format!("{name}.{} = v.{n}", q(&k.name))).collect();
        for chunk in t.rows.chunks(500) {
            let list: Vec<String> = chunk
                .iter()
                .map(|(key, _)| {
                    let typed_key: Vec<String> =
                        key.iter().zip(&keys).map(|(v, k)| format!("cast({} as {})", text_literal(v), typed(k))).collect();
                    format!("({})", typed_key.join(", "))
                })
                .collect();
            out.push(format!(
                "delete from {name} where exists (select 1 from (values {}) as v({}) where {})",
                list.join(", "),
                names.join(", "),
                matches.join(" and ")
            ));
        }
        applied.deleted += t.rows.iter().filter(|(_, c)| *c == RowChange::Delete).count() as u64;
        if !upserts.is_empty() {
            let list: Vec<String> = cols.iter().map(|c| q(&c.name)).collect();
            out.push(format!("insert into {name} ({}) select {} from {filled}", list.join(", "), list.join(", ")));
            out.push(format!("drop table {filled}"));
            out.push(format!("drop table {rows}"));
            applied.upserted += upserts.len() as u64;
        }
        out
    }
}

/// A value as an SQL literal of its text (null for a null or an unchanged value).
fn text_literal(v: &Value) -> String {
    match v {
        Value::Text(b) | Value::Binary(b) => literal(&String::from_utf8_lossy(b)),
        Value::Null | Value::Unchanged => "null".to_string(),
    }
}

/// The warehouse type of a PostgreSQL type (by its OID), or text.
fn sql_type(oid: u32, modifier: i32) -> String {
    match oid {
        16 => "boolean".into(),
        20 => "bigint".into(),
        21 => "smallint".into(),
        23 => "integer".into(),
        700 => "real".into(),
        701 => "double precision".into(),
        1700 if modifier >= 4 => {
            let m = modifier - 4;
            format!("decimal({}, {})", (m >> 16) & 0xffff, m & 0xffff)
        }
        1700 => "decimal(38, 10)".into(),
        1082 => "date".into(),
        1114 => "timestamp".into(),
        1184 => "timestamptz".into(),
        1083 => "time".into(),
        2950 => "uuid".into(),
        _ => "varchar".into(),
    }
}
