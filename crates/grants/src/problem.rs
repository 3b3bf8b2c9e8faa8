//! OAuth failures as account problems.

use mailgate_core::Timestamp;
use mailgate_core::account::Problem;
use mailgate_oauth::Failure;

pub fn problem_from(f: &Failure, now: Timestamp) -> Problem {
    Problem {
        code: f.remediation.code().to_owned(),
        remediation: f.remediation.sentence().to_owned(),
        detail: f.provider_says.clone(),
        at: now,
    }
}
