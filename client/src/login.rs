//! Logging in to a broker that requires it: SCRAM-SHA-256 or SCRAM-SHA-512 (RFC 5802) on the
//! client side, with `ring`'s PBKDF2, HMAC and SHA-2. The client checks the broker's final
//! signature, so a broker that does not hold the user's keys cannot pass for one that does.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

use crate::ClientError;

/// Most PBKDF2 iterations a broker may ask for (bounds the work a hostile broker can cause).
const ITERATIONS_MAX: u32 = 1 << 20;

/// A user name and password to log in with. `Debug` shows the name only.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
    mechanism: Scram,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism.name())
            .finish_non_exhaustive()
    }
}

/// The SCRAM hash a login uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Scram {
    fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn parts(self) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm) {
        match self {
            Self::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256),
            Self::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512),
        }
    }
}

impl Credentials {
    /// Logs in as `user` with `password`, by SCRAM-SHA-256.
    pub fn new(user: &str, password: &str) -> Self {
        Self { user: user.to_owned(), password: password.to_owned(), mechanism: Scram::Sha256 }
    }

    /// The same, by SCRAM-SHA-512.
    #[must_use]
    pub fn with_mechanism(mut self, mechanism: Scram) -> Self {
        self.mechanism = mechanism;
        self
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn mechanism_name(&self) -> &'static str {
        self.mechanism.name()
    }

    /// The client-first message and the state to finish with.
    pub(crate) fn first(&self) -> Result<(Vec<u8>, FirstSent), ClientError> {
        let mut random = [0u8; 18];
        ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| {
            ClientError::InvalidArgument("the system's random source failed".into())
        })?;
        let nonce = BASE64.encode(random);
        let user = self.user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={user},r={nonce}");
        let message = format!("n,,{bare}").into_bytes();
        Ok((message, FirstSent { nonce, bare }))
    }

    /// The client-final message for the broker's server-first, and the signature to expect.
    pub(crate) fn last(
        &self,
        sent: &FirstSent,
        server_first: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let bad = |reason: &str| {
            ClientError::InvalidArgument(format!("the broker's SCRAM message {reason}"))
        };
        let text = std::str::from_utf8(server_first).map_err(|_| bad("is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for field in text.split(',') {
            match field.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = BASE64.decode(value).ok(),
                Some(("i", value)) => iterations = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        let nonce =
            nonce.filter(|nonce| nonce.starts_with(&sent.nonce) && nonce.len() > sent.nonce.len());
        let nonce = nonce.ok_or_else(|| bad("does not continue this client's nonce"))?;
        let salt = salt.ok_or_else(|| bad("has no base64 salt"))?;
        let iterations = iterations
            .filter(|count| (1..=ITERATIONS_MAX).contains(count))
            .ok_or_else(|| bad("has no iteration count from 1 to 1048576"))?;
        let (pbkdf2_algorithm, hmac_algorithm, digest_algorithm) = self.mechanism.parts();
        let mut salted = vec![0u8; digest_algorithm.output_len()];
        let rounds =
            std::num::NonZeroU32::new(iterations).ok_or_else(|| bad("asks for 0 iterations"))?;
        pbkdf2::derive(pbkdf2_algorithm, rounds, &salt, self.password.as_bytes(), &mut salted);
        let salted_key = hmac::Key::new(hmac_algorithm, &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(digest_algorithm, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", sent.bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac_algorithm, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(key, sig)| key ^ sig)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let expected = hmac::sign(
            &hmac::Key::new(hmac_algorithm, server_key.as_ref()),
            auth_message.as_bytes(),
        );
        let message = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        Ok((message, format!("v={}", BASE64.encode(expected)).into_bytes()))
    }
}

/// A SCRAM login driven by the caller over a transport of its own (Kafka's `SaslAuthenticate`,
/// say): the three steps `ringmq-client` takes inside [`crate::Client::connect_with`].
///
/// ```
/// let credentials = ringmq_client::Credentials::new("alice", "secret");
/// let mut login = credentials.scram_login();
/// assert_eq!(login.mechanism(), "SCRAM-SHA-256");
/// let first = login.first().unwrap();
/// assert!(first.starts_with(b"n,,n=alice,r="));
/// // Send `first`, then: let last = login.last(&server_first)?; send `last`, then
/// // login.verify(&server_final)? checks the broker's signature.
/// ```
pub struct ScramLogin {
    credentials: Credentials,
    sent: Option<FirstSent>,
    expected: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramLogin")
            .field("credentials", &self.credentials)
            .field("first_sent", &self.sent.is_some())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A SCRAM login with these credentials, for the caller to drive ([`ScramLogin`]).
    pub fn scram_login(&self) -> ScramLogin {
        ScramLogin { credentials: self.clone(), sent: None, expected: None }
    }
}

impl ScramLogin {
    /// The SASL mechanism's name (`SCRAM-SHA-256` or `SCRAM-SHA-512`).
    pub fn mechanism(&self) -> &'static str {
        self.credentials.mechanism_name()
    }

    /// The client-first message.
    ///
    /// # Errors
    ///
    /// The system's random source failed.
    pub fn first(&mut self) -> Result<Vec<u8>, ClientError> {
        let (message, sent) = self.credentials.first()?;
        self.sent = Some(sent);
        Ok(message)
    }

    /// The client-final message for the broker's server-first message.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`]: called before [`first`](Self::first), or a broker
    /// message that is not SCRAM's.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ClientError> {
        let sent = self.sent.as_ref().ok_or_else(|| {
            ClientError::InvalidArgument("a SCRAM login's last message before its first".into())
        })?;
        let (message, expected) = self.credentials.last(sent, server_first)?;
        self.expected = Some(expected);
        Ok(message)
    }

    /// Checks the broker's server-final message: its signature proves it holds the user's keys.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`]: the signature is not the expected one (or the login is
    /// not at its end).
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ClientError> {
        match &self.expected {
            Some(expected) if expected == server_final => Ok(()),
            _ => Err(ClientError::InvalidArgument(
                "the broker's SCRAM signature is not the user's: it does not hold the user's keys"
                    .into(),
            )),
        }
    }
}

/// What the client keeps between its first and last SCRAM messages.
pub(crate) struct FirstSent {
    nonce: String,
    bare: String,
}

/// PBKDF2 iterations of the keys a client makes when it sets a password (the SCRAM minimum,
/// RFC 7677; each PLAIN login makes the broker derive them again).
pub(crate) const SET_ITERATIONS: u32 = 4096;

/// A salted SCRAM credential made here, so that setting a password never sends it: the salt,
/// `H(ClientKey)` and the server key.
pub(crate) struct SaltedKeys {
    pub(crate) salt: [u8; 24],
    pub(crate) stored_key: Vec<u8>,
    pub(crate) server_key: Vec<u8>,
}

/// The salted keys of `password` for `mechanism`, with a fresh random salt.
pub(crate) fn salted_keys(password: &str, mechanism: Scram) -> Result<SaltedKeys, ClientError> {
    let mut salt = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| ClientError::InvalidArgument("the system's random source failed".into()))?;
    let (pbkdf2_algorithm, hmac_algorithm, digest_algorithm) = mechanism.parts();
    let mut salted = vec![0u8; digest_algorithm.output_len()];
    let rounds = std::num::NonZeroU32::new(SET_ITERATIONS).expect("not zero");
    pbkdf2::derive(pbkdf2_algorithm, rounds, &salt, password.as_bytes(), &mut salted);
    let salted_key = hmac::Key::new(hmac_algorithm, &salted);
    let client_key = hmac::sign(&salted_key, b"Client Key");
    let stored_key = digest::digest(digest_algorithm, client_key.as_ref()).as_ref().to_vec();
    let server_key = hmac::sign(&salted_key, b"Server Key").as_ref().to_vec();
    Ok(SaltedKeys { salt, stored_key, server_key })
}
