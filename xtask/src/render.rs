//! Text shared by the reports of the bench and the soak: markdown tables and SVG-safe text.

use std::fmt::Write as _;

/// A markdown table, columns padded to their widest cell; the first row is the header.
pub fn markdown(grid: &[Vec<String>]) -> String {
    let cols = grid[0].len();
    let width: Vec<usize> = (0..cols)
        .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in grid.iter().enumerate() {
        out.push('|');
        for (c, text) in row.iter().enumerate() {
            let pad = width[c] - text.chars().count();
            let _ = write!(out, " {text}{} |", " ".repeat(pad));
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for w in &width {
                let _ = write!(out, "{}|", "-".repeat(w + 2));
            }
            out.push('\n');
        }
    }
    out
}

/// Text made safe inside SVG (XML) elements and attributes.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_pads_columns_and_rules_the_header() {
        let grid = vec![
            vec!["name".to_string(), "n".to_string()],
            vec!["a".to_string(), "1234".to_string()],
        ];
        assert_eq!(
            markdown(&grid),
            "| name | n    |\n|------|------|\n| a    | 1234 |\n"
        );
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(xml_escape(r#"a<b>&"c""#), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
