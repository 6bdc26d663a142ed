//! The README's first Rust block is `examples/quickstart.rs`, verbatim: CI
//! runs the example, so the code a reader pastes is code that ran.

const README: &str = include_str!("../README.md");
const QUICKSTART: &str = include_str!("../examples/quickstart.rs");

/// The lines of the first fenced block whose info string starts with
/// `rust`, each ended by a newline, as they are in a file.
fn first_rust_block(markdown: &str) -> Option<String> {
    let mut lines = markdown.lines();
    lines.by_ref().find(|line| line.starts_with("```rust"))?;
    let block = lines.take_while(|line| *line != "```");
    Some(block.map(|line| format!("{line}\n")).collect())
}

#[test]
fn the_readme_shows_the_quickstart_verbatim() {
    assert_eq!(first_rust_block(README).as_deref(), Some(QUICKSTART));
}

#[test]
fn the_first_rust_block_is_found_and_ends_at_its_fence() {
    let markdown =
        "text\n```toml\na = 1\n```\n```rust,no_run\nfn main() {}\n```\n```rust\nlater\n```\n";
    assert_eq!(
        first_rust_block(markdown).as_deref(),
        Some("fn main() {}\n")
    );
    assert_eq!(first_rust_block("no code here"), None);
}
