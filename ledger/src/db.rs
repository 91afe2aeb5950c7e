//! PostgreSQL: the connection pool and the command side's migrations.
//!
//! The command side's migrations (`ledger/migrations/`) and the gateway's
//! (`gateway-adapter/migrations/`) share one history table and one version
//! sequence, so a deployment's history stays what it was before the gateway
//! moved out: `V1` is the command side's, `V2` and `V3` the gateway's, and a
//! new migration takes the next free number across both folders. Every
//! process applies the same set (refinery refuses a history that names a
//! migration it was not given).

use deadpool_postgres::Pool;
use refinery::Migration;

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub use ledger_projections::db::pool;

/// The advisory lock that lets one process at a time migrate.
const MIGRATION_LOCK: i64 = 0x4c45_4447_0000_00ff;

/// The command side's own migrations.
pub fn migrations() -> Vec<Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

/// Applies every migration, the command side's with `others` (the gateway's)
/// and the read models', one process at a time (several `ledger` processes
/// may start together).
pub async fn migrate(pool: &Pool, others: &[Migration]) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut conn;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        migrate_command(client, others).await?;
        ledger_projections::db::migrate_on(client).await
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn migrate_command(
    client: &mut tokio_postgres::Client,
    others: &[Migration],
) -> anyhow::Result<()> {
    let mut all = migrations();
    all.extend_from_slice(others);
    refinery::Runner::new(&all)
        // Schema-qualified: with a role named `ledger`, an unqualified name would
        // land in schema `ledger` (first on the default search_path) once the
        // read models create it, and the history would seem empty.
        .set_migration_table_name("public.ledger_cmd_migrations")
        .run_async(client)
        .await?;
    Ok(())
}
