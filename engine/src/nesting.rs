//! A cheap nesting check before a YAML or JSON document is parsed.
//!
//! YAML parsers spend time that grows with the square of the nesting depth
//! (`kiln validate` needed 1.2 s for a config nested 16,000 levels deep and
//! over 20 s for 100,000), so a small document could hold a server worker
//! for minutes. One linear pass over the text counts flow brackets (`[`,
//! `{`, outside quotes and comments) and the stack of block indentations,
//! and refuses a document deeper than the limit before any parser sees it.

use crate::error::{KilnError, Result};

/// Deeper than any real pipeline config, rule file or job body.
pub const MAX_DEPTH: usize = 64;

/// Fails when `text` nests deeper than `max_depth` levels, naming the line.
pub fn check_depth(text: &str, file: &str, max_depth: usize) -> Result<()> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start_matches([' ', '\t']);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        // Block structure: each deeper indentation (or a `- ` item marker)
        // opens a level, a shallower one closes levels.
        if flow == 0 {
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let mut depth = indents.len() + flow;
        let mut items = content;
        while let Some(rest) = items.strip_prefix("- ") {
            depth += 1;
            items = rest.trim_start();
        }
        let mut quote: Option<char> = None;
        for c in items.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    depth = depth.max(indents.len() + flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            if depth > max_depth {
                break;
            }
        }
        if depth > max_depth {
            return Err(KilnError::config_fix(
                format!(
                    "{file}:{}: the document nests more than {max_depth} levels deep",
                    number + 1
                ),
                "flatten the structure; no kiln document needs this depth",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        let yaml = "name: demo\ntasks:\n  - name: a\n    params: {x: [1, 2, {y: 3}]}\n    note: \"[[[[\"\n";
        check_depth(yaml, "demo.yaml", 8).expect("shallow");
        check_depth(r#"{"a": [1, {"b": [2]}]}"#, "body", 8).expect("shallow json");
    }

    #[test]
    fn deep_flow_and_block_nesting_are_refused_with_the_line() {
        let flow = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = check_depth(&flow, "deep.yaml", MAX_DEPTH).expect_err("deep flow");
        assert!(err.to_string().contains("deep.yaml:1"), "{err}");
        assert!(started.elapsed().as_secs() < 5);
        let block: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let err = check_depth(&block, "block.yaml", MAX_DEPTH).expect_err("deep block");
        assert!(err.to_string().contains("block.yaml:65"), "{err}");
        let items = format!("{}x\n", "- ".repeat(100));
        check_depth(&items, "items.yaml", MAX_DEPTH).expect_err("deep sequence items");
    }
}
