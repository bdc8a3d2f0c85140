//! ZITADEL key files: a service user's (`{"type":"serviceaccount","keyId","key","userId"}`)
//! and an application's (`{"type":"application","keyId","key","appId","clientId"}`).
//!
//! The file is parsed field by field from a generic JSON value, so no error message can
//! quote the private key back (serde's "invalid type" messages would).
//!
//! ZITADEL keys can expire: the file's optional `expirationDate` is read too, so the key's
//! end can be announced before ZITADEL starts refusing it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jsonwebtoken::EncodingKey;
use serde_json::{Map, Value};

/// Which kind of key file: they sign the same shape of assertion, for different grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A service user's key (`serviceaccount`): the JWT profile grant, `iss` = `sub` = userId.
    ServiceAccount,
    /// An application's key (`application`): `private_key_jwt` client authentication,
    /// `iss` = `sub` = clientId.
    Application,
}

impl KeyKind {
    fn type_name(self) -> &'static str {
        match self {
            Self::ServiceAccount => "serviceaccount",
            Self::Application => "application",
        }
    }

    /// The field naming the assertion's subject.
    fn subject_field(self) -> &'static str {
        match self {
            Self::ServiceAccount => "userId",
            Self::Application => "clientId",
        }
    }
}

/// A ZITADEL key, ready to sign assertions.
#[derive(Clone)]
pub struct SigningKey {
    /// Service user or application key.
    pub kind: KeyKind,
    /// The key's id: the assertion's `kid`.
    pub key_id: String,
    /// The userId or clientId: the assertion's `iss` and `sub`.
    pub subject: String,
    /// When ZITADEL stops accepting the key (`expirationDate`); `None` when the file does
    /// not say, or says the year 9999 (ZITADEL's "no expiration").
    pub expires_at: Option<SystemTime>,
    signing_key: EncodingKey,
}

/// From this instant on, an `expirationDate` means "never" (ZITADEL writes
/// `9999-12-31T23:59:59Z` for a key without expiration): 9999-01-01T00:00:00Z.
const NEVER: Duration = Duration::from_secs(253_370_764_800);

impl SigningKey {
    /// Reads and validates a key file that must be of `kind`.
    pub fn from_file(path: &Path, kind: KeyKind) -> Result<Self, KeyFileError> {
        let fail = |problem| KeyFileError {
            path: path.to_path_buf(),
            problem,
        };
        let text = std::fs::read(path).map_err(|e| fail(KeyFileProblem::Read(e)))?;
        Self::from_json(&text, kind).map_err(fail)
    }

    /// Parses the key JSON itself (the contents of a key file).
    pub fn from_json(text: &[u8], kind: KeyKind) -> Result<Self, KeyFileProblem> {
        let value: Value = serde_json::from_slice(text).map_err(|e| KeyFileProblem::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(fields) = value else {
            return Err(KeyFileProblem::NotAnObject);
        };
        let found = match string_field(&fields, "type")? {
            "serviceaccount" => KeyKind::ServiceAccount,
            "application" => KeyKind::Application,
            other => return Err(KeyFileProblem::UnknownType(other.chars().take(40).collect())),
        };
        if found != kind {
            return Err(KeyFileProblem::WrongKind {
                found,
                expected: kind,
            });
        }
        let key_id = string_field(&fields, "keyId")?.to_owned();
        let subject = string_field(&fields, kind.subject_field())?.to_owned();
        let pem = string_field(&fields, "key")?;
        let signing_key = rsa_signing_key(pem.as_bytes()).ok_or(KeyFileProblem::BadKey)?;
        Ok(Self {
            kind,
            key_id,
            subject,
            expires_at: expiration_date(&fields)?,
            signing_key,
        })
    }

    /// Whether the key's `expirationDate` is behind `now`.
    pub fn expired_at(&self, now: SystemTime) -> Option<SystemTime> {
        self.expires_at.filter(|at| *at <= now)
    }

    /// The RSA private key that signs assertions.
    pub(crate) fn signing_key(&self) -> &EncodingKey {
        &self.signing_key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("subject", &self.subject)
            .field("signing_key", &"[redacted]")
            .finish()
    }
}

/// Accepts PKCS#1 (`RSA PRIVATE KEY`, what ZITADEL writes) and PKCS#8 (`PRIVATE KEY`), and
/// checks the key really loads, so a damaged key fails at start rather than at first mint.
fn rsa_signing_key(pem: &[u8]) -> Option<EncodingKey> {
    let key = EncodingKey::from_rsa_pem(pem).ok()?;
    aws_lc_rs::rsa::KeyPair::from_der(key.as_bytes()).ok()?;
    Some(key)
}

/// The optional `expirationDate`, read strictly: a value that is not a date means the file
/// is not what ZITADEL wrote.
fn expiration_date(fields: &Map<String, Value>) -> Result<Option<SystemTime>, KeyFileProblem> {
    const FIELD: &str = "expirationDate";
    match fields.get(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let at = crate::rfc3339::parse(text)
                .ok_or_else(|| KeyFileProblem::BadDate(text.chars().take(40).collect()))?;
            Ok((at < SystemTime::UNIX_EPOCH + NEVER).then_some(at))
        }
        Some(_) => Err(KeyFileProblem::NotAString(FIELD)),
    }
}

fn string_field<'a>(fields: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, KeyFileProblem> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(KeyFileProblem::MissingField(name)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(KeyFileProblem::EmptyField(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(KeyFileProblem::NotAString(name)),
    }
}

/// A key file that cannot be used, and which file it was.
#[derive(Debug, thiserror::Error)]
#[error("key file {}: {problem}", path.display())]
pub struct KeyFileError {
    /// The file that was read.
    pub path: PathBuf,
    /// What is wrong with it.
    #[source]
    pub problem: KeyFileProblem,
}

/// What is wrong with a key file. Messages name the field, never its value.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileProblem {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    /// The file is not JSON.
    #[error("not valid JSON (line {line}, column {column})")]
    NotJson {
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// The JSON is not an object.
    #[error("expected a JSON object with type, keyId, key and userId (or clientId)")]
    NotAnObject,
    /// A required field is absent.
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    /// A required field is empty.
    #[error("field `{0}` is empty")]
    EmptyField(&'static str),
    /// A field holds something other than a string.
    #[error("field `{0}` must be a string")]
    NotAString(&'static str),
    /// `type` is neither `serviceaccount` nor `application`.
    #[error("field `type` is \"{0}\", expected \"serviceaccount\" or \"application\"")]
    UnknownType(String),
    /// A key of the other kind: an application key given as a service user's, or back.
    #[error("{}", wrong_kind(*found))]
    WrongKind {
        /// What the file holds.
        found: KeyKind,
        /// What was asked for.
        expected: KeyKind,
    },
    /// The `key` field does not hold a usable RSA private key.
    #[error("field `key` is not an RSA private key in PEM form (PKCS#1 or PKCS#8)")]
    BadKey,
    /// `expirationDate` is not an RFC 3339 date and time.
    #[error("field `expirationDate` is {0:?}, not an RFC 3339 date and time like \"2026-12-31T00:00:00Z\"")]
    BadDate(String),
}

fn wrong_kind(found: KeyKind) -> String {
    let advice = match found {
        KeyKind::Application => {
            "an application's key: use it as a client key (--client-key-file, client_key_file)"
        }
        KeyKind::ServiceAccount => "a service user's key: use it with --key-file (key_file)",
    };
    format!("field `type` is \"{}\": {advice}", found.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> String {
        SigningKey::from_json(json.as_bytes(), KeyKind::ServiceAccount)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        assert_eq!(problem("{"), "not valid JSON (line 1, column 1)");
        assert_eq!(
            problem("[1]"),
            "expected a JSON object with type, keyId, key and userId (or clientId)"
        );
        assert_eq!(problem(r#"{"keyId":"1"}"#), "field `type` is missing");
        assert_eq!(
            problem(r#"{"type":"serviceaccount","keyId":"","key":"k","userId":"u"}"#),
            "field `keyId` is empty"
        );
        assert_eq!(
            problem(r#"{"type":"serviceaccount","keyId":"1","key":"k","userId":7}"#),
            "field `userId` must be a string"
        );
        assert_eq!(
            problem(r#"{"type":"serviceaccount","keyId":"1","userId":"2"}"#),
            "field `key` is missing"
        );
        assert_eq!(
            problem(r#"{"type":"application","keyId":"1"}"#),
            "field `type` is \"application\": an application's key: use it as a client key (--client-key-file, client_key_file)"
        );
        let application = SigningKey::from_json(br#"{"type":"serviceaccount"}"#, KeyKind::Application);
        assert_eq!(
            application.unwrap_err().to_string(),
            "field `type` is \"serviceaccount\": a service user's key: use it with --key-file (key_file)"
        );
    }

    #[test]
    fn reads_the_expiration_date() {
        let key = crate::demo::keygen::GeneratedKey::new("1", "2");
        let read = |json: &str| SigningKey::from_json(json.as_bytes(), KeyKind::ServiceAccount);
        let expires = |date: &str| read(&key.key_json_expiring(date)).unwrap().expires_at;
        assert_eq!(read(&key.key_json()).unwrap().expires_at, None);
        let end_of_2026 = crate::rfc3339::parse("2026-12-31T00:00:00Z");
        assert_eq!(expires("2026-12-31T00:00:00Z"), end_of_2026);
        assert_eq!(expires("9999-12-31T23:59:59Z"), None, "ZITADEL's no expiration");
        let with_number = key.key_json().replacen('{', r#"{"expirationDate":20261231,"#, 1);
        assert_eq!(
            read(&with_number).unwrap_err().to_string(),
            "field `expirationDate` must be a string"
        );
        assert_eq!(
            read(&key.key_json_expiring("31.12.2026")).unwrap_err().to_string(),
            "field `expirationDate` is \"31.12.2026\", not an RFC 3339 date and time like \"2026-12-31T00:00:00Z\""
        );
        let key = read(&key.key_json_expiring("2026-12-31T00:00:00Z")).unwrap();
        let before = crate::rfc3339::parse("2026-12-30T23:59:59Z").unwrap();
        assert_eq!(key.expired_at(before), None);
        assert_eq!(key.expired_at(end_of_2026.unwrap()), end_of_2026);
    }

    #[test]
    fn a_bad_key_is_not_echoed() {
        let secret = "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END RSA PRIVATE KEY-----\n";
        let json = serde_json::json!({"type":"serviceaccount","keyId":"1","key":secret,"userId":"2"});
        let message = problem(&json.to_string());
        assert_eq!(
            message,
            "field `key` is not an RSA private key in PEM form (PKCS#1 or PKCS#8)"
        );
        assert!(!message.contains("TOPSECRET"));
    }
}
