//! Command-line arguments: dbt's commands and global flags, plus Weir's own.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "weir", version, about = "Weir: data pipelines in one binary. Runs dbt projects unchanged, on DuckDB or PostgreSQL.")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The project folder (holding dbt_project.yml). Defaults to the current folder.
    #[arg(long, global = true, env = "DBT_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,
    /// Where profiles.yml is. Defaults to $DBT_PROFILES_DIR, the project folder, then ~/.dbt.
    #[arg(long, global = true)]
    pub profiles_dir: Option<PathBuf>,
    /// The profile target to use instead of the profile's default.
    #[arg(long, short = 't', global = true)]
    pub target: Option<String>,
    /// Project variables as YAML: '{key: value}'.
    #[arg(long, global = true)]
    pub vars: Option<String>,
    /// Models to run at once (overrides the profile's threads).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// How to log: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Nodes to include (dbt selection syntax; repeatable).
    #[arg(long, short = 's', num_args = 1.., alias = "models", short_alias = 'm')]
    pub select: Vec<String>,
    /// Nodes to leave out.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// The folder of an earlier run's manifest.json, for `state:new` / `state:modified`.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunFlags {
    #[command(flatten)]
    pub selection: Selection,
    /// Rebuild incremental models and seeds from scratch.
    #[arg(long, short = 'f')]
    pub full_refresh: bool,
    /// Stop at the first failure.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
    /// Keep the rows that fail each test in a table.
    #[arg(long)]
    pub store_failures: bool,
    /// Read unselected models that this target lacks from where the --state run built them.
    #[arg(long, requires = "state")]
    pub defer: bool,
    /// Microbatch models: build batches from this event time (a date or timestamp).
    #[arg(long)]
    pub event_time_start: Option<String>,
    /// Microbatch models: build batches up to this event time (exclusive).
    #[arg(long)]
    pub event_time_end: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BackfillArgs {
    /// The models (selection syntax: `daily_revenue`, `daily_revenue+`, `tag:daily`).
    #[arg(required = true, num_args = 1..)]
    pub models: Vec<String>,
    /// Models to leave out.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    /// Event time to start at, inclusive (a date or timestamp).
    #[arg(long)]
    pub start: String,
    /// Event time to end at, exclusive.
    #[arg(long)]
    pub end: String,
    /// Reprocess every batch of the range, even those done, and everything downstream.
    #[arg(long)]
    pub restate: bool,
    /// Stop at the first failure.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
}

/// `weir check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Print one JSON document with every check's outcome instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Show the recorded history of the checks whose dataset or text contains NAME.
    #[arg(long, value_name = "NAME")]
    pub history: Option<String>,
    /// How many recorded outcomes `--history` shows (the newest).
    #[arg(long, default_value_t = 30)]
    pub limit: usize,
    /// Stop at the first failing dataset.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
}

/// `weir load`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// The loads to run, by name (all of them when none is given and nothing is selected).
    pub names: Vec<String>,
    #[command(flatten)]
    pub selection: Selection,
    /// Start over: forget what was loaded (high-water marks, files) and replace the tables.
    #[arg(long, short = 'f')]
    pub full_refresh: bool,
    /// Stop at the first failing load.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
    /// Show the recorded runs of the load NAME.
    #[arg(long, value_name = "NAME")]
    pub history: Option<String>,
    /// How many runs `--history` shows (the newest).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Seed, run, snapshot and test the selected nodes in dependency order.
    Build(RunFlags),
    /// Build the selected models.
    Run(RunFlags),
    /// Run the selected data tests.
    Test(RunFlags),
    /// Load the selected seed CSV files.
    Seed(RunFlags),
    /// Record changes of the selected snapshots (SCD type 2 tables).
    Snapshot(RunFlags),
    /// Process the missing event-time batches of microbatch models over a range.
    Backfill(BackfillArgs),
    /// Extract and load: run the loads of `loads/*.yml` into the warehouse's raw layer, or
    /// show a load's runs.
    Load(LoadArgs),
    /// Run the data-quality checks of `checks/*.yml` (on selected datasets), or show a
    /// check's history.
    Check(CheckArgs),
    /// Render the selected nodes' SQL into target/compiled without running it.
    Compile {
        #[command(flatten)]
        selection: Selection,
        /// Compile this SQL instead of project nodes.
        #[arg(long)]
        inline: Option<String>,
    },
    /// Parse the project and write target/manifest.json.
    Parse,
    /// List the project's resources.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        selection: Selection,
        /// Only these resource types (model, seed, test, source, snapshot, analysis).
        #[arg(long, num_args = 1..)]
        resource_type: Vec<String>,
        /// selector (default), name, path or json.
        #[arg(long, short = 'o', default_value = "selector")]
        output: String,
        /// Microbatch models' processed and missing event-time intervals.
        #[arg(long)]
        intervals: bool,
        /// MODEL.COLUMN: the columns that feed it, through which expressions, back to the
        /// sources and seeds (column-level lineage of the compiled SQL).
        #[arg(long, value_name = "MODEL.COLUMN")]
        lineage: Option<String>,
    },
    /// Preview the rows a model (or inline SQL) returns.
    Show {
        #[command(flatten)]
        selection: Selection,
        #[arg(long)]
        inline: Option<String>,
        /// How many rows.
        #[arg(long, short = 'n', default_value_t = 5)]
        limit: usize,
    },
    /// Check the project, the profile and the warehouse connection.
    Debug,
    /// Delete the project's clean-targets (target/ by default).
    Clean,
    /// Install the packages in packages.yml (or dependencies.yml) into dbt_packages/, with
    /// the packages they need, and pin them in package-lock.yml.
    Deps {
        /// Resolve the packages again even when package-lock.yml matches the list.
        #[arg(long)]
        upgrade: bool,
        /// Only write package-lock.yml; install nothing.
        #[arg(long)]
        lock: bool,
        /// Add a package to packages.yml first: NAME@VERSION (hub), URL@REVISION (git), PATH
        /// (local); an entry for the same package is replaced.
        #[arg(long, value_name = "PACKAGE")]
        add_package: Option<String>,
        /// Where --add-package comes from: hub, git, local or tarball.
        #[arg(long, default_value = "hub", requires = "add_package")]
        source: String,
    },
    /// Create a new, working project folder.
    Init {
        /// The project name (a folder of that name is created).
        name: String,
        /// Warehouse for the generated profile.
        #[arg(long, default_value = "duckdb")]
        adapter: String,
    },
    /// Project documentation.
    Docs {
        #[command(subcommand)]
        command: DocsCommand,
    },
    /// Sources: `weir source freshness`.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Pipelines (`pipelines/*.yml`): run one in the foreground, backfill it, list them and
    /// their runs, read a task's log.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// The scheduler daemon and the REST API: queues scheduled runs, runs them, takes over
    /// runs of dead workers, and serves /api/v1 (OpenAPI at /api/v1/openapi.json).
    Serve {
        /// HOST:PORT to listen on (default: server.bind in weir.yml, else 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
    },
    /// The event log (`.weir/log/`, topics declared in `streams/*.yml`): list and describe
    /// topics, produce events from a file or stdin, consume them.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Stream jobs (`streams/*.sql`): windowed SQL over the event log's topics, written to
    /// the warehouse exactly once.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Change data capture (`mode: cdc` loads): follow a database's change log into mirror
    /// tables, see how far each source is, drop what Weir made on the server.
    Cdc {
        #[command(subcommand)]
        command: CdcCommand,
    },
    /// The schema registry (served by `weir serve` under /registry): subjects, their
    /// schemas, compatibility checks and registrations, from the metadata store.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// The metadata store: back it up, restore it, see where it is.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Run SQL against the target (with `ref`, `source`, `var`) and print what it returns.
    Sql {
        /// One statement (its rows are printed) or a `;`-separated script.
        sql: String,
        /// Also write the rows of the statement as a JSON array of objects to this file.
        #[arg(long, value_name = "PATH")]
        json_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// The project's pipelines: schedule, next run, last run.
    List,
    /// Run a pipeline now, in the foreground, showing each task as it starts and ends.
    Run {
        name: String,
        /// A param for this run (repeatable); the value is read as YAML (`full=true`, `n=3`).
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Run the data interval that contains this date or time (default: the newest closed
        /// interval of the schedule, or now for a pipeline without one).
        #[arg(long)]
        date: Option<String>,
        /// Resume or rerun this run: its tasks that succeeded are kept, the others run again.
        #[arg(long)]
        run_id: Option<String>,
    },
    /// One run per data interval whose start lies in [--start, --end), in parallel;
    /// intervals that already have a successful run are skipped.
    Backfill {
        name: String,
        /// The first interval starts at or after this date or time.
        #[arg(long)]
        start: String,
        /// Intervals starting at or after this are left out.
        #[arg(long)]
        end: String,
        /// Runs at once (default: the pipeline's max_active_runs, at most 4).
        #[arg(long)]
        parallel: Option<usize>,
        /// Run intervals again even when they already succeeded.
        #[arg(long)]
        rerun: bool,
        /// A param for every run (repeatable).
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// The newest runs of a pipeline (or of all), with their tasks.
    Runs {
        name: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The log of one task of one run (the last attempt unless --attempt).
    Logs {
        name: String,
        run_id: String,
        task: String,
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Stop scheduling a pipeline: no new scheduled runs, and its queued runs wait.
    Pause { name: String },
    /// Schedule a paused pipeline again.
    Unpause { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy the metadata store to a file while it is in use (SQLite: a consistent
    /// snapshot; PostgreSQL: pg_dump of Weir's tables).
    Backup {
        /// Where to write the copy.
        path: PathBuf,
    },
    /// Replace the metadata store with a backup. Refused while a scheduler or a pipeline
    /// run is alive, unless --force.
    Restore {
        path: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Where the store is, its schema version, and the live workers.
    Info,
}

#[derive(Subcommand, Debug)]
pub enum SourceCommand {
    /// How old the newest row of each source table is, against its freshness block's
    /// warn_after / error_after; writes target/sources.json.
    Freshness {
        #[command(flatten)]
        selection: Selection,
        /// Where to write the results (default target/sources.json).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// Write target/manifest.json, target/catalog.json and target/index.html.
    Generate,
}

#[derive(Subcommand, Debug)]
pub enum CdcCommand {
    /// Every cdc source: its database, slot and mirror tables.
    List,
    /// Follow a source in the foreground (a new mirror first takes a snapshot), with a live
    /// line of changes and position; Ctrl-C stops it after its merge.
    Run {
        name: String,
        /// Start over: forget the mirrors' position, drop the slot, take a new snapshot.
        #[arg(long)]
        full_refresh: bool,
        /// Merge at least this often (milliseconds) while changes arrive.
        #[arg(long, default_value_t = 500)]
        batch_wait_ms: u64,
    },
    /// Where each source is: the slot, its lag in bytes and seconds, the WAL it retains, and
    /// the incremental snapshots under way.
    Status { name: Option<String> },
    /// Read tables of a source again while it streams: an incremental snapshot, in chunks
    /// by key, with no lock and no pause. A running follower takes the request; otherwise
    /// the source is followed here until the tables are read.
    Snapshot {
        name: String,
        /// The tables (`schema.table`, or a table of the source's home schema).
        #[arg(required = true)]
        tables: Vec<String>,
        /// Merge at least this often (milliseconds) while changes arrive.
        #[arg(long, default_value_t = 500)]
        batch_wait_ms: u64,
    },
    /// Drop the slot, the publication Weir made and the mirrors' position (the mirror tables
    /// stay; the next run takes a new snapshot).
    Drop { name: String },
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Every job: its topic, window, sink table and state.
    List,
    /// Run a job in the foreground, with a live line of throughput, lag and watermark;
    /// Ctrl-C stops it after a last write and checkpoint.
    Run {
        name: String,
        /// Stop once every event the topic holds has been read, written and checkpointed.
        #[arg(long)]
        drain: bool,
        /// Start over: forget the checkpoints, drop the sink table, read from the first event.
        #[arg(long)]
        reset: bool,
        /// Run as one of the job's workers: start as many as wanted, on this machine or
        /// others; the job's Kafka partitions are dealt among them and move when one joins,
        /// leaves or dies, each with its window state (kept in the metadata store).
        #[arg(long, conflicts_with = "reset")]
        worker: bool,
    },
    /// Where each job is: events read, counted, late, rejected; positions and lag per partition.
    Status { name: Option<String> },
    /// Forget a job's checkpoints, sink table and positions; it starts again from the first event.
    Reset { name: String },
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Every subject with its versions, latest schema id and compatibility level.
    Subjects {
        /// Only subjects starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Soft-deleted subjects too.
        #[arg(long)]
        deleted: bool,
    },
    /// A subject's schema (the latest version, or --version), or a schema by --id.
    Show {
        subject: Option<String>,
        #[arg(long, short = 'v')]
        version: Option<String>,
        #[arg(long, conflicts_with = "version")]
        id: Option<i64>,
    },
    /// Whether a schema file may become the subject's next version under its compatibility
    /// level (against one --version only, if given); exits 1 with the reasons if not.
    Check {
        subject: String,
        #[command(flatten)]
        schema: SchemaFile,
        #[arg(long, short = 'v')]
        version: Option<String>,
    },
    /// Register a schema file under a subject (its next version, if it is compatible).
    Register {
        subject: String,
        #[command(flatten)]
        schema: SchemaFile,
    },
}

/// A schema file and how to read it.
#[derive(clap::Args, Debug)]
pub struct SchemaFile {
    /// The schema: .avsc (Avro), .proto (Protobuf) or .json (JSON Schema).
    pub file: PathBuf,
    /// avro, json or protobuf, when the extension does not say.
    #[arg(long = "type")]
    pub schema_type: Option<String>,
    /// A schema it refers to, as NAME=SUBJECT:VERSION (repeatable).
    #[arg(long = "reference")]
    pub references: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Every topic: declared in streams/*.yml, or made by a produce.
    Topics,
    /// A topic's partitions (offsets kept, bytes) and the consumer groups reading it.
    Describe { topic: String },
    /// Append events from a file (or stdin): JSON lines, or CSV with a header; each event is
    /// keyed by the topic's key column or --key.
    Produce {
        topic: String,
        /// Read this file instead of stdin.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// json (one JSON value per line), csv (a header line, then rows) or raw (each line as
        /// it is); default json, or raw for a topic declared `format: raw`.
        #[arg(long)]
        format: Option<String>,
        /// The column whose value keys each event (default: the topic's `key`).
        #[arg(long)]
        key: Option<String>,
        /// Make an undeclared topic with this many partitions.
        #[arg(long)]
        partitions: Option<u32>,
        /// A record header every event gets, as NAME=VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
    },
    /// Print a topic's events as JSON lines: partition, offset, timestamp, key, value (and
    /// headers, when a record has them).
    Consume {
        topic: String,
        /// Only this partition.
        #[arg(long, short = 'p')]
        partition: Option<u32>,
        /// Start at this offset of each partition (default: the first one kept).
        #[arg(long, conflicts_with = "from_end")]
        offset: Option<u64>,
        /// Start at the end: only events appended from now on (with --follow).
        #[arg(long)]
        from_end: bool,
        /// Stop after this many events.
        #[arg(long, short = 'n')]
        max: Option<usize>,
        /// Keep waiting for new events.
        #[arg(long)]
        follow: bool,
    },
}
