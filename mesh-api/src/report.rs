//! One line for an error and its causes, for the binaries' last word.
//!
//! Several of the workspace's errors say their cause in their own message
//! (so that a log line or an `x-mesh-reason` read alone is complete) and
//! also return it as their `source()`. Printing the whole chain then
//! repeats it (`reading x: No such file: No such file`); this leaves out a
//! cause that the text before it already ends with.

use std::error::Error;

/// `error: cause: cause ...`, each cause once.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("No such file or directory (os error 2)")]
        Missing,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("/etc/tokens: {source}")]
        Says {
            #[source]
            source: Inner,
        },
        #[error("reading tokens")]
        Quiet {
            #[source]
            source: Inner,
        },
    }

    #[derive(Debug, thiserror::Error)]
    #[error("--ca-tokens")]
    struct Flag(#[source] Outer);

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let e = Flag(Outer::Says {
            source: Inner::Missing,
        });
        assert_eq!(
            one_line(&e),
            "--ca-tokens: /etc/tokens: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_cause_not_yet_said_is_added() {
        let e = Flag(Outer::Quiet {
            source: Inner::Missing,
        });
        assert_eq!(
            one_line(&e),
            "--ca-tokens: reading tokens: No such file or directory (os error 2)"
        );
    }
}
