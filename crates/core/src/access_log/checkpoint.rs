use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use time::OffsetDateTime;

/// What a checkpoint asserts: after `tree_size` records the chain head was `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub key_id: String,
    pub tree_size: u64,
    pub head_hash: [u8; 32],
    pub time: OffsetDateTime,
}

const NOTE_ORIGIN: &str = "signaalpoort.nl/access-log/v1";

impl CheckpointBody {
    /// The signed text, one value per line (in the spirit of transparency-log checkpoints).
    pub fn note(&self) -> String {
        format!(
            "{NOTE_ORIGIN}\n{}\n{}\n{}\n{}\n",
            self.key_id,
            self.tree_size,
            hex::encode(self.head_hash),
            self.time.unix_timestamp()
        )
    }

    pub fn parse_note(note: &str) -> Result<Self, CheckpointError> {
        let mut lines = note.strip_suffix('\n').unwrap_or(note).split('\n');
        let bad = || CheckpointError::MalformedNote;
        if lines.next() != Some(NOTE_ORIGIN) {
            return Err(bad());
        }
        let key_id = lines.next().ok_or_else(bad)?.to_owned();
        let tree_size = lines.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let mut head_hash = [0u8; 32];
        hex::decode_to_slice(lines.next().ok_or_else(bad)?, &mut head_hash).map_err(|_| bad())?;
        let secs: i64 = lines.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let time = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| bad())?;
        if lines.next().is_some() {
            return Err(bad());
        }
        Ok(CheckpointBody {
            key_id,
            tree_size,
            head_hash,
            time,
        })
    }
}

/// A checkpoint with its Ed25519 signature over [`CheckpointBody::note`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub body: CheckpointBody,
    pub signature: Vec<u8>,
}

impl SignedCheckpoint {
    pub fn verify(&self, public_key: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(self.body.note().as_bytes(), &self.signature)
            .is_ok()
    }

    /// `{"note": "...", "signature": "<base64>"}`, the form `audit verify` reads.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "note": self.body.note(),
            "signature": base64::engine::general_purpose::STANDARD.encode(&self.signature),
        })
        .to_string()
    }

    pub fn from_json(s: &str) -> Result<Self, CheckpointError> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|_| CheckpointError::MalformedNote)?;
        let note = v["note"].as_str().ok_or(CheckpointError::MalformedNote)?;
        let sig = v["signature"]
            .as_str()
            .ok_or(CheckpointError::MalformedNote)?;
        Ok(SignedCheckpoint {
            body: CheckpointBody::parse_note(note)?,
            signature: base64::engine::general_purpose::STANDARD
                .decode(sig)
                .map_err(|_| CheckpointError::MalformedNote)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint key is not a valid Ed25519 PKCS#8 document")]
    BadKey,
    #[error("could not generate a checkpoint key")]
    KeyGeneration,
    #[error("checkpoint note is malformed")]
    MalformedNote,
}

/// Signs checkpoints with the gateway's Ed25519 key.
pub struct CheckpointSigner {
    key: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointSigner({})", self.key_id)
    }
}

impl CheckpointSigner {
    /// A new PKCS#8 document for a fresh key, to be written to a file the gateway keeps.
    pub fn generate_pkcs8() -> Result<Vec<u8>, CheckpointError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| CheckpointError::KeyGeneration)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CheckpointError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CheckpointError::BadKey)?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(CheckpointSigner { key, key_id })
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn sign(
        &self,
        tree_size: u64,
        head_hash: [u8; 32],
        time: OffsetDateTime,
    ) -> SignedCheckpoint {
        let body = CheckpointBody {
            key_id: self.key_id.clone(),
            tree_size,
            head_hash,
            time,
        };
        let signature = self.key.sign(body.note().as_bytes()).as_ref().to_vec();
        SignedCheckpoint { body, signature }
    }
}

/// First 8 bytes of SHA-256 of the public key, hex.
pub fn key_id(public_key: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex::encode(&d.as_ref()[..8])
}
