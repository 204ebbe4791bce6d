//! SaslHandshake (v1) and SaslAuthenticate (v0 to v2): a Kafka client's login, through the
//! core's [`Login`]. A failed login is answered `SASL_AUTHENTICATION_FAILED` after the core's
//! delay, and the connection is closed, as Kafka's brokers do.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as Kafka;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{encoded, KafkaContext, Request};
use crate::auth::{AuthError, Login, Mechanism, Step};
use crate::core::{Caller, Seat};

/// A connection's login state.
#[derive(Debug, Default)]
pub(crate) enum Session {
    /// Not logged in, no login started.
    #[default]
    Anonymous,
    /// A login under way.
    LoggingIn(Login),
    /// Authenticated as this principal (by SASL or by a client certificate).
    Authenticated(Caller),
}

impl Session {
    /// Whether the connection is authenticated.
    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(self, Self::Authenticated(_))
    }

    /// Who the requests come from (anonymous before a login).
    pub(crate) fn caller(&self) -> Caller {
        match self {
            Self::Authenticated(caller) => caller.clone(),
            _ => Caller::anonymous(),
        }
    }
}

/// Answers a SaslHandshake: the mechanism is started, or refused with those offered.
pub(crate) fn handshake(
    session: &mut Session,
    request: &SaslHandshakeRequest,
    tls: bool,
    version: i16,
) -> Result<BytesMut, String> {
    let offered = Mechanism::offered(tls);
    let names = offered.iter().map(|mechanism| StrBytes::from_static_str(mechanism.name()));
    let response = SaslHandshakeResponse::default().with_mechanisms(names.collect());
    let code = match (&*session, Mechanism::from_name(&request.mechanism)) {
        // Version 0 is followed by unframed SASL tokens, which are not served.
        _ if version == 0 => Kafka::UnsupportedVersion.code(),
        (Session::Anonymous, Some(mechanism)) if offered.contains(&mechanism) => {
            *session = Session::LoggingIn(Login::Started(mechanism));
            0
        }
        (Session::Anonymous, _) => Kafka::UnsupportedSaslMechanism.code(),
        _ => Kafka::IllegalSaslState.code(),
    };
    encoded(&response.with_error_code(code), version)
}

/// What a SaslAuthenticate gives: the answer, and whether the connection closes after it.
pub(crate) struct Authenticated {
    pub(crate) body: BytesMut,
    pub(crate) close: Option<String>,
    /// The connection counted against its new principal's connection limit.
    pub(crate) seat: Option<Seat>,
}

/// Takes one SaslAuthenticate.
pub(crate) async fn authenticate(
    context: &KafkaContext,
    session: &mut Session,
    request: &Request,
    body: &SaslAuthenticateRequest,
) -> Result<Authenticated, String> {
    let version = request.version;
    let peer = request.peer;
    let reply = |code: i16, message: Option<String>, bytes: Vec<u8>| {
        let response = SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string))
            .with_auth_bytes(Bytes::from(bytes));
        encoded(&response, version)
    };
    let Session::LoggingIn(login) = std::mem::take(session) else {
        let reason = "SaslAuthenticate without a SaslHandshake first (or after the login)";
        tracing::warn!(%peer, reason, "kafka login refused");
        let body = reply(Kafka::IllegalSaslState.code(), Some(reason.to_owned()), Vec::new())?;
        return Ok(Authenticated { body, close: Some(reason.to_owned()), seat: None });
    };
    match context.core.login_step(login, &body.auth_bytes, peer.ip()).await {
        Ok(Step::Continue(login, bytes)) => {
            *session = Session::LoggingIn(login);
            Ok(Authenticated { body: reply(0, None, bytes)?, close: None, seat: None })
        }
        Ok(Step::Done { user, message }) => {
            let caller = Caller::authenticated(&user);
            match context.core.seat(&caller) {
                Ok(seat) => {
                    tracing::info!(%peer, protocol = "kafka", principal = %user, "authenticated");
                    *session = Session::Authenticated(caller);
                    Ok(Authenticated { body: reply(0, None, message)?, close: None, seat })
                }
                Err(refused) => {
                    tracing::warn!(%peer, protocol = "kafka", reason = %refused, "kafka login refused");
                    let message = refused.to_string();
                    let body =
                        reply(Kafka::PolicyViolation.code(), Some(message.clone()), Vec::new())?;
                    Ok(Authenticated { body, close: Some(message), seat: None })
                }
            }
        }
        Err(error) => {
            tracing::warn!(%peer, protocol = "kafka", %error, "kafka login refused");
            let code = match error {
                AuthError::UnsupportedMechanism { .. } => Kafka::UnsupportedSaslMechanism.code(),
                _ => Kafka::SaslAuthenticationFailed.code(),
            };
            let body = reply(code, Some(error.to_string()), Vec::new())?;
            Ok(Authenticated { body, close: Some(format!("login failed: {error}")), seat: None })
        }
    }
}
