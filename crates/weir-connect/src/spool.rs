//! Rows Weir extracts itself (from MySQL, from HTTP APIs) are spooled to a temporary CSV
//! file in the form the destinations' bulk paths read (`Connection::copy_in_csv`): memory
//! stays flat whatever the size of the source, and the destination sees one bulk load.
//!
//! NULL is an empty unquoted field and every value is quoted, so an empty string stays an
//! empty string (`""`), as PostgreSQL's `COPY ... csv` and DuckDB's reader (with
//! `allow_quoted_nulls false`) both read it.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};

/// A CSV file being written, one row at a time.
pub struct Spool {
    out: BufWriter<File>,
    /// Rows written (the header excluded).
    pub rows: u64,
    /// Bytes written, for progress.
    pub bytes: u64,
}

impl Spool {
    /// Starts a spool with its header row.
    pub fn new(columns: &[String]) -> io::Result<Spool> {
        let mut spool = Spool { out: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?), rows: 0, bytes: 0 };
        spool.write_fields(columns.iter().map(|c| Some(c.as_bytes())))?;
        spool.rows = 0;
        Ok(spool)
    }

    /// Appends one row; `None` is NULL.
    pub fn row<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a [u8]>>) -> io::Result<()> {
        self.write_fields(fields)
    }

    /// The finished file, rewound for reading.
    pub fn finish(self) -> io::Result<File> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(file)
    }

    fn write_fields<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a [u8]>>) -> io::Result<()> {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
                self.bytes += 1;
            }
            if let Some(value) = field {
                self.out.write_all(b"\"")?;
                let mut start = 0;
                for (j, b) in value.iter().enumerate() {
                    if *b == b'"' {
                        self.out.write_all(&value[start..=j])?;
                        self.out.write_all(b"\"")?;
                        start = j + 1;
                        self.bytes += 1;
                    }
                }
                self.out.write_all(&value[start..])?;
                self.out.write_all(b"\"")?;
                self.bytes += value.len() as u64 + 2;
            }
        }
        self.out.write_all(b"\n")?;
        self.bytes += 1;
        self.rows += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn quotes_values_and_leaves_nulls_empty() {
        let mut s = Spool::new(&["a".into(), "b".into(), "c".into()]).unwrap();
        s.row([Some(&b"x\"y"[..]), None, Some(&b""[..])]).unwrap();
        s.row([Some(&b"line\nbreak, comma"[..]), Some(&b"1"[..]), None]).unwrap();
        assert_eq!(s.rows, 2);
        let mut text = String::new();
        s.finish().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "\"a\",\"b\",\"c\"\n\"x\"\"y\",,\"\"\n\"line\nbreak, comma\",\"1\",\n");
    }
}
