//! How files are read, as users describe them in a load: the vocabulary shared by the
//! load declarations that name a format and the warehouses that read it.

/// How to read delimited text, as users write it in a load (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// CSV: whether the first line names the columns.
    pub header: bool,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    /// Texts read as null.
    pub nulls: Vec<String>,
    /// Types given by the user, by column, instead of inferred ones.
    pub types: Vec<(String, String)>,
}

/// The file formats loads read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileFormat {
    #[default]
    Csv,
    JsonLines,
    Parquet,
}
