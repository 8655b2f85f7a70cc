//! Who is asking: a presented token (HTTP bearer, pgwire password) resolved to an [`Access`].

use alertflow_queries::Access;

use crate::config::Token;

/// The configured tokens.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    tokens: Vec<Token>,
}

impl Tokens {
    pub(crate) fn new(tokens: Vec<Token>) -> Self {
        Tokens { tokens }
    }

    /// No tokens: every caller is trusted (the server only listens on loopback then).
    pub(crate) fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The access `presented` opens, if any. Every token is compared, each in constant time,
    /// so the answer's timing says nothing about how much of a token was right or which one
    /// matched.
    pub(crate) fn check(&self, presented: &[u8]) -> Option<Access> {
        if self.open() {
            return Some(Access::All);
        }
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(t.token.as_bytes(), presented) && found.is_none() {
                found = Some(t.access.clone());
            }
        }
        found
    }

    /// The access of an HTTP `Authorization` header value (`Bearer <token>`).
    pub(crate) fn check_bearer(&self, header: Option<&[u8]>) -> Option<Access> {
        if self.open() {
            return Some(Access::All);
        }
        let h = header?;
        let scheme = b"bearer ";
        if h.len() < scheme.len() || !h[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return None;
        }
        self.check(h[scheme.len()..].trim_ascii())
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn tokens_resolve_to_their_access() {
        let acme = Access::Tenant(Arc::from("acme"));
        let t = Tokens::new(vec![
            Token { token: "root-token".into(), access: Access::All },
            Token { token: "acme-token".into(), access: acme.clone() },
        ]);
        assert_eq!(t.check(b"root-token"), Some(Access::All));
        assert_eq!(t.check(b"acme-token"), Some(acme.clone()));
        assert_eq!(t.check(b"acme-toke"), None);
        assert_eq!(t.check(b"acme-tokenn"), None);
        assert_eq!(t.check(b""), None);
        assert_eq!(t.check_bearer(Some(b"Bearer acme-token")), Some(acme.clone()));
        assert_eq!(t.check_bearer(Some(b"bearer  acme-token ")), Some(acme));
        assert_eq!(t.check_bearer(Some(b"Basic acme-token")), None);
        assert_eq!(t.check_bearer(None), None);
        assert_eq!(Tokens::new(vec![]).check_bearer(None), Some(Access::All));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(constant_time_eq(b"", b""));
    }
}
