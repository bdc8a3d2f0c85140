//! An error and its causes on one line: the top message of an HTTP client's error alone
//! says little (`client error (Connect)`); its causes say what happened.

use std::error::Error;
use std::fmt;

/// Shows an error, then each of its causes, separated by `: `.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Whether `error`, or one of its causes, is an `E`.
pub(crate) fn caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<E>() {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn shows_every_cause_and_finds_them() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&error).to_string(), "outer: inner");
        assert!(caused_by::<std::io::Error>(&error));
        assert!(!caused_by::<std::fmt::Error>(&error));
    }
}
