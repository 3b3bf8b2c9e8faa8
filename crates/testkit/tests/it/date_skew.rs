//! `POST /admin/clock/date-skew`: the emulator's `Date` header off the wall clock by the
//! seconds asked for (what `mailgate doctor`'s clock check compares), and true again at 0.

use mailgate_testkit::idp::{Idp, IdpConfig};

/// The `Date` header of a GET on the token endpoint, as Unix seconds.
async fn date_of_token_endpoint(idp: &Idp) -> i64 {
    let url = format!("{}/{}/oauth2/v2.0/token", idp.base_url(), idp.tenant_id());
    let resp = reqwest::get(url).await.unwrap();
    let date = resp.headers()["date"].to_str().unwrap().to_owned();
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(&date, &format)
        .unwrap_or_else(|e| panic!("{date:?}: {e}"))
        .assume_utc()
        .unix_timestamp()
}

fn now() -> i64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64
}

#[tokio::test]
async fn date_header_follows_the_skew_and_returns_at_zero() {
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let admin = idp.admin();
    assert!((date_of_token_endpoint(&idp).await - now()).abs() <= 2);
    admin.set_date_skew(-7200).await.unwrap();
    let off = date_of_token_endpoint(&idp).await - now();
    assert!((-7202..=-7198).contains(&off), "{off}");
    admin.set_date_skew(0).await.unwrap();
    assert!((date_of_token_endpoint(&idp).await - now()).abs() <= 2);
}
