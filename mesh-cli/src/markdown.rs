//! The fenced code blocks of a Markdown text, as the README checks read them: the unit tests of
//! the examples' order (`example_readmes`) and the test that runs the READMEs literally.

/// A fenced block: its info string (`sh`, `text`, empty) and its lines, without the fences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedBlock {
    pub lang: String,
    pub text: String,
}

impl FencedBlock {
    /// Whether it is shell (`sh`, `bash`, `shell`).
    pub fn is_shell(&self) -> bool {
        matches!(self.lang.as_str(), "sh" | "bash" | "shell")
    }
}

/// The fenced blocks of `markdown`, in order. Fences may be indented (inside a list); an
/// unclosed block at the end is dropped.
pub fn fenced_blocks(markdown: &str) -> Vec<FencedBlock> {
    let mut out = Vec::new();
    let mut current: Option<FencedBlock> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(lang)) => {
                current = Some(FencedBlock {
                    lang: lang.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(current.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_with_their_language() {
        let md = "text\n```sh\nmeshctl up\n```\n\n  ```text\n  VERSION\n  ```\n```\nplain\n```\n```sh\nunclosed\n";
        let b = fenced_blocks(md);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0].lang.as_str(), b[0].text.as_str()),
            ("sh", "meshctl up\n")
        );
        assert!(b[0].is_shell());
        assert_eq!(
            (b[1].lang.as_str(), b[1].text.as_str()),
            ("text", "  VERSION\n")
        );
        assert_eq!((b[2].lang.as_str(), b[2].text.as_str()), ("", "plain\n"));
        assert!(!b[2].is_shell());
    }
}
