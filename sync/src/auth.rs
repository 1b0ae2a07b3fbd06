//! Bearer tokens for kiosks and hub administrators: 256-bit random, shown once, stored as a SHA-256 hash.
//!
//! A token is high-entropy, so a plain SHA-256 (no salt, no slow hash) is enough to make
//! a stolen database useless for calling the hub; the comparison is constant-time so the
//! answer's timing tells nothing about how much of a guess was right.

use rand::Rng as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Prefix of every token, so a token pasted in the wrong place is recognizable.
pub const TOKEN_PREFIX: &str = "kt_";

/// A new random token: `kt_` and 64 hex digits (256 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What the hub stores of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` is the one whose hash is `stored`, compared in constant time.
pub fn verify(token: &str, stored: &str) -> bool {
    let computed = hash(token);
    // Both are 64 hex digits when `stored` is well-formed; a malformed one never matches.
    computed.len() == stored.len() && bool::from(computed.as_bytes().ct_eq(stored.as_bytes()))
}

/// Whether `text` looks like a token this software issued (prefix, 64 lowercase hex).
pub fn well_formed(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_verified_by_hash() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        let stored = hash(&a);
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&a[TOKEN_PREFIX.len()..]));
        assert!(verify(&a, &stored));
        assert!(!verify(&b, &stored));
        assert!(!verify(&a, ""));
        assert!(!verify(&a, &stored[..63]));
        for bad in ["", "kt_", "kt_xyz", &a[1..], &a.to_uppercase()] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
