//! Keyed pseudonyms: HMAC-SHA256(secret key, BSN). The key lives outside the database, so a copy of
//! the database alone cannot be joined back to BSNs by hashing all nine-digit numbers.

use std::fmt;

use ring::hmac;

use crate::Bsn;

/// The secret pseudonymisation key.
pub struct PseudonymKey(hmac::Key);

/// Length of a key file's content in bytes.
pub const PSEUDONYM_KEY_LEN: usize = 32;

impl PseudonymKey {
    pub fn from_bytes(bytes: &[u8; PSEUDONYM_KEY_LEN]) -> Self {
        PseudonymKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Consumes the BSN: after this, only the pseudonym remains.
    pub fn pseudonymise(&self, bsn: Bsn) -> SubjectPseudonym {
        let tag = hmac::sign(&self.0, bsn.as_digits());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        SubjectPseudonym(out)
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<secret>)")
    }
}

/// A person as the gateway knows them. Serialised as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectPseudonym([u8; 32]);

impl serde::Serialize for SubjectPseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for SubjectPseudonym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SubjectPseudonym::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad pseudonym"))
    }
}

impl SubjectPseudonym {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SubjectPseudonym(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(SubjectPseudonym(out))
    }
}

impl fmt::Debug for SubjectPseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({}…)", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bsn_same_key_same_pseudonym_and_key_matters() {
        let k1 = PseudonymKey::from_bytes(&[1; 32]);
        let k2 = PseudonymKey::from_bytes(&[2; 32]);
        let a = k1.pseudonymise(Bsn::parse("111222333").unwrap());
        let b = k1.pseudonymise(Bsn::parse("111222333").unwrap());
        let c = k2.pseudonymise(Bsn::parse("111222333").unwrap());
        let d = k1.pseudonymise(Bsn::parse("123456782").unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(!a.to_hex().contains("111222333"));
        assert_eq!(SubjectPseudonym::from_hex(&a.to_hex()), Some(a));
    }
}
