//! `POST /api/sql`: a read-only SQL statement (the request body) over the tenant's `spans` table, answered as JSON
//! rows, or as an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, bad_request, tenant};

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub(super) async fn sql(State(api): State<Api>, headers: HeaderMap, body: String) -> Response {
    let run = async {
        let tenant = tenant(&headers)?;
        let statement = body.trim();
        if statement.is_empty() {
            return Err(bad_request("the request body must be one SQL statement, e.g. SELECT count(*) FROM spans"));
        }
        let max = api.limits.query.max_response_bytes;
        let out = api.bounded("SQL query", api.querier.sql(&tenant, statement, max)).await?;
        let arrow = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(ARROW_STREAM));
        let encoded = if arrow {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &out.schema).map_err(internal)?;
            for b in &out.batches {
                w.write(b).map_err(internal)?;
            }
            w.into_inner().map(|b| (b, ARROW_STREAM))
        } else {
            let mut w = arrow_json::ArrayWriter::new(Vec::new());
            let batches: Vec<&arrow::array::RecordBatch> = out.batches.iter().collect();
            w.write_batches(&batches).map_err(internal)?;
            w.finish().map_err(internal)?;
            let mut body = w.into_inner();
            // The writer emits nothing at all for zero rows.
            if body.is_empty() {
                body = b"[]".to_vec();
            }
            Ok((body, "application/json"))
        };
        let (body, ct) = encoded.map_err(internal)?;
        Ok::<_, ApiError>(api.sized(body, ct))
    };
    match run.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn internal(e: arrow::error::ArrowError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the result: {e}"))
}
