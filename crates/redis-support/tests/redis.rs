//! The pool and the purge against the real Redis at 127.0.0.1:6379 (fails, never skips, when it
//! is not running).

use std::time::Duration;

use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::ReconnectPolicy;
use seckill_redis_support::{ConnectError, Connection, PoolOptions, connect_pool, purge};

const NEED_REDIS: &str =
    "these tests need Redis at 127.0.0.1:6379: run `bash scripts/test.sh`, which starts it";

fn connection(port: u16) -> Connection<'static> {
    Connection {
        host: "127.0.0.1",
        port,
        password: None,
        db: 0,
        pool_size: 2,
        // The machine is shared and loaded: a generous bound for the first connection.
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(5),
    }
}

fn options(retry_first_connection: bool) -> PoolOptions {
    PoolOptions {
        reconnect: ReconnectPolicy::new_exponential(0, 100, 1_000, 2),
        retry_first_connection,
    }
}

fn unique(what: &str) -> String {
    seckill_test_support::unique(&format!("test-rs-{what}"))
}

#[tokio::test]
async fn purge_takes_glob_characters_in_the_prefix_literally() {
    let pool = connect_pool(&connection(6379), &options(false))
        .await
        .expect(NEED_REDIS);
    let client = pool.next();
    let base = unique("glob");
    // `{base}*:` and `{base}[ab]:` are prefixes full of glob characters; the other keys would
    // match them as globs, and must survive.
    let star = format!("{base}*:");
    let class = format!("{base}[ab]:");
    let own = [format!("{star}1"), format!("{star}2"), format!("{class}1")];
    let others = [
        format!("{base}-other:1"),
        format!("{base}a:1"),
        format!("{base}b:2"),
    ];
    for k in own.iter().chain(&others) {
        let () = client.set(k, "v", None, None, false).await.unwrap();
    }
    assert_eq!(purge(client, &star, "*").await.unwrap(), 2);
    assert_eq!(purge(client, &class, "*").await.unwrap(), 1);
    let left: u64 = client.exists(own.to_vec()).await.unwrap();
    assert_eq!(left, 0, "own keys purged");
    let left: u64 = client.exists(others.to_vec()).await.unwrap();
    assert_eq!(left, 3, "keys of other prefixes kept");
    assert_eq!(purge(client, &base, "*").await.unwrap(), 3);
    let _ = pool.quit().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_or_after_the_timeout() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = connection(port);
    let t = std::time::Instant::now();
    let err = connect_pool(&c, &options(false)).await.unwrap_err();
    // Well before the 10 s connect timeout: the refused connection is reported, not retried.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(err, ConnectError::Failed(_)), "{err}");
    c.connect_timeout = Duration::from_millis(300);
    let err = connect_pool(&c, &options(true)).await.unwrap_err();
    match err {
        ConnectError::Unreachable { addr, timeout } => {
            assert_eq!(addr, format!("127.0.0.1:{port}"));
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("{other}"),
    }
}
