//! A token kept in a file (a ZITADEL personal access token, say): no grant, just the file,
//! read again when it changes.

use std::path::PathBuf;

use super::client_credentials::read_secret;
use super::file::WatchedFile;
use super::{ChangeFuture, FetchFuture, Token, TokenSource};
use crate::secret::AccessToken;

/// Serves the token in a file until the file changes.
#[derive(Debug)]
pub struct StaticTokenSource {
    file: WatchedFile,
}

impl StaticTokenSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            file: WatchedFile::new(path),
        }
    }
}

impl TokenSource for StaticTokenSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let token = self.file.read(read_secret)?;
            Ok(Token {
                access_token: AccessToken::new(token.expose()),
                lifetime: None,
                scope: None,
            })
        })
    }

    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(self.file.changed())
    }
}
