//! One error type for the agent: a message plus the chain of context that led
//! to it ("reading /etc/passwd: No such file or directory"). The agent is a
//! small binary, so this replaces anyhow/thiserror.

use std::fmt;

/// An error message with its context already folded in, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error from a message.
    pub fn msg(msg: impl fmt::Display) -> Self {
        Error(msg.to_string())
    }

    /// Prefix this error with what was being done when it happened.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error(format!("{ctx}: {}", self.0))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Attach context to any displayable error.
pub trait Context<T> {
    /// Wrap the error with a fixed context string.
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    /// Wrap the error with a lazily built context string.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{ctx}: {e}")))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", f())))
    }
}

/// Early-return with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::msg(format!($($arg)*))) };
}
