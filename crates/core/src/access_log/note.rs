//! Checkpoints in the public transparency-log formats: a c2sp.org/tlog-checkpoint body (origin,
//! tree size, base64 root hash) in a c2sp.org/signed-note, signed by the log with Ed25519 and
//! cosigned by witnesses with c2sp.org/tlog-cosignature (`cosignature/v1`). Parsing and note
//! verification are `signed_note`'s and `tlog_tiles`'; signing goes through [`CheckpointSigner`],
//! so the key can live in a file (the default, [`Ed25519FileSigner`]) or in a token.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use signed_note::{Note, Signature, StandardVerifier, Verifier, VerifierList};

use super::tree::NodeHash;

/// Signature type byte of a plain Ed25519 note key (c2sp.org/signed-note).
const ALG_ED25519: u8 = 0x01;
/// Signature type byte of a timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature).
const ALG_COSIGNATURE_V1: u8 = 0x04;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("checkpoint note is malformed: {0}")]
    Malformed(String),
    #[error("key is not usable: {0}")]
    BadKey(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What signs checkpoints for the log. One implementation per key store: a PKCS#8 file
/// ([`Ed25519FileSigner`]), later a PKCS#11 token. Ed25519 only (the one note key type).
pub trait CheckpointSigner: Send + Sync {
    /// The key name; by convention the log's origin line.
    fn name(&self) -> &str;
    /// The raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// A pure Ed25519 signature over `message`.
    fn sign_bytes(&self, message: &[u8]) -> Result<[u8; 64], NoteError>;
}

impl dyn CheckpointSigner + '_ {
    /// The note key id: SHA-256(name || "\n" || 0x01 || key)[:4].
    pub fn key_id(&self) -> u32 {
        note_key_id(self.name(), ALG_ED25519, &self.public_key())
    }

    /// The verifier key others configure: `<name>+<id hex>+<base64(0x01 || key)>`.
    pub fn verifier_key(&self) -> String {
        verifier_key(self.name(), ALG_ED25519, &self.public_key())
    }

    /// Signs the checkpoint `(origin = name, size, root)`.
    pub fn sign_checkpoint(
        &self,
        size: u64,
        root: &NodeHash,
    ) -> Result<SignedCheckpoint, NoteError> {
        let text = checkpoint_text(self.name(), size, root)?;
        let mut note = Note::new(&text, &[]).map_err(|e| NoteError::Malformed(e.to_string()))?;
        let adapter = NoteSigner(self);
        note.add_sigs(&[&adapter])
            .map_err(|e| NoteError::Signing(e.to_string()))?;
        SignedCheckpoint::parse(&note.to_bytes())
    }
}

struct NoteSigner<'a>(&'a dyn CheckpointSigner);

impl signed_note::Signer for NoteSigner<'_> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn key_id(&self) -> u32 {
        self.0.key_id()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.0
            .sign_bytes(msg)
            .map(|s| s.to_vec())
            .map_err(|_| signature::Error::new())
    }
}

/// The default signer: an Ed25519 key in a PKCS#8 file the gateway keeps beside (never in) the
/// database.
pub struct Ed25519FileSigner {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Ed25519FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519FileSigner({})", self.name)
    }
}

impl Ed25519FileSigner {
    /// A new PKCS#8 document for a fresh key.
    pub fn generate_pkcs8() -> Result<Vec<u8>, NoteError> {
        Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| NoteError::BadKey("could not generate a key".into()))
    }

    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(NoteError::BadKey(format!(
                "{name:?} is not a valid key name (no spaces, no '+')"
            )));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| NoteError::BadKey("not an Ed25519 PKCS#8 document".into()))?;
        Ok(Ed25519FileSigner {
            name: name.to_owned(),
            key,
        })
    }
}

impl CheckpointSigner for Ed25519FileSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }
    fn sign_bytes(&self, message: &[u8]) -> Result<[u8; 64], NoteError> {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.key.sign(message).as_ref());
        Ok(out)
    }
}

fn note_key_id(name: &str, alg: u8, key: &[u8; 32]) -> u32 {
    let mut k = vec![alg];
    k.extend_from_slice(key);
    signed_note::key_id(name, &k)
}

fn verifier_key(name: &str, alg: u8, key: &[u8; 32]) -> String {
    let mut k = vec![alg];
    k.extend_from_slice(key);
    format!(
        "{name}+{:08x}+{}",
        note_key_id(name, alg, key),
        base64::engine::general_purpose::STANDARD.encode(&k)
    )
}

/// The checkpoint body: origin, size, base64 root (c2sp.org/tlog-checkpoint), no extensions.
fn checkpoint_text(origin: &str, size: u64, root: &NodeHash) -> Result<Vec<u8>, NoteError> {
    tlog_tiles::Checkpoint::new(origin, size, tlog_tiles::Hash(*root), "")
        .map(|c| c.to_bytes())
        .map_err(|e| NoteError::Malformed(e.to_string()))
}

/// A checkpoint with its signature lines (the log's and any witnesses'), as a signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: NodeHash,
    /// The whole signed note: text, blank line, signature lines.
    note: Vec<u8>,
}

impl SignedCheckpoint {
    /// Parses a signed note holding a checkpoint. Checks syntax only; see [`TrustPolicy`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let note = Note::from_bytes(bytes).map_err(|e| NoteError::Malformed(e.to_string()))?;
        let cp = tlog_tiles::Checkpoint::from_bytes(note.text())
            .map_err(|e| NoteError::Malformed(e.to_string()))?;
        Ok(SignedCheckpoint {
            origin: cp.origin().to_owned(),
            tree_size: cp.size(),
            root: cp.hash().0,
            note: note.to_bytes(),
        })
    }

    /// The signed note, as stored and exchanged.
    pub fn to_bytes(&self) -> &[u8] {
        &self.note
    }

    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.note).into_owned()
    }

    /// The checkpoint body (what every signature covers).
    pub fn body(&self) -> Vec<u8> {
        Note::from_bytes(&self.note)
            .map(|n| n.text().to_vec())
            .unwrap_or_default()
    }

    /// Adds signature lines (`— name base64\n`, e.g. a witness's add-checkpoint response),
    /// replacing any earlier line of the same key.
    pub fn add_signature_lines(&mut self, lines: &[u8]) -> Result<(), NoteError> {
        let text =
            std::str::from_utf8(lines).map_err(|_| NoteError::Malformed("not UTF-8".into()))?;
        let mut new = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            new.push(
                Signature::from_bytes(line.as_bytes())
                    .map_err(|e| NoteError::Malformed(e.to_string()))?,
            );
        }
        let (body, old_sigs) = split_note(&self.note)?;
        let mut sigs: Vec<Signature> = old_sigs
            .into_iter()
            .filter(|s| !new.iter().any(|n| n.name() == s.name() && n.id() == s.id()))
            .collect();
        sigs.extend(new);
        let note = Note::new(&body, &sigs).map_err(|e| NoteError::Malformed(e.to_string()))?;
        self.note = note.to_bytes();
        Ok(())
    }

    /// The signature lines, as text.
    pub fn signature_lines(&self) -> Vec<String> {
        split_note(&self.note)
            .map(|(_, sigs)| {
                sigs.iter()
                    .map(|s| String::from_utf8_lossy(&s.to_bytes()).trim_end().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn split_note(note: &[u8]) -> Result<(Vec<u8>, Vec<Signature>), NoteError> {
    let text = std::str::from_utf8(note).map_err(|_| NoteError::Malformed("not UTF-8".into()))?;
    let (body, sigs) = text
        .rsplit_once("\n\n")
        .ok_or_else(|| NoteError::Malformed("no signature block".into()))?;
    let mut out = Vec::new();
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        out.push(
            Signature::from_bytes(line.as_bytes())
                .map_err(|e| NoteError::Malformed(e.to_string()))?,
        );
    }
    Ok((format!("{body}\n").into_bytes(), out))
}

/// A witness's public key: `<name>+<id hex>+<base64(0x04 || Ed25519 key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    pub name: String,
    pub key: [u8; 32],
}

impl WitnessKey {
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let bad = |why: &str| NoteError::BadKey(format!("witness key {vkey:?}: {why}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key64)
            .map_err(|_| bad("key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_COSIGNATURE_V1 {
            return Err(bad("not a cosignature/v1 Ed25519 key (type 0x04)"));
        }
        if !signed_note::is_key_name_valid(name) {
            return Err(bad("invalid name"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[1..]);
        let w = WitnessKey {
            name: name.to_owned(),
            key,
        };
        if id.len() != 8 || u32::from_str_radix(id, 16).ok() != Some(w.key_id()) {
            return Err(bad("key id does not match"));
        }
        Ok(w)
    }

    pub fn key_id(&self) -> u32 {
        note_key_id(&self.name, ALG_COSIGNATURE_V1, &self.key)
    }

    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, ALG_COSIGNATURE_V1, &self.key)
    }
}

struct CosignatureVerifier(WitnessKey);

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn key_id(&self) -> u32 {
        self.0.key_id()
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 8 + 64 {
            return false;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&sig[..8]);
        let signed = cosigned_message(u64::from_be_bytes(ts), msg);
        UnparsedPublicKey::new(&ED25519, &self.0.key)
            .verify(&signed, &sig[8..])
            .is_ok()
    }
}

/// What a `cosignature/v1` signs: a header with the time, then the checkpoint body.
fn cosigned_message(time: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// A witness's own signing key (c2sp.org/tlog-cosignature, `cosignature/v1`).
pub struct Cosigner {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({})", self.name)
    }
}

impl Cosigner {
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(NoteError::BadKey(format!(
                "{name:?} is not a valid key name"
            )));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| NoteError::BadKey("not an Ed25519 PKCS#8 document".into()))?;
        Ok(Cosigner {
            name: name.to_owned(),
            key,
        })
    }

    pub fn public(&self) -> WitnessKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.key.public_key().as_ref());
        WitnessKey {
            name: self.name.clone(),
            key,
        }
    }

    /// The signature line (`— name base64\n`) cosigning `checkpoint` at unix time `time`.
    pub fn cosign(&self, checkpoint: &SignedCheckpoint, time: u64) -> String {
        let body = checkpoint.body();
        let sig = self.key.sign(&cosigned_message(time, &body));
        let mut raw = self.public().key_id().to_be_bytes().to_vec();
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(sig.as_ref());
        format!(
            "\u{2014} {} {}\n",
            self.name,
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Whom an officer trusts: the log's key and origin, the witnesses' keys, and how many
/// witnesses must have cosigned a checkpoint for it to count as witnessed.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// The log's verifier key (`name+id+base64(0x01||key)`), as `audit export` writes it.
    pub log_key: String,
    pub witnesses: Vec<WitnessKey>,
    /// k of the n witnesses; 0 when no witnesses are configured (the log key alone then vouches).
    pub quorum: usize,
}

/// What a checkpoint is worth under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// Signed by the log key; `cosigned_by` lists the witnesses whose cosignature verified.
    Valid { cosigned_by: Vec<String> },
    /// The log's signature is missing or does not verify (another key, or altered).
    BadLogSignature,
    /// A configured witness's cosignature line does not verify.
    BadCosignature { witness: String },
    /// The origin differs from the log key's name.
    WrongOrigin,
}

impl TrustPolicy {
    pub fn log_verifier(&self) -> Result<StandardVerifier, NoteError> {
        StandardVerifier::new(self.log_key.trim())
            .map_err(|e| NoteError::BadKey(format!("log key {:?}: {e}", self.log_key)))
    }

    /// The log's origin (the name in its key).
    pub fn origin(&self) -> &str {
        self.log_key.trim().split('+').next().unwrap_or_default()
    }

    pub fn check(&self, cp: &SignedCheckpoint) -> CheckpointVerdict {
        if cp.origin != self.origin() {
            return CheckpointVerdict::WrongOrigin;
        }
        let Ok(note) = Note::from_bytes(cp.to_bytes()) else {
            return CheckpointVerdict::BadLogSignature;
        };
        let Ok(log) = self.log_verifier() else {
            return CheckpointVerdict::BadLogSignature;
        };
        if note
            .verify(&VerifierList::new(vec![Box::new(log)]))
            .is_err()
        {
            return CheckpointVerdict::BadLogSignature;
        }
        let mut cosigned_by = Vec::new();
        for w in &self.witnesses {
            match note.verify(&VerifierList::new(vec![Box::new(CosignatureVerifier(
                w.clone(),
            ))])) {
                Ok(_) => cosigned_by.push(w.name.clone()),
                Err(signed_note::NoteError::UnverifiedNote) => {}
                Err(_) => {
                    return CheckpointVerdict::BadCosignature {
                        witness: w.name.clone(),
                    }
                }
            }
        }
        CheckpointVerdict::Valid { cosigned_by }
    }

    /// Whether a valid checkpoint has the cosignatures the policy asks for.
    pub fn is_witnessed(&self, verdict: &CheckpointVerdict) -> bool {
        matches!(verdict, CheckpointVerdict::Valid { cosigned_by } if cosigned_by.len() >= self.quorum)
    }

    /// Verifies a note signed by the log key alone (used by witnesses for the log's checkpoints).
    pub fn log_signed(&self, cp: &SignedCheckpoint) -> bool {
        cp.origin == self.origin()
            && match (Note::from_bytes(cp.to_bytes()), self.log_verifier()) {
                (Ok(note), Ok(log)) => note.verify(&VerifierList::new(vec![Box::new(log)])).is_ok(),
                _ => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str) -> Ed25519FileSigner {
        Ed25519FileSigner::from_pkcs8(name, &Ed25519FileSigner::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn signed_checkpoints_follow_the_c2sp_formats() {
        let log = signer("example.com/log");
        let dynlog: &dyn CheckpointSigner = &log;
        let cp = dynlog.sign_checkpoint(7, &[3; 32]).unwrap();
        let text = cp.to_text();
        let root = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert!(text.starts_with(&format!(
            "example.com/log\n7\n{root}\n\n\u{2014} example.com/log "
        )));
        assert_eq!(SignedCheckpoint::parse(cp.to_bytes()).unwrap(), cp);

        let w = Cosigner::from_pkcs8(
            "witness.example/w1",
            &Ed25519FileSigner::generate_pkcs8().unwrap(),
        )
        .unwrap();
        let other = Cosigner::from_pkcs8(
            "witness.example/w2",
            &Ed25519FileSigner::generate_pkcs8().unwrap(),
        )
        .unwrap();
        let policy = TrustPolicy {
            log_key: dynlog.verifier_key(),
            witnesses: vec![w.public(), other.public()],
            quorum: 1,
        };
        assert_eq!(
            WitnessKey::parse(&w.public().verifier_key()).unwrap(),
            w.public()
        );
        let verdict = policy.check(&cp);
        assert_eq!(
            verdict,
            CheckpointVerdict::Valid {
                cosigned_by: vec![]
            }
        );
        assert!(!policy.is_witnessed(&verdict));
        let mut witnessed = cp.clone();
        witnessed
            .add_signature_lines(w.cosign(&cp, 1_700_000_000).as_bytes())
            .unwrap();
        let verdict = policy.check(&witnessed);
        assert_eq!(
            verdict,
            CheckpointVerdict::Valid {
                cosigned_by: vec!["witness.example/w1".into()]
            }
        );
        assert!(policy.is_witnessed(&verdict));

        // Another key re-signing the same checkpoint is not the log.
        let forger = signer("example.com/log");
        let forged = (&forger as &dyn CheckpointSigner)
            .sign_checkpoint(7, &[3; 32])
            .unwrap();
        assert_eq!(policy.check(&forged), CheckpointVerdict::BadLogSignature);
        // A cosignature moved onto another checkpoint does not verify.
        let mut moved = dynlog.sign_checkpoint(8, &[4; 32]).unwrap();
        moved
            .add_signature_lines(w.cosign(&cp, 1_700_000_000).as_bytes())
            .unwrap();
        assert_eq!(
            policy.check(&moved),
            CheckpointVerdict::BadCosignature {
                witness: "witness.example/w1".into()
            }
        );
    }

    /// The example note of c2sp.org/signed-note (and Go's sumdb/note) verifies with its key.
    #[test]
    fn the_signed_note_spec_example_verifies() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let n = Note::from_bytes(note.as_bytes()).unwrap();
        let v = StandardVerifier::new(vkey).unwrap();
        assert!(n.verify(&VerifierList::new(vec![Box::new(v)])).is_ok());
    }
}
