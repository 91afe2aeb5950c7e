//! PostgreSQL: the connection pool and the command side's migrations.

use deadpool_postgres::Pool;

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub use ledger_projections::db::pool;

/// The advisory lock that lets one process at a time migrate.
const MIGRATION_LOCK: i64 = 0x4c45_4447_0000_00ff;

/// Applies every migration, the command side's and the read models', one
/// process at a time (several `ledger` processes may start together).
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut conn;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        migrate_command(client).await?;
        ledger_projections::db::migrate_on(client).await
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn migrate_command(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    embedded::migrations::runner()
        // Schema-qualified: with a role named `ledger`, an unqualified name would
        // land in schema `ledger` (first on the default search_path) once the
        // read models create it, and the history would seem empty.
        .set_migration_table_name("public.ledger_cmd_migrations")
        .run_async(client)
        .await?;
    Ok(())
}
