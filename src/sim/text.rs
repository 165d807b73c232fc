//! Deterministic randomness and English-like prose for the simulated corpus.
//!
//! Everything here is a pure function of a 64-bit seed. We use our own
//! splitmix64 instead of `rand`'s generators so that the corpus stays
//! byte-for-byte identical across `rand` versions (benchmarks compare runs
//! made months apart).

/// splitmix64 step: the finaliser is a good 64-bit mixer on its own.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over bytes, then mixed; stable hash of strings for seeding.
pub fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// A small deterministic generator (splitmix64 stream).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix64(seed))
    }
    pub fn derive(seed: u64, salt: u64) -> Rng {
        Rng(mix64(seed ^ mix64(salt)))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn word(&mut self, items: &[&'static str]) -> &'static str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
    /// Standard normal via Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A topic: a noun phrase for titles plus vocabulary for sentences.
pub struct Topic {
    pub name: &'static str,
    pub nouns: &'static [&'static str],
}

pub const TOPICS: &[Topic] = &[
    Topic {
        name: "rust async runtimes",
        nouns: &[
            "the executor",
            "the scheduler",
            "async tasks",
            "the borrow checker",
            "work stealing",
            "the tokio runtime",
            "futures",
            "compile times",
        ],
    },
    Topic {
        name: "solar panel efficiency",
        nouns: &[
            "photovoltaic cells",
            "the inverter",
            "perovskite layers",
            "rooftop arrays",
            "grid operators",
            "battery storage",
            "panel degradation",
        ],
    },
    Topic {
        name: "central bank interest rates",
        nouns: &[
            "the central bank",
            "bond yields",
            "inflation expectations",
            "mortgage rates",
            "the policy committee",
            "core inflation",
            "household savings",
        ],
    },
    Topic {
        name: "vector databases",
        nouns: &[
            "the vector index",
            "embedding models",
            "approximate nearest neighbour search",
            "HNSW graphs",
            "retrieval pipelines",
            "query latency",
            "the ingestion path",
        ],
    },
    Topic {
        name: "electric vehicle batteries",
        nouns: &[
            "lithium iron phosphate cells",
            "charging stations",
            "battery packs",
            "range estimates",
            "cell chemistry",
            "the supply chain",
            "fast chargers",
        ],
    },
    Topic {
        name: "coral reef restoration",
        nouns: &[
            "coral fragments",
            "marine biologists",
            "reef surveys",
            "ocean temperatures",
            "bleaching events",
            "nursery frames",
            "local divers",
        ],
    },
    Topic {
        name: "remote work policies",
        nouns: &[
            "hybrid schedules",
            "office attendance",
            "team leads",
            "collaboration tools",
            "commuting costs",
            "employee surveys",
            "middle managers",
        ],
    },
    Topic {
        name: "kubernetes cost control",
        nouns: &[
            "the cluster autoscaler",
            "node pools",
            "resource requests",
            "spot instances",
            "the cloud bill",
            "idle workloads",
            "platform teams",
        ],
    },
    Topic {
        name: "urban cycling infrastructure",
        nouns: &[
            "protected bike lanes",
            "city planners",
            "cargo bikes",
            "traffic counts",
            "intersections",
            "commuters",
            "parking spaces",
        ],
    },
    Topic {
        name: "sourdough baking",
        nouns: &[
            "the starter",
            "hydration levels",
            "the bulk ferment",
            "whole wheat flour",
            "oven spring",
            "the crumb",
            "home bakers",
        ],
    },
    Topic {
        name: "quantum error correction",
        nouns: &[
            "logical qubits",
            "surface codes",
            "error rates",
            "the cryostat",
            "physical qubits",
            "decoding algorithms",
            "research groups",
        ],
    },
    Topic {
        name: "wildfire forecasting",
        nouns: &[
            "fuel moisture",
            "satellite imagery",
            "fire crews",
            "wind models",
            "evacuation orders",
            "dry lightning",
            "forecasting models",
        ],
    },
    Topic {
        name: "open source maintainership",
        nouns: &[
            "maintainers",
            "pull requests",
            "the issue tracker",
            "funding platforms",
            "security advisories",
            "release managers",
            "first-time contributors",
        ],
    },
    Topic {
        name: "supply chain logistics",
        nouns: &[
            "container ships",
            "freight rates",
            "warehouse robots",
            "port congestion",
            "inventory levels",
            "last-mile delivery",
            "customs checks",
        ],
    },
    Topic {
        name: "sleep research",
        nouns: &[
            "circadian rhythms",
            "deep sleep",
            "sleep trackers",
            "melatonin",
            "shift workers",
            "study participants",
            "screen time",
        ],
    },
    Topic {
        name: "football transfer market",
        nouns: &[
            "the transfer window",
            "club owners",
            "release clauses",
            "young strikers",
            "agents",
            "wage budgets",
            "the scouting network",
        ],
    },
    Topic {
        name: "large language model evaluation",
        nouns: &[
            "benchmark suites",
            "held-out test sets",
            "human raters",
            "reasoning tasks",
            "model checkpoints",
            "contamination checks",
            "leaderboards",
        ],
    },
    Topic {
        name: "alpine glacier retreat",
        nouns: &[
            "glaciologists",
            "meltwater",
            "the ice margin",
            "summer heatwaves",
            "mountain villages",
            "survey stakes",
            "snow cover",
        ],
    },
    Topic {
        name: "small business lending",
        nouns: &[
            "credit unions",
            "loan officers",
            "cash flow",
            "interest margins",
            "local bakeries",
            "fintech lenders",
            "credit scores",
        ],
    },
    Topic {
        name: "home heat pumps",
        nouns: &[
            "air-source heat pumps",
            "installers",
            "radiators",
            "insulation",
            "winter bills",
            "the refrigerant",
            "government grants",
        ],
    },
    Topic {
        name: "postgres performance tuning",
        nouns: &[
            "the query planner",
            "vacuum settings",
            "index bloat",
            "connection pools",
            "write-ahead logs",
            "slow queries",
            "shared buffers",
        ],
    },
    Topic {
        name: "museum digitization",
        nouns: &[
            "curators",
            "3D scans",
            "the archive",
            "metadata standards",
            "fragile manuscripts",
            "public collections",
            "volunteers",
        ],
    },
    Topic {
        name: "vertical farming",
        nouns: &[
            "LED grow lights",
            "hydroponic racks",
            "leafy greens",
            "energy costs",
            "crop yields",
            "growers",
            "climate controls",
        ],
    },
    Topic {
        name: "browser privacy features",
        nouns: &[
            "third-party cookies",
            "tracking scripts",
            "browser vendors",
            "fingerprinting",
            "ad networks",
            "privacy settings",
            "site owners",
        ],
    },
];

const ADJ: &[&str] = &[
    "quiet",
    "surprising",
    "steady",
    "uneven",
    "costly",
    "overlooked",
    "rapid",
    "gradual",
    "practical",
    "messy",
    "promising",
    "stubborn",
    "careful",
    "ambitious",
    "hidden",
];
const TITLE_PATTERNS: &[&str] = &[
    "Why {T} are changing faster than expected",
    "The {A} economics of {T}",
    "What we learned from a year of {T}",
    "{T}: a {A} shift nobody planned for",
    "Inside the {A} race to rethink {T}",
    "A field guide to {T}",
    "How {T} quietly became a priority",
    "The case for {A} progress in {T}",
    "Five lessons on {T} from the people doing the work",
    "Is the hype around {T} justified?",
];
const VERBS: &[&str] = &[
    "reshaped",
    "slowed",
    "accelerated",
    "complicated",
    "improved",
    "undermined",
    "simplified",
    "exposed",
    "changed",
    "stretched",
    "redefined",
    "strained",
];
const VERBS_PRESENT: &[&str] = &[
    "depends on",
    "competes with",
    "interacts with",
    "relies on",
    "pushes against",
    "benefits from",
    "struggles with",
    "feeds into",
];
const OPENERS: &[&str] = &[
    "In practice,",
    "For now,",
    "According to several engineers,",
    "Over the past year,",
    "At the same time,",
    "Still,",
    "By most measures,",
    "In the short term,",
    "Perhaps unsurprisingly,",
    "On closer inspection,",
    "Meanwhile,",
    "Crucially,",
    "As one analyst put it,",
];
const OBJECTS: &[&str] = &[
    "the way teams plan their budgets",
    "long-standing assumptions about cost",
    "the daily routine of most practitioners",
    "how quickly results can be measured",
    "the balance between speed and reliability",
    "what counts as a good outcome",
    "the relationship between suppliers and customers",
    "the pace of new investment",
    "the expectations of regulators",
    "the usual trade-offs",
];
const CLAUSES: &[&str] = &[
    "even though early results were mixed",
    "which few people predicted a decade ago",
    "while costs kept falling",
    "because the old approach no longer scaled",
    "despite a shortage of skilled staff",
    "as pressure from competitors grew",
    "although the data remain incomplete",
    "once the first pilots proved themselves",
    "in ways that are hard to reverse",
    "without much public debate",
];
const NUMBERS: &[&str] = &[
    "roughly a third",
    "nearly 40 percent",
    "about twice as much",
    "less than a tenth",
    "more than half",
    "around 12 percent",
    "three out of four respondents",
];
const ACCENTED: &[&str] = &[
    "a café owner in Zürich",
    "the naïve estimate",
    "a résumé of past attempts",
    "the Málaga pilot",
    "a São Paulo start-up",
    "the Köln working group",
    "an entrepreneur from Besançon",
];

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn title(rng: &mut Rng, topic: &Topic) -> String {
    let pat = rng.pick(TITLE_PATTERNS);
    let t = pat.replace("{T}", topic.name).replace("{A}", rng.word(ADJ));
    cap(&t)
}

/// One sentence about `topic`. `fancy` enables non-ASCII punctuation and
/// accented words (exercises charset handling).
pub fn sentence(rng: &mut Rng, topic: &Topic, fancy: bool) -> String {
    let n1 = rng.pick(topic.nouns);
    let n2 = rng.pick(topic.nouns);
    let s = match rng.range(0, 7) {
        0 => format!(
            "{} {} {} {}.",
            rng.pick(OPENERS),
            n1,
            rng.pick(VERBS),
            rng.pick(OBJECTS)
        ),
        1 => format!(
            "{} {} {}, {}.",
            cap(n1),
            rng.pick(VERBS_PRESENT),
            n2,
            rng.pick(CLAUSES)
        ),
        2 => format!(
            "{} of the teams we spoke to said {} had {} {}.",
            cap(rng.word(NUMBERS)),
            n1,
            rng.pick(VERBS),
            rng.pick(OBJECTS)
        ),
        3 => format!(
            "The {} part is that {} {} {}.",
            rng.pick(ADJ),
            n1,
            rng.pick(VERBS_PRESENT),
            n2
        ),
        4 => format!(
            "{} {} {} more than anyone expected, {}.",
            rng.pick(OPENERS),
            n1,
            rng.pick(VERBS),
            rng.pick(CLAUSES)
        ),
        5 => format!(
            "When {} {} {}, {} tends to follow.",
            n1,
            rng.pick(VERBS_PRESENT),
            n2,
            rng.pick(OBJECTS)
        ),
        6 => format!(
            "{} {} is now {} than it was two years ago, {}.",
            cap(rng.word(ADJ)),
            n1,
            if rng.chance(0.5) {
                "cheaper"
            } else {
                "harder to manage"
            },
            rng.pick(CLAUSES)
        ),
        _ => format!(
            "Nobody doubts that {} {} {}; the open question is how fast.",
            n1,
            rng.pick(VERBS),
            rng.pick(OBJECTS)
        ),
    };
    if fancy && rng.chance(0.25) {
        let acc = rng.pick(ACCENTED);
        let s2 = s.trim_end_matches('.');
        return match rng.range(0, 2) {
            0 => format!("{s2} – or so says {acc}."),
            1 => format!("“{s2},” noted {acc}."),
            _ => format!("{s2}, as {acc} discovered."),
        };
    }
    s
}

pub fn paragraph(rng: &mut Rng, topic: &Topic, fancy: bool) -> String {
    let n = rng.range(2, 6);
    (0..n)
        .map(|_| sentence(rng, topic, fancy))
        .collect::<Vec<_>>()
        .join(" ")
}

const SUBHEADS: &[&str] = &[
    "What changed",
    "The numbers behind it",
    "Why it matters",
    "A closer look",
    "What comes next",
    "The trade-offs",
    "Lessons from the field",
    "Where the money goes",
    "Open questions",
];

pub fn subheading(rng: &mut Rng) -> String {
    (*rng.pick(SUBHEADS)).to_string()
}

pub fn list_item(rng: &mut Rng, topic: &Topic) -> String {
    let n1 = rng.pick(topic.nouns);
    match rng.range(0, 2) {
        0 => format!(
            "{} {} {}",
            cap(n1),
            rng.pick(VERBS_PRESENT),
            rng.pick(topic.nouns)
        ),
        1 => format!("Check how {} {} {}", n1, rng.pick(VERBS), rng.pick(OBJECTS)),
        _ => format!("{} matters {}", cap(n1), rng.pick(CLAUSES)),
    }
}

const COMMENT_OPENERS: &[&str] = &[
    "Great write-up.",
    "I have to disagree here.",
    "This matches my experience.",
    "Interesting, but",
    "Long-time reader here.",
    "Not sure about the numbers.",
    "Thanks for covering this!",
    "My two cents:",
];
const COMMENT_BODIES: &[&str] = &[
    "We tried something similar at my last job and the results were far less impressive than the article suggests",
    "I think the author underestimates how much the old tooling still matters for small teams",
    "My brother works in this field and he says the real bottleneck is paperwork, not technology",
    "Would love to see a follow-up piece with actual numbers from a few more companies",
    "Every few years someone announces this is the breakthrough and then nothing really changes",
    "The section about costs was spot on, our budget doubled in eighteen months",
    "Honestly the comments here are more informative than most of the coverage elsewhere",
    "I read the original report and it is a lot more cautious than the headline makes it sound",
];

/// A reader comment: prose-like on purpose so extractors cannot use
/// "looks like prose" alone to find the article.
pub fn comment(rng: &mut Rng, topic: &Topic) -> String {
    let mut s = format!(
        "{} {}.",
        rng.pick(COMMENT_OPENERS),
        rng.pick(COMMENT_BODIES)
    );
    if rng.chance(0.6) {
        s.push(' ');
        s.push_str(&sentence(rng, topic, false));
    }
    s
}

pub const FIRST_NAMES: &[&str] = &[
    "Maria", "James", "Aiko", "Lars", "Priya", "Tomás", "Olivia", "Kwame", "Sofia", "Daniel",
    "Mei", "Jonas", "Fatima", "Lucas", "Hannah", "Omar",
];
pub const LAST_NAMES: &[&str] = &[
    "Keller",
    "Okafor",
    "Nakamura",
    "Lindqvist",
    "Sharma",
    "Rivera",
    "Brooks",
    "Mensah",
    "Rossi",
    "Weber",
    "Chen",
    "Novak",
    "Haddad",
    "Moreau",
    "Fischer",
    "Ali",
];

pub fn person(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES))
}

pub fn slugify(s: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out.chars()
        .take(60)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}
