//! Envelope encryption of secrets at rest.
//!
//! Every client secret, token and password is stored as
//! `mg1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, sealed with AES-256-GCM under the
//! keyring's primary key with a fresh random 96-bit nonce. The associated data names the
//! column and row (`grants.refresh_token:42`), so a ciphertext copied into another row or
//! column does not decrypt. The key id is beside the ciphertext so that after a rotation
//! older values still find their key.
//!
//! The keyring comes from `MAILGATE_MASTER_KEY` (one or more base64 keys, comma-separated,
//! first one encrypts) or from the key file in the data directory (one base64 key per line,
//! first one encrypts), created with mode 0600 on first start.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mailgate_core::Secret;
use mailgate_core::random::{self, RandomFailed};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::io::Write;
use std::path::{Path, PathBuf};

const PREFIX: &str = "mg1";
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{0}")]
    BadKey(String),
    #[error(
        "the value in {context} was encrypted with key {key_id}, which is not in the keyring; supply that key (MAILGATE_MASTER_KEY or the key file) or restore the key file"
    )]
    UnknownKey { context: String, key_id: String },
    #[error(
        "the value in {context} cannot be decrypted: it was altered, moved from another row, or the key is wrong"
    )]
    Tampered { context: String },
    #[error("the value in {context} is not in mailgate's encrypted format")]
    Malformed { context: String },
    #[error("key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("the system random number generator failed")]
    Random,
}

impl From<RandomFailed> for CryptoError {
    fn from(_: RandomFailed) -> Self {
        CryptoError::Random
    }
}

/// One 256-bit key and its id (the first 4 bytes of its SHA-256, hex).
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
    raw: [u8; KEY_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        // from_bytes only fails for a wrong key length, which `raw` cannot have.
        Self::from_bytes(self.raw).unwrap_or_else(|_| unreachable!("a 32-byte key is always valid"))
    }
}

impl MasterKey {
    pub fn from_bytes(raw: [u8; KEY_LEN]) -> Result<Self, CryptoError> {
        let key = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| CryptoError::BadKey("not a valid AES-256 key".into()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
        Ok(MasterKey {
            id: hex::encode(&digest.as_ref()[..4]),
            key: LessSafeKey::new(key),
            raw,
        })
    }

    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_bytes(random::bytes::<KEY_LEN>()?)
    }

    /// Parses base64 (standard or URL-safe, padding optional) or 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let decoded = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
            let unpadded = t.trim_end_matches('=');
            STANDARD_NO_PAD
                .decode(unpadded)
                .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
                .ok()
        };
        let bytes = decoded.ok_or_else(|| {
            CryptoError::BadKey("expected 32 random bytes in base64 (e.g. the output of `openssl rand -base64 32`) or 64 hex digits".into())
        })?;
        let raw: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            CryptoError::BadKey(format!(
                "expected 32 bytes, got {}; generate one with `openssl rand -base64 32`",
                b.len()
            ))
        })?;
        Self::from_bytes(raw)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn encoded(&self) -> String {
        B64.encode(self.raw)
    }
}

/// Keys to decrypt with; the first encrypts.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(primary: MasterKey, older: Vec<MasterKey>) -> Self {
        let mut keys = vec![primary];
        for k in older {
            if !keys.iter().any(|x| x.id == k.id) {
                keys.push(k);
            }
        }
        Keyring { keys }
    }

    /// `MAILGATE_MASTER_KEY`: comma-separated keys, the first encrypts.
    pub fn from_env_value(value: &str) -> Result<Self, CryptoError> {
        let mut keys = value
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(MasterKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(CryptoError::BadKey("it is empty".into()));
        }
        let primary = keys.remove(0);
        Ok(Keyring::new(primary, keys))
    }

    /// This keyring with `key` as the new primary; the old keys stay for decryption.
    pub fn with_primary(&self, key: MasterKey) -> Keyring {
        Keyring::new(key, self.keys.clone())
    }

    /// This keyring without the keys not listed (the primary always stays).
    pub fn retain(&self, keep: &[String]) -> Keyring {
        let others = self.keys[1..]
            .iter()
            .filter(|k| keep.contains(&k.id))
            .cloned()
            .collect();
        Keyring::new(self.keys[0].clone(), others)
    }

    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn encrypt(&self, context: &str, secret: &Secret) -> Result<String, CryptoError> {
        let key = &self.keys[0];
        let nonce = random::bytes::<NONCE_LEN>()?;
        let mut buf = secret.expose().as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| CryptoError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}:{}:{}", key.id, B64.encode(out)))
    }

    pub fn decrypt(&self, context: &str, stored: &str) -> Result<Secret, CryptoError> {
        let malformed = || CryptoError::Malformed {
            context: context.to_owned(),
        };
        let mut parts = stored.splitn(3, ':');
        let (Some(PREFIX), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| CryptoError::UnknownKey {
                    context: context.to_owned(),
                    key_id: key_id.to_owned(),
                })?;
        let mut bytes = B64.decode(body).map_err(|_| malformed())?;
        if bytes.len() < NONCE_LEN {
            return Err(malformed());
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| malformed())?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| CryptoError::Tampered {
                context: context.to_owned(),
            })?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| malformed())?;
        Ok(Secret::new(text))
    }

    /// The key id a stored value was sealed with, without decrypting it.
    pub fn key_id_of(stored: &str) -> Option<&str> {
        let mut parts = stored.splitn(3, ':');
        (parts.next() == Some(PREFIX))
            .then(|| parts.next())
            .flatten()
    }
}

/// Where the keyring lives, which decides how `keys rotate` finishes.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `MAILGATE_MASTER_KEY`; the operator updates it after a rotation.
    Env,
    /// The key file (default `<data dir>/master.key`).
    File(PathBuf),
}

fn key_file_error(path: &Path, message: impl Into<String>) -> CryptoError {
    CryptoError::KeyFile {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// An exclusive `flock` on the key file's lock file (`master.key.lock` beside it).
///
/// Every writer of the key file (first create, `keys rotate`, `keys prune`) holds it from
/// reading the file to the end of its re-encryption, so two processes never interleave
/// read → write → re-encrypt and lose each other's keys. The kernel drops the lock when the
/// process exits, even on `kill -9`, so a crash never leaves it stuck. Readers need no lock:
/// the file is only ever replaced by an atomic rename or created by a link.
#[derive(Debug)]
pub struct KeyFileLock {
    _file: std::fs::File,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Waits for the exclusive lock on `path`'s lock file (created 0600 if missing).
pub fn lock_key_file(path: &Path) -> Result<KeyFileLock, CryptoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = sibling(path, ".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| key_file_error(&lock_path, e.to_string()))?;
    file.lock()
        .map_err(|e| key_file_error(&lock_path, format!("cannot lock it: {e}")))?;
    Ok(KeyFileLock { _file: file })
}

/// Reads the key file; `None` when it does not exist. Refuses a key file that others can
/// read, as ssh does.
pub fn read_key_file(path: &Path) -> Result<Option<Keyring>, CryptoError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_file_error(path, e.to_string())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_file_error(
            path,
            format!(
                "it is readable by other users (mode {mode:o}); run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| key_file_error(path, e.to_string()))?;
    let mut keys = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
    {
        keys.push(
            MasterKey::parse(line)
                .map_err(|e| key_file_error(path, format!("line {}: {e}", n + 1)))?,
        );
    }
    if keys.is_empty() {
        return Err(key_file_error(path, "it holds no key"));
    }
    let primary = keys.remove(0);
    Ok(Some(Keyring::new(primary, keys)))
}

/// Loads the key file, creating it with one fresh key (mode 0600) if it does not exist.
/// Creation happens under the key-file lock and never replaces a file: when another process
/// created it first, its keys are the ones loaded.
pub fn load_or_create_key_file(path: &Path) -> Result<Keyring, CryptoError> {
    if let Some(ring) = read_key_file(path)? {
        return Ok(ring);
    }
    let lock = lock_key_file(path)?;
    load_or_create_locked(path, &lock)
}

/// [`load_or_create_key_file`] for a caller that already holds the lock (a second `flock`
/// on another descriptor in the same process would wait for itself).
pub fn load_or_create_locked(path: &Path, _lock: &KeyFileLock) -> Result<Keyring, CryptoError> {
    if let Some(ring) = read_key_file(path)? {
        return Ok(ring);
    }
    let ring = Keyring::new(MasterKey::generate()?, Vec::new());
    let tmp = write_temp_key_file(path, &ring)?;
    // A hard link fails if the name exists, so even a writer that ignores the lock cannot
    // have its key file replaced by this one.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok(ring)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| key_file_error(path, "it vanished while mailgate was creating it")),
        Err(e) => Err(key_file_error(path, e.to_string())),
    }
}

/// Replaces the key file atomically (unique 0600 temporary file beside it, fsync, rename).
/// Taking the lock is the caller's job, and the `KeyFileLock` argument proves it was taken.
pub fn write_key_file(path: &Path, ring: &Keyring, _lock: &KeyFileLock) -> Result<(), CryptoError> {
    let tmp = write_temp_key_file(path, ring)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_file_error(path, e.to_string()));
    }
    sync_dir(path);
    Ok(())
}

/// Writes `ring` to a new 0600 file beside `path` with a name no other process uses (pid
/// and random suffix), so concurrent writers never delete or reuse each other's file.
fn write_temp_key_file(path: &Path, ring: &Keyring) -> Result<PathBuf, CryptoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::from(
        "# mailgate master keys: the first encrypts, all decrypt. Keep this file secret and backed up.\n",
    );
    for k in &ring.keys {
        text.push_str(&k.encoded());
        text.push('\n');
    }
    let suffix = random::bytes::<8>()?;
    let tmp = sibling(
        path,
        &format!(".tmp-{}-{}", std::process::id(), hex::encode(suffix)),
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| key_file_error(&tmp, e.to_string()))?;
    if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_file_error(&tmp, e.to_string()));
    }
    Ok(tmp)
}

/// Makes a rename or link durable. Best effort: some filesystems refuse to sync a directory.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let ring = Keyring::new(MasterKey::generate().unwrap(), vec![]);
        let s = Secret::new("canary-client-secret-1234");
        let sealed = ring.encrypt("apps.client_secret:1", &s).unwrap();
        assert!(sealed.starts_with(&format!("mg1:{}:", ring.primary_id())));
        assert!(!sealed.contains("canary"));
        assert_eq!(ring.decrypt("apps.client_secret:1", &sealed).unwrap(), s);
        // Same plaintext, different nonce.
        assert_ne!(sealed, ring.encrypt("apps.client_secret:1", &s).unwrap());
        // Moved to another row: refused.
        assert!(matches!(
            ring.decrypt("apps.client_secret:2", &sealed),
            Err(CryptoError::Tampered { .. })
        ));
        // A flipped bit: refused.
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(ring.decrypt("apps.client_secret:1", &bad).is_err());
        assert!(matches!(
            ring.decrypt("x", "plaintext"),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn older_keys_still_decrypt() {
        let old = Keyring::new(MasterKey::generate().unwrap(), vec![]);
        let sealed = old.encrypt("c", &Secret::new("v")).unwrap();
        let old_key = MasterKey::parse(&old.keys[0].encoded()).unwrap();
        let new = Keyring::new(MasterKey::generate().unwrap(), vec![old_key]);
        assert_eq!(new.decrypt("c", &sealed).unwrap().expose(), "v");
        let only_new = Keyring::new(MasterKey::generate().unwrap(), vec![]);
        let err = only_new.decrypt("c", &sealed).unwrap_err();
        assert!(err.to_string().contains(old.primary_id()));
        assert_eq!(Keyring::key_id_of(&sealed), Some(old.primary_id()));
    }

    #[test]
    fn key_parsing() {
        let hex64 = "00".repeat(32);
        assert!(MasterKey::parse(&hex64).is_ok());
        assert!(MasterKey::parse(&B64.encode([7u8; 32])).is_ok());
        let err = MasterKey::parse(&B64.encode([7u8; 16])).unwrap_err();
        assert!(err.to_string().contains("got 16"));
        assert!(MasterKey::parse("not base64!!").is_err());
        let ring = Keyring::from_env_value(&format!(
            "{},{}",
            B64.encode([1u8; 32]),
            B64.encode([2u8; 32])
        ))
        .unwrap();
        assert_eq!(ring.key_ids().len(), 2);
        assert!(Keyring::from_env_value(" , ").is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_refused_when_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = load_or_create_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_key_file(&path).unwrap();
        assert_eq!(a.primary_id(), b.primary_id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn creating_never_replaces_an_existing_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = load_or_create_key_file(&path).unwrap();
        // A writer holding the lock that finds the file already there loads it.
        let lock = lock_key_file(&path).unwrap();
        let again = load_or_create_locked(&path, &lock).unwrap();
        assert_eq!(again.primary_id(), first.primary_id());
        let rotated = first.with_primary(MasterKey::generate().unwrap());
        write_key_file(&path, &rotated, &lock).unwrap();
        drop(lock);
        let read = read_key_file(&path).unwrap().unwrap();
        assert_eq!(read.key_ids(), rotated.key_ids());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }
}
