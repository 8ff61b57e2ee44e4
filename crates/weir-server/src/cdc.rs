//! The CDC sources `weir serve` follows, as their servers and mirrors stand: each source's
//! position on the server, what the mirrors hold, the lag between, and on PostgreSQL the WAL
//! its slot keeps on the server's disk. Asked of the source databases on each request.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use weir_cdc::source::{CdcSource, Origin};

use crate::AppState;
use crate::api::{Failure, Reply};

/// The project's CDC sources and the warehouse their mirrors are in.
pub struct Cdc {
    pub sources: Vec<CdcSource>,
    pub warehouse: Arc<dyn weir_warehouse::Warehouse>,
}

/// One CDC source as it stands.
#[derive(Serialize, ToSchema)]
pub struct CdcInfo {
    /// The load that declares it.
    pub name: String,
    /// postgres or mariadb.
    pub kind: String,
    /// The server, its password hidden.
    pub source: String,
    pub tables: Vec<String>,
    /// `following`, `stopped`, `never run`, `slot missing` (PostgreSQL), `binlog lost` (MariaDB:
    /// the mirrors' file is gone from the server) or `error`.
    pub state: String,
    /// The replication slot (PostgreSQL).
    pub slot: Option<String>,
    /// Where the server's log ends now (an LSN, or a binlog file:offset).
    pub server_position: Option<String>,
    /// What the slot has confirmed (PostgreSQL).
    pub confirmed: Option<String>,
    /// What the mirrors hold up to.
    pub mirror_position: Option<String>,
    pub mirror_updated_at: Option<String>,
    /// Bytes of log written since the mirrors' position.
    pub lag_bytes: Option<i64>,
    /// Seconds since the mirrors last moved, when the server has written since.
    pub lag_seconds: Option<f64>,
    /// Bytes of WAL the slot keeps on the server's disk (PostgreSQL), and the limit past
    /// which Weir warns.
    pub retained_wal_bytes: Option<i64>,
    pub max_retained_wal_bytes: u64,
    /// PostgreSQL's `wal_status`: reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
    /// Why its status could not be read.
    pub error: Option<String>,
}

/// Every CDC source of the project, with its position, lag and retained WAL.
#[utoipa::path(get, path = "/api/v1/cdc", responses((status = 200, body = [CdcInfo])))]
pub(crate) async fn list_cdc(State(s): State<AppState>) -> Reply<Vec<CdcInfo>> {
    let Some(cdc) = s.cdc.clone() else { return Ok(Json(vec![])) };
    let infos = tokio::task::spawn_blocking(move || {
        let out = cdc.sources.iter().map(|src| info(src, &cdc.warehouse)).collect();
        cdc.warehouse.release();
        out
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(infos))
}

fn info(s: &CdcSource, wh: &Arc<dyn weir_warehouse::Warehouse>) -> CdcInfo {
    let mut i = CdcInfo {
        name: s.name.clone(),
        kind: match s.origin {
            Origin::Postgres(_) => "postgres",
            Origin::Mariadb(_) => "mariadb",
        }
        .into(),
        source: s.shown.clone(),
        tables: s.cdc.tables.clone(),
        state: "error".into(),
        slot: None,
        server_position: None,
        confirmed: None,
        mirror_position: None,
        mirror_updated_at: None,
        lag_bytes: None,
        lag_seconds: None,
        retained_wal_bytes: None,
        max_retained_wal_bytes: s.cdc.max_retained_wal,
        wal_status: None,
        error: None,
    };
    match s.origin {
        Origin::Postgres(_) => match s.status(wh.clone()) {
            Ok(st) => {
                i.state = match (st.exists, st.active_pid, st.mirror_position) {
                    (false, _, None) => "never run",
                    (false, _, Some(_)) => "slot missing",
                    (true, Some(_), _) => "following",
                    (true, None, _) => "stopped",
                }
                .into();
                i.slot = Some(st.slot);
                i.server_position = st.server_position.map(|l| l.to_string());
                i.confirmed = st.confirmed.map(|l| l.to_string());
                i.mirror_position = st.mirror_position.map(|l| l.to_string());
                i.mirror_updated_at = st.mirror_updated_at;
                i.lag_bytes = st.lag_bytes;
                i.lag_seconds = st.lag_seconds;
                i.retained_wal_bytes = st.retained_bytes;
                i.wal_status = st.wal_status;
            }
            Err(e) => i.error = Some(e.to_string()),
        },
        Origin::Mariadb(_) => match s.binlog_status(wh.clone()) {
            Ok(st) => {
                i.state = match (st.follower, &st.mirror) {
                    (Some(_), _) => "following",
                    (None, None) => "never run",
                    (None, Some(_)) => "stopped",
                }
                .into();
                i.server_position = st.server.as_ref().map(ToString::to_string);
                i.mirror_position = st.mirror.as_ref().map(ToString::to_string);
                i.mirror_updated_at = st.mirror_updated_at;
                i.lag_bytes = st.lag_bytes.map(|b| b.min(i64::MAX as u64) as i64);
                i.lag_seconds = st.lag_seconds;
                if !st.file_kept {
                    i.state = "binlog lost".into();
                }
            }
            Err(e) => i.error = Some(e.to_string()),
        },
    }
    i
}
