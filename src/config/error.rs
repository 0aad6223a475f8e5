//! Errors of the job file, each located at `file:line:col` so an operator can go straight to it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a job file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read the job file: {source}", escape_controls(&path.display().to_string()))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid job file: every problem found, in file order.
    #[error("{}", render(file, errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<LocatedError>,
    },
}

impl ConfigError {
    /// The located problems (empty when the file could not be read).
    pub fn errors(&self) -> &[LocatedError] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { errors, .. } => errors,
        }
    }
}

/// One problem at a place in the file. Line and column are 1-based; the column counts characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub line: usize,
    pub col: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

fn render(file: &Path, errors: &[LocatedError]) -> String {
    let file = escape_controls(&file.display().to_string());
    errors
        .iter()
        .map(|e| format!("{file}:{e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects errors by byte offset while the file is checked, so that all of them are reported at
/// once rather than one per edit-and-retry cycle.
pub(super) struct Diagnostics<'a> {
    text: &'a str,
    errors: Vec<(usize, String)>,
}

impl<'a> Diagnostics<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            errors: Vec::new(),
        }
    }

    /// Records a problem with the value written at `span`.
    pub(super) fn at(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.at_offset(span.start, message);
    }

    pub(super) fn at_offset(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push((offset, message.into()));
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    /// The raw text of a span, to place an error inside a value.
    pub(super) fn source(&self, span: &Range<usize>) -> Option<&'a str> {
        self.text.get(span.clone())
    }

    /// `Ok(())` when nothing was found, else every problem sorted by position.
    pub(super) fn finish(self, file: &Path) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_error(file))
        }
    }

    /// Every problem recorded, sorted by position.
    pub(super) fn into_error(self, file: &Path) -> ConfigError {
        let mut errors = self.errors;
        // Stable: problems at the same place keep the order they were found in.
        errors.sort_by_key(|(offset, _)| *offset);
        let errors = errors
            .into_iter()
            .map(|(offset, message)| {
                let (line, col) = line_col(self.text, offset);
                let message = escape_controls(&message);
                LocatedError { line, col, message }
            })
            .collect();
        ConfigError::Invalid {
            file: file.to_owned(),
            errors,
        }
    }
}

/// `text` with control characters (a NUL, a newline, an ESC of a job file's value or name)
/// escaped as Rust writes them (`\0`, `\n`, `\u{1b}`): a message is one line, and a terminal
/// or log shows it as it is.
pub(crate) fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 1-based line and column (in characters) of a byte offset, clamped to the text.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn errors_display_one_per_line_in_file_order() {
        let text = "x\ny\n";
        let mut d = Diagnostics::new(text);
        d.at(&(2..3), "second");
        d.at(&(0..1), "first");
        let e = d.finish(Path::new("jobs.toml")).unwrap_err();
        assert_eq!(e.to_string(), "jobs.toml:1:1: first\njobs.toml:2:1: second");
        assert_eq!(e.errors()[1].line, 2);
    }
}
