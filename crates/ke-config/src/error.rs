//! One error type for everything that can go wrong between a config file on
//! disk and a validated config. Every variant names the file, and every
//! variant about content names the dotted field path, because "which line do
//! I fix" is the only question a user has.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A problem with one field, found by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted YAML path, e.g. `modules.edgeHub.heartbeat`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("\n  - {e}"))
        .collect::<String>()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{}: config is {size} bytes, more than the {limit}-byte limit", .file.display())]
    TooLarge {
        file: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("{}: not valid YAML: {message}", .file.display())]
    Syntax { file: PathBuf, message: String },

    #[error("{}: config is empty", .file.display())]
    Empty { file: PathBuf },

    #[error("{}: the top level must be a mapping of config fields, found {found}", .file.display())]
    NotAMapping { file: PathBuf, found: &'static str },

    #[error("{}: {field}: expected {expected:?}, found {found}", .file.display())]
    WrongTypeMeta {
        file: PathBuf,
        /// `apiVersion` or `kind`.
        field: &'static str,
        expected: &'static str,
        found: String,
    },

    /// Unknown field, wrong type, unparsable value, or YAML that has no JSON
    /// equivalent (non-finite numbers, complex keys, excessive nesting).
    #[error("{}: {field}: {message}", .file.display())]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },

    #[error("{}: invalid config:{}", .file.display(), list(.errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<FieldError>,
    },

    /// A bug in this crate (the defaults failed to serialize).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ConfigError {
    /// The validation problems, if that is what this error is.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}
