//! The store's schema, as numbered migrations applied at connect.
//!
//! Several sidecars may start at once on an empty database: the whole
//! check-and-apply runs in one transaction holding a transaction-scoped
//! advisory lock, so one of them migrates and the others, once the lock is
//! theirs, see the new `schema_version` and apply nothing. A migration is
//! never edited once released: a change is a new entry at the end.

use tokio_postgres::Client;

use crate::ClusterError;

/// Advisory lock key held while migrating ("event-pusher" in ASCII, folded
/// into an i64; any constant works as long as it never changes).
const MIGRATION_LOCK: i64 = 0x6576_656e_7450_7573;

/// (version, SQL). Versions are consecutive from 1.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
    -- The push device registry: one row per registered device.
    CREATE TABLE devices (
        scope      text        NOT NULL,
        user_jid   text        NOT NULL,
        device_id  text        NOT NULL,
        record     jsonb       NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, user_jid, device_id)
    );
    -- Online resources per bare JID (a row per resource).
    CREATE TABLE presence (
        scope      text        NOT NULL,
        user_jid   text        NOT NULL,
        resource   text        NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, user_jid, resource)
    );
    -- message_count (the badge) per bare JID. Its row is also the lock that
    -- orders concurrent presence changes of one user.
    CREATE TABLE counts (
        scope         text   NOT NULL,
        user_jid      text   NOT NULL,
        message_count bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, user_jid)
    );
    -- Runtime webhook subscriptions. A detached one stays as a tombstone
    -- (deleted, record NULL: no secrets kept) so a late merge of a
    -- sidecar's spool cannot bring it back.
    CREATE TABLE subscriptions (
        id         text        PRIMARY KEY,
        record     jsonb,
        paused     boolean     NOT NULL DEFAULT false,
        deleted    boolean     NOT NULL DEFAULT false,
        version    bigint      NOT NULL DEFAULT 1,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- How far each sidecar's outbox has been applied (idempotent relay).
    CREATE TABLE relay_cursors (
        origin     text        PRIMARY KEY,
        seq        bigint      NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    -- Sidecars reporting to the store, with their counters.
    CREATE TABLE nodes (
        name       text        PRIMARY KEY,
        last_seen  timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz NOT NULL DEFAULT now(),
        stats      jsonb       NOT NULL DEFAULT '{}'
    );
    "#,
)];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Bring the schema up to [`SCHEMA_VERSION`]. Returns the migrations
/// applied (none when another sidecar got there first).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, ClusterError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    if current > SCHEMA_VERSION {
        // A newer sidecar migrated this database: its schema may not be
        // ours to read. Refuse rather than misread.
        return Err(ClusterError::NewerSchema { found: current });
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[version])
            .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
