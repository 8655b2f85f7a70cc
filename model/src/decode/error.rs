//! Why a record could not be decoded: the `reason` column of `dead_letters`.

/// A record that failed to parse or validate. The message names the field and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not UTF-8.
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    /// JSON syntax error.
    #[error("malformed JSON at byte {at}: {what}")]
    Syntax {
        /// Byte offset in the line.
        at: usize,
        /// What was expected or found.
        what: &'static str,
    },
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A required string field is empty.
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    /// A label with an empty key.
    #[error("a label has an empty key")]
    EmptyLabelKey,
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType {
        /// The field.
        field: String,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: &'static str,
    },
    /// A time field that is neither integer milliseconds nor RFC 3339.
    #[error("field `{field}` is not a time: `{text}` (expected integer milliseconds since the Unix epoch or RFC 3339)")]
    BadTime {
        /// The field.
        field: &'static str,
        /// The text found (clipped).
        text: String,
    },
    /// A time outside 1970-01-01 .. 9999-12-31.
    #[error("field `{field}` is out of range: {ts} ms is not between 1970-01-01 and 9999-12-31")]
    TimeRange {
        /// The field.
        field: &'static str,
        /// The value.
        ts: i64,
    },
    /// A number field that does not parse.
    #[error("field `{field}` is not a number: `{text}`")]
    NotANumber {
        /// The field.
        field: &'static str,
        /// The text found (clipped).
        text: String,
    },
    /// NaN or an infinity.
    #[error("field `{0}` is not finite")]
    NotFinite(&'static str),
    /// A nested object or array where only flat values are allowed.
    #[error("field `{field}` is {got}: only `labels` and `annotations` may be objects")]
    Nested {
        /// The field.
        field: String,
        /// "an object" or "an array".
        got: &'static str,
    },
    /// A Kafka message key that is not UTF-8 text, under `key_label`.
    #[error("the message key is not UTF-8 text (invalid at byte {0}); `key_label` makes it a label")]
    KeyNotUtf8(usize),
    /// A field or label given twice.
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    /// More labels than [`super::MAX_LABELS`].
    #[error("too many labels: {0} (at most {max})", max = super::MAX_LABELS)]
    TooManyLabels(usize),
    /// A line longer than [`super::MAX_LINE_BYTES`].
    #[error("line of {0} bytes is longer than the limit of {max} bytes", max = super::MAX_LINE_BYTES)]
    TooLong(usize),
    /// A CSV line with the wrong number of fields.
    #[error("CSV line has {got} fields, the header has {want}")]
    CsvWidth {
        /// Fields found.
        got: usize,
        /// Fields in the header.
        want: usize,
    },
    /// A CSV quoted field that does not close on its line.
    #[error("CSV quoted field is not closed on its line (records must not span lines)")]
    CsvQuote,
    /// A CSV header without a required column, or otherwise unusable.
    #[error("invalid CSV header: {0}")]
    CsvHeader(String),
    /// A line of a file whose header was rejected.
    #[error("the file's CSV header is invalid (see its line 1): {0}")]
    BadFileHeader(String),
    /// A record the source could not read as a whole (for example a corrupt Parquet file).
    #[error("{0}")]
    Unreadable(String),
}
