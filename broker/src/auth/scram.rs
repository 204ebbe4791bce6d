//! SCRAM (RFC 5802, RFC 7677) on the server side, and the salted keys a user's password is kept
//! as. The primitives (PBKDF2, HMAC, SHA-2, the random nonce) are `ring`'s; comparisons of secrets
//! are constant-time (`subtle`). No channel binding: a client asking for it (`p=`) is refused,
//! and the gs2 header must be `n,,` (or `y,,`, a client that could bind but was not offered it).
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt base64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof base64>
//! server-final  v=<server signature base64>
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::AuthError;

/// PBKDF2 iterations of new credentials: Kafka's minimum for SCRAM, and what its tools use.
pub const ITERATIONS: u32 = 4096;
/// Largest iteration count accepted from a stored credential (bounds the work of one login).
pub const ITERATIONS_MAX: u32 = 1 << 20;
/// Bytes of a credential's salt (and of a decoy salt).
pub const SALT_SIZE: usize = 24;
/// Most PBKDF2 iterations a credential set over the network may ask for (as Kafka): each PLAIN
/// login derives the key again, so the count bounds the work a login costs the broker.
pub const ITERATIONS_SET_MAX: u32 = 16_384;
/// Bytes of the server's nonce (before base64).
const NONCE_SIZE: usize = 18;
/// Longest SCRAM message accepted, bytes.
pub const MESSAGE_SIZE_MAX: usize = 4096;

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn size(self) -> usize {
        self.digest().output_len()
    }
}

/// What is kept of a password for one SCRAM hash: enough to check a login, not to make one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt, base64.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(ClientKey)`, base64.
    pub stored_key: String,
    /// `HMAC(SaltedPassword, "Server Key")`, base64.
    pub server_key: String,
}

// The keys let whoever holds them (with one captured exchange) log in: never in a Debug dump.
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramExchange")
            .field("hash", &self.hash)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The keys of a credential, decoded.
struct Keys {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCredential {
    /// A new credential for `password`, with a fresh random salt.
    ///
    /// # Errors
    ///
    /// [`AuthError::Random`] if the system's random source fails.
    pub fn new(hash: ScramHash, password: &str) -> Result<Self, AuthError> {
        let mut salt = [0u8; SALT_SIZE];
        ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| AuthError::Random)?;
        Ok(Self::with_salt(hash, password, &salt, ITERATIONS))
    }

    /// A credential made elsewhere (by a client that sets a password without sending it):
    /// the salt, the PBKDF2 iterations and the two keys.
    ///
    /// # Errors
    ///
    /// [`AuthError::Malformed`] for a salt of other than 16 to 64 bytes, iterations outside
    /// [`ITERATIONS`] to [`ITERATIONS_SET_MAX`], or keys of the wrong length for `hash`.
    pub fn from_keys(
        hash: ScramHash,
        salt: &[u8],
        iterations: u32,
        stored_key: &[u8],
        server_key: &[u8],
    ) -> Result<Self, AuthError> {
        if !(16..=64).contains(&salt.len()) {
            return Err(AuthError::Malformed(format!(
                "a {}-byte salt (16 to 64 bytes are taken)",
                salt.len()
            )));
        }
        if !(ITERATIONS..=ITERATIONS_SET_MAX).contains(&iterations) {
            return Err(AuthError::Malformed(format!(
                "{iterations} iterations ({ITERATIONS} to {ITERATIONS_SET_MAX} are taken)"
            )));
        }
        if stored_key.len() != hash.size() || server_key.len() != hash.size() {
            return Err(AuthError::Malformed(format!(
                "keys of {} and {} bytes for a {}-byte hash",
                stored_key.len(),
                server_key.len(),
                hash.size()
            )));
        }
        Ok(Self {
            salt: BASE64.encode(salt),
            iterations,
            stored_key: BASE64.encode(stored_key),
            server_key: BASE64.encode(server_key),
        })
    }

    fn with_salt(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Self {
        let keys = derive(hash, password, salt, iterations);
        Self {
            salt: BASE64.encode(salt),
            iterations,
            stored_key: BASE64.encode(keys.stored_key),
            server_key: BASE64.encode(keys.server_key),
        }
    }

    fn keys(&self, hash: ScramHash) -> Option<Keys> {
        let keys = Keys {
            salt: BASE64.decode(&self.salt).ok()?,
            iterations: self.iterations,
            stored_key: BASE64.decode(&self.stored_key).ok()?,
            server_key: BASE64.decode(&self.server_key).ok()?,
        };
        let fits = (1..=ITERATIONS_MAX).contains(&keys.iterations)
            && keys.stored_key.len() == hash.size()
            && keys.server_key.len() == hash.size();
        fits.then_some(keys)
    }

    /// Whether `password` is the one this credential was made from (for PLAIN): the keys are
    /// derived again and compared in constant time.
    pub fn matches(&self, hash: ScramHash, password: &str) -> bool {
        let Some(keys) = self.keys(hash) else { return false };
        let derived = derive(hash, password, &keys.salt, keys.iterations);
        bool::from(derived.stored_key.ct_eq(&keys.stored_key))
    }
}

struct Derived {
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Derived {
    let mut salted = vec![0u8; hash.size()];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1");
    pbkdf2::derive(hash.pbkdf2(), rounds, salt, password.as_bytes(), &mut salted);
    let key = hmac::Key::new(hash.hmac(), &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(hash.digest(), client_key.as_ref()).as_ref().to_vec();
    let server_key = hmac::sign(&key, b"Server Key").as_ref().to_vec();
    Derived { stored_key, server_key }
}

/// A SCRAM exchange after the server's first message, waiting for the client's final one.
pub struct ScramExchange {
    hash: ScramHash,
    user: String,
    /// `c=` the client must send: the base64 of the gs2 header it sent first.
    binding: String,
    /// The client's nonce, and the whole nonce (the client's, then the server's).
    client_nonce: String,
    nonce: String,
    /// `client-first-bare + "," + server-first`, the start of the AuthMessage.
    transcript: String,
    /// The user's keys, or `None` for an unknown user (the exchange goes on and fails at the
    /// end, as for a wrong password, so that names cannot be probed).
    stored_key: Option<Vec<u8>>,
    server_key: Vec<u8>,
}

impl ScramExchange {
    /// Reads the client's first message and answers it. `lookup` finds the user: its
    /// credential, or for an unknown user a decoy salt (the same on every try and as long as a
    /// real one, so that the answer does not tell whether the user exists).
    ///
    /// # Errors
    ///
    /// [`AuthError::Malformed`] for a message that is not SCRAM's client-first.
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Result<ScramCredential, Vec<u8>>,
    ) -> Result<(Self, Vec<u8>), AuthError> {
        let text = message_text(client_first)?;
        let (gs2, bare) = split_gs2(text)?;
        let mut fields = bare.split(',');
        let user = match fields.next().and_then(|field| field.strip_prefix("n=")) {
            Some(user) => unescape_name(user)?,
            None => return Err(malformed("client-first has no n=<user>")),
        };
        // An authorization id other than the user itself is refused (no one acts as another).
        if let Some(authzid) = gs2.split(',').nth(1).and_then(|field| field.strip_prefix("a=")) {
            if unescape_name(authzid)? != user {
                return Err(malformed("an authorization id other than the user is not served"));
            }
        }
        let client_nonce = match fields.next().and_then(|field| field.strip_prefix("r=")) {
            Some(nonce) if !nonce.is_empty() && nonce.bytes().all(printable) => nonce,
            _ => return Err(malformed("client-first has no r=<nonce>")),
        };
        // Extensions (Kafka's tokenauth=true, say) are not served.
        if let Some(extension) = fields.next() {
            let name = extension.split('=').next().unwrap_or_default();
            return Err(malformed_owned(format!("unsupported SCRAM extension {name:?}")));
        }
        let mut random = [0u8; NONCE_SIZE];
        ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| AuthError::Random)?;
        let nonce = format!("{client_nonce}{}", BASE64.encode(random));
        let keys = match lookup(&user) {
            Ok(credential) => credential.keys(hash),
            Err(decoy_salt) => Some(Keys {
                salt: decoy_salt,
                iterations: ITERATIONS,
                stored_key: Vec::new(),
                server_key: Vec::new(),
            }),
        };
        // A stored credential that does not decode (a damaged file) fails like a wrong password.
        let keys = keys.unwrap_or(Keys {
            salt: vec![0; SALT_SIZE],
            iterations: ITERATIONS,
            stored_key: Vec::new(),
            server_key: Vec::new(),
        });
        let known = !keys.stored_key.is_empty();
        let server_first =
            format!("r={nonce},s={},i={}", BASE64.encode(&keys.salt), keys.iterations);
        let exchange = Self {
            hash,
            user,
            binding: BASE64.encode(gs2),
            client_nonce: client_nonce.to_owned(),
            nonce,
            transcript: format!("{bare},{server_first}"),
            stored_key: known.then_some(keys.stored_key),
            server_key: keys.server_key,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// The user the client named.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client's final message; on success, the server's final message and the user.
    ///
    /// # Errors
    ///
    /// [`AuthError::Malformed`] for a message that is not SCRAM's client-final (or one that
    /// does not continue this exchange), [`AuthError::BadCredentials`] for a wrong proof or an
    /// unknown user.
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, String), AuthError> {
        let text = message_text(client_final)?;
        let (without_proof, proof) =
            text.rsplit_once(",p=").ok_or_else(|| malformed("client-final has no p=<proof>"))?;
        let mut fields = without_proof.split(',');
        match fields.next().and_then(|field| field.strip_prefix("c=")) {
            Some(binding) if binding == self.binding => {}
            Some(_) => {
                return Err(malformed("client-final's c= is not the gs2 header of client-first"))
            }
            None => return Err(malformed("client-final has no c=<binding>")),
        }
        let nonce = fields.next().and_then(|field| field.strip_prefix("r=")).unwrap_or_default();
        // librdkafka before 2.6.1 sends its own nonce again before the whole one
        // (confluentinc/librdkafka#4895); that exact form is taken too: it still carries the
        // server's nonce, so it replays nothing.
        let legacy = nonce.strip_prefix(self.client_nonce.as_str()) == Some(self.nonce.as_str());
        if nonce != self.nonce && !legacy {
            return Err(malformed("client-final's nonce does not continue the exchange"));
        }
        if fields.next().is_some() {
            return Err(malformed("client-final has fields after r="));
        }
        let proof =
            BASE64.decode(proof).map_err(|_| malformed("client-final's proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.transcript);
        let Some(stored_key) = &self.stored_key else {
            return Err(AuthError::BadCredentials { user: self.user });
        };
        if proof.len() != self.hash.size() {
            return Err(AuthError::BadCredentials { user: self.user });
        }
        let key = hmac::Key::new(self.hash.hmac(), stored_key);
        let signature = hmac::sign(&key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(proof, signature)| proof ^ signature)
            .collect();
        let computed = digest::digest(self.hash.digest(), &client_key);
        if !bool::from(computed.as_ref().ct_eq(stored_key)) {
            return Err(AuthError::BadCredentials { user: self.user });
        }
        let server_key = hmac::Key::new(self.hash.hmac(), &self.server_key);
        let verifier = hmac::sign(&server_key, auth_message.as_bytes());
        Ok((format!("v={}", BASE64.encode(verifier)).into_bytes(), self.user))
    }
}

fn printable(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && byte != b','
}

fn message_text(bytes: &[u8]) -> Result<&str, AuthError> {
    if bytes.len() > MESSAGE_SIZE_MAX {
        return Err(malformed_owned(format!(
            "a SCRAM message of {} bytes (at most {MESSAGE_SIZE_MAX})",
            bytes.len()
        )));
    }
    std::str::from_utf8(bytes).map_err(|_| malformed("a SCRAM message is not UTF-8"))
}

/// Splits `gs2-header` (`n,,` / `y,,`, with an optional `a=<authzid>`) from the bare message.
fn split_gs2(text: &str) -> Result<(&str, &str), AuthError> {
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or_else(|| malformed("client-first has no gs2 header"))?;
    let bare = parts.next().ok_or_else(|| malformed("client-first has no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(malformed("channel binding (p=) is not served; use n,,"));
        }
        _ => return Err(malformed("client-first's gs2 header starts with neither n nor y")),
    }
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(malformed("client-first's authorization id is not a=<name>"));
    }
    let header_size = flag.len() + authzid.len() + 2;
    Ok((&text[..header_size], bare))
}

/// A SCRAM `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn unescape_name(name: &str) -> Result<String, AuthError> {
    if name.is_empty() {
        return Err(malformed("client-first names an empty user"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("client-first's user name has a bad = escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed(reason.to_owned())
}

fn malformed_owned(reason: String) -> AuthError {
    AuthError::Malformed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil", SCRAM-SHA-256.
    #[test]
    fn the_rfc_7677_example_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::with_salt(ScramHash::Sha256, "pencil", &salt, 4096);
        let client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (exchange, server_first) =
            ScramExchange::start(ScramHash::Sha256, client_first, |_| Ok(credential.clone()))
                .unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"), "{server_first}");
        assert!(server_first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "{server_first}");
        // The RFC's exchange used its own server nonce; compute the client's proof for ours.
        let nonce = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let final_without_proof = format!("c=biws,r={nonce}");
        let proof = client_proof(
            ScramHash::Sha256,
            "pencil",
            &salt,
            4096,
            &format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{final_without_proof}"),
        );
        let client_final = format!("{final_without_proof},p={}", BASE64.encode(&proof));
        let (server_final, user) = exchange.finish(client_final.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert!(server_final.starts_with(b"v="));

        // With the RFC's own nonce, the proof is the RFC's.
        let rfc_auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = client_proof(ScramHash::Sha256, "pencil", &salt, 4096, rfc_auth);
        assert_eq!(BASE64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    }

    /// What a client computes: `ClientKey XOR HMAC(StoredKey, AuthMessage)`.
    fn client_proof(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth: &str,
    ) -> Vec<u8> {
        let mut salted = vec![0u8; hash.size()];
        let rounds = std::num::NonZeroU32::new(iterations).unwrap();
        pbkdf2::derive(hash.pbkdf2(), rounds, salt, password.as_bytes(), &mut salted);
        let key = hmac::Key::new(hash.hmac(), &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(hash.digest(), client_key.as_ref());
        let signature = hmac::sign(&hmac::Key::new(hash.hmac(), stored.as_ref()), auth.as_bytes());
        client_key.as_ref().iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect()
    }

    #[test]
    fn a_wrong_password_an_unknown_user_and_bad_messages_are_refused() {
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            let credential = ScramCredential::new(hash, "right").unwrap();
            assert!(credential.matches(hash, "right"));
            assert!(!credential.matches(hash, "wrong"));
            let salt = BASE64.decode(&credential.salt).unwrap();
            for (known, password) in [(true, "wrong"), (false, "right")] {
                let lookup =
                    |_: &str| if known { Ok(credential.clone()) } else { Err(vec![7; SALT_SIZE]) };
                let (exchange, server_first) =
                    ScramExchange::start(hash, b"n,,n=alice,r=abc", lookup).unwrap();
                let server_first = String::from_utf8(server_first).unwrap();
                let nonce = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap();
                let without = format!("c=biws,r={nonce}");
                let auth = format!("n=alice,r=abc,{server_first},{without}");
                let used_salt = if known {
                    salt.clone()
                } else {
                    BASE64
                        .decode(
                            server_first.split(",s=").nth(1).unwrap().split(',').next().unwrap(),
                        )
                        .unwrap()
                };
                let proof = client_proof(hash, password, &used_salt, ITERATIONS, &auth);
                let result =
                    exchange.finish(format!("{without},p={}", BASE64.encode(proof)).as_bytes());
                assert!(
                    matches!(result, Err(AuthError::BadCredentials { ref user }) if user == "alice"),
                    "{result:?}"
                );
            }
        }
        let lookup = |_: &str| Err(vec![7; SALT_SIZE]);
        for bad in [
            &b""[..],
            b"n,,",
            b"p=tls-unique,,n=a,r=b",
            b"x,,n=a,r=b",
            b"n,,n=,r=b",
            b"n,,n=a=2,r=b",
            b"n,,n=a",
            b"n,,n=a,r=b,tokenauth=true",
            b"\xff\xfe",
        ] {
            let result = ScramExchange::start(ScramHash::Sha256, bad, lookup);
            assert!(matches!(result, Err(AuthError::Malformed(_))), "{bad:?}: {result:?}");
        }
        let (exchange, _) = ScramExchange::start(ScramHash::Sha256, b"n,,n=a,r=b", lookup).unwrap();
        assert!(matches!(exchange.finish(b"c=biws,r=other,p=AAAA"), Err(AuthError::Malformed(_))));
    }

    /// librdkafka before 2.6.1 sends `r=<client nonce><whole nonce>`; exactly that is taken, and
    /// a nonce that only ends with the server's is not.
    #[test]
    fn librdkafkas_old_nonce_form_is_taken_and_nothing_looser() {
        let credential = ScramCredential::new(ScramHash::Sha512, "pw").unwrap();
        let salt = BASE64.decode(&credential.salt).unwrap();
        for (prefix, accepted) in [("abc", true), ("xyz", false)] {
            let lookup = |_: &str| Ok(credential.clone());
            let (exchange, server_first) =
                ScramExchange::start(ScramHash::Sha512, b"n,,n=u,r=abc", lookup).unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            let nonce = server_first.split(',').next().unwrap().strip_prefix("r=").unwrap();
            let without = format!("c=biws,r={prefix}{nonce}");
            let auth = format!("n=u,r=abc,{server_first},{without}");
            let proof = client_proof(ScramHash::Sha512, "pw", &salt, ITERATIONS, &auth);
            let result =
                exchange.finish(format!("{without},p={}", BASE64.encode(proof)).as_bytes());
            assert_eq!(result.is_ok(), accepted, "{prefix}: {result:?}");
        }
    }

    #[test]
    fn names_are_unescaped() {
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
