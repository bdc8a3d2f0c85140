//! Redacted wrappers for secrets: access tokens, assertions and client secrets.
//!
//! Each type prints `[redacted]` under `Debug`, has no `Display` and no `PartialEq`, so a
//! secret cannot slip into a log line, an error message or a careless comparison.

use std::fmt;

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret itself: call only where it leaves the process on purpose.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_string!(
    /// An OAuth access token, as the token endpoint issued it.
    AccessToken
);
secret_string!(
    /// A client secret, or the contents of a token file before it is used as a token.
    Secret
);
secret_string!(
    /// A signed JWT assertion (RFC 7523): whoever holds it can mint a token until it expires.
    Assertion
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = AccessToken::new("very-secret-token");
        let assertion = Assertion::new("eyJhbGciOiJSUzI1NiJ9.payload.sig");
        let printed = format!("{token:?} {assertion:?}");
        assert!(!printed.contains("very-secret-token"), "{printed}");
        assert!(!printed.contains("payload"), "{printed}");
        assert_eq!(printed, "AccessToken([redacted]) Assertion([redacted])");
    }
}
