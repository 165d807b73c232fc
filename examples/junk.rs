use freshet::dataplane::extract::{content, quality};
use freshet::sim::Corpus;
fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let corpus = Corpus::new(seed);
    let mut junk: std::collections::BTreeMap<String, usize> = Default::default();
    for u in corpus.article_urls(80, 200) {
        let page = corpus.page(&url::Url::parse(&u).unwrap()).unwrap();
        let out = content::extract_single(&page.html, Some(&page.url), content::Method::Readability);
        let truth: std::collections::HashSet<String> = quality::tokens(&page.article_text).collect();
        for block in out.markdown.split("\n\n") {
            let toks: Vec<String> = quality::tokens(block).collect();
            if toks.is_empty() { continue; }
            let missing = toks.iter().filter(|t| !truth.contains(*t)).count();
            if missing * 2 > toks.len() {
                let key: String = block.chars().take(90).collect::<String>().replace('\n', " / ");
                *junk.entry(key).or_default() += toks.len();
            }
        }
    }
    let mut v: Vec<_> = junk.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
    for (k, n) in v.iter().take(45) { println!("{n:6} {k}"); }
}
