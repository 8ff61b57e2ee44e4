//! Snapshots: slowly changing dimensions of type 2, as dbt writes them.
//!
//! A snapshot keeps every version of each row of a query, keyed by `unique_key`, with
//! `dbt_valid_from`/`dbt_valid_to` bounding when each version was current, `dbt_updated_at`,
//! and `dbt_scd_id` (a hash of key and version time). The first run copies the query; later
//! runs stage the changes (new keys, changed rows, and with `hard_deletes`, vanished keys) in a
//! temporary table, close the versions they replace and insert the new ones, in one transaction.
//! The SQL has the shape of dbt's own snapshot macros, so the same data gives the same table.

use serde_json::Value as J;
use weir_core::{Column, Location};
use weir_graph::Node;
use weir_warehouse::Warehouse;

use crate::error::TransformError;

/// How a snapshot decides that a row changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// A row changed when its `updated_at` is later than the current version's.
    Timestamp { updated_at: String },
    /// A row changed when any of the checked columns differ; versions are stamped with
    /// `updated_at` when given, else with the snapshot's run time.
    Check { cols: CheckCols, updated_at: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckCols {
    All,
    List(Vec<String>),
}

/// What happens to versions whose key disappeared from the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HardDeletes {
    Ignore,
    Invalidate,
    NewRecord,
}

/// The meta columns' names (`snapshot_meta_column_names` renames them).
#[derive(Debug, Clone, PartialEq)]
pub struct MetaNames {
    pub valid_from: String,
    pub valid_to: String,
    pub scd_id: String,
    pub updated_at: String,
    pub is_deleted: String,
}

/// A snapshot's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotConfig {
    pub strategy: Strategy,
    pub unique_key: Vec<String>,
    /// dbt names the key columns differently for a list key, even of one column.
    pub key_is_list: bool,
    pub hard_deletes: HardDeletes,
    pub valid_to_current: Option<String>,
    pub names: MetaNames,
}

impl SnapshotConfig {
    /// Reads and checks the node's config; errors name the snapshot's file and the key.
    pub fn from_node(n: &Node) -> Result<SnapshotConfig, TransformError> {
        let fail = |m: String| TransformError::at(Location::file(&n.file), format!("snapshot '{}': {m}", n.name), None);
        let unique_key = n.config_list("unique_key");
        if unique_key.is_empty() {
            return Err(fail("'unique_key' is required".into()));
        }
        let key_is_list = matches!(n.config.get("unique_key"), Some(J::Array(_)));
        let updated_at = n.config_str("updated_at");
        let strategy = match n.config_str("strategy").as_deref() {
            Some("timestamp") => {
                Strategy::Timestamp { updated_at: updated_at.ok_or_else(|| fail("the timestamp strategy needs 'updated_at'".into()))? }
            }
            Some("check") => {
                let cols = match n.config.get("check_cols") {
                    Some(J::String(s)) if s == "all" => CheckCols::All,
                    Some(J::Array(_)) => {
                        let cols = n.config_list("check_cols");
                        if cols.is_empty() {
                            return Err(fail("'check_cols' is an empty list".into()));
                        }
                        CheckCols::List(cols)
                    }
                    Some(other) => return Err(fail(format!("invalid value for 'check_cols': {other} (use 'all' or a list of columns)"))),
                    None => return Err(fail("the check strategy needs 'check_cols' ('all' or a list of columns)".into())),
                };
                Strategy::Check { cols, updated_at }
            }
            Some(other) => return Err(fail(format!("unknown strategy '{other}' (use 'timestamp' or 'check')"))),
            None => return Err(fail("'strategy' is required ('timestamp' or 'check')".into())),
        };
        let hard_deletes = match n.config_str("hard_deletes").as_deref() {
            Some("ignore") => HardDeletes::Ignore,
            Some("invalidate") => HardDeletes::Invalidate,
            Some("new_record") => HardDeletes::NewRecord,
            Some(other) => return Err(fail(format!("invalid hard_deletes '{other}' (use ignore, invalidate or new_record)"))),
            None if n.config.get("invalidate_hard_deletes").and_then(J::as_bool) == Some(true) => HardDeletes::Invalidate,
            None => HardDeletes::Ignore,
        };
        let meta = n.config.get("snapshot_meta_column_names").and_then(J::as_object);
        let name = |key: &str| meta.and_then(|m| m.get(key)).and_then(J::as_str).unwrap_or(key).to_string();
        Ok(SnapshotConfig {
            strategy,
            unique_key,
            key_is_list,
            hard_deletes,
            valid_to_current: n.config_str("dbt_valid_to_current"),
            names: MetaNames {
                valid_from: name("dbt_valid_from"),
                valid_to: name("dbt_valid_to"),
                scd_id: name("dbt_scd_id"),
                updated_at: name("dbt_updated_at"),
                is_deleted: name("dbt_is_deleted"),
            },
        })
    }

    /// The expression stamping new versions.
    fn updated_at(&self, wh: &dyn Warehouse) -> String {
        match &self.strategy {
            Strategy::Timestamp { updated_at } | Strategy::Check { updated_at: Some(updated_at), .. } => updated_at.clone(),
            Strategy::Check { updated_at: None, .. } => wh.snapshot_time_sql().to_string(),
        }
    }

    /// `md5(key || '|' || updated_at)`, as dbt's `snapshot_hash_arguments`.
    fn scd_id(&self, wh: &dyn Warehouse) -> String {
        let mut args = self.unique_key.clone();
        args.push(self.updated_at(wh));
        hash_arguments(&args)
    }

    fn valid_to_initial(&self, wh: &dyn Warehouse) -> String {
        let u = self.updated_at(wh);
        format!("coalesce(nullif({u}, {u}), {}) as {}", self.valid_to_current.as_deref().unwrap_or("null"), self.names.valid_to)
    }

    /// The query that builds the snapshot table the first time.
    pub fn build_sql(&self, wh: &dyn Warehouse, sql: &str) -> String {
        let u = self.updated_at(wh);
        let n = &self.names;
        let deleted =
            if self.hard_deletes == HardDeletes::NewRecord { format!(",\n    'False' as {}", n.is_deleted) } else { String::new() };
        format!(
            "select *,\n    {} as {},\n    {u} as {},\n    {u} as {},\n    {}{deleted}\nfrom (\n{sql}\n) sbq",
            self.scd_id(wh),
            n.scd_id,
            n.updated_at,
            n.valid_from,
            self.valid_to_initial(wh)
        )
    }

    /// The names of the key columns in the staging table (`dbt_unique_key`, or
    /// `dbt_unique_key_1..n` for a list key).
    fn key_fields(&self) -> Vec<String> {
        if self.key_is_list {
            (1..=self.unique_key.len()).map(|i| format!("dbt_unique_key_{i}")).collect()
        } else {
            vec!["dbt_unique_key".into()]
        }
    }

    fn key_select(&self) -> String {
        self.key_fields().iter().zip(&self.unique_key).map(|(f, k)| format!("{k} as {f}")).collect::<Vec<_>>().join(", ")
    }

    fn key_join(&self, a: &str, b: &str) -> String {
        self.key_fields().iter().map(|f| format!("{a}.{f} = {b}.{f}")).collect::<Vec<_>>().join(" and ")
    }

    fn key_is_null(&self, a: &str) -> String {
        format!("{a}.{} is null", self.key_fields()[0])
    }

    /// Columns the staging table carries that the snapshot table does not keep.
    pub fn staging_only_columns(&self) -> Vec<String> {
        let mut cols = vec!["dbt_change_type".to_string()];
        cols.extend(self.key_fields());
        cols
    }

    fn current_filter(&self, alias: Option<&str>) -> String {
        let col = match alias {
            Some(a) => format!("{a}.{}", self.names.valid_to),
            None => self.names.valid_to.clone(),
        };
        match &self.valid_to_current {
            Some(cur) if alias.is_none() => format!("({col} = {cur} or {col} is null)"),
            Some(cur) => format!("{col} = {cur}"),
            None => format!("{col} is null"),
        }
    }

    /// The query staging the changes against the existing snapshot `target`.
    ///
    /// `target_cols` are the snapshot table's columns and `query_cols` the snapshot query's;
    /// the check strategy compares the columns both have, and treats a column the query
    /// gained as a change of every row.
    pub fn staging_sql(&self, wh: &dyn Warehouse, sql: &str, target: &str, target_cols: &[Column], query_cols: &[Column]) -> String {
        let n = &self.names;
        let u = self.updated_at(wh);
        let now = wh.snapshot_time_sql();
        let keys = self.key_select();
        let has = |cols: &[Column], c: &str| cols.iter().any(|x| x.name.eq_ignore_ascii_case(c.trim_matches('"')));
        let row_changed = match &self.strategy {
            Strategy::Timestamp { updated_at } => format!("(snapshotted_data.{} < source_data.{updated_at})", n.valid_from),
            Strategy::Check { cols, .. } => {
                let checked: Vec<String> = match cols {
                    CheckCols::All => query_cols.iter().map(|c| c.name.clone()).collect(),
                    CheckCols::List(l) => l.clone(),
                };
                if checked.iter().any(|c| !has(target_cols, c)) {
                    "(TRUE)".to_string()
                } else {
                    let parts: Vec<String> = checked
                        .iter()
                        .map(|c| {
                            let c = if matches!(cols, CheckCols::All) { wh.quote(c) } else { c.clone() };
                            format!(
                                "snapshotted_data.{c} != source_data.{c}\n        or\n        (\n            ((snapshotted_data.{c} is null) and not (source_data.{c} is null))\n            or\n            ((not snapshotted_data.{c} is null) and (source_data.{c} is null))\n        )"
                            )
                        })
                        .collect();
                    format!("({})", parts.join(" or "))
                }
            }
        };
        let new_record = self.hard_deletes == HardDeletes::NewRecord;
        let deletes_wanted = self.hard_deletes != HardDeletes::Ignore;
        let deleted_again = if new_record { format!(" or snapshotted_data.{} = 'True'", n.is_deleted) } else { String::new() };
        let join = self.key_join("snapshotted_data", "source_data");
        let mut q = format!(
            "with snapshot_query as (\n\n{sql}\n\n),\n\nsnapshotted_data as (\n    select *, {keys}\n    from {target}\n    where {}\n),\n\n\
             insertions_source_data as (\n    select *, {keys},\n        {u} as {},\n        {u} as {},\n        {},\n        {} as {}\n    from snapshot_query\n),\n\n\
             updates_source_data as (\n    select *, {keys},\n        {u} as {},\n        {u} as {},\n        {u} as {}\n    from snapshot_query\n),\n",
            self.current_filter(None),
            n.updated_at,
            n.valid_from,
            self.valid_to_initial(wh),
            self.scd_id(wh),
            n.scd_id,
            n.updated_at,
            n.valid_from,
            n.valid_to,
        );
        if deletes_wanted {
            q.push_str(&format!("\ndeletes_source_data as (\n    select *, {keys}\n    from snapshot_query\n),\n"));
        }
        let false_flag = if new_record { format!(",\n        'False' as {}", n.is_deleted) } else { String::new() };
        q.push_str(&format!(
            "\ninsertions as (\n    select\n        'insert' as dbt_change_type,\n        source_data.*{false_flag}\n    from insertions_source_data as source_data\n    \
             left outer join snapshotted_data\n        on {join}\n    where {}\n        or ({}.{} is not null and ({row_changed}{deleted_again}))\n),\n\n",
            self.key_is_null("snapshotted_data"),
            "snapshotted_data",
            self.key_fields()[0],
        ));
        let carried_flag = if new_record { format!(",\n        snapshotted_data.{}", n.is_deleted) } else { String::new() };
        q.push_str(&format!(
            "updates as (\n    select\n        'update' as dbt_change_type,\n        source_data.*,\n        snapshotted_data.{}{carried_flag}\n    \
             from updates_source_data as source_data\n    join snapshotted_data\n        on {join}\n    where ({row_changed}{deleted_again})\n)",
            n.scd_id
        ));
        let not_already_deleted =
            format!("\n        and not (snapshotted_data.{} = 'True' and {})", n.is_deleted, self.current_filter(Some("snapshotted_data")));
        if deletes_wanted {
            q.push_str(&format!(
                ",\n\ndeletes as (\n    select\n        'delete' as dbt_change_type,\n        source_data.*,\n        {now} as {},\n        {now} as {},\n        {now} as {},\n        \
                 snapshotted_data.{}{carried_flag}\n    from snapshotted_data\n    left join deletes_source_data as source_data\n        on {join}\n    where {}{}\n)",
                n.valid_from,
                n.updated_at,
                n.valid_to,
                n.scd_id,
                self.key_is_null("source_data"),
                if new_record { not_already_deleted.as_str() } else { "" },
            ));
        }
        if new_record {
            let cols: Vec<String> = query_cols
                .iter()
                .map(|c| {
                    let q = wh.quote(&c.name);
                    if has(target_cols, &c.name) { format!("snapshotted_data.{q}") } else { format!("source_data.{q}") }
                })
                .collect();
            let key_cols: Vec<String> = self.key_fields().iter().map(|f| format!("snapshotted_data.{f} as {f}")).collect();
            let new_scd = hash_arguments(&[n.scd_id.clone(), now.to_string()]);
            q.push_str(&format!(
                ",\n\ndeletion_records as (\n    select\n        'insert' as dbt_change_type,\n        {},\n        {},\n        {now} as {},\n        {now} as {},\n        \
                 snapshotted_data.{} as {},\n        {new_scd} as {},\n        'True' as {}\n    from snapshotted_data\n    left join deletes_source_data as source_data\n        \
                 on {join}\n    where {}{not_already_deleted}\n)",
                cols.join(",\n        "),
                key_cols.join(",\n        "),
                n.valid_from,
                n.updated_at,
                n.valid_to,
                n.valid_to,
                n.scd_id,
                n.is_deleted,
                self.key_is_null("source_data"),
            ));
        }
        q.push_str("\n\nselect * from insertions\nunion all\nselect * from updates");
        if deletes_wanted {
            q.push_str("\nunion all\nselect * from deletes");
        }
        if new_record {
            q.push_str("\nunion all\nselect * from deletion_records");
        }
        q
    }

    /// Closes the versions the staging table replaces, then inserts the new versions.
    pub fn merge_sql(&self, target: &str, staging: &str, insert_cols: &[String]) -> [String; 2] {
        let n = &self.names;
        let current = match &self.valid_to_current {
            Some(cur) => format!("(DBT_INTERNAL_TARGET.{vt} = {cur} or DBT_INTERNAL_TARGET.{vt} is null)", vt = n.valid_to),
            None => format!("DBT_INTERNAL_TARGET.{} is null", n.valid_to),
        };
        let update = format!(
            "update {target} as DBT_INTERNAL_TARGET\nset {vt} = DBT_INTERNAL_SOURCE.{vt}\nfrom {staging} as DBT_INTERNAL_SOURCE\n\
             where cast(DBT_INTERNAL_SOURCE.{id} as varchar) = cast(DBT_INTERNAL_TARGET.{id} as varchar)\n  \
             and DBT_INTERNAL_SOURCE.dbt_change_type in ('update', 'delete')\n  and {current}",
            vt = n.valid_to,
            id = n.scd_id
        );
        let cols = insert_cols.join(", ");
        let values: Vec<String> = insert_cols.iter().map(|c| format!("DBT_INTERNAL_SOURCE.{c}")).collect();
        let insert = format!(
            "insert into {target} ({cols})\nselect {}\nfrom {staging} as DBT_INTERNAL_SOURCE\nwhere DBT_INTERNAL_SOURCE.dbt_change_type = 'insert'",
            values.join(", ")
        );
        [update, insert]
    }
}

/// `md5(coalesce(cast(a as varchar), '') || '|' || ...)`, dbt's `snapshot_hash_arguments`.
fn hash_arguments(args: &[String]) -> String {
    let parts: Vec<String> = args.iter().map(|a| format!("coalesce(cast({a} as varchar), '')")).collect();
    format!("md5({})", parts.join(" || '|' || "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(config: J) -> Node {
        Node {
            unique_id: "snapshot.p.orders_snapshot".into(),
            resource_type: weir_graph::ResourceType::Snapshot,
            package: "p".into(),
            name: "orders_snapshot".into(),
            fqn: vec![],
            path: String::new(),
            original_file_path: String::new(),
            file: "snapshots/orders_snapshot.sql".into(),
            raw_code: String::new(),
            config: config.as_object().cloned().unwrap_or_default().into_iter().collect(),
            description: String::new(),
            columns: vec![],
            refs: vec![],
            sources: vec![],
            depends_on: vec![],
            relation: None,
            test: None,
            patch_path: None,
            source: None,
            check: None,
            load: None,
            stream: None,
            unit: None,
            version: None,
            latest_version: None,
        }
    }

    #[test]
    fn configs_are_checked_with_the_snapshot_named() {
        let err = SnapshotConfig::from_node(&node(json!({"strategy": "timestamp", "unique_key": "id"}))).unwrap_err();
        assert!(err.to_string().contains("snapshot 'orders_snapshot': the timestamp strategy needs 'updated_at'"), "{err}");
        let err = SnapshotConfig::from_node(&node(json!({"strategy": "check", "unique_key": "id", "check_cols": 3}))).unwrap_err();
        assert!(err.to_string().contains("invalid value for 'check_cols': 3"), "{err}");
        let err = SnapshotConfig::from_node(&node(json!({"strategy": "timestamp", "updated_at": "u"}))).unwrap_err();
        assert!(err.to_string().contains("'unique_key' is required"), "{err}");
        let c = SnapshotConfig::from_node(&node(json!({
            "strategy": "check", "unique_key": ["a", "b"], "check_cols": "all", "invalidate_hard_deletes": true,
            "snapshot_meta_column_names": {"dbt_valid_to": "valid_until"}
        })))
        .unwrap();
        assert_eq!(c.hard_deletes, HardDeletes::Invalidate);
        assert_eq!(c.names.valid_to, "valid_until");
        assert_eq!(c.key_fields(), ["dbt_unique_key_1", "dbt_unique_key_2"]);
    }
}
