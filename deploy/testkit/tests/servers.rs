//! The harness itself: real servers start, stop, crash and come back with
//! their data, and two of each run side by side without sharing anything.

use async_nats::jetstream::{self, stream};
use ledger_testkit::{NatsServer, Postgres};

async fn pg_client(pg: &Postgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.connection_string(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(conn);
    client
}

async fn count_rows(pg: &Postgres) -> i64 {
    pg_client(pg)
        .await
        .query_one("SELECT count(*) FROM survivors", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_data_survives_stop_and_crash() {
    let mut pg = Postgres::start().await.unwrap();
    let db = pg_client(&pg).await;
    db.batch_execute(
        "CREATE TABLE survivors (n int primary key); INSERT INTO survivors VALUES (1)",
    )
    .await
    .unwrap();
    drop(db);

    pg.stop().await.unwrap();
    assert!(!pg.is_running());
    assert!(
        tokio_postgres::connect(&pg.connection_string(), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    pg.start_again().await.unwrap();
    assert_eq!(count_rows(&pg).await, 1);

    pg_client(&pg)
        .await
        .execute("INSERT INTO survivors VALUES (2)", &[])
        .await
        .unwrap();
    pg.kill().await.unwrap();
    pg.start_again().await.unwrap();
    assert_eq!(count_rows(&pg).await, 2, "a committed row survives a crash");
}

async fn stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream("SURVIVORS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stream_survives_stop_and_crash() {
    let mut nats = NatsServer::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "SURVIVORS".into(),
        subjects: vec!["survivors.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("survivors.one", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    drop(js);
    drop(client);

    nats.restart().await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    assert_eq!(stream_messages(&js).await, 1);

    js.publish("survivors.two", "2".into())
        .await
        .unwrap()
        .await
        .unwrap();
    nats.kill().await.unwrap();
    assert!(!nats.is_running());
    nats.start_again().await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    assert_eq!(
        stream_messages(&js).await,
        2,
        "an acknowledged message survives a crash of the server process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_servers_share_nothing() {
    let (a, b) = tokio::join!(Postgres::start(), Postgres::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    pg_client(&a)
        .await
        .batch_execute("CREATE TABLE survivors (n int)")
        .await
        .unwrap();
    let missing = pg_client(&b)
        .await
        .query_one("SELECT count(*) FROM survivors", &[])
        .await;
    assert!(missing.is_err(), "b must not see a's table");

    let (x, y) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x.port(), y.port());
    let jx = jetstream::new(async_nats::connect(x.url()).await.unwrap());
    jx.create_stream(stream::Config {
        name: "SURVIVORS".into(),
        subjects: vec!["survivors.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let jy = jetstream::new(async_nats::connect(y.url()).await.unwrap());
    assert!(
        jy.get_stream("SURVIVORS").await.is_err(),
        "y must not see x's stream"
    );
}
