//! Error text for people.

/// An error and every error beneath it, joined by `: ` (an HTTP client's "error sending
/// request" alone says nothing; its sources say "connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
