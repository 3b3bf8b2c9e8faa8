//! The last "Test configuration" of each account (migration 0014), kept so the account page
//! shows when it last ran and how, and the accounts list marks an account whose last test
//! failed. One row per account, replaced by each run; removed with the account.

use crate::{Result, Store};
use mailgate_core::{AccountId, Timestamp};
use sqlx::Row;
use std::collections::HashMap;

/// How an account's last test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub account_id: AccountId,
    pub finished_at: Timestamp,
    pub passed: bool,
    /// The first step that failed, its problem code and what it said; none when passed.
    pub failed_step: Option<String>,
    pub code: Option<String>,
    pub detail: Option<String>,
}

impl Store {
    /// Keeps `result` as the account's last test, replacing the one before.
    pub async fn record_test_result(&self, result: &TestResult) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO test_results (account_id, finished_at, passed, failed_step, code, detail) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id) DO UPDATE SET finished_at = excluded.finished_at, passed = excluded.passed, \
             failed_step = excluded.failed_step, code = excluded.code, detail = excluded.detail",
        )
        .bind(result.account_id.0)
        .bind(result.finished_at.0)
        .bind(i64::from(result.passed))
        .bind(result.failed_step.clone())
        .bind(result.code.clone())
        .bind(result.detail.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every account's last test, by account.
    pub async fn test_results(&self) -> Result<HashMap<AccountId, TestResult>> {
        let rows = sqlx::query(
            "SELECT account_id, finished_at, passed, failed_step, code, detail FROM test_results",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for row in rows {
            let account_id = AccountId(row.try_get("account_id")?);
            out.insert(
                account_id,
                TestResult {
                    account_id,
                    finished_at: Timestamp(row.try_get("finished_at")?),
                    passed: row.try_get::<i64, _>("passed")? != 0,
                    failed_step: row.try_get("failed_step")?,
                    code: row.try_get("code")?,
                    detail: row.try_get("detail")?,
                },
            );
        }
        Ok(out)
    }
}

/// How long a run's progress stays readable after its last step.
const RUN_KEPT_SECS: i64 = 24 * 3600;

impl Store {
    /// Stores the state of a "Test configuration" run in progress (the JSON the web layer
    /// makes of it), so that any instance can answer a poll for it, not only the one that
    /// runs it. Runs older than a day are dropped on the way.
    pub async fn put_test_run(
        &self,
        run_id: &str,
        account: AccountId,
        run: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM test_runs WHERE updated_at < $1")
            .bind(now.0 - RUN_KEPT_SECS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO test_runs (id, account_id, run, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET run = excluded.run, updated_at = excluded.updated_at",
        )
        .bind(run_id.to_owned())
        .bind(account.0)
        .bind(run.to_owned())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A stored run's state, as [`Store::put_test_run`] last stored it.
    pub async fn test_run(&self, run_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT run FROM test_runs WHERE id = $1")
            .bind(run_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("run")).transpose()?)
    }
}
