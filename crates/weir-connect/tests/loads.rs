//! Loads against the real engines: files into a DuckDB file, a PostgreSQL table into DuckDB,
//! files and tables into PostgreSQL (in a schema of the test's own).

mod common;

use common::{PG, Project, pg_client};
use weir_warehouse::Warehouse as _;

#[test]
fn csv_files_load_once_with_bad_lines_kept_and_new_columns_added() {
    let p = Project::duckdb();
    p.write("data/orders_1.csv", "id,amount,placed_at\n1,10.5,2024-01-01\n2,oops,2024-01-02\n3,7.25,2024-01-03,extra\n4,1.00,2024-01-04\n");
    p.write("data/orders_2.csv", "id,amount,placed_at\n5,2.50,2024-01-05\n");
    let load = p.load(
        "loads:\n  - name: orders\n    source:\n      kind: csv\n      path: data/orders_*.csv\n      columns: {amount: 'decimal(10,2)'}\n",
    );
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected, r.files_loaded), (5, 3, 2, 2), "{r:?}");
    assert_eq!(p.scalar("select count(*) from raw.orders"), "3");
    assert_eq!(p.scalar("select sum(amount) from raw.orders"), "14.00");
    assert_eq!(p.scalar("select count(distinct _weir_load_id) from raw.orders where _weir_loaded_at is not null"), "1");
    // The run's id is a UUID in the table and in both bookkeeping tables, so they join.
    assert_eq!(
        p.scalar(
            "select string_agg(data_type, ',' order by table_name) from duckdb_columns()
             where (table_name = 'orders' and column_name = '_weir_load_id') or (table_name in ('_weir_loads', '_weir_rejected') and column_name = 'load_id')"
        ),
        "UUID,UUID,UUID"
    );
    assert_eq!(
        p.scalar(
            "select count(*) from raw.orders o join raw._weir_loads l on l.load_id = o._weir_load_id
             where o._weir_load_id in (select load_id from raw._weir_rejected)"
        ),
        "3"
    );
    assert_eq!(
        p.scalar("select string_agg(distinct _weir_source_file, ',' order by _weir_source_file) from raw.orders"),
        "data/orders_1.csv,data/orders_2.csv"
    );
    let rejected = p.rows("select position, raw, reason from raw._weir_rejected order by position");
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0][0], "data/orders_1.csv:3");
    assert!(rejected[0][1].contains("oops") && rejected[0][2].contains("CAST"), "{rejected:?}");
    assert_eq!(rejected[1][0], "data/orders_1.csv:4");
    assert!(rejected[1][2].contains("TOO MANY COLUMNS"), "{rejected:?}");
    // The files' records carry their hashes (taken while they loaded).
    let records = p.store.loaded_files(&p.wh.render(&weir_core::Relation::new("warehouse", "raw", "orders"))).unwrap();
    assert!(records.len() == 2 && records.iter().all(|r| r.content_hash.starts_with("blake3:")), "{records:?}");

    // Nothing new: nothing happens.
    let again = p.run(&load, false).unwrap();
    assert!(again.up_to_date, "{again:?}");
    assert_eq!(p.scalar("select count(*) from raw.orders"), "3");

    // A changed file replaces its own rows; a new file with a new column adds the column.
    p.write("data/orders_2.csv", "id,amount,placed_at\n5,2.50,2024-01-05\n6,3.50,2024-01-06\n");
    p.write("data/orders_3.csv", "id,amount,placed_at,coupon\n7,4.00,2024-01-07,SPRING\n");
    let third = p.run(&load, false).unwrap();
    assert_eq!((third.files_loaded, third.files_skipped, third.rows_loaded), (2, 1, 3), "{third:?}");
    assert!(third.schema_changes.iter().any(|c| c.contains("added column raw.orders.coupon")), "{third:?}");
    // 1 and 4 from the first file, 5 and 6 from the changed second, 7 from the third.
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from raw.orders"), "1,4,5,6,7");
    assert_eq!(p.scalar("select coupon from raw.orders where id = 7"), "SPRING");
    assert_eq!(p.scalar("select count(*) from raw.orders where id = 5"), "1", "the changed file's old rows were replaced");

    let runs = p.store.load_runs("orders", 10).unwrap();
    assert_eq!(runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), vec!["committed"; 3]);
    assert_eq!(p.scalar("select count(*) from raw._weir_loads"), "2", "an up-to-date run commits nothing");

    // The table dropped behind Weir's back: the store's records no longer describe it, so the
    // next run loads every file again rather than calling a missing table up to date.
    p.execute("drop table raw.orders");
    let over = p.run(&load, false).unwrap();
    assert_eq!((over.started_over, over.up_to_date, over.files_loaded, over.rows_loaded), (true, false, 3, 5), "{over:?}");
    assert!(over.summary().ends_with("; started over: raw.orders was not in the destination"), "{}", over.summary());
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from raw.orders"), "1,4,5,6,7");
    let after = p.run(&load, false).unwrap();
    assert!(after.up_to_date && !after.started_over, "{after:?}");
}

#[test]
fn a_short_csv_row_is_one_rejected_row_with_every_reason() {
    let p = Project::duckdb();
    p.write("data/days.csv", "id,day,amount,note\n1,2024-01-01,10,a\n2,2024-01-02\n3,2024-01-03,30,c\n");
    let load = p.load("loads:\n  - name: days\n    source: {kind: csv, path: data/days.csv}\n");
    let r = p.run(&load, false).unwrap();
    // Three data rows: read is what the file holds, whatever is wrong with a row.
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (3, 2, 1), "{r:?}");
    let rejected = p.rows("select position, raw, reason from raw._weir_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0][0], "data/days.csv:3");
    assert_eq!(rejected[0][1], "2,2024-01-02");
    assert!(rejected[0][2].contains("in column amount") && rejected[0][2].contains("in column note"), "{rejected:?}");
}

/// Twelve rows whose last field is quoted and holds the delimiter, then a thirteenth that
/// opens a quote and never closes it.
fn quoted_notes(broken: &str) -> String {
    let mut text = "id,day,amount,note\n".to_string();
    for i in 1..=12 {
        text += &format!("{i},2024-01-{i:02},{},\"note {i}, quoted\"\n", i * 10);
    }
    text + broken
}

#[test]
fn an_unterminated_quote_rejects_its_record_and_the_rows_before_it_load() {
    let p = Project::duckdb();
    p.write("data/notes_1.csv", &quoted_notes("13,2024-01-13,130,\"never closed\n"));
    p.write("data/notes_2.csv", "id,day,amount,note\n14,2024-01-14,140,\"fine, too\"\n");
    let load = p.load("loads:\n  - name: notes\n    source: {kind: csv, path: 'data/notes_*.csv'}\n");
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected, r.files_loaded), (14, 13, 1, 2), "{r:?}");
    // The quoted fields were read as quoted: the delimiter inside them split nothing.
    assert_eq!(p.scalar("select note from raw.notes where id = 12"), "note 12, quoted");
    assert_eq!(p.scalar("select note from raw.notes where id = 14"), "fine, too");
    assert_eq!(p.scalar("select count(*) from raw.notes where _weir_source_file = 'data/notes_1.csv'"), "12");
    let rejected = p.rows("select position, raw, reason from raw._weir_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0][0], "data/notes_1.csv:14");
    assert_eq!(rejected[0][1], "13,2024-01-13,130,\"never closed");
    assert!(rejected[0][2].starts_with("unterminated quote: the quote opened at line 14, column 19"), "{rejected:?}");
    // Nothing new: nothing happens; a full refresh gives the same table.
    assert!(p.run(&load, false).unwrap().up_to_date);
    let again = p.run(&load, true).unwrap();
    assert_eq!((again.rows_read, again.rows_loaded, again.rows_rejected), (14, 13, 1), "{again:?}");
    assert_eq!(p.scalar("select count(*) from raw.notes"), "13");
}

#[test]
fn an_unterminated_quote_into_postgres_loses_no_row() {
    let schema = format!("weir_load_quote_{}", std::process::id());
    pg_client().batch_execute(&format!("drop schema if exists {schema} cascade")).unwrap();
    let p = Project::postgres();
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, quoted_notes("13,2024-01-13,130,\"open\n14,2024-01-14,140,x\n").as_bytes()).unwrap();
    std::fs::write(p.root().join("data/notes.csv.gz"), gz.finish().unwrap()).unwrap();
    let load =
        p.load(&format!("loads:\n  - name: notes\n    source: {{kind: csv, path: data/notes.csv.gz}}\n    destination: {schema}.notes\n"));
    let r = p.run(&load, false).unwrap();
    // By the CSV rules the open quote runs to the end: lines 14 and 15 are one record.
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (13, 12, 1), "{r:?}");
    assert_eq!(p.scalar(&format!("select note from {schema}.notes where id = 3")), "note 3, quoted");
    let rejected = p.rows(&format!("select position, raw from {schema}._weir_rejected"));
    assert_eq!(rejected, vec![vec!["data/notes.csv.gz:14".to_string(), "13,2024-01-13,130,\"open\n14,2024-01-14,140,x".to_string()]]);
    pg_client().batch_execute(&format!("drop schema {schema} cascade")).unwrap();
}

#[test]
fn json_lines_and_parquet_load_with_invalid_lines_rejected() {
    let p = Project::duckdb();
    p.write("events/a.jsonl", "{\"id\": 1, \"kind\": \"view\"}\n{\"id\": 2, \"kind\": \n{\"id\": 3, \"kind\": \"buy\", \"price\": 9.5}\n");
    let load = p.load("loads:\n  - name: events\n    source: {kind: jsonl, path: 'events/*.jsonl'}\n");
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (3, 2, 1), "{r:?}");
    assert_eq!(p.scalar("select string_agg(kind, ',' order by id) from raw.events"), "view,buy");
    assert_eq!(p.scalar("select _weir_source_file from raw.events limit 1"), "events/a.jsonl");
    assert_eq!(p.scalar("select position from raw._weir_rejected"), "events/a.jsonl:2");

    let mut c = p.wh.connect().unwrap();
    let parquet = p.root().join("items.parquet");
    c.execute(&format!("copy (select range as id, 'item ' || range as name from range(1000)) to '{}' (format parquet)", parquet.display()))
        .unwrap();
    let load = p.load("loads:\n  - name: items\n    source: {kind: parquet, path: items.parquet}\n    destination: catalog.items\n    write_disposition: replace\n");
    assert_eq!(p.run(&load, false).unwrap().rows_loaded, 1000);
    assert_eq!(p.run(&load, true).unwrap().rows_loaded, 1000, "a full refresh replaces");
    assert_eq!(p.scalar("select count(*) from catalog.items"), "1000");
}

#[test]
fn freeze_and_duplicate_keys_fail_and_leave_the_table_as_it_was() {
    let p = Project::duckdb();
    p.write("d/a.csv", "id,name\n1,a\n2,b\n");
    let frozen = p.load("loads:\n  - name: people\n    source: {kind: csv, path: 'd/*.csv'}\n    write_disposition: merge\n    primary_key: id\n    schema_contract: freeze\n");
    p.run(&frozen, false).unwrap();
    p.write("d/b.csv", "id,name,age\n3,c,30\n");
    let e = p.run(&frozen, false).unwrap_err().to_string();
    assert!(e.contains("load 'people'") && e.contains("new column age") && e.contains("freeze"), "{e}");
    assert_eq!(p.scalar("select count(*) from raw.people"), "2");
    std::fs::remove_file(p.root().join("d/b.csv")).unwrap();
    p.write("d/c.csv", "id,name\n2,bb\n2,bbb\n4,d\n");
    let e = p.run(&frozen, false).unwrap_err().to_string();
    assert!(e.contains("primary key (id) is not unique") && e.contains("(2) x2"), "{e}");
    assert_eq!(p.scalar("select string_agg(name, ',' order by id) from raw.people"), "a,b");
    // The failed runs are recorded as failed, and the file is tried again next time.
    p.write("d/c.csv", "id,name\n2,bb\n4,d\n");
    let r = p.run(&frozen, false).unwrap();
    assert_eq!(r.rows_loaded, 2);
    assert_eq!(p.scalar("select string_agg(name, ',' order by id) from raw.people"), "a,bb,d", "merge upserts on the key");
    let statuses: Vec<String> = p.store.load_runs("people", 10).unwrap().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec!["committed", "failed", "failed", "committed"]);
}

#[test]
fn discard_row_and_discard_value_contracts() {
    let p = Project::duckdb();
    p.write("a/1.csv", "id,qty\n1,5\n");
    let rows = p.load("loads:\n  - name: t\n    source: {kind: csv, path: 'a/*.csv'}\n    schema_contract: discard_row\n");
    p.run(&rows, false).unwrap();
    p.write("a/2.csv", "id,qty,note\n2,x,\n3,7,\n4,8,hello\n5,y,both\n");
    let r = p.run(&rows, false).unwrap();
    // qty 'x' is not a number, and a row with a value in the unknown column is rejected; a
    // row breaking both rules is rejected once, for the first rule (columns in order).
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (4, 1, 3), "{r:?}");
    assert_eq!(p.scalar("select count(*) from raw._weir_rejected"), "3");
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from raw.t"), "1,3");
    let reasons = p.rows("select reason, count(*) from raw._weir_rejected group by reason order by reason");
    assert_eq!(
        reasons,
        vec![
            vec!["column note is not in the destination".to_string(), "1".into()],
            vec!["value of qty is not a bigint".to_string(), "2".into()]
        ]
    );

    let values = p.load("loads:\n  - name: v\n    source: {kind: csv, path: 'b/*.csv'}\n    schema_contract: discard_value\n");
    p.write("b/1.csv", "id,qty\n1,5\n");
    p.run(&values, false).unwrap();
    p.write("b/2.csv", "id,qty,note\n2,x,hi\n");
    let r = p.run(&values, false).unwrap();
    assert_eq!((r.rows_loaded, r.rows_rejected), (1, 0));
    assert_eq!(p.rows("select id, qty from raw.v order by id"), vec![vec!["1".to_string(), "5".into()], vec!["2".into(), "NULL".into()]]);
    assert_eq!(p.rows("select column_name from information_schema.columns where table_name = 'v' and column_name = 'note'").len(), 0);
}

#[test]
fn postgres_table_into_duckdb_incrementally_with_merge() {
    let schema = format!("weir_load_src_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!(
        "drop schema if exists {schema} cascade; create schema {schema};
         create table {schema}.customers (id int primary key, name text, score numeric(8,2), active boolean, updated_at timestamp, tags text[]);
         insert into {schema}.customers values
           (1, 'ann', 1.50, true, '2024-01-01 10:00:00', '{{a,b}}'),
           (2, 'bob', null, false, '2024-01-02 10:00:00', null),
           (3, '', 3.25, true, '2024-01-03 10:00:00', '{{}}');"
    ))
    .unwrap();
    let p = Project::duckdb();
    let load = p.load(&format!(
        "loads:\n  - name: customers\n    source: {{kind: postgres, url: '{PG}', table: {schema}.customers}}\n    write_disposition: merge\n    primary_key: id\n    incremental: {{cursor: updated_at, initial_value: '2024-01-01 12:00:00', lookback: 1 hour}}\n"
    ));
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (2, Some("2024-01-03 10:00:00")), "{r:?}");
    assert_eq!(
        p.rows("select id, name, score, active from raw.customers order by id"),
        vec![vec!["2".to_string(), "bob".into(), "NULL".into(), "false".into()], vec!["3".into(), "".into(), "3.25".into(), "true".into()]],
        "an empty text stays empty, a null stays null"
    );
    pg.batch_execute(&format!(
        "update {schema}.customers set name = 'bobby', updated_at = '2024-01-04 09:00:00' where id = 2;
         insert into {schema}.customers values (4, 'dan', 4, true, '2024-01-03 09:30:00', null);"
    ))
    .unwrap();
    // Row 4 arrived late (below the mark, within the lookback); row 3 is extracted again and
    // merged, not duplicated.
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_loaded, r.cursor.as_deref()), (3, Some("2024-01-04 09:00:00")), "{r:?}");
    assert_eq!(p.scalar("select string_agg(name, ',' order by id) from raw.customers"), "bobby,,dan");
    assert_eq!(p.scalar("select count(*) from raw.customers"), "3");
    let key = p.wh.render(&weir_core::Relation::new("warehouse", "raw", "customers"));
    assert_eq!(p.store.load_cursor(&key).unwrap().as_deref(), Some("2024-01-04 09:00:00"), "the mark is kept in the store");
    // The destination table gone (its file deleted, say): the mark goes with it, and the
    // next run extracts from the initial value again.
    p.execute("drop table raw.customers");
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.started_over, r.rows_loaded, r.cursor.as_deref()), (true, 3, Some("2024-01-04 09:00:00")), "{r:?}");
    assert_eq!(p.scalar("select string_agg(name, ',' order by id) from raw.customers"), "bobby,,dan");

    let missing = p.load(&format!(
        "loads:\n  - name: bad\n    source: {{kind: postgres, url: '{PG}', table: {schema}.customers}}\n    incremental: {{cursor: changed_at}}\n"
    ));
    let e = p.run(&missing, false).unwrap_err().to_string();
    assert!(e.contains("load 'bad'") && e.contains("cursor 'changed_at' is not a column") && e.contains("updated_at"), "{e}");
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
}

#[test]
fn files_and_tables_into_postgres() {
    let schema = format!("weir_load_dst_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!("drop schema if exists {schema} cascade; drop schema if exists {schema}_src cascade; create schema {schema}_src;
        create table {schema}_src.items (id bigint, label text, price numeric(10,2), at timestamptz);
        insert into {schema}_src.items select g, 'item ' || g, g * 1.5, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' from generate_series(1, 500) g;"))
        .unwrap();
    let p = Project::postgres();
    p.write("d/x.csv", "id,label\n1,one\n2,\"two, quoted\"\n3,\n");
    let files = p.load(&format!("loads:\n  - name: x\n    source: {{kind: csv, path: 'd/*.csv'}}\n    destination: {schema}.x\n"));
    let r = p.run(&files, false).unwrap();
    assert_eq!(r.rows_loaded, 3, "{r:?}");
    assert_eq!(p.scalar(&format!("select label from {schema}.x where id = 2")), "two, quoted");
    assert_eq!(p.scalar(&format!("select count(*) from {schema}.x where label is null")), "1");
    assert_eq!(p.scalar(&format!("select _weir_source_file from {schema}.x limit 1")), "d/x.csv");
    assert_eq!(
        p.scalar(&format!(
            "select min(pg_typeof(x._weir_load_id)::text) || ' ' || count(*) from {schema}.x join {schema}._weir_loads l on l.load_id = x._weir_load_id"
        )),
        "uuid 3"
    );

    let table = p.load(&format!(
        "loads:\n  - name: items\n    source: {{kind: postgres, url: '{PG}', table: {schema}_src.items}}\n    destination: {schema}.items\n    write_disposition: replace\n"
    ));
    assert_eq!(p.run(&table, false).unwrap().rows_loaded, 500);
    assert_eq!(p.run(&table, false).unwrap().rows_loaded, 500, "replace, not append");
    assert_eq!(p.scalar(&format!("select count(*) from {schema}.items")), "500");
    assert_eq!(p.scalar(&format!("select sum(price) from {schema}.items")), "187875.00");

    // UUIDs, jsonb and enums cross in binary: a uuid's 16 bytes, json's text, an enum's label.
    pg.batch_execute(&format!(
        "create type {schema}_src.mood as enum ('calm', 'cross');
         create table {schema}_src.odd (id uuid, doc jsonb, m {schema}_src.mood, span interval);
         insert into {schema}_src.odd values ('0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70', '{{\"a\": [1, 2]}}', 'calm', '1 year 2 mons 3 days 04:05:06.789'),
            (null, null, null, null);"
    ))
    .unwrap();
    let odd = p.load(&format!(
        "loads:\n  - name: odd\n    source: {{kind: postgres, url: '{PG}', table: {schema}_src.odd}}\n    destination: {schema}.odd\n"
    ));
    assert_eq!(p.run(&odd, false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.scalar(&format!(
            "select id::text || ' ' || (doc -> 'a' ->> 1) || ' ' || m || ' ' || pg_typeof(id) || ' ' || span from {schema}.odd where id is not null"
        )),
        "0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70 2 calm uuid 1 year 2 mons 3 days 04:05:06.789"
    );
    assert_eq!(
        p.scalar(&format!("select count(*) from {schema}.odd where id is null and doc is null and m is null and span is null")),
        "1"
    );

    // A domain arrives as the type it is over.
    pg.batch_execute(&format!(
        "create domain {schema}_src.price as numeric(10,2) check (value >= 0);
         create table {schema}_src.priced (p {schema}_src.price); insert into {schema}_src.priced values (2.5);"
    ))
    .unwrap();
    let priced = p.load(&format!(
        "loads:\n  - name: priced\n    source: {{kind: postgres, url: '{PG}', table: {schema}_src.priced}}\n    destination: {schema}.priced\n"
    ));
    assert_eq!(p.run(&priced, false).unwrap().rows_loaded, 1);
    assert_eq!(p.scalar(&format!("select p::text || ' ' || format_type(pg_typeof(p), null) from {schema}.priced")), "2.50 numeric");
    assert_eq!(
        p.scalar(&format!(
            "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = '{schema}.priced'::regclass and attname = 'p'"
        )),
        "numeric(10,2)"
    );

    // One-dimensional arrays stay arrays.
    pg.batch_execute(&format!(
        "create table {schema}_src.lists (id int, ns int[], tags varchar(5)[], prices numeric(10,2)[]);
         insert into {schema}_src.lists values (1, '{{1,NULL,3}}', '{{a,\"b c\"}}', '{{1.5}}'), (2, '{{}}', null, '{{}}');"
    ))
    .unwrap();
    let lists = p.load(&format!(
        "loads:
  - name: lists
    source: {{kind: postgres, url: '{PG}', table: {schema}_src.lists}}
    destination: {schema}.lists
"
    ));
    assert_eq!(p.run(&lists, false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows(&format!(
            "select ns::text, tags[2], prices::text, pg_typeof(ns)::text, pg_typeof(tags)::text, pg_typeof(prices)::text
             from {schema}.lists order by id"
        )),
        vec![
            ["{1,NULL,3}", "b c", "{1.50}", "integer[]", "text[]", "numeric[]"].map(String::from).to_vec(),
            ["{}", "NULL", "{}", "integer[]", "text[]", "numeric[]"].map(String::from).to_vec()
        ]
    );
    // A new array column at the source is added to the destination as an array.
    pg.batch_execute(&format!("alter table {schema}_src.lists add column more bigint[]; update {schema}_src.lists set more = '{{7}}'"))
        .unwrap();
    p.run(&lists, false).unwrap();
    assert_eq!(
        p.rows(&format!("select pg_typeof(more)::text, more::text from {schema}.lists where more is not null limit 1"))[0],
        ["bigint[]", "{7}"]
    );
    pg.batch_execute(&format!("drop schema {schema} cascade; drop schema {schema}_src cascade")).unwrap();
}

/// PostgreSQL into DuckDB goes as binary COPY turned into Arrow batches for DuckDB's appender:
/// every type keeps its value (decimals rounded to an unbounded numeric's scale, infinite
/// dates and times, bytes, padded chars). A NaN in a decimal fails the load naming the column.
/// UUIDs, JSON, enums, intervals, domains (as the types they are over) and one-dimensional
/// arrays (as lists) cross in binary too; a column of a type with no binary reader here (an
/// array of UUIDs or of a domain, a column declared with two dimensions) crosses as
/// PostgreSQL's text for it.
#[test]
fn postgres_types_into_duckdb_over_binary_copy() {
    let schema = format!("weir_load_pgbin_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!(
        "drop schema if exists {schema} cascade; create schema {schema};
         create table {schema}.t (i int, b bool, s smallint, l bigint, r real, d double precision, n numeric(12,2),
            u numeric, c char(3), v varchar(10), tx text, dt date, tm time, ts timestamp, tz timestamptz, by bytea);
         insert into {schema}.t values
            (1, true, -32768, 9007199254740993, 1.5, 2.25, -1234.56, 123.4567890126, 'ab', 'vv', e'two\\nlines, \"q\"',
             '2024-02-29', '12:34:56.789', '2024-01-01 10:00:00.123456', '2024-01-01 10:00:00+02', '\\xdead'),
            (2, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null),
            (3, false, 7, 0, 0, 0, 0.01, 100000, 'xyz', '', 'été', 'infinity', '00:00', '-infinity', 'infinity', '');
         create table {schema}.nan (n numeric(10,2)); insert into {schema}.nan values (1), ('NaN');
         create type {schema}.mood as enum ('calm', 'cross');
         create table {schema}.odd (id uuid, doc jsonb, raw json, m {schema}.mood);
         insert into {schema}.odd values ('0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70', '{{\"a\": [1, 2]}}', '{{\"b\":  true}}', 'cross'), (null, null, null, null);
         create table {schema}.arr (id int, tags text[], span interval, stamp timestamp(3), ns int[], prices numeric(10,2)[],
            seen timestamptz[], grid int[][], ids uuid[]);
         insert into {schema}.arr values (1, '{{a,\"b c\"}}', '1 day 02:00:00', '2024-01-01 10:00:00.123', '{{1,NULL,3}}',
            '{{1.5,2.255}}', '{{\"2024-01-01 10:00:00+02\"}}', '{{{{1,2}},{{3,4}}}}', '{{0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70}}'),
            (2, '{{}}', null, null, null, '{{}}', null, null, null);
         create table {schema}.deep (ns int[]); insert into {schema}.deep values ('{{{{1,2}},{{3,4}}}}');
         create domain {schema}.posint as integer check (value > 0);
         create domain {schema}.price as numeric(10,2);
         create domain {schema}.code as varchar(5);
         create domain {schema}.dearer as {schema}.price check (value > 1);
         create table {schema}.dom (id {schema}.posint, p {schema}.price, c {schema}.code, d {schema}.dearer, ns {schema}.posint[]);
         insert into {schema}.dom values (1, 2.5, 'ab', 3.25, '{{1,2}}'), (2, null, null, null, null);"
    ))
    .unwrap();
    let p = Project::duckdb();
    let load =
        |name: &str| p.load(&format!("loads:\n  - name: {name}\n    source: {{kind: postgres, url: '{PG}', table: {schema}.{name}}}\n"));
    let before = now_sql();
    let r = p.run(&load("t"), false).unwrap();
    assert_eq!(r.rows_loaded, 3);
    // The load's columns, which the binary path writes with the rows.
    assert_eq!(stamped_rows(&p, "raw.t", &r.load_id, &before), "3");
    let rows = p.rows(
        "select b, s, l, r, d, n, u, c, v, tx, dt::varchar, tm::varchar, ts::varchar, tz::varchar, hex(\"by\") from raw.t order by i",
    );
    let text = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rows[0],
        text(&[
            "true",
            "-32768",
            "9007199254740993",
            "1.5",
            "2.25",
            "-1234.56",
            "123.456789013",
            "ab ",
            "vv",
            "two\nlines, \"q\"",
            "2024-02-29",
            "12:34:56.789",
            "2024-01-01 10:00:00.123456",
            "2024-01-01 08:00:00+00",
            "DEAD"
        ])
    );
    assert!(rows[1].iter().all(|v| v == "NULL"), "{:?}", rows[1]);
    assert_eq!(rows[2][..10], text(&["false", "7", "0", "0", "0", "0.01", "100000.000000000", "xyz", "", "été"]));
    assert_eq!(rows[2][10..], text(&["infinity", "00:00:00", "-infinity", "infinity", ""]));
    let types = p.rows("select data_type from information_schema.columns where table_name = 't' order by ordinal_position");
    assert_eq!(
        types.iter().map(|r| r[0].as_str()).take(8).collect::<Vec<_>>(),
        ["INTEGER", "BOOLEAN", "INTEGER", "BIGINT", "DOUBLE", "DOUBLE", "DECIMAL(12,2)", "DECIMAL(38,9)"]
    );

    // Domains arrive as the types they are over, a domain over a domain too; an array of a
    // domain as its text.
    assert_eq!(p.run(&load("dom"), false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows("select id, p::varchar, c, d::varchar, ns from raw.dom order by id"),
        vec![text(&["1", "2.50", "ab", "3.25", "{1,2}"]), text(&["2", "NULL", "NULL", "NULL", "NULL"])]
    );
    let types = p.rows("select data_type from information_schema.columns where table_name = 'dom' order by ordinal_position");
    assert_eq!(
        types.iter().map(|r| r[0].as_str()).take(5).collect::<Vec<_>>(),
        ["INTEGER", "DECIMAL(10,2)", "VARCHAR", "DECIMAL(10,2)", "VARCHAR"]
    );
    // In a query, a column computed as a domain has no catalog entry: its base type is used.
    let q = p.load(&format!(
        "loads:\n  - name: domq\n    source: {{kind: postgres, url: '{PG}', query: 'select id, cast(id * 7 as {schema}.posint) as q from {schema}.dom'}}\n"
    ));
    assert_eq!(p.run(&q, false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows("select data_type from information_schema.columns where table_name = 'domq' order by ordinal_position")[..2],
        [text(&["INTEGER"]), text(&["INTEGER"])]
    );
    assert_eq!(p.scalar("select sum(q) from raw.domq"), "21");

    let e = p.run(&load("nan"), false).unwrap_err().to_string();
    assert!(e.contains("load 'nan'") && e.contains("column n: NaN does not fit decimal(10,2)"), "{e}");
    assert_eq!(p.run(&load("odd"), false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows("select cast(id as varchar), cast(doc as varchar), cast(raw as varchar), m from raw.odd order by id nulls last"),
        vec![
            text(&["0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70", r#"{"a": [1, 2]}"#, r#"{"b":  true}"#, "cross"]),
            text(&["NULL", "NULL", "NULL", "NULL"])
        ]
    );
    let types = p.rows("select data_type from information_schema.columns where table_name = 'odd' order by ordinal_position");
    assert_eq!(types.iter().map(|r| r[0].as_str()).take(4).collect::<Vec<_>>(), ["UUID", "JSON", "JSON", "VARCHAR"]);
    assert_eq!(p.run(&load("arr"), false).unwrap().rows_loaded, 2);
    assert_eq!(
        p.rows(
            "select len(tags), tags[2], span::varchar, stamp::varchar, ns::varchar, prices::varchar,
                seen[1] = timestamptz '2024-01-01 08:00:00+00', grid, ids from raw.arr order by id"
        ),
        vec![
            text(&[
                "2",
                "b c",
                "1 day 02:00:00",
                "2024-01-01 10:00:00.123",
                "[1, NULL, 3]",
                "[1.50, 2.26]",
                "true",
                "{{1,2},{3,4}}",
                "{0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70}"
            ]),
            text(&["0", "NULL", "NULL", "NULL", "NULL", "[]", "NULL", "NULL", "NULL"])
        ]
    );
    let types = p.rows("select data_type from information_schema.columns where table_name = 'arr' order by ordinal_position");
    assert_eq!(
        types.iter().map(|r| r[0].as_str()).take(9).collect::<Vec<_>>(),
        [
            "INTEGER",
            "VARCHAR[]",
            "INTERVAL",
            "TIMESTAMP",
            "INTEGER[]",
            "DECIMAL(10,2)[]",
            "TIMESTAMP WITH TIME ZONE[]",
            "VARCHAR",
            "VARCHAR"
        ]
    );
    // A two-dimensional value in a column declared with one dimension: the load fails, names
    // the column and says what to do; nothing is written.
    let e = p.run(&load("deep"), false).unwrap_err().to_string();
    assert!(e.contains("load 'deep'") && e.contains("column ns: a 2-dimensional array") && e.contains("cast the column to text"), "{e}");
    assert_eq!(p.scalar("select count(*) from information_schema.tables where table_name = 'deep'"), "0");
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
}

/// Files into PostgreSQL go as binary COPY: every type keeps its value (nulls, quotes and
/// newlines in text, decimals, times with and without a zone, bytes, lists as arrays (and lists
/// of lists as their text), UUIDs as their 16 bytes).
#[test]
fn typed_files_into_postgres_over_binary_copy() {
    let schema = format!("weir_load_bin_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!("drop schema if exists {schema} cascade")).unwrap();
    let p = Project::postgres();
    std::fs::create_dir_all(p.root().join("d")).unwrap();
    let writer = weir_warehouse::duckdb::DuckDb::open(&Default::default(), p.root()).unwrap();
    let mut w = writer.connect().unwrap();
    let rows = "select i::tinyint as tiny, i::smallint as small, i::integer as int, i::bigint * 1000000000 as big,
            i / 4 as dbl, (i * 1.25)::decimal(10, 2) as dec, i % 2 = 0 as flag,
            case i when 1 then 'a \"quoted\", value' when 2 then e'two\nlines' when 3 then 'été' end as txt,
            date '2024-02-29' + i::integer as day, time '12:34:56.789' as at,
            timestamp '2024-01-01 10:00:00.123456' + to_hours(i) as ts,
            (timestamp '2024-01-01 10:00:00' + to_days(i::integer))::timestamptz as tstz,
            '\\xDE\\xAD'::blob as bytes, [i, i + 1] as list, to_days(i::integer) + interval 90 minute as span,
            [[i]] as grid
        from range(4) t(i)";
    let parquet = p.root().join("d/typed.parquet");
    w.execute(&format!("copy ({rows}) to '{}' (format parquet)", parquet.display())).unwrap();
    let load = p.load(&format!(
        "loads:\n  - name: typed\n    source: {{kind: parquet, path: 'd/typed.parquet'}}\n    destination: {schema}.typed\n"
    ));
    assert_eq!(p.run(&load, false).unwrap().rows_loaded, 4);
    let got = p.rows(&format!(
        "select tiny, small, int, big, dbl, dec, flag, txt, day, at, ts, tstz at time zone 'UTC', encode(bytes, 'hex'), list
         from {schema}.typed order by tiny"
    ));
    let text = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got[0],
        text(&[
            "0",
            "0",
            "0",
            "0",
            "0",
            "0.00",
            "true",
            "NULL",
            "2024-02-29",
            "12:34:56.789",
            "2024-01-01 10:00:00.123456",
            "2024-01-01 10:00:00",
            "dead",
            "{0,1}"
        ])
    );
    assert_eq!(got[1][7], "a \"quoted\", value");
    assert_eq!(got[2][7], "two\nlines");
    assert_eq!(got[3][..7], text(&["3", "3", "3", "3000000000", "0.75", "3.75", "false"]));
    assert_eq!(
        got[3][7..],
        text(&["été", "2024-03-03", "12:34:56.789", "2024-01-01 13:00:00.123456", "2024-01-04 10:00:00", "dead", "{3,4}"])
    );
    let types = p.rows(&format!(
        "select data_type from information_schema.columns where table_schema = '{schema}' and table_name = 'typed' order by ordinal_position"
    ));
    let types: Vec<&str> = types.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(types[14..16], ["interval", "text"]);
    assert_eq!(p.scalar(&format!("select grid from {schema}.typed where tiny = 3")), "[[3]]");
    assert_eq!(p.scalar(&format!("select span from {schema}.typed where tiny = 3")), "3 days 01:30:00");
    assert_eq!(
        types[..14],
        [
            "integer",
            "integer",
            "integer",
            "bigint",
            "double precision",
            "numeric",
            "boolean",
            "text",
            "date",
            "time without time zone",
            "timestamp without time zone",
            "timestamp with time zone",
            "bytea",
            "ARRAY"
        ]
    );

    w.execute(&format!(
        "copy (select '0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70'::uuid as id, 1 as n) to '{}' (format parquet)",
        p.root().join("d/ids.parquet").display()
    ))
    .unwrap();
    let ids =
        p.load(&format!("loads:\n  - name: ids\n    source: {{kind: parquet, path: 'd/ids.parquet'}}\n    destination: {schema}.ids\n"));
    assert_eq!(p.run(&ids, false).unwrap().rows_loaded, 1);
    assert_eq!(p.scalar(&format!("select id::text || ' ' || n from {schema}.ids")), "0b3ad1c4-6c4e-4c1a-9f5e-2d3c4b5a6f70 1");
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
}

#[test]
fn a_run_killed_after_its_commit_is_settled_from_the_destination() {
    let p = Project::duckdb();
    p.write("k/1.csv", "id\n1\n2\n");
    let load = p.load("loads:\n  - name: k\n    source: {kind: csv, path: 'k/*.csv'}\n");
    let first = p.run(&load, false).unwrap();
    // Pretend the process died after the warehouse commit, before the store heard of it:
    // the store's record goes back to `running` and forgets the file.
    let key = p.wh.render(&weir_core::Relation::new(&p.database, "raw", "k"));
    p.store.reset_load_state(&key).unwrap();
    let conn = rusqlite_reset(&p, &first.load_id);
    drop(conn);
    // And a second run that died before committing anything.
    p.store
        .begin_load(&weir_store::LoadRun {
            load_id: "dead".into(),
            load_name: "k".into(),
            destination: key.clone(),
            status: "running".into(),
            started_at: chrono::Utc::now(),
            finished_at: None,
            rows_read: None,
            rows_loaded: None,
            rows_rejected: None,
            cursor: None,
            message: None,
        })
        .unwrap();
    let again = p.run(&load, false).unwrap();
    assert!(again.up_to_date, "the settled run's file counts as loaded: {again:?}");
    assert_eq!(p.scalar("select count(*) from raw.k"), "2");
    let runs = p.store.load_runs("k", 10).unwrap();
    let by_id = |id: &str| runs.iter().find(|r| r.load_id == id).map(|r| r.status.clone());
    assert_eq!(by_id(&first.load_id).as_deref(), Some("committed"));
    assert_eq!(by_id("dead").as_deref(), Some("failed"));
}

/// Puts a committed run back to `running`, as a process killed before recording it leaves it.
fn rusqlite_reset(p: &Project, load_id: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(p.root().join(".weir/weir.db")).unwrap();
    conn.execute("update weir_load_runs set status = 'running' where load_id = ?1", [load_id]).unwrap();
    conn
}

/// Now (UTC), as a DuckDB timestamp literal.
fn now_sql() -> String {
    format!("timestamp '{}'", chrono::Utc::now().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// How many rows of `table` carry the load `load_id` and a load time between `before` and now.
fn stamped_rows(p: &Project, table: &str, load_id: &str, before: &str) -> String {
    let now = now_sql();
    p.scalar(&format!("select count(*) from {table} where _weir_load_id = '{load_id}' and _weir_loaded_at between {before} and {now}"))
}

#[test]
fn a_replace_that_rejects_rows_keeps_them_as_the_source_had_them() {
    let p = Project::duckdb();
    p.write("r/items.csv", "id,qty\n1,5\n");
    let load = p.load(
        "loads:\n  - name: items\n    source: {kind: csv, path: r/items.csv}\n    write_disposition: replace\n    schema_contract: discard_row\n",
    );
    p.run(&load, false).unwrap();
    p.write("r/items.csv", "id,qty,note\n2,6,\n3,7,hello\n");
    let before = now_sql();
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_read, r.rows_loaded, r.rows_rejected), (2, 1, 1), "{r:?}");
    let raw = p.scalar("select raw from raw._weir_rejected");
    assert!(raw.contains("hello") && !raw.contains("_weir_load"), "the rejected row is the source's, not the load's: {raw}");
    assert_eq!(stamped_rows(&p, "raw.items", &r.load_id, &before), "1");
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',') from raw.items"), "2");
}

/// A replace on DuckDB makes the scratch table the destination (one write of the data):
/// views over the destination see the new rows, nothing of the old stays, and a destination
/// with other columns than the source's is refilled in place instead, keeping them.
#[test]
fn replace_swaps_in_the_new_table_and_views_follow() {
    let p = Project::duckdb();
    p.write("data/items.csv", "id,name\n1,a\n2,b\n");
    let load = p.load("loads:\n  - name: items\n    source: {kind: csv, path: data/items.csv}\n    write_disposition: replace\n");
    p.run(&load, false).unwrap();
    let mut c = p.wh.connect().unwrap();
    c.execute("create view main.items_view as select id, name from raw.items").unwrap();
    p.write("data/items.csv", "id,name\n3,c\n4,d\n5,e\n");
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_loaded, r.rows_rejected), (3, 0), "{r:?}");
    assert_eq!(p.scalar("select string_agg(cast(id as varchar), ',' order by id) from main.items_view"), "3,4,5");
    assert_eq!(p.scalar("select count(distinct _weir_load_id) from raw.items"), "1");
    assert_eq!(p.scalar("select min(_weir_source_file) from raw.items"), "data/items.csv");
    let defaults = p.scalar("select count(*) from duckdb_columns() where table_name = 'items' and column_default is not null");
    assert_eq!(defaults, "0", "the load's columns keep no default");
    assert_eq!(p.scalar("select count(*) from duckdb_tables() where table_name like '_weir_stage%'"), "0");

    // A column the source no longer has: the table is refilled, and the column kept (null).
    c.execute("alter table raw.items add column note varchar").unwrap();
    p.write("data/items.csv", "id,name\n6,f\n");
    p.run(&load, false).unwrap();
    assert_eq!(p.rows("select id, note from raw.items"), vec![vec!["6".to_string(), "NULL".to_string()]]);
}

/// Tables an older Weir created hold the run's id as text. Loads into them go on, on both
/// engines: the new runs' ids arrive as text in the table and in both bookkeeping tables.
#[test]
fn tables_holding_an_older_weirs_text_ids_keep_loading() {
    older_text_ids(&Project::duckdb(), "raw");
    let schema = format!("weir_load_old_{}", std::process::id());
    let mut pg = pg_client();
    pg.batch_execute(&format!("drop schema if exists {schema} cascade")).unwrap();
    older_text_ids(&Project::postgres(), &schema);
    pg.batch_execute(&format!("drop schema {schema} cascade")).unwrap();
}

fn older_text_ids(p: &Project, schema: &str) {
    for sql in [
        format!("create schema {schema}"),
        format!(
            "create table {schema}._weir_loads (load_id varchar primary key, load_name varchar, destination varchar,
             write_disposition varchar, rows_read bigint, rows_loaded bigint, rows_rejected bigint, cursor_value varchar,
             files varchar, schema_changes varchar, committed_at timestamp)"
        ),
        format!(
            "create table {schema}._weir_rejected (load_id varchar, load_name varchar, position varchar, raw varchar,
             reason varchar, rejected_at timestamp)"
        ),
        format!("create table {schema}.items (id bigint, _weir_source_file varchar, _weir_load_id varchar, _weir_loaded_at timestamp)"),
        format!("insert into {schema}.items values (0, 'old.csv', 'an-older-id', timestamp '2024-01-01 00:00:00')"),
    ] {
        p.execute(&sql);
    }
    p.write("n/items.csv", "id\n1\nx\n");
    let load = p.load(&format!(
        "loads:\n  - name: items\n    source: {{kind: csv, path: n/items.csv, columns: {{id: bigint}}}}\n    destination: {schema}.items\n"
    ));
    let r = p.run(&load, false).unwrap();
    assert_eq!((r.rows_loaded, r.rows_rejected), (1, 1), "{r:?}");
    let joined = format!(
        "select count(*) from {schema}.items i join {schema}._weir_loads l on l.load_id = i._weir_load_id
         join {schema}._weir_rejected j on j.load_id = i._weir_load_id where i._weir_load_id = '{}'",
        r.load_id
    );
    assert_eq!(p.scalar(&joined), "1");
    assert_eq!(p.scalar(&format!("select count(*) from {schema}.items")), "2");
    let still_text = format!(
        "select count(*) filter (where lower(data_type) <> 'uuid') || ' of ' || count(*) from information_schema.columns
         where table_schema = '{schema}' and column_name in ('_weir_load_id', 'load_id')"
    );
    assert_eq!(p.scalar(&still_text), "3 of 3", "the columns keep their type");
}
