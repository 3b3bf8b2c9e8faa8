use crate::support::{Server, TestEnv};

#[tokio::test]
async fn serve_with_no_configuration_creates_its_data_and_answers_healthz() {
    let env = TestEnv::new();
    let server = Server::start(&env);
    assert!(
        server.stdout_line.contains("(public URL http://127.0.0.1:"),
        "{}",
        server.stdout_line
    );

    let resp = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(
        body["database"]["schema_version"],
        mailgate_store::SCHEMA_VERSION,
        "every migration applied"
    );

    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(env.data_dir().join("master.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "key file must be private");
    let dir_mode = std::fs::metadata(env.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert!(env.db_path().exists());

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM should be a clean shutdown, got {status}"
    );
}

#[tokio::test]
async fn the_cli_works_beside_a_running_server() {
    let env = TestEnv::new();
    let server = Server::start(&env);
    env.add_microsoft_app("Contoso");
    let apps = env.json(&["app", "list", "--json"]);
    assert_eq!(apps.as_array().unwrap().len(), 1);
    let resp = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(server.terminate().success());
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let env = TestEnv::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = env.command();
    cmd.env("MAILGATE_LISTEN", &addr);
    let out = env.run_with(cmd, &["serve"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = crate::support::text(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
