//! Task streams for the benches: generated documents (no network) and the
//! scenario workload (URLs of fresh simulated articles, keywords, documents
//! mixed by weight), both deterministic functions of a seed.
//!
//! URL tasks walk the corpus's distinct articles in order, so every URL
//! task of a run names a page the index has not seen yet: a repeated URL
//! would be skipped as unchanged and measure the dedupe, not the knobs.

use crate::dataplane::task::Task;
use crate::sim::text::{Rng, TOPICS};
use crate::sim::{Corpus, Workload};

/// A generated document of about `words` words; `i` makes it unique.
pub fn document(i: u64, words: usize) -> Task {
    const VOCAB: &[&str] = &[
        "river", "council", "budget", "school", "energy", "market", "policy", "station", "harbour",
        "museum", "engineer", "garden", "library", "network", "festival", "hospital", "bridge",
        "factory", "village", "forest",
    ];
    let mut text = String::with_capacity(words * 8);
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for w in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(VOCAB[(x % VOCAB.len() as u64) as usize]);
        text.push_str(if w % 12 == 11 { ". The " } else { " " });
    }
    text.push_str(&format!("Document {i} ends here."));
    Task::Document {
        id: format!("bench-{i}"),
        text,
        title: format!("Bench document {i}"),
        url: String::new(),
        ts_ms: None,
        metadata: Default::default(),
    }
}

/// The task stream of a scenario workload.
#[derive(Debug, Clone)]
pub struct TaskGen {
    urls: Vec<String>,
    next_url: usize,
    next_doc: u64,
    rng: Rng,
    wrapped: bool,
}

impl TaskGen {
    /// A stream over `corpus` served on `port`, drawn with `seed`.
    pub fn new(corpus: &Corpus, port: u16, seed: u64) -> TaskGen {
        TaskGen {
            // More than any corpus holds: the list stops at its last article.
            urls: corpus.article_urls(port, corpus.domains().len() * 1000),
            next_url: 0,
            next_doc: 0,
            rng: Rng::derive(seed, 0x7A5C),
            wrapped: false,
        }
    }

    /// Distinct article URLs the stream can offer before it repeats.
    pub fn distinct_urls(&self) -> usize {
        self.urls.len()
    }

    /// Whether the URL list ran out and started over (later URL tasks
    /// repeat pages, which index nothing new).
    pub fn wrapped(&self) -> bool {
        self.wrapped
    }

    /// The next task under workload `w`.
    pub fn next_task(&mut self, w: &Workload) -> Task {
        let [url, keyword, _] = w.mix.shares();
        let u = self.rng.f64();
        if u < url && !self.urls.is_empty() {
            let task = Task::Url {
                url: self.urls[self.next_url].clone(),
                ts_ms: None,
            };
            self.next_url += 1;
            if self.next_url == self.urls.len() {
                self.next_url = 0;
                self.wrapped = true;
            }
            task
        } else if u < url + keyword {
            let topic = self.rng.pick(TOPICS);
            let noun = self.rng.word(topic.nouns);
            Task::Keyword {
                query: format!("{} {}", topic.name, noun.trim_start_matches("the ")),
                ts_ms: None,
            }
        } else {
            let task = document(self.next_doc, w.document_words);
            self.next_doc += 1;
            task
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::TaskMix;

    #[test]
    fn the_mix_is_followed_and_urls_are_fresh() {
        let corpus = Corpus::new(3);
        let mut g = TaskGen::new(&corpus, 80, 9);
        let w = Workload {
            rate: 10.0,
            mix: TaskMix {
                url: 6.0,
                keyword: 2.0,
                document: 2.0,
            },
            document_words: 50,
        };
        let mut seen = std::collections::HashSet::new();
        let (mut urls, mut keywords, mut docs) = (0, 0, 0);
        for _ in 0..2000 {
            match g.next_task(&w) {
                Task::Url { url, .. } => {
                    assert!(seen.insert(url), "a URL repeated");
                    urls += 1;
                }
                Task::Keyword { query, .. } => {
                    assert!(!query.trim().is_empty());
                    keywords += 1;
                }
                Task::Document { .. } => docs += 1,
                Task::Delete { .. } => unreachable!(),
            }
        }
        assert!((1100..1300).contains(&urls), "{urls}");
        assert!((330..470).contains(&keywords), "{keywords}");
        assert!((330..470).contains(&docs), "{docs}");
        assert!(!g.wrapped());
        // Same seed, same stream.
        let mut a = TaskGen::new(&corpus, 80, 9);
        let mut b = TaskGen::new(&corpus, 80, 9);
        for _ in 0..50 {
            assert_eq!(a.next_task(&w), b.next_task(&w));
        }
    }
}
