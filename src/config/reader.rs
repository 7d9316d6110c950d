//! A walker over a parsed TOML document that keeps source locations, so that
//! every problem in a config file is reported at once with `file:line:col`.
//! Each `take_*` removes the key it reads; `finish` reports what is left as
//! unknown keys.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// Collects errors for one file.
pub struct Reader<'i> {
    file: String,
    text: &'i str,
    pub errors: Vec<ConfigError>,
}

/// One table's remaining entries.
pub struct Table<'i> {
    path: String,
    pub span: Range<usize>,
    entries: Vec<(Spanned<String>, Spanned<DeValue<'i>>)>,
    /// Every key asked for, written or not: what an unknown key may have meant.
    known: Vec<String>,
}

/// A value with the place it came from.
pub type Located<T> = Spanned<T>;

impl<'i> Reader<'i> {
    /// Parses `text`; a syntax error becomes the only error and no table is returned.
    pub fn parse(file: &str, text: &'i str) -> (Self, Option<Table<'i>>) {
        let mut reader = Reader {
            file: file.to_string(),
            text,
            errors: Vec::new(),
        };
        match DeTable::parse(text) {
            Ok(root) => {
                let span = root.span();
                let table = Table::new(String::new(), span, root.into_inner());
                (reader, Some(table))
            }
            Err(err) => {
                let span = err.span().unwrap_or(0..0);
                reader.error(span, err.message().trim().to_string());
                (reader, None)
            }
        }
    }

    /// The line and column (from 1) where `span` starts.
    pub fn line_column(&self, span: &Range<usize>) -> (usize, usize) {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.line_column(&span);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Takes a sub-table; absent means empty.
    pub fn section(&mut self, parent: &mut Table<'i>, name: &str) -> Table<'i> {
        let path = parent.key_path(name);
        match parent.take(name) {
            None => Table::new(path, parent.span.clone(), Default::default()),
            Some(value) => {
                let span = value.span();
                match value.into_inner() {
                    DeValue::Table(t) => Table::new(path, span, t),
                    _ => {
                        self.error(span.clone(), format!("{path} must be a table"));
                        Table::new(path, span, Default::default())
                    }
                }
            }
        }
    }

    pub fn string(&mut self, table: &mut Table<'i>, key: &str) -> Option<Located<String>> {
        let value = table.take(key)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::String(s) => Some(Spanned::new(span, s.into_owned())),
            _ => {
                self.error(span, format!("{} must be a string", table.key_path(key)));
                None
            }
        }
    }

    pub fn strings(&mut self, table: &mut Table<'i>, key: &str) -> Option<Vec<Located<String>>> {
        let value = table.take(key)?;
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.error(
                span,
                format!("{} must be a list of strings", table.key_path(key)),
            );
            return None;
        };
        Some(self.string_items(table, key, items))
    }

    /// A string or a list of strings, as a list.
    pub fn one_or_more(
        &mut self,
        table: &mut Table<'i>,
        key: &str,
    ) -> Option<Vec<Located<String>>> {
        let value = table.take(key)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::String(s) => Some(vec![Spanned::new(span, s.into_owned())]),
            DeValue::Array(items) => Some(self.string_items(table, key, items)),
            _ => {
                let msg = format!(
                    "{} must be a string or a list of strings",
                    table.key_path(key)
                );
                self.error(span, msg);
                None
            }
        }
    }

    fn string_items(
        &mut self,
        table: &Table<'i>,
        key: &str,
        items: toml::de::DeArray<'i>,
    ) -> Vec<Located<String>> {
        let mut out = Vec::new();
        for item in items {
            let span = item.span();
            match item.into_inner() {
                DeValue::String(s) => out.push(Spanned::new(span, s.into_owned())),
                _ => self.error(
                    span,
                    format!("{} must hold strings only", table.key_path(key)),
                ),
            }
        }
        out
    }

    pub fn integer(&mut self, table: &mut Table<'i>, key: &str) -> Option<Located<i64>> {
        let value = table.take(key)?;
        let span = value.span();
        let parsed = match value.into_inner() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                span.clone(),
                format!("{} must be an integer", table.key_path(key)),
            );
        }
        parsed.map(|n| Spanned::new(span, n))
    }

    pub fn integers(&mut self, table: &mut Table<'i>, key: &str) -> Option<Vec<Located<i64>>> {
        let value = table.take(key)?;
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.error(
                span,
                format!("{} must be a list of integers", table.key_path(key)),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            let span = item.span();
            match item.into_inner() {
                DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) => out.push(Spanned::new(span, n)),
                    Err(_) => self.error(span, "integer out of range"),
                },
                _ => self.error(
                    span,
                    format!("{} must hold integers only", table.key_path(key)),
                ),
            }
        }
        Some(out)
    }

    pub fn boolean(&mut self, table: &mut Table<'i>, key: &str) -> Option<Located<bool>> {
        let value = table.take(key)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::Boolean(b) => Some(Spanned::new(span, b)),
            _ => {
                self.error(
                    span,
                    format!("{} must be true or false", table.key_path(key)),
                );
                None
            }
        }
    }

    /// Reports every key nobody took.
    pub fn finish(&mut self, table: Table<'i>) {
        for (key, _) in &table.entries {
            let span = key.span();
            let path = table.key_path(key.get_ref());
            let hint = closest(key.get_ref(), &table.known)
                .map(|known| format!(" (did you mean {}?)", table.key_path(known)))
                .unwrap_or_default();
            self.error(span, format!("unknown key {path}{hint}"));
        }
    }
}

impl<'i> Table<'i> {
    fn new(path: String, span: Range<usize>, table: DeTable<'i>) -> Self {
        let entries = table
            .into_iter()
            .map(|(k, v)| {
                let span = k.span();
                (Spanned::new(span, k.into_inner().into_owned()), v)
            })
            .collect();
        Table {
            path,
            span,
            entries,
            known: Vec::new(),
        }
    }

    /// Whether `key` is written in this table.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.get_ref() == key)
    }

    /// Where `key`'s value is written, or the table itself when it is absent.
    pub fn place_of(&self, key: &str) -> Range<usize> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map_or_else(|| self.span.clone(), |(_, v)| v.span())
    }

    /// Where `section.key`'s value is written, when it is.
    pub fn span_of(&self, dotted: &str) -> Option<Range<usize>> {
        let (section, key) = dotted.split_once('.')?;
        let (_, value) = self.entries.iter().find(|(k, _)| k.get_ref() == section)?;
        let DeValue::Table(table) = value.get_ref() else {
            return None;
        };
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.span())
    }

    fn take(&mut self, key: &str) -> Option<Spanned<DeValue<'i>>> {
        self.known.push(key.to_string());
        let index = self.entries.iter().position(|(k, _)| k.get_ref() == key)?;
        Some(self.entries.swap_remove(index).1)
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// The known key `key` most likely misspells, if one is close enough.
fn closest<'k>(key: &str, known: &'k [String]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k.as_str()))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
