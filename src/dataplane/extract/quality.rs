//! The extraction quality score in [0, 1].
//!
//! The score answers one question: *is this real article text?* It must put
//! JavaScript shells, error pages, consent walls and link farms low and
//! ordinary articles high, whatever the render mode that produced them, so it
//! is computed only from the extracted markdown, with five parts:
//!
//! - `length`: saturating word count (250 words count fully);
//! - `structure`: paragraphs of at least 20 words (3 count fully);
//! - `prose`: share of common function words, which real sentences have
//!   (about 40 % in English, 30–45 % in the other languages listed in
//!   [`FUNCTION_WORDS_BY_LANGUAGE`]) and menus, code and bundles lack; the
//!   best-matching language counts, so a German article is not read as a
//!   menu for lacking English words (stop-word density, as jusText and
//!   trafilatura judge paragraphs);
//! - `links`: one minus the share of text inside links;
//! - `clean`: one minus the penalty for error/placeholder phrases (enable
//!   JavaScript, 404, access denied, …) weighed against the text's length,
//!   times a repetition factor (share of distinct word trigrams: an echoed
//!   title or a menu printed twice repeats itself, prose does not).
//!
//! `score = clean * topic * (0.4 length + 0.6 gate * (0.35 structure + 0.4 prose + 0.25 links))`
//! where `gate = min(1, words / 100)`: structure, prose and link figures only
//! count in full once there is enough text for them to mean something.
//!
//! `topic` is used when the page's title is known ([`score_with_title`]):
//! an extraction that picked the wrong block (a teaser of another story, a
//! sidebar, a comment) rarely contains the words of the page's own title,
//! while an article almost always does. It is `0.8 + 0.2 * min(1, found /
//! 0.5)`, `found` being the share of the title's content words (of its
//! longest part between separators like ` | ` and ` - `, so the site name
//! does not count) that the text contains; 1 when the title has fewer than
//! two content words. The factor is mild on purpose: a pun or a question
//! for a headline shares few words with a good article, so missing title
//! words lower the score (and decide between two extractions) but do not
//! alone sink a good page.
//! The weights were set on the simulator's pages; the parts are reported so
//! an operator can see why a page scored as it did (`freshet extract --format json`).

use serde::Serialize;

/// The quality score and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Quality {
    /// The combined score in [0, 1].
    pub score: f64,
    /// Words in the main text.
    pub words: usize,
    /// Saturating word count part.
    pub length: f64,
    /// Paragraph structure part.
    pub structure: f64,
    /// Function-word share part.
    pub prose: f64,
    /// Link density part (1 = no links).
    pub links: f64,
    /// Error/placeholder phrase part (1 = none).
    pub clean: f64,
    /// Title agreement factor (1 = the title's words are in the text, or
    /// no usable title).
    pub topic: f64,
}

/// Common English function words; their share separates prose from lists,
/// menus and code. Sorted for binary search.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "because",
    "been", "but", "by", "can", "could", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "however", "i", "if", "in", "into", "is", "it", "its", "more", "most",
    "no", "not", "of", "on", "one", "only", "or", "other", "our", "out", "over", "she", "so",
    "some", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "up", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "will", "with", "would", "you", "your",
];

/// Frequent function words of other languages, each list sorted for
/// binary search (articles, pronouns, prepositions, conjunctions and
/// auxiliaries: the words every sentence has and no menu does).
const FUNCTION_WORDS_BY_LANGUAGE: &[&[&str]] = &[
    FUNCTION_WORDS,
    // German
    &[
        "als", "am", "an", "auch", "auf", "aus", "bei", "bis", "das", "dass", "dem", "den", "der",
        "des", "die", "durch", "ein", "eine", "einem", "einen", "einer", "es", "für", "hat", "ich",
        "im", "in", "ist", "mit", "nach", "nicht", "noch", "nur", "oder", "sich", "sie", "sind",
        "so", "um", "und", "von", "vor", "war", "wie", "wir", "wird", "zu", "zum", "zur",
    ],
    // French
    &[
        "au", "aux", "avec", "ce", "ces", "dans", "de", "des", "du", "elle", "en", "est", "et",
        "il", "ils", "la", "le", "les", "leur", "mais", "ne", "nous", "ou", "par", "pas", "pour",
        "qu", "que", "qui", "sa", "se", "son", "sont", "sur", "un", "une", "vous", "à",
    ],
    // Spanish
    &[
        "a", "al", "como", "con", "de", "del", "el", "en", "es", "esta", "este", "fue", "ha", "la",
        "las", "le", "lo", "los", "más", "no", "o", "para", "pero", "por", "que", "se", "ser",
        "su", "sus", "un", "una", "y",
    ],
    // Italian
    &[
        "a", "al", "alla", "anche", "che", "con", "da", "del", "della", "di", "e", "gli", "ha",
        "i", "il", "in", "la", "le", "lo", "ma", "nel", "non", "per", "più", "si", "sono", "su",
        "un", "una", "è",
    ],
    // Portuguese
    &[
        "a", "ao", "as", "com", "como", "da", "das", "de", "do", "dos", "e", "em", "mais", "mas",
        "na", "no", "não", "o", "os", "para", "pela", "pelo", "por", "que", "se", "seu", "sua",
        "um", "uma", "é",
    ],
    // Dutch
    &[
        "aan", "als", "bij", "dat", "de", "die", "dit", "een", "en", "er", "het", "hij", "in",
        "is", "je", "maar", "met", "niet", "of", "om", "op", "te", "van", "voor", "was", "wat",
        "ze", "zijn",
    ],
    // Polish
    &[
        "a", "do", "i", "jak", "jest", "już", "na", "nie", "o", "od", "po", "przez", "się", "tak",
        "to", "w", "z", "za", "że",
    ],
    // Swedish, Danish and Norwegian share most of theirs
    &[
        "af", "at", "av", "de", "den", "det", "du", "en", "er", "et", "for", "från", "för", "har",
        "i", "ikke", "inte", "jeg", "med", "och", "og", "om", "på", "som", "til", "till", "är",
    ],
    // Russian
    &[
        "в", "во", "да", "для", "и", "из", "к", "как", "на", "не", "но", "о", "он", "от", "по",
        "с", "что", "это",
    ],
];

/// Phrases that mark a page as an error, a wall or a placeholder.
const BAD_PHRASES: &[&str] = &[
    "enable javascript",
    "javascript is disabled",
    "javascript is required",
    "you need to enable",
    "requires javascript",
    "please enable",
    "page not found",
    "404 not found",
    "error 404",
    "not found",
    "access denied",
    "403 forbidden",
    "forbidden",
    "internal server error",
    "service unavailable",
    "checking your browser",
    "are you a robot",
    "verify you are human",
    "loading...",
    "sign in to continue",
    "subscribe to continue",
];

fn is_function_word(word: &str) -> bool {
    FUNCTION_WORDS_BY_LANGUAGE
        .iter()
        .any(|list| list.binary_search(&word).is_ok())
}

/// Title separators: the longest part between them is the headline, the
/// others are mostly the site's name or section.
const TITLE_SEPARATORS: &[&str] = &[" | ", " - ", " – ", " — ", " :: ", " · ", " / ", " » "];

/// Content words of a title's headline part (see [`TITLE_SEPARATORS`]):
/// lower-cased tokens of at least three characters that are not function
/// words, cut to their first five characters so that inflected forms
/// ("vehículo" / "vehículos") match.
fn title_stems(title: &str) -> Vec<String> {
    let mut parts = vec![title];
    for sep in TITLE_SEPARATORS {
        parts = parts.iter().flat_map(|p| p.split(sep)).collect();
    }
    // The longest part; on a tie the first (sites put the headline first
    // more often than last).
    let headline = parts
        .into_iter()
        .rev()
        .max_by_key(|p| p.chars().count())
        .unwrap_or_default();
    let mut stems: Vec<String> = tokens(headline)
        .filter(|t| t.chars().count() >= 3 && !is_function_word(t))
        .map(|t| stem(&t))
        .collect();
    stems.sort();
    stems.dedup();
    stems
}

fn stem(token: &str) -> String {
    token.chars().take(5).collect()
}

/// Lower-case word tokens (letters and digits) of `text`.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
}

/// Token-level F1 of `predicted` against `truth` (bags of words), the usual
/// measure of main-content extraction.
pub fn token_f1(predicted: &str, truth: &str) -> f64 {
    use std::collections::HashMap;
    let mut want: HashMap<String, i64> = HashMap::new();
    let mut truth_n = 0usize;
    for t in tokens(truth) {
        *want.entry(t).or_default() += 1;
        truth_n += 1;
    }
    let mut pred_n = 0usize;
    let mut hit = 0usize;
    for t in tokens(predicted) {
        pred_n += 1;
        if let Some(n) = want.get_mut(&t) {
            if *n > 0 {
                *n -= 1;
                hit += 1;
            }
        }
    }
    if truth_n == 0 && pred_n == 0 {
        return 1.0;
    }
    if hit == 0 {
        return 0.0;
    }
    let precision = hit as f64 / pred_n as f64;
    let recall = hit as f64 / truth_n as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Plain text of a markdown string plus the number of characters that were
/// link text: `[text](url)` keeps `text`, images and markup are dropped.
pub fn markdown_text(markdown: &str) -> (String, usize) {
    let mut out = String::with_capacity(markdown.len());
    let mut link_chars = 0usize;
    let bytes = markdown.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'!' && bytes.get(i + 1) == Some(&b'[') {
            // image: skip ![alt](src)
            if let Some((_, end)) = parse_link(markdown, i + 1) {
                i = end;
                continue;
            }
        }
        if c == b'[' {
            if let Some((text, end)) = parse_link(markdown, i) {
                link_chars += text.chars().count();
                out.push_str(text);
                i = end;
                continue;
            }
        }
        if matches!(c, b'*' | b'_' | b'`' | b'#' | b'>' | b'|') {
            out.push(' ');
            i += 1;
            continue;
        }
        let ch = markdown[i..]
            .chars()
            .next()
            .expect("i is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    (out, link_chars)
}

/// `[text](url)` starting at `start` (a `[`): the text and the index after `)`.
fn parse_link(s: &str, start: usize) -> Option<(&str, usize)> {
    let rest = &s[start + 1..];
    let close = rest.find(']')?;
    if close > 500 || rest[..close].contains('\n') {
        return None;
    }
    let after = &rest[close + 1..];
    if !after.starts_with('(') {
        return None;
    }
    let end = after.find(')')?;
    if end > 2_000 {
        return None;
    }
    Some((&rest[..close], start + 1 + close + 1 + end + 1))
}

/// Scores extracted markdown.
pub fn score_markdown(markdown: &str) -> Quality {
    let (text, link_chars) = markdown_text(markdown);
    score_text(&text, link_chars)
}

/// Scores extracted markdown of a page whose title is `title` (the
/// `topic` factor, see the module docs; an empty title leaves it at 1).
pub fn score_with_title(markdown: &str, title: &str) -> Quality {
    let (text, link_chars) = markdown_text(markdown);
    let mut q = score_text(&text, link_chars);
    let stems = title_stems(title);
    if stems.len() >= 2 {
        let in_text: std::collections::HashSet<String> = tokens(&text).map(|t| stem(&t)).collect();
        let found =
            stems.iter().filter(|s| in_text.contains(*s)).count() as f64 / stems.len() as f64;
        q.topic = 0.8 + 0.2 * (found / 0.5).min(1.0);
        q.score = (q.score * q.topic).clamp(0.0, 1.0);
    }
    q
}

/// Scores plain text of which `link_chars` characters were link text.
pub fn score_text(text: &str, link_chars: usize) -> Quality {
    let mut words = 0usize;
    let mut function = [0usize; FUNCTION_WORDS_BY_LANGUAGE.len()];
    let mut trigrams = std::collections::HashSet::new();
    let mut window: [u64; 3] = [0; 3];
    for token in tokens(text) {
        words += 1;
        for (n, list) in function.iter_mut().zip(FUNCTION_WORDS_BY_LANGUAGE) {
            if list.binary_search(&token.as_str()).is_ok() {
                *n += 1;
            }
        }
        window = [window[1], window[2], hash_token(&token)];
        if words >= 3 {
            trigrams.insert(window);
        }
    }
    let long_paragraphs = text
        .split("\n\n")
        .filter(|p| p.split_whitespace().count() >= 20)
        .count();
    let chars = text.chars().filter(|c| !c.is_whitespace()).count().max(1);

    let length = (words as f64 / 250.0).min(1.0);
    let structure = (long_paragraphs as f64 / 3.0).min(1.0);
    let function_share = if words == 0 {
        0.0
    } else {
        function.iter().copied().max().unwrap_or(0) as f64 / words as f64
    };
    let prose = ((function_share - 0.08) / 0.22).clamp(0.0, 1.0);
    let link_share = (link_chars as f64 / chars as f64).min(1.0);
    let links = (1.0 - 2.0 * link_share).clamp(0.0, 1.0);
    // Text that repeats itself (a title echoed three times, a menu printed
    // twice) has few distinct word trigrams; prose has almost no repeats.
    let novelty = if words < 3 {
        0.0
    } else {
        trigrams.len() as f64 / (words - 2) as f64
    };
    let repetition = ((novelty - 0.2) / 0.3).clamp(0.0, 1.0);

    let lower = text.to_lowercase();
    let hits = BAD_PHRASES.iter().filter(|p| lower.contains(*p)).count();
    // A phrase matters in a short text and barely in a long article that
    // happens to say "not found" once.
    let clean = if hits == 0 {
        1.0
    } else {
        let weight = 1.0 / (1.0 + (words as f64 / 150.0).powi(2));
        (1.0 - weight * (0.6 + 0.2 * hits as f64)).clamp(0.0, 1.0)
    } * repetition;
    // Structure, prose and links only count in full once there is enough
    // text for them to mean something.
    let gate = (words as f64 / 100.0).min(1.0);
    let score =
        clean * (0.4 * length + 0.6 * gate * (0.35 * structure + 0.4 * prose + 0.25 * links));
    Quality {
        score: score.clamp(0.0, 1.0),
        words,
        length,
        structure,
        prose,
        links,
        clean,
        topic: 1.0,
    }
}

fn hash_token(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Distinct, natural paragraphs for tests.
    pub(crate) fn prose(paragraphs: usize) -> String {
        const SENTENCES: &[&str] = &[
            "The committee said on Tuesday that the new rules would take effect in the spring.",
            "Most of the changes were meant to make the process easier for the people who use it every day.",
            "Critics argued that the timeline was too short and that small firms would struggle to adapt.",
            "A spokesperson for the ministry declined to comment on the details of the proposal.",
            "In the northern districts, where the river floods almost every year, residents were sceptical.",
            "Engineers have warned for a decade that the old levees were not built for storms of this size.",
            "The council plans to hold three public meetings before the final vote in June.",
            "Several of the largest employers in the region have already signed up for the pilot scheme.",
            "Farmers, by contrast, said they had not been consulted at any stage of the review.",
            "The report also found that costs had risen by almost a third since the project began.",
            "Officials hope the new system will cut waiting times in half by the end of next year.",
            "It is not yet clear how the changes will be paid for, or who will oversee them.",
        ];
        (0..paragraphs)
            .map(|p| {
                (0..4)
                    .map(|i| SENTENCES[(p * 4 + i) % SENTENCES.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + &format!(" This was the {p}th point raised in the debate.")
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    #[test]
    fn function_words_are_sorted() {
        for list in FUNCTION_WORDS_BY_LANGUAGE {
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(&sorted, list);
        }
    }

    #[test]
    fn prose_in_other_languages_is_prose() {
        let german = "Die Gemeinde hat am Dienstag beschlossen, dass die neuen Regeln im Frühjahr \
            in Kraft treten. Die meisten Änderungen sollen das Verfahren für die Menschen \
            einfacher machen, die es jeden Tag nutzen. Kritiker sagen, dass der Zeitplan zu \
            knapp ist und dass kleine Betriebe sich nur schwer anpassen können.";
        let q = score_markdown(german);
        assert!(q.prose > 0.8, "{q:?}");
        let menu = "Startseite Nachrichten Sport Wetter Kultur Reisen Impressum Kontakt \
            Datenschutz Anmelden Suche Archiv Podcasts Videos Bilder Termine";
        assert!(
            score_markdown(menu).prose < 0.2,
            "{:?}",
            score_markdown(menu)
        );
    }

    #[test]
    fn a_text_that_does_not_mention_its_title_scores_lower() {
        let text = prose(3);
        let on_topic = score_with_title(
            &text,
            "New rules for river floods take effect | Daily Example",
        );
        let off_topic = score_with_title(
            &text,
            "Vehicle blessing planned for Saturday | Daily Example",
        );
        let untitled = score_with_title(&text, "");
        assert_eq!(on_topic.topic, 1.0, "{on_topic:?}");
        assert_eq!(untitled.score, score_markdown(&text).score);
        assert!(off_topic.topic < 0.9, "{off_topic:?}");
        assert!(
            off_topic.score < on_topic.score * 0.9,
            "{off_topic:?} {on_topic:?}"
        );
        // Only the headline part counts: the site's name is not a topic word.
        assert_eq!(
            title_stems("Floods return | Daily Example"),
            vec!["flood", "retur"]
        );
    }

    #[test]
    fn f1_behaves() {
        assert_eq!(token_f1("the cat sat", "the cat sat"), 1.0);
        assert_eq!(token_f1("dog", "the cat sat"), 0.0);
        let f = token_f1("the cat sat on the mat", "the cat sat");
        assert!((f - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-9, "{f}");
    }

    #[test]
    fn articles_score_high_and_shells_low() {
        let article = prose(3);
        let q = score_markdown(&article);
        assert!(q.score > 0.8, "{q:?}");
        let shell = "You need to enable JavaScript to run this app.";
        assert!(
            score_markdown(shell).score < 0.15,
            "{:?}",
            score_markdown(shell)
        );
        let error = "# 404 Not Found\n\nThe page you requested could not be found. Go back to the homepage.";
        assert!(
            score_markdown(error).score < 0.2,
            "{:?}",
            score_markdown(error)
        );
        let menu = (0..60)
            .map(|i| format!("- [Section {i}](/s/{i})"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            score_markdown(&menu).score < 0.35,
            "{:?}",
            score_markdown(&menu)
        );
    }

    #[test]
    fn markdown_text_strips_links_and_images() {
        let (text, links) = markdown_text("See ![logo](a.png) the [docs](http://x/y) **now**.");
        assert!(
            text.contains("See") && text.contains("docs") && !text.contains("http"),
            "{text}"
        );
        assert_eq!(links, 4);
    }
}
