//! Client-secret expiry warnings: 30, 14, 7 and 1 day(s) before, and on the day.

use crate::{Engine, Result};

/// The warning steps, in days before expiry. Each is raised once per expiry date.
pub const WARN_DAYS: [i64; 5] = [30, 14, 7, 1, 0];

/// The step a secret `days_left` from expiry is at, if any.
pub fn warning_step(days_left: i64) -> Option<i64> {
    WARN_DAYS
        .iter()
        .rev()
        .copied()
        .find(|step| days_left <= *step)
}

impl Engine {
    /// Raises the due expiry warnings as `app.secret_expiring` events. Returns how many.
    pub async fn check_secret_expiry(&self) -> Result<usize> {
        let now = self.clock.now();
        let Some(today) = now.date() else {
            return Ok(0);
        };
        let mut raised = 0;
        for app in self.store.list_apps().await? {
            let Some(expires) = app.spec.secret_expires else {
                continue;
            };
            let days_left = (expires - today).whole_days();
            let Some(step) = warning_step(days_left) else {
                continue;
            };
            let message = if days_left < 0 {
                format!(
                    "the client secret of app {} expired on {expires}; create a new one and update the app",
                    app.spec.name
                )
            } else {
                format!(
                    "the client secret of app {} expires on {expires} (in {days_left} day(s)); create a new one and update the app",
                    app.spec.name
                )
            };
            if self
                .store
                .mark_secret_warning(app.id, step, &message, now)
                .await?
            {
                tracing::warn!(app = %app.spec.name, days_left, "client secret expiring");
                raised += 1;
            }
        }
        Ok(raised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(warning_step(45), None);
        assert_eq!(warning_step(30), Some(30));
        assert_eq!(warning_step(15), Some(30));
        assert_eq!(warning_step(14), Some(14));
        assert_eq!(warning_step(2), Some(7));
        assert_eq!(warning_step(1), Some(1));
        assert_eq!(warning_step(0), Some(0));
        assert_eq!(warning_step(-3), Some(0));
    }
}
