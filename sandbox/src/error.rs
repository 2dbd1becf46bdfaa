//! Error reporting shared by every layer: the one way an error and its causes become a
//! single line, for the init helper's failure message, logs and CLI output.

/// `error: cause: cause…`: the error's message followed by each source in the chain,
/// `: `-separated, skipping a source whose text the line already holds (errors that print
/// their source in their own message, as `#[error("…: {source}")]` does).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        /// Prints its source itself: the chain must not repeat it.
        #[error("read config: {0}")]
        Inline(#[source] std::io::Error),
        /// Leaves its source to the chain.
        #[error("start")]
        Separate(#[source] std::io::Error),
    }

    #[test]
    fn chain_names_every_cause_once() {
        let io = || std::io::Error::other("no such file");
        assert_eq!(chain(&Outer::Inline(io())), "read config: no such file");
        assert_eq!(chain(&Outer::Separate(io())), "start: no such file");
    }
}
