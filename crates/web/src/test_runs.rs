//! "Test configuration" runs in the background, shared by the admin page (which fills in step
//! by step) and `/api/v1/tests/{run}` (which a caller polls). The instance running a test
//! keeps its last [`KEPT_RUNS`] runs in memory and writes each step to the database, so a
//! poll that a load balancer sends to another instance finds the run there (kept a day).

use crate::AppState;
use mailgate_core::MailAccount;
use mailgate_mail::check::{self, CheckOptions, Report, Step};
use std::collections::VecDeque;
use std::sync::Mutex;

const KEPT_RUNS: usize = 50;

/// The runs in progress and recently finished, by run id.
#[derive(Default)]
pub struct TestRuns {
    runs: Mutex<VecDeque<(String, TestRun)>>,
}

/// One run: the steps so far and, once finished, the whole report.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct TestRun {
    pub account_id: i64,
    pub account_name: String,
    pub started_at: String,
    pub steps: Vec<Step>,
    pub report: Option<Report>,
}

impl TestRun {
    /// `Some(all steps passed)` once finished.
    pub fn finished(&self) -> Option<bool> {
        self.report.as_ref().map(|r| r.ok)
    }

    /// The same JSON as `mailgate test --json` (docs/test-configuration.md), with the run's
    /// `id`, `account_id` and `status` (`running`, `passed` or `failed`); while running, `ok`,
    /// `duration_ms` and `message_id` are null and `steps` holds the steps finished so far.
    pub fn to_json(&self, id: &str) -> serde_json::Value {
        let mut v = match &self.report {
            Some(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
            None => serde_json::json!({
                "account": self.account_name,
                "ok": null,
                "started_at": self.started_at,
                "duration_ms": null,
                "message_id": null,
                "steps": self.steps,
            }),
        };
        v["id"] = id.into();
        v["account_id"] = self.account_id.into();
        v["status"] = match self.finished() {
            None => "running",
            Some(true) => "passed",
            Some(false) => "failed",
        }
        .into();
        v
    }
}

impl TestRuns {
    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<(String, TestRun)>) -> R) -> R {
        let mut guard = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn insert(&self, id: &str, run: TestRun) {
        self.with(|runs| {
            if runs.len() >= KEPT_RUNS {
                runs.pop_front();
            }
            runs.push_back((id.to_owned(), run));
        });
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut TestRun)) {
        self.with(|runs| {
            if let Some((_, run)) = runs.iter_mut().find(|(k, _)| k == id) {
                f(run);
            }
        });
    }

    fn get_here(&self, id: &str) -> Option<TestRun> {
        self.with(|runs| runs.iter().find(|(k, _)| k == id).map(|(_, r)| r.clone()))
    }
}

/// A run by id: this instance's own, or one another instance runs (from the database).
pub async fn get(state: &AppState, id: &str) -> Option<TestRun> {
    if let Some(run) = state.tests.get_here(id) {
        return Some(run);
    }
    match state.store.test_run(id).await {
        Ok(Some(json)) => serde_json::from_str(&json)
            .inspect_err(|e| tracing::warn!(error = %e, "a stored test run cannot be read"))
            .ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a stored test run");
            None
        }
    }
}

/// Starts "Test configuration" for `account` in the background; returns the run id once the
/// run is stored, so that a poll on any instance finds it.
pub async fn start(
    state: &AppState,
    account: MailAccount,
    opts: CheckOptions,
) -> Result<String, mailgate_core::random::RandomFailed> {
    let run_id = mailgate_oauth::random::token(12)?;
    let run = TestRun {
        account_id: account.id.0,
        account_name: account.spec.name.to_string(),
        started_at: state.clock.now().rfc3339(),
        steps: Vec::new(),
        report: None,
    };
    state.tests.insert(&run_id, run.clone());
    if let Ok(json) = serde_json::to_string(&run)
        && let Err(e) = state
            .store
            .put_test_run(&run_id, account.id, &json, state.clock.now())
            .await
    {
        // The run goes on; only a poll on another instance will not find it.
        tracing::warn!(error = %e, "cannot store a test run");
    }
    // Each later state of the run goes to the database in order, from one task: a poll on
    // another instance sees the steps as they finish.
    let (saves, mut to_save) = tokio::sync::mpsc::unbounded_channel::<TestRun>();
    {
        let (store, clock, id, account) = (
            state.store.clone(),
            state.clock.clone(),
            run_id.clone(),
            account.id,
        );
        tokio::spawn(async move {
            while let Some(run) = to_save.recv().await {
                let Ok(json) = serde_json::to_string(&run) else {
                    continue;
                };
                if let Err(e) = store.put_test_run(&id, account, &json, clock.now()).await {
                    tracing::warn!(error = %e, "cannot store a test run's progress");
                }
            }
        });
    }
    let (engine, clock, tls, tests, id) = (
        state.engine.clone(),
        state.clock.clone(),
        state.tls.clone(),
        state.tests.clone(),
        run_id.clone(),
    );
    tokio::spawn(async move {
        let progress_runs = tests.clone();
        let progress_id = id.clone();
        let progress_saves = saves.clone();
        let progress = move |step: &Step| {
            progress_runs.update(&progress_id, |r| {
                r.steps.push(step.clone());
                let _ = progress_saves.send(r.clone());
            })
        };
        let report =
            check::run_with_progress(&engine, clock.as_ref(), &tls, &account, &opts, &progress)
                .await;
        keep_result(engine.store(), &account, &report, clock.now()).await;
        tests.update(&id, |r| {
            r.steps = report.steps.clone();
            r.report = Some(report);
            let _ = saves.send(r.clone());
        });
    });
    Ok(run_id)
}

/// Keeps a finished run as the account's last test (the account page and the accounts list
/// show it), whoever ran it: the admin UI, the API or `mailgate test`. A failure to keep it
/// is logged; the run itself stands.
pub async fn keep_result(
    store: &mailgate_store::Store,
    account: &MailAccount,
    report: &Report,
    now: mailgate_core::Timestamp,
) {
    let failed = report.first_failure();
    let result = mailgate_store::test_results::TestResult {
        account_id: account.id,
        finished_at: now,
        passed: failed.is_none(),
        failed_step: failed.map(|s| s.name.clone()),
        code: failed.and_then(|s| s.remediation.as_ref().map(|r| r.code.clone())),
        detail: failed.map(|s| s.detail.clone()),
    };
    if let Err(e) = store.record_test_result(&result).await {
        tracing::warn!(error = %e, "could not keep the test result");
    }
}
