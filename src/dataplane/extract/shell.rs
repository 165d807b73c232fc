//! Does fetched HTML look like a JavaScript shell, a page whose content only
//! its scripts produce? `auto` render mode fetches such pages again with a
//! renderer that runs scripts.
//!
//! A page is a shell when little text was extracted from it **and** it shows
//! at least one sign of a client-side app: a hydration root of a common
//! framework (`__next`, `__nuxt`, `root`, `app`, `svelte`, `___gatsby`,
//! `ng-version`, `data-reactroot`) left empty, a `<noscript>` asking for
//! JavaScript, many scripts, or a body with almost no text at all. A page
//! rendered on the server (say, Next.js with its `__next` root full of the
//! article) has plenty of text and is not a shell.

/// Below this many extracted words a page may be a shell.
pub const FEW_WORDS: usize = 150;
/// At least this many `<script` elements is a sign of an app.
pub const MANY_SCRIPTS: usize = 3;

/// Hydration roots: element ids that client-side frameworks render into.
const ROOT_IDS: &[&str] = &["__next", "__nuxt", "root", "app", "svelte", "___gatsby"];

/// Whether `html`, from which `words` words of main content were
/// extracted, looks like a JavaScript shell (see the module docs).
pub fn looks_like_js_shell(html: &str, words: usize) -> bool {
    if words >= FEW_WORDS {
        return false;
    }
    let lower = html.to_ascii_lowercase();
    let hydration_root = ROOT_IDS.iter().any(|id| {
        [
            format!("id=\"{id}\""),
            format!("id='{id}'"),
            format!("id={id}>"),
        ]
        .iter()
        .any(|needle| lower.contains(needle.as_str()))
    }) || lower.contains("data-reactroot")
        || lower.contains("ng-version=");
    let noscript_asks = lower.match_indices("<noscript").any(|(at, _)| {
        let rest = &lower[at..];
        let end = rest.find("</noscript").unwrap_or(rest.len().min(2000));
        rest[..end].contains("javascript")
    });
    let scripts = lower.matches("<script").count();
    hydration_root || noscript_asks || scripts >= MANY_SCRIPTS || body_words(&lower) < 20
}

/// Rough count of words outside tags, scripts and styles in the body.
fn body_words(lower: &str) -> usize {
    let body = lower.find("<body").map_or(lower, |at| &lower[at..]);
    let mut words = 0;
    let mut rest = body;
    let mut in_word = false;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            in_word = false;
            let skip_to = ["<script", "<style"]
                .iter()
                .find(|t| rest.starts_with(**t))
                .and_then(|t| rest.find(&format!("</{}", &t[1..])));
            // Past the closing tag of a script or style, else past this tag.
            let from = skip_to.unwrap_or(0);
            let end = rest[from..].find('>').map_or(rest.len(), |e| from + e + 1);
            rest = &rest[end.max(1).min(rest.len())..];
            continue;
        }
        if c.is_alphanumeric() {
            if !in_word {
                words += 1;
                in_word = true;
            }
        } else {
            in_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_app_root_is_a_shell_and_a_rendered_article_is_not() {
        let shell =
            r#"<html><body><div id="__next"></div><script src="/a.js"></script></body></html>"#;
        assert!(looks_like_js_shell(shell, 0));
        let noscript = "<html><body><noscript>Please enable JavaScript to view this site.</noscript><div id=main></div></body></html>";
        assert!(looks_like_js_shell(noscript, 3));
        let article = format!(
            r#"<html><body><div id="__next"><article>{}</article></div></body></html>"#,
            "<p>Words of a real article that was rendered on the server.</p>".repeat(40)
        );
        assert!(!looks_like_js_shell(&article, 400));
        // A short page with text and no app signs is short, not a shell.
        let short = format!(
            "<html><body><p>{}</p></body></html>",
            "A short notice about the office moving to a new street. ".repeat(4)
        );
        assert!(!looks_like_js_shell(&short, 40));
    }

    #[test]
    fn body_words_skip_scripts_and_styles() {
        let html =
            "<body><style>a b c d</style><script>var x = 1 2 3</script><p>one two</p></body>";
        assert_eq!(body_words(html), 2);
    }
}
