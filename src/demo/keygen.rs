//! Fresh RSA keys in ZITADEL's key-file format, for the demo issuer and for tests.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use jsonwebtoken::EncodingKey;

/// A newly generated service-user key.
pub struct GeneratedKey {
    /// The key id (`kid`).
    pub key_id: String,
    /// The service user's id (or the application's client id).
    pub subject: String,
    pair: KeyPair,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("key_id", &self.key_id)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl GeneratedKey {
    /// Generates a 2048-bit RSA key for `subject` (a user id or client id).
    pub fn new(key_id: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            subject: subject.into(),
            pair: KeyPair::generate(KeySize::Rsa2048)
                .expect("RSA key generation needs only system randomness"),
        }
    }

    /// The private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn pkcs8_pem(&self) -> String {
        let der = self.pair.as_der().expect("a generated key serialises");
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()))
    }

    /// The private key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), as ZITADEL writes it.
    pub fn pkcs1_pem(&self) -> String {
        let key = EncodingKey::from_rsa_pem(self.pkcs8_pem().as_bytes()).expect("our own PKCS#8 PEM parses");
        pem::encode(&pem::Pem::new("RSA PRIVATE KEY", key.as_bytes().to_vec()))
    }

    /// The key file ZITADEL would let you download (PKCS#1 key).
    pub fn key_json(&self) -> String {
        self.key_json_with(&self.pkcs1_pem())
    }

    /// The key file with the given PEM in its `key` field.
    pub fn key_json_with(&self, pem: &str) -> String {
        serde_json::json!({
            "type": "serviceaccount",
            "keyId": self.key_id,
            "key": pem,
            "userId": self.subject,
        })
        .to_string()
    }

    /// The key file with an `expirationDate` (RFC 3339), as ZITADEL writes it for a key
    /// given an expiry.
    pub fn key_json_expiring(&self, expiration_date: &str) -> String {
        let mut json: serde_json::Value =
            serde_json::from_str(&self.key_json()).expect("our own key file is JSON");
        json["expirationDate"] = expiration_date.into();
        json.to_string()
    }

    /// An application key file (`private_key_jwt`), as ZITADEL lets you download it.
    pub fn application_key_json(&self) -> String {
        serde_json::json!({
            "type": "application",
            "keyId": self.key_id,
            "key": self.pkcs1_pem(),
            "appId": format!("app-of-{}", self.subject),
            "clientId": self.subject,
        })
        .to_string()
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER, what the issuer verifies with.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }
}
