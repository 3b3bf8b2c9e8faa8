//! The throwaway PostgreSQL cluster that the store's tests run against (issue 18): it starts
//! from Debian's package, answers SQL on its loopback port, gives each test a database of its
//! own, and is gone — server stopped, directory removed — when the guard drops. A machine
//! without the package fails here, never skips.

use std::net::TcpStream;

use mailgate_testkit::postgres::{PgCluster, ROLE};

#[test]
fn a_throwaway_cluster_serves_sql_and_is_gone_after_drop() -> anyhow::Result<()> {
    let cluster = PgCluster::start()?;
    let port = cluster.port();

    let url = cluster.create_database("first_test")?;
    assert_eq!(
        url,
        format!("postgres://{ROLE}@127.0.0.1:{port}/first_test")
    );
    cluster.psql(
        "first_test",
        "CREATE TABLE t (n integer); INSERT INTO t VALUES (41), (1)",
    )?;
    assert_eq!(cluster.psql("first_test", "SELECT sum(n) FROM t")?, "42");
    // A second database in the same cluster does not see the first one's tables.
    cluster.create_database("second_test")?;
    let err = cluster.psql("second_test", "SELECT * FROM t").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err:#}");
    // Only loopback: the server's own view of where it listens.
    assert_eq!(
        cluster.psql("postgres", "SHOW listen_addresses")?,
        "127.0.0.1"
    );

    drop(cluster);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still accepts connections on {port} after the guard dropped"
    );
    Ok(())
}
