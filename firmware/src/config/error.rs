//! Config errors carry the file, line and column (1-based, columns in characters).
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: &Path, text: &str, offset: usize, message: String) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = text.get(line_start..offset).map(|s| s.chars().count()).unwrap_or(0) + 1;
        ConfigError { file: path.display().to_string(), line, col, message }
    }

    pub fn io(path: &Path, e: std::io::Error) -> Self {
        ConfigError { file: path.display().to_string(), line: 0, col: 0, message: format!("cannot read: {e}") }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
