//! The messages workers exchange over the broker. Each is a small JSON object
//! `{"v": 1, "kind": "...", ...}`; the version lets a newer worker refuse (to
//! the dead-letter queue) what it does not understand instead of guessing.
//!
//! Messages carry identities only, never state: the state lives in
//! PostgreSQL, so a duplicated, late or replayed message is harmless.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MESSAGE_VERSION: u32 = 1;
/// Anything larger is not ours: real messages are about 150 bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Begin a recorded run: queue its first step.
    StartEtl { run_id: Uuid },
    /// Execute one attempt of one step of a run.
    ExecModule { run_id: Uuid, step: u32, attempt: u32 },
    /// The last step succeeded: close the run.
    EndEtl { run_id: Uuid },
    /// A step failed: close the run as failed, naming the step and reason.
    ErrorHandler {
        run_id: Uuid,
        step: u32,
        attempt: u32,
        reason: String,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    #[serde(flatten)]
    message: &'a Message,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message has version {0:?}; this worker understands version {MESSAGE_VERSION}")]
    UnknownVersion(Option<u64>),
    #[error("message does not match any known kind: {0}")]
    BadShape(String),
}

impl Message {
    pub fn run_id(&self) -> Uuid {
        match self {
            Message::StartEtl { run_id }
            | Message::ExecModule { run_id, .. }
            | Message::EndEtl { run_id }
            | Message::ErrorHandler { run_id, .. } => *run_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::StartEtl { .. } => "start_etl",
            Message::ExecModule { .. } => "exec_module",
            Message::EndEtl { .. } => "end_etl",
            Message::ErrorHandler { .. } => "error_handler",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec(&EnvelopeOut {
            v: MESSAGE_VERSION,
            message: self,
        })
        .unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| DecodeError::BadShape("not a JSON object".into()))?;
        match object.remove("v") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(MESSAGE_VERSION as u64) => {}
            Some(serde_json::Value::Number(n)) => return Err(DecodeError::UnknownVersion(n.as_u64())),
            _ => return Err(DecodeError::UnknownVersion(None)),
        }
        serde_json::from_value(value).map_err(|e| DecodeError::BadShape(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let id = Uuid::nil();
        for m in [
            Message::StartEtl { run_id: id },
            Message::ExecModule {
                run_id: id,
                step: 3,
                attempt: 2,
            },
            Message::EndEtl { run_id: id },
            Message::ErrorHandler {
                run_id: id,
                step: 1,
                attempt: 1,
                reason: "exit code 3".into(),
            },
        ] {
            let bytes = m.encode();
            assert!(String::from_utf8_lossy(&bytes).contains(&format!("\"kind\":\"{}\"", m.kind())));
            assert_eq!(Message::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn the_wire_format_is_stable() {
        let m = Message::ExecModule {
            run_id: Uuid::nil(),
            step: 1,
            attempt: 2,
        };
        assert_eq!(
            String::from_utf8(m.encode()).unwrap(),
            r#"{"v":1,"kind":"exec_module","run_id":"00000000-0000-0000-0000-000000000000","step":1,"attempt":2}"#
        );
    }

    #[test]
    fn bad_messages_say_why() {
        assert!(matches!(Message::decode(b"not json"), Err(DecodeError::NotJson(_))));
        assert!(matches!(Message::decode(b"[1]"), Err(DecodeError::BadShape(_))));
        assert!(matches!(
            Message::decode(br#"{"kind":"end_etl","run_id":"00000000-0000-0000-0000-000000000000"}"#),
            Err(DecodeError::UnknownVersion(None))
        ));
        assert!(matches!(
            Message::decode(br#"{"v":2,"kind":"end_etl"}"#),
            Err(DecodeError::UnknownVersion(Some(2)))
        ));
        assert!(matches!(
            Message::decode(br#"{"v":1,"kind":"explode","run_id":"00000000-0000-0000-0000-000000000000"}"#),
            Err(DecodeError::BadShape(_))
        ));
        assert!(matches!(
            Message::decode(br#"{"v":1,"kind":"end_etl","run_id":"00000000-0000-0000-0000-000000000000","x":1}"#),
            Err(DecodeError::BadShape(_))
        ));
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(Message::decode(&big), Err(DecodeError::TooLarge(_))));
    }
}
