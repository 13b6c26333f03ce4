//! Errors crossing layers: the one-line report of an error, and the conversion of a task's
//! errors into the trainer's.

/// The error the trainer gets for a failure inside a task's `TrainTask` method: the whole
/// context chain of `e` in one message.
pub fn invalid(e: anyhow::Error) -> rnn_train::Error {
    rnn_train::Error::Invalid(format!("{e:#}"))
}

/// The one-line message the binary prints after `error: ` for `e`: the whole context chain
/// joined by `: ` (outermost first). For a usage error from the argument parser (which the
/// binary prints in full, with usage), its first line without clap's `error: ` prefix.
pub fn error_line(e: &anyhow::Error) -> String {
    if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
        let text = clap_err.to_string();
        let first = text.lines().next().unwrap_or_default();
        return first.strip_prefix("error: ").unwrap_or(first).to_string();
    }
    // `{e:#}` would print a cause again when the message above it already ends with it (errors
    // such as `{path}: {source}` that also expose `source` as their cause).
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}
