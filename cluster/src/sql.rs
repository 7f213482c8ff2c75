//! Small helpers for the store's SQL.

use tokio_postgres::types::ToSql;

/// Owned statement parameters, for pipelined statements (their futures
/// outlive a temporary `&[...]`).
pub(crate) fn params<'a>(p: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
    p.to_vec()
}
