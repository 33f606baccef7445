//! A guest's identity: the SHA-256 of its bytes. The cache names its entries by it,
//! the reloader compares it to skip a file already serving, and logs show it short.

use sha2::{Digest as _, Sha256};

/// The SHA-256 of a guest's bytes.
pub type Digest = [u8; 32];

/// The digest of `bytes`.
pub fn of(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 12 hex digits of a digest, for logs: enough to tell guests apart.
pub fn short(digest: &Digest) -> String {
    hex(&digest[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shown_short() {
        let mut digest = [0u8; 32];
        digest[..6].copy_from_slice(&[0xab, 0x01, 0, 0xff, 0x10, 0x02]);
        assert_eq!(short(&digest), "ab0100ff1002");
        assert_eq!(hex(&digest).len(), 64);
    }

    #[test]
    fn the_digest_is_sha256() {
        assert_eq!(
            hex(&of(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
