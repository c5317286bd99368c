//! Configuration errors and warnings, each located as `FILE:LINE: FIELD: message`.

use core::fmt;
use std::path::PathBuf;

/// One located problem (an error, or a warning in [`Config::warnings`](super::Config)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based line of the offending key, or of its table's header when the key is missing.
    pub line: usize,
    /// Dotted field path, arrays of tables indexed from 0: `sa[1].enc_key_out`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// Why a configuration was not loaded. Nothing of it applies: a [`Config`](super::Config)
/// is returned whole or not at all.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order; never empty. Displayed one per line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The located problems (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(d) => d,
        }
    }
}
