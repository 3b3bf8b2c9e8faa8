//! `export_rows` / `import_rows`: every table's rows move to another database unchanged,
//! sealed values still open there (same key, same row ids), an import into a database
//! holding data is refused unless told to replace it, and new rows after an import get
//! fresh ids. On both databases.

use crate::{NOW, account, grant, ms_app, open};
use mailgate_store::StoreError;
use mailgate_store::export::{NOT_EXPORTED, TABLES};

async fn everything_moves_to_an_empty_database_and_only_there() {
    let from_dir = tempfile::tempdir().unwrap();
    let (from, _) = open(from_dir.path()).await;
    let app = from.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = from
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    from.put_grant(&grant(acc.id), Some(NOW)).await.unwrap();
    let mut exported = Vec::new();
    from.export_rows(|row| {
        exported.push(row);
        Ok(())
    })
    .await
    .unwrap();
    assert!(exported.iter().any(|r| r.table == "grants"));
    let events_before = from.events(None, 1000).await.unwrap().len();

    // Another database, the same key file.
    let to_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        from_dir.path().join("master.key"),
        to_dir.path().join("master.key"),
    )
    .unwrap();
    let (to, _) = open(to_dir.path()).await;
    let mut tables = to.table_names().await.unwrap();
    tables.retain(|t| !NOT_EXPORTED.contains(&t.as_str()));
    tables.sort();
    let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(tables, listed, "every table is exported (or named as not)");

    let rows = exported.len() as u64;
    let again = |rows: &Vec<mailgate_store::export::ExportRow>| {
        rows.iter()
            .map(|r| {
                Ok(mailgate_store::export::ExportRow {
                    table: r.table,
                    columns: r.columns.clone(),
                })
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(to.import_rows(again(&exported), false).await.unwrap(), rows);
    let moved = to.find_app("Contoso").await.unwrap();
    assert_eq!(moved.spec, app.spec, "the sealed client secret opens");
    assert_eq!(to.grant(acc.id).await.unwrap().unwrap(), grant(acc.id));
    assert_eq!(to.events(None, 1000).await.unwrap().len(), events_before);

    // Not into a database that holds data, and nothing changes.
    let err = to.import_rows(again(&exported), false).await.unwrap_err();
    assert!(matches!(err, StoreError::InUse(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(to.events(None, 1000).await.unwrap().len(), events_before);
    // Replacing is asked for.
    assert_eq!(to.import_rows(again(&exported), true).await.unwrap(), rows);
    assert_eq!(to.list_apps().await.unwrap().len(), 1);

    // New rows get ids after the imported ones.
    let second = to.create_app(&ms_app("Second"), NOW).await.unwrap();
    assert!(second.id.0 > app.id.0);
}

crate::on_both_databases!(everything_moves_to_an_empty_database_and_only_there);
