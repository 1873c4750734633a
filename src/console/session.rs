//! Console sessions (SPEC §16): server-side, in memory, behind an
//! `HttpOnly`, `SameSite=Strict` cookie, with a CSRF token that every change
//! must carry, and an idle expiry.

use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use crate::error::AppError;

/// The session cookie's name.
pub const COOKIE: &str = crate::headers::SESSION_COOKIE;

/// The header a change must carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// Sessions at most (the oldest go first past it).
const MAX_SESSIONS: usize = 10_000;

/// What a signed-in caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Sees everything, changes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    pub user: String,
    pub csrf: String,
    last_seen: Instant,
    /// When the credential it was opened with ends (a JWT's `exp`): the
    /// session ends then too, however much it is used.
    ends: Option<SystemTime>,
}

/// Every live session, by its (random) id.
pub struct Sessions {
    map: DashMap<String, Session>,
    /// Unused this long, a session is gone ([`IDLE`]).
    idle: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_idle(IDLE)
    }
}

fn random_token() -> String {
    // Two v4 UUIDs: 244 random bits from the OS's generator.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Sessions that end after `idle` unused.
    pub fn with_idle(idle: Duration) -> Self {
        Self {
            map: DashMap::new(),
            idle,
        }
    }

    /// A new session for `user` with `role`, ending at `ends` at the latest;
    /// returns its id.
    pub fn open(&self, role: Role, user: String, ends: Option<SystemTime>) -> (String, Session) {
        self.sweep();
        let id = random_token();
        let session = Session {
            role,
            user,
            csrf: random_token(),
            last_seen: Instant::now(),
            ends,
        };
        self.map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session `id`, its idle clock reset.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let mut entry = self.map.get_mut(id)?;
        if entry.last_seen.elapsed() > self.idle || entry.ended() {
            drop(entry);
            self.map.remove(id);
            return None;
        }
        entry.last_seen = Instant::now();
        Some(entry.clone())
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        self.map.remove(id);
    }

    /// Forgets idle sessions, and the oldest past [`MAX_SESSIONS`].
    fn sweep(&self) {
        let idle = self.idle;
        self.map
            .retain(|_, s| s.last_seen.elapsed() <= idle && !s.ended());
        while self.map.len() >= MAX_SESSIONS {
            let oldest = self
                .map
                .iter()
                .min_by_key(|e| e.last_seen)
                .map(|e| e.key().clone());
            match oldest {
                Some(id) => self.map.remove(&id),
                None => break,
            };
        }
    }
}

impl Session {
    /// Whether the credential the session was opened with has ended.
    fn ended(&self) -> bool {
        self.ends.is_some_and(|ends| SystemTime::now() >= ends)
    }

    /// A change carries this session's CSRF token in [`CSRF_HEADER`], or is
    /// refused with `403 csrf`.
    pub fn check_csrf(&self, headers: &axum::http::HeaderMap) -> Result<(), AppError> {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sent.is_some_and(|t| crate::auth::secret_eq(t, &self.csrf)) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "csrf",
                "a change needs the session's X-CSRF-Token".into(),
            ))
        }
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_and_lives_while_used() {
        let sessions = Sessions::with_idle(Duration::from_millis(200));
        let (id, s) = sessions.open(Role::Viewer, "vera".into(), None);
        assert_eq!(s.role, Role::Viewer);
        assert_ne!(s.csrf, id, "the CSRF token is not the session id");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(sessions.touch(&id).is_some(), "used, so alive");
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(sessions.touch(&id).is_none(), "idle past its limit");
        let (id, _) = sessions.open(Role::Admin, "a".into(), None);
        sessions.close(&id);
        assert!(sessions.touch(&id).is_none());
    }

    #[test]
    fn a_session_ends_with_the_credential_it_was_opened_with() {
        let sessions = Sessions::default();
        let ends = SystemTime::now() + Duration::from_millis(300);
        let (id, _) = sessions.open(Role::Admin, "jwt-user".into(), Some(ends));
        assert!(sessions.touch(&id).is_some(), "before exp");
        std::thread::sleep(Duration::from_millis(400));
        assert!(sessions.touch(&id).is_none(), "used, but past exp");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; switchyard_session=abc; b=2"),
        );
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
    }
}
