//! The PostgreSQL and TCP proxy fixtures the cluster tests stand on: if these lie, those prove
//! nothing.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::Connection as _;

use crate::fixtures::{Postgres, TcpProxy};

/// How long a query through a cut proxy is given to (wrongly) answer.
const SILENCE: Duration = Duration::from_secs(2);
/// Generous bounds for what must answer, on a loaded machine.
const ANSWER: Duration = Duration::from_secs(30);

fn upstream(pg: &Postgres) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg.port()))
}

fn url_through(proxy: &TcpProxy) -> String {
    format!("postgres://postgres@{}/stac", proxy.addr())
}

async fn connect(url: &str) -> sqlx::PgConnection {
    tokio::time::timeout(ANSWER, sqlx::PgConnection::connect(url))
        .await
        .unwrap_or_else(|_| panic!("{url}: no connection in {ANSWER:?}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn select_1(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(conn)
        .await
}

#[tokio::test]
async fn postgres_answers_through_the_proxy() {
    let pg = Postgres::start().await;
    assert_eq!(pg.query_i64("SELECT 1::bigint").await, 1);
    let proxy = TcpProxy::start(upstream(&pg)).await;
    assert_eq!(proxy.connections(), 0);

    let mut conn = connect(&url_through(&proxy)).await;
    assert_eq!(select_1(&mut conn).await.unwrap(), 1);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(db, "stac");
    assert_eq!(proxy.connections(), 1);
    assert_ne!(proxy.port(), pg.port());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn stop_and_start_again_keep_the_data_and_the_port() {
    let pg = Postgres::start().await;
    pg.execute("CREATE TABLE kept (n BIGINT); INSERT INTO kept VALUES (1), (2), (3)")
        .await;
    let url = pg.url();

    pg.stop().await;
    let refused = tokio::time::timeout(ANSWER, sqlx::PgConnection::connect(&url))
        .await
        .expect("a stopped server refuses at once");
    assert!(refused.is_err(), "{url} still answers after stop");

    pg.start_again().await;
    assert_eq!(pg.url(), url);
    assert_eq!(pg.query_i64("SELECT sum(n)::bigint FROM kept").await, 6);
}

#[tokio::test]
async fn a_cut_proxy_answers_nothing_until_restored() {
    let pg = Postgres::start().await;
    let proxy = TcpProxy::start(upstream(&pg)).await;
    let through = url_through(&proxy);
    let mut before = connect(&through).await;
    assert_eq!(select_1(&mut before).await.unwrap(), 1);

    proxy.cut();
    // An open connection: the query goes nowhere, and nothing closes the socket either.
    let stuck = tokio::time::timeout(SILENCE, select_1(&mut before)).await;
    assert!(
        stuck.is_err(),
        "a query through a cut proxy answered: {stuck:?}"
    );
    // A new one: accepted, then silence (the startup message is never answered).
    let new = tokio::time::timeout(SILENCE, sqlx::PgConnection::connect(&through)).await;
    assert!(new.is_err(), "a connection through a cut proxy was set up");
    assert_eq!(proxy.connections(), 2);
    // The server itself is fine: only the route is gone.
    assert_eq!(pg.query_i64("SELECT 1::bigint").await, 1);

    proxy.restore();
    let mut after = connect(&through).await;
    assert_eq!(select_1(&mut after).await.unwrap(), 1);
    assert_eq!(proxy.connections(), 3);
    // The connection that lived through the cut was closed at the restore: it fails now rather
    // than hanging.
    let old = tokio::time::timeout(ANSWER, select_1(&mut before))
        .await
        .expect("the old connection fails at once after the restore");
    assert!(old.is_err(), "a connection cut by the partition answered");
}
