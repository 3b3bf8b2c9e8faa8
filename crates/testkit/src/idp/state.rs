//! Everything the emulator remembers, behind one mutex that is never held across an `.await`.
//!
//! Lifecycle of a delegated grant (the states tests drive):
//!
//! ```text
//!  authorize ─► PendingRequest ─sign-in─► signed in ─accept─► AuthCode ─redeem─► Grant
//!                                   └──────────cancel──► error=access_denied       │
//!  devicecode ─► DeviceRequest(pending) ─approve/decline─► approved/declined ─poll─►┤
//!                                                                                   ▼
//!   Grant ── access tokens (expire, or die with the grant)
//!         └─ refresh token ─refresh─► rotated (accepted for the grace) + new refresh token
//!   revoke_user: TokensValidFrom = now → every older grant, code and token of the user is dead
//!   reuse of a rotated token with `revoke_grant_on_refresh_reuse` → grant revoked
//! ```
//!
//! Time comes from [`Inner::now`], the wall clock plus an offset the admin API can advance,
//! so expiry is tested without sleeping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rsa::RsaPublicKey;
use time::{Duration, OffsetDateTime};

use super::crypto::{KeyPair, random_digits, random_guid};
use super::errors::Flavor;
use super::spec::{ClientSpec, Endpoint, Fault, FaultSpec, LifetimeSpec, User, UserSpec};

/// The only place the emulator reads the wall clock (the workspace bans ambient time).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Authorization codes live 10 minutes, like Microsoft's and Google's.
pub(crate) const AUTH_CODE_LIFETIME: Duration = Duration::minutes(10);
/// Counter key: refresh requests in flight now (summed over the client's grants).
pub(crate) const REFRESH_IN_FLIGHT: &str = "refresh_in_flight";
/// Counter key: the most refresh requests ever in flight at once for one grant.
pub(crate) const REFRESH_IN_FLIGHT_MAX: &str = "refresh_in_flight_max";

/// An unfinished sign-in page is forgotten after this long.
pub(crate) const PENDING_REQUEST_LIFETIME: Duration = Duration::minutes(30);

/// Effective token lifetimes and rotation policy for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    pub(crate) access_token_secs: u64,
    pub(crate) refresh_token_secs: u64,
    pub(crate) refresh_reuse_grace_secs: u64,
    pub(crate) revoke_grant_on_refresh_reuse: bool,
    pub(crate) rotate_refresh_tokens: bool,
    pub(crate) device_code_interval_secs: u64,
    pub(crate) device_code_lifetime_secs: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_token_secs: 3600,
            // Microsoft's refresh tokens live 90 days, sliding.
            refresh_token_secs: 90 * 24 * 3600,
            refresh_reuse_grace_secs: 0,
            revoke_grant_on_refresh_reuse: false,
            rotate_refresh_tokens: true,
            // Microsoft's device flow answers `interval: 5`, `expires_in: 900`.
            device_code_interval_secs: 5,
            device_code_lifetime_secs: 900,
        }
    }
}

impl Lifetimes {
    fn apply(&mut self, spec: &LifetimeSpec) {
        let LifetimeSpec {
            client_id: _,
            access_token_secs,
            refresh_token_secs,
            refresh_reuse_grace_secs,
            revoke_grant_on_refresh_reuse,
            rotate_refresh_tokens,
            device_code_interval_secs,
            device_code_lifetime_secs,
        } = spec;
        set(&mut self.access_token_secs, access_token_secs);
        set(&mut self.refresh_token_secs, refresh_token_secs);
        set(&mut self.refresh_reuse_grace_secs, refresh_reuse_grace_secs);
        set(
            &mut self.revoke_grant_on_refresh_reuse,
            revoke_grant_on_refresh_reuse,
        );
        set(&mut self.rotate_refresh_tokens, rotate_refresh_tokens);
        set(
            &mut self.device_code_interval_secs,
            device_code_interval_secs,
        );
        set(
            &mut self.device_code_lifetime_secs,
            device_code_lifetime_secs,
        );
    }
}

/// Seconds from the admin API as a `Duration` (saturating: absurd values mean "forever").
pub(crate) fn secs(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2))
}

fn set<T: Copy>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = *v;
    }
}

/// Merges the fields `update` sets into `base`.
fn merge_lifetime_spec(base: &mut LifetimeSpec, update: &LifetimeSpec) {
    let pick = |old: &mut Option<u64>, new: Option<u64>| {
        if new.is_some() {
            *old = new;
        }
    };
    pick(&mut base.access_token_secs, update.access_token_secs);
    pick(&mut base.refresh_token_secs, update.refresh_token_secs);
    pick(
        &mut base.refresh_reuse_grace_secs,
        update.refresh_reuse_grace_secs,
    );
    pick(
        &mut base.device_code_interval_secs,
        update.device_code_interval_secs,
    );
    pick(
        &mut base.device_code_lifetime_secs,
        update.device_code_lifetime_secs,
    );
    if update.revoke_grant_on_refresh_reuse.is_some() {
        base.revoke_grant_on_refresh_reuse = update.revoke_grant_on_refresh_reuse;
    }
    if update.rotate_refresh_tokens.is_some() {
        base.rotate_refresh_tokens = update.rotate_refresh_tokens;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    pub(crate) email: String,
    pub(crate) password: String,
    pub(crate) name: String,
    pub(crate) oid: String,
    pub(crate) tid: String,
    pub(crate) sub: String,
    /// Microsoft's TokensValidFrom: grants, codes and tokens issued before it are dead.
    pub(crate) tokens_valid_from: Option<OffsetDateTime>,
    /// Lower-cased mailboxes this user has FullAccess / SendAs on (see `UserSpec`).
    pub(crate) full_access: Vec<String>,
    pub(crate) send_as: Vec<String>,
}

impl UserRecord {
    pub(crate) fn public(&self) -> User {
        User {
            email: self.email.clone(),
            oid: self.oid.clone(),
            tid: self.tid.clone(),
            sub: self.sub.clone(),
        }
    }

    /// True when something issued at `issued_at` predates a revocation of this user.
    pub(crate) fn revoked_since(&self, issued_at: OffsetDateTime) -> bool {
        self.tokens_valid_from.is_some_and(|from| issued_at < from)
    }
}

/// What an interactive sign-in is for.
#[derive(Debug, Clone)]
pub(crate) enum PendingKind {
    Authorize {
        redirect_uri: String,
        state: Option<String>,
        code_challenge: String,
        nonce: Option<String>,
        /// Google: `prompt=consent` forces a new refresh token.
        prompt_consent: bool,
        /// Google: refresh tokens only with `access_type=offline`.
        offline: bool,
    },
    Device {
        device_code: String,
    },
}

/// A sign-in in progress, keyed by the `request_id` hidden in the pages.
#[derive(Debug, Clone)]
pub(crate) struct PendingRequest {
    pub(crate) kind: PendingKind,
    pub(crate) flavor: Flavor,
    pub(crate) client_id: String,
    /// The `{tenant}` path segment (Microsoft) the request came in on.
    pub(crate) tenant: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) login_hint: Option<String>,
    pub(crate) select_account: bool,
    /// Lower-cased email once the password was right.
    pub(crate) signed_in: Option<String>,
    pub(crate) created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub(crate) flavor: Flavor,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) issue_refresh_token: bool,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) redeemed: bool,
}

/// One user's consent to one client: the refresh token and the access tokens it mints.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) flavor: Flavor,
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub(crate) grant_id: u64,
    pub(crate) client_id: String,
    pub(crate) issued_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
    /// Set when a refresh replaced this token with a new one.
    pub(crate) rotated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub(crate) client_id: String,
    /// Lower-cased email of the user; `None` for app-only tokens.
    pub(crate) user: Option<String>,
    pub(crate) grant_id: Option<u64>,
    /// The `scope` introspection reports.
    pub(crate) scope: String,
    pub(crate) audience: String,
    /// True when the token opens IMAP/POP/SMTP at the provider.
    pub(crate) mail: bool,
    pub(crate) issued_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Pending,
    Approved { user: String },
    Declined,
    Redeemed,
}

#[derive(Debug, Clone)]
pub(crate) struct DeviceRequest {
    pub(crate) flavor: Flavor,
    pub(crate) client_id: String,
    pub(crate) tenant: String,
    pub(crate) user_code: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) interval_secs: u64,
    pub(crate) last_poll: Option<OffsetDateTime>,
    pub(crate) status: DeviceStatus,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    pub(crate) client_id: String,
    pub(crate) client_email: String,
    pub(crate) key_id: String,
    pub(crate) public_key: RsaPublicKey,
}

struct ArmedFault {
    spec: FaultSpec,
    remaining: u32,
}

/// A Microsoft `{tenant}` path segment after lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tenant {
    /// `common`, `organizations` or `consumers`: any user may sign in.
    Multi,
    /// A tenant GUID (or a domain resolved to one).
    Id(String),
}

#[derive(Default)]
pub(crate) struct Inner {
    clock_offset: Duration,
    /// Seconds added to the `Date` header of every response (a provider whose clock, or
    /// ours, is off): `POST /admin/clock/date-skew`. Token times are not affected.
    pub(crate) date_skew_secs: i64,
    pub(crate) clients: HashMap<String, ClientSpec>,
    /// Keyed by lower-cased email.
    pub(crate) users: HashMap<String, UserRecord>,
    pub(crate) pending: HashMap<String, PendingRequest>,
    pub(crate) codes: HashMap<String, AuthCode>,
    pub(crate) grants: HashMap<u64, Grant>,
    next_grant_id: u64,
    pub(crate) refresh_tokens: HashMap<String, RefreshToken>,
    pub(crate) access_tokens: HashMap<String, AccessToken>,
    /// Keyed by device_code.
    pub(crate) device_requests: HashMap<String, DeviceRequest>,
    /// (client_id, lower-cased email) pairs that consented at least once (Google's
    /// "refresh token on first consent only").
    pub(crate) consents: HashSet<(String, String)>,
    faults: Vec<ArmedFault>,
    counters: HashMap<(String, String), u64>,
    /// Refresh requests received and not yet answered (held by a `hang` fault or being
    /// processed), per (client_id, grant id): a client that keeps more than one in flight
    /// for a grant can lose it to a rotation it never sees.
    refresh_in_flight: HashMap<(String, u64), u64>,
    lifetimes: Lifetimes,
    client_lifetimes: HashMap<String, LifetimeSpec>,
    /// Keyed by client_email.
    pub(crate) service_accounts: HashMap<String, ServiceAccount>,
    pub(crate) service_account_seq: u32,
}

impl Inner {
    pub(crate) fn now(&self) -> OffsetDateTime {
        wall_clock() + self.clock_offset
    }

    pub(crate) fn advance_clock(&mut self, seconds: u64) {
        self.clock_offset += secs(seconds);
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    pub(crate) fn add_client(&mut self, spec: ClientSpec) {
        self.clients.insert(spec.client_id.clone(), spec);
    }

    pub(crate) fn add_user(&mut self, spec: UserSpec, default_tenant: &str) -> User {
        let key = spec.email.to_lowercase();
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| display_name(&spec.email));
        let tid = spec
            .tenant_id
            .clone()
            .unwrap_or_else(|| default_tenant.to_owned());
        let lower = |list: &[String]| list.iter().map(|m| m.to_lowercase()).collect::<Vec<_>>();
        let full_access = lower(&spec.full_access);
        let send_as = lower(&spec.send_as);
        let record = match self.users.remove(&key) {
            Some(existing) => UserRecord {
                email: spec.email,
                password: spec.password,
                name,
                tid,
                full_access,
                send_as,
                ..existing
            },
            None => UserRecord {
                email: spec.email,
                password: spec.password,
                name,
                oid: random_guid(),
                tid,
                sub: random_digits(21),
                tokens_valid_from: None,
                full_access,
                send_as,
            },
        };
        let user = record.public();
        self.users.insert(key, record);
        user
    }

    pub(crate) fn user(&self, email: &str) -> Option<&UserRecord> {
        self.users.get(&email.to_lowercase())
    }

    /// Revokes every grant, code and token of the user issued up to now.
    pub(crate) fn revoke_user(&mut self, email: &str) -> bool {
        let now = self.now();
        let Some(user) = self.users.get_mut(&email.to_lowercase()) else {
            return false;
        };
        user.tokens_valid_from = Some(now);
        // A request issued in this same instant must die too, so also mark records directly.
        let key = email.to_lowercase();
        for grant in self.grants.values_mut().filter(|g| g.user == key) {
            grant.revoked = true;
        }
        for token in self
            .access_tokens
            .values_mut()
            .filter(|t| t.user.as_deref() == Some(key.as_str()))
        {
            token.revoked = true;
        }
        true
    }

    /// Makes every current access token of the user expired; refresh tokens stay valid.
    pub(crate) fn expire_tokens(&mut self, email: &str) -> bool {
        let now = self.now();
        let key = email.to_lowercase();
        if !self.users.contains_key(&key) {
            return false;
        }
        for token in self
            .access_tokens
            .values_mut()
            .filter(|t| t.user.as_deref() == Some(key.as_str()))
        {
            token.expires_at = token.expires_at.min(now);
        }
        true
    }

    pub(crate) fn new_grant(&mut self, grant: Grant) -> u64 {
        self.next_grant_id += 1;
        self.grants.insert(self.next_grant_id, grant);
        self.next_grant_id
    }

    /// `Some(grant)` when the grant exists, is not revoked and its user was not revoked since.
    pub(crate) fn live_grant(&self, grant_id: u64) -> Option<&Grant> {
        let grant = self.grants.get(&grant_id)?;
        let user_revoked = self
            .users
            .get(&grant.user)
            .is_none_or(|u| u.revoked_since(grant.created_at));
        (!grant.revoked && !user_revoked).then_some(grant)
    }

    /// The access token if it is known, unexpired and not revoked (directly, through its
    /// grant, or through its user).
    pub(crate) fn live_access_token(&self, token: &str) -> Option<&AccessToken> {
        let record = self.access_tokens.get(token)?;
        if record.revoked || self.now() >= record.expires_at {
            return None;
        }
        if let Some(grant_id) = record.grant_id {
            self.live_grant(grant_id)?;
        }
        if let Some(user) = &record.user {
            let user = self.users.get(user)?;
            if user.revoked_since(record.issued_at) {
                return None;
            }
        }
        Some(record)
    }

    pub(crate) fn lifetimes(&self, client_id: &str) -> Lifetimes {
        let mut effective = self.lifetimes.clone();
        if let Some(overlay) = self.client_lifetimes.get(client_id) {
            effective.apply(overlay);
        }
        effective
    }

    pub(crate) fn set_lifetimes(&mut self, spec: &LifetimeSpec) {
        match &spec.client_id {
            None => self.lifetimes.apply(spec),
            Some(client_id) => merge_lifetime_spec(
                self.client_lifetimes.entry(client_id.clone()).or_default(),
                spec,
            ),
        }
    }

    pub(crate) fn add_fault(&mut self, spec: FaultSpec) {
        let remaining = spec.count;
        if remaining > 0 {
            self.faults.push(ArmedFault { spec, remaining });
        }
    }

    /// Consumes one use of the oldest armed fault matching this request.
    pub(crate) fn take_fault(
        &mut self,
        endpoint: Endpoint,
        client_id: Option<&str>,
        grant_type: Option<&str>,
    ) -> Option<Fault> {
        let index = self.faults.iter().position(|f| {
            f.spec.endpoint == endpoint
                && f.spec
                    .client_id
                    .as_deref()
                    .is_none_or(|c| Some(c) == client_id)
                && f.spec
                    .grant_type
                    .as_deref()
                    .is_none_or(|g| Some(g) == grant_type)
        })?;
        let armed = &mut self.faults[index];
        armed.remaining -= 1;
        let fault = armed.spec.fault.clone();
        if armed.remaining == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    pub(crate) fn count(&mut self, client_id: &str, key: &str) {
        *self
            .counters
            .entry((client_id.to_owned(), key.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn counters(&self, client_id: Option<&str>) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((client, key), n) in &self.counters {
            if client_id.is_none_or(|c| c == client) {
                *out.entry(key.clone()).or_default() += n;
            }
        }
        for ((client, _grant), n) in &self.refresh_in_flight {
            if *n > 0 && client_id.is_none_or(|c| c == client) {
                *out.entry(REFRESH_IN_FLIGHT.to_owned()).or_default() += n;
            }
        }
        out
    }

    /// A refresh request for `grant_id` arrived; raises the client's
    /// `refresh_in_flight_max` counter (the most requests in flight for one grant at once).
    pub(crate) fn refresh_started(&mut self, client_id: &str, grant_id: u64) {
        let in_flight = self
            .refresh_in_flight
            .entry((client_id.to_owned(), grant_id))
            .or_default();
        *in_flight += 1;
        let now = *in_flight;
        let max = self
            .counters
            .entry((client_id.to_owned(), REFRESH_IN_FLIGHT_MAX.to_owned()))
            .or_default();
        *max = (*max).max(now);
    }

    /// The refresh request for `grant_id` was answered (or its client went away before it
    /// was processed).
    pub(crate) fn refresh_finished(&mut self, client_id: &str, grant_id: u64) {
        let key = (client_id.to_owned(), grant_id);
        if let Some(n) = self.refresh_in_flight.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.refresh_in_flight.remove(&key);
            }
        }
    }

    /// Resolves a Microsoft `{tenant}` segment; `None` for an unknown tenant (AADSTS90002).
    pub(crate) fn resolve_tenant(&self, segment: &str, default_tenant: &str) -> Option<Tenant> {
        let lower = segment.to_lowercase();
        if matches!(lower.as_str(), "common" | "organizations" | "consumers") {
            return Some(Tenant::Multi);
        }
        let known = |tid: &str| tid == default_tenant || self.users.values().any(|u| u.tid == tid);
        if looks_like_guid(&lower) {
            return known(&lower).then_some(Tenant::Id(lower));
        }
        // A verified domain: any domain of a registered user names that user's tenant.
        self.users
            .values()
            .find(|u| {
                u.email
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&lower))
            })
            .map(|u| Tenant::Id(u.tid.clone()))
    }

    /// Forgets pending sign-ins older than their lifetime (keeps a long-lived emulator small).
    pub(crate) fn prune(&mut self) {
        let now = self.now();
        self.pending
            .retain(|_, p| now - p.created_at < PENDING_REQUEST_LIFETIME);
        self.codes
            .retain(|_, c| now - c.created_at < AUTH_CODE_LIFETIME * 6);
    }
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// "alice.smith@example.test" → "Alice Smith".
fn display_name(email: &str) -> String {
    let local = email.split('@').next().unwrap_or(email);
    local
        .split(['.', '_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut chars = p.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// State shared by all handlers of one emulator.
pub(crate) struct Shared {
    pub(crate) base_url: String,
    pub(crate) default_tenant: String,
    pub(crate) signing_key: &'static KeyPair,
    inner: Mutex<Inner>,
}

pub(crate) type AppState = Arc<Shared>;

impl Shared {
    pub(crate) fn new(
        base_url: String,
        default_tenant: String,
        signing_key: &'static KeyPair,
    ) -> Self {
        Self {
            base_url,
            default_tenant,
            signing_key,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters to a test emulator, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_from_email() {
        assert_eq!(display_name("alice.smith@example.test"), "Alice Smith");
        assert_eq!(display_name("bob@example.test"), "Bob");
    }

    #[test]
    fn guid_shape() {
        assert!(looks_like_guid("5f2c7a9e-3b1d-4c8e-9a6f-0d4e1b2c3a7f"));
        assert!(!looks_like_guid("example.test"));
    }

    #[test]
    fn client_lifetimes_override_globals_field_by_field() {
        let mut inner = Inner::default();
        inner.set_lifetimes(&LifetimeSpec {
            access_token_secs: Some(60),
            ..Default::default()
        });
        inner.set_lifetimes(&LifetimeSpec {
            client_id: Some("c".into()),
            refresh_reuse_grace_secs: Some(30),
            ..Default::default()
        });
        inner.set_lifetimes(&LifetimeSpec {
            client_id: Some("c".into()),
            access_token_secs: Some(10),
            ..Default::default()
        });
        let c = inner.lifetimes("c");
        assert_eq!((c.access_token_secs, c.refresh_reuse_grace_secs), (10, 30));
        let other = inner.lifetimes("other");
        assert_eq!(
            (other.access_token_secs, other.refresh_reuse_grace_secs),
            (60, 0)
        );
    }

    #[test]
    fn faults_match_client_and_count_down() {
        let mut inner = Inner::default();
        inner.add_fault(FaultSpec {
            client_id: Some("a".into()),
            endpoint: Endpoint::Token,
            grant_type: Some("refresh_token".into()),
            count: 2,
            fault: Fault::MalformedJson,
        });
        assert!(
            inner
                .take_fault(Endpoint::Token, Some("b"), Some("refresh_token"))
                .is_none()
        );
        assert!(
            inner
                .take_fault(Endpoint::Token, Some("a"), Some("authorization_code"))
                .is_none()
        );
        assert!(
            inner
                .take_fault(Endpoint::Token, Some("a"), Some("refresh_token"))
                .is_some()
        );
        assert!(
            inner
                .take_fault(Endpoint::Token, Some("a"), Some("refresh_token"))
                .is_some()
        );
        assert!(
            inner
                .take_fault(Endpoint::Token, Some("a"), Some("refresh_token"))
                .is_none()
        );
    }
}
