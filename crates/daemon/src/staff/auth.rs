//! Who may open the staff page: the staff token or a per-staff PIN (`[http.staff]`), server-side
//! sessions behind a random `HttpOnly; SameSite=Strict` cookie, and the per-peer rate limit on
//! failed logins (after [`FREE_FAILURES`] failures a peer is locked out for a delay that doubles
//! with every further failure, up to [`MAX_LOCKOUT`]).
//!
//! Invariants: a token or PIN is compared in constant time and never logged; a locked-out peer
//! is refused before its credentials are even looked at; sessions expire on the server.

use crate::config::HttpConfig;
use crate::telemetry::{Secret, SecretError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "lg_staff";
/// Failed logins a peer may make before it is locked out.
pub const FREE_FAILURES: u32 = 3;
/// The first lockout; each further failure doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(2);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// Most sessions kept at once (the oldest is dropped beyond it).
const MAX_SESSIONS: usize = 256;

/// A logged-in staff member.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who logged in: the PIN's name, or "token" for the shared token.
    pub staff: String,
    /// Form token of this session (every POST must carry it).
    pub csrf: String,
    expires: Instant,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// The token or PIN did not match.
    Wrong,
    /// Too many failures from this peer: try again after this long.
    LockedOut(Duration),
}

#[derive(Debug, Default)]
struct Attempts {
    failures: u32,
    locked_until: Option<Instant>,
}

struct Pin {
    name: String,
    salt: String,
    digest: [u8; 32],
}

/// Credentials, sessions and the failed-login limiter.
pub struct Auth {
    token: Option<Secret>,
    pins: Vec<Pin>,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
}

impl Auth {
    /// Reads the staff token file (if any) and the configured PINs.
    pub fn from_config(config: &HttpConfig) -> Result<Auth, SecretError> {
        let token = match config.staff_token_file() {
            Some(path) => Some(Secret::from_file(path)?),
            None => None,
        };
        let pins = config
            .staff
            .pins
            .iter()
            .filter_map(|pin| {
                let (salt, digest) = pin.parsed()?;
                Some(Pin {
                    name: pin.name.clone(),
                    salt: salt.to_string(),
                    digest,
                })
            })
            .collect();
        Ok(Auth::new(
            token,
            pins,
            Duration::from_secs(u64::from(config.staff.session_minutes) * 60),
        ))
    }

    fn new(token: Option<Secret>, pins: Vec<Pin>, ttl: Duration) -> Auth {
        Auth {
            token,
            pins,
            ttl,
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// True when neither a token nor a PIN is configured: the page is then open (the server
    /// only serves it on a loopback address in that case).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.pins.is_empty()
    }

    /// Whether PINs are configured (the login page then asks for a name and PIN too).
    pub fn has_pins(&self) -> bool {
        !self.pins.is_empty()
    }

    /// Checks a login from `peer`: `token`, or `name` + `pin`. Returns the new session's id.
    pub fn login(
        &self,
        peer: IpAddr,
        token: &str,
        name: &str,
        pin: &str,
    ) -> Result<(String, Session), LoginRefused> {
        let now = Instant::now();
        {
            let attempts = lock(&self.attempts);
            if let Some(until) = attempts.get(&peer).and_then(|a| a.locked_until) {
                if until > now {
                    return Err(LoginRefused::LockedOut(until - now));
                }
            }
        }
        let staff = self.check(token, name, pin);
        let mut attempts = lock(&self.attempts);
        let Some(staff) = staff else {
            let entry = attempts.entry(peer).or_default();
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures >= FREE_FAILURES {
                let doublings = (entry.failures - FREE_FAILURES).min(16);
                let delay = FIRST_LOCKOUT
                    .saturating_mul(1 << doublings)
                    .min(MAX_LOCKOUT);
                entry.locked_until = Some(now + delay);
            }
            if attempts.len() > 4096 {
                attempts.retain(|_, a| a.locked_until.is_some_and(|until| until > now));
            }
            return Err(LoginRefused::Wrong);
        };
        attempts.remove(&peer);
        drop(attempts);
        Ok(self.open_session(staff))
    }

    /// A session for `staff` (also used when the page is open: no credentials configured).
    pub fn open_session(&self, staff: String) -> (String, Session) {
        let id = random_hex(32);
        let session = Session {
            staff,
            csrf: random_hex(16),
            expires: Instant::now() + self.ttl,
        };
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session a request's `Cookie` header names, if it exists and has not expired.
    pub fn session(&self, cookie_header: Option<&str>) -> Option<Session> {
        let id = cookie_header?
            .split(';')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)?;
        let mut sessions = lock(&self.sessions);
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session a `Cookie` header names.
    pub fn logout(&self, cookie_header: Option<&str>) {
        let Some(header) = cookie_header else { return };
        for (name, value) in header
            .split(';')
            .filter_map(|part| part.trim().split_once('='))
        {
            if name == COOKIE {
                lock(&self.sessions).remove(value);
            }
        }
    }

    /// The session lifetime (the cookie's `Max-Age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn check(&self, token: &str, name: &str, pin: &str) -> Option<String> {
        if !token.is_empty() {
            if let Some(secret) = &self.token {
                if secret.matches(token.as_bytes()) {
                    return Some("token".into());
                }
            }
            return None;
        }
        if pin.is_empty() {
            return None;
        }
        let mut found = None;
        for candidate in &self.pins {
            let mut hasher = Sha256::new();
            hasher.update(candidate.salt.as_bytes());
            hasher.update(pin.as_bytes());
            let digest: [u8; 32] = hasher.finalize().into();
            let same = digest
                .iter()
                .zip(candidate.digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same && candidate.name.eq_ignore_ascii_case(name.trim()) {
                found = Some(candidate.name.clone());
            }
        }
        found
    }
}

/// Compares two form tokens in time independent of where they differ.
pub fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `bytes` random bytes as lower-case hex (sessions, form tokens).
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::getrandom(&mut buf).is_err() {
        // No entropy source: refuse to hand out guessable ids (this never happens on Linux).
        panic!("the operating system's random source failed; cannot create a staff session");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(name: &str, salt: &str, pin: &str) -> Pin {
        let digest: [u8; 32] = Sha256::digest(format!("{salt}{pin}").as_bytes()).into();
        Pin {
            name: name.into(),
            salt: salt.into(),
            digest,
        }
    }

    #[test]
    fn a_token_or_a_pin_opens_a_session_and_wrong_ones_lock_the_peer_out() {
        let auth = Auth::new(
            Some(Secret::new("s3cret")),
            vec![pin("Anna", "x1", "4711")],
            Duration::from_secs(60),
        );
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let (id, session) = auth.login(peer, "s3cret", "", "").expect("token");
        assert_eq!(session.staff, "token");
        let cookie = format!("a=b; {COOKIE}={id}");
        assert!(auth.session(Some(&cookie)).is_some());
        let (_, anna) = auth.login(peer, "", "anna", "4711").expect("pin");
        assert_eq!(anna.staff, "Anna");
        assert_eq!(
            auth.login(peer, "", "Anna", "0000").err(),
            Some(LoginRefused::Wrong)
        );
        for _ in 1..FREE_FAILURES {
            assert_eq!(
                auth.login(peer, "nope", "", "").err(),
                Some(LoginRefused::Wrong)
            );
        }
        // Locked out: even the right token is refused now, and other peers are not affected.
        assert!(matches!(
            auth.login(peer, "s3cret", "", ""),
            Err(LoginRefused::LockedOut(_))
        ));
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        assert!(auth.login(other, "s3cret", "", "").is_ok());
        auth.logout(Some(&cookie));
        assert!(auth.session(Some(&cookie)).is_none());
    }
}
