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

// ---------------------------------------------------------------------------
// Vocabulary. Lists are long on purpose: a [`Writer`] draws from them without
// replacement within one article, so phrases rarely repeat inside a page and
// the distinct-trigram share stays close to that of real prose (> 0.85).
// Every character must be encodable in windows-1252 (some domains serve it).
// ---------------------------------------------------------------------------

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
    "awkward",
    "modest",
    "fragile",
    "remarkable",
    "slow",
    "painful",
    "curious",
    "lopsided",
    "tentative",
    "patchy",
    "sudden",
    "durable",
    "contested",
    "expensive",
    "underrated",
    "unglamorous",
    "incremental",
    "sweeping",
    "belated",
    "bumpy",
    "lasting",
    "noisy",
    "delicate",
    "bold",
    "cautious",
    "brittle",
    "sobering",
    "unexpected",
    "familiar",
    "strange",
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
    "The {A} politics of {T}",
    "{T} after the boom: what is left",
    "Notes from the front line of {T}",
    "A {A} year for {T}, in charts and interviews",
    "Who really pays for {T}?",
    "The people trying to fix {T}",
];
/// Past tense of regular verbs, so they also work as participles.
const VERB_PAST: &[&str] = &[
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
    "unsettled",
    "transformed",
    "delayed",
    "revived",
    "disrupted",
    "narrowed",
    "widened",
    "overturned",
    "tested",
    "reinforced",
    "eroded",
    "distorted",
    "clarified",
    "inflated",
    "squeezed",
    "upended",
    "loosened",
    "tightened",
    "streamlined",
    "fragmented",
    "reopened",
    "outpaced",
    "shifted",
    "blurred",
    "rescued",
    "sidelined",
    "amplified",
    "weakened",
    "dominated",
    "reversed",
    "documented",
    "challenged",
    "absorbed",
    "boosted",
    "hampered",
    "rewired",
    "dented",
    "stalled",
    "energised",
    "reframed",
    "unlocked",
    "muddied",
    "crowded out",
    "paid for",
    "caught up with",
    "leaned on",
    "wrestled with",
    "moved past",
];
/// Base forms, for use after modals ("could", "will") and "to".
const VERB_BASE: &[&str] = &[
    "reshape",
    "slow",
    "speed up",
    "complicate",
    "improve",
    "undermine",
    "simplify",
    "expose",
    "change",
    "stretch",
    "redefine",
    "strain",
    "transform",
    "delay",
    "revive",
    "disrupt",
    "narrow",
    "widen",
    "overturn",
    "test",
    "reinforce",
    "erode",
    "distort",
    "clarify",
    "squeeze",
    "upend",
    "loosen",
    "tighten",
    "streamline",
    "reopen",
    "outpace",
    "shift",
    "blur",
    "rescue",
    "sideline",
    "amplify",
    "weaken",
    "reverse",
    "challenge",
    "absorb",
    "boost",
    "hamper",
    "rewire",
    "rely on",
    "compete with",
    "depend on",
    "feed into",
    "benefit from",
    "struggle with",
    "push against",
    "make room for",
    "get ahead of",
    "catch up with",
    "pay for",
    "keep pace with",
    "break away from",
];
const MODALS: &[&str] = &[
    "could",
    "will",
    "may",
    "might",
    "would",
    "should",
    "is likely to",
    "is unlikely to",
    "is expected to",
    "seems set to",
    "is beginning to",
    "has yet to",
    "tends to",
    "is about to",
    "is starting to",
    "was never going to",
];
const SAID: &[&str] = &[
    "said",
    "told us",
    "explained",
    "noted",
    "argued",
    "added",
    "recalled",
    "conceded",
    "insisted",
    "warned",
    "pointed out",
    "observed",
    "admitted",
    "suggested",
    "wrote",
    "replied",
    "cautioned",
    "acknowledged",
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
    "Last spring,",
    "By the end of the decade,",
    "In theory,",
    "For smaller organisations,",
    "Until recently,",
    "Behind the scenes,",
    "On paper,",
    "To be fair,",
    "In hindsight,",
    "Across the industry,",
    "Quietly,",
    "At first,",
    "For the moment,",
    "Even so,",
    "In several countries,",
    "Before the pandemic,",
    "Within a few months,",
    "Looking back,",
    "For many households,",
    "In one early trial,",
    "As budgets tightened,",
    "After years of neglect,",
    "By contrast,",
    "In most cases,",
    "Somewhat awkwardly,",
    "Almost overnight,",
    "For critics,",
    "In the long run,",
    "To nobody's surprise,",
    "Yet",
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
    "hiring plans for the coming year",
    "a decade of accumulated habits",
    "the informal rules of the trade",
    "who gets to make the final call",
    "the margins of smaller competitors",
    "the timeline for the next upgrade",
    "the economics of maintenance",
    "procurement rules written in another era",
    "the career paths of junior staff",
    "public trust in the official figures",
    "the quarterly reporting cycle",
    "how insurers price the risk",
    "the bargaining power of workers",
    "a fragile network of subcontractors",
    "local planning decisions",
    "the tools people reach for first",
    "what customers are willing to pay",
    "the value of older equipment",
    "the case for waiting another year",
    "the way success is reported upward",
    "basic questions of ownership",
    "the handful of firms that set prices",
    "a long list of pending decisions",
    "the working week of the people involved",
    "the map of who depends on whom",
    "an otherwise predictable market",
    "the wording of new contracts",
    "the queue of projects waiting for approval",
    "the way training is organised",
    "expectations set by early marketing",
    "the cost of getting it wrong",
    "decisions that used to take minutes",
    "the supply of spare parts",
    "the incentives facing middle managers",
    "the old division of labour",
    "how researchers share their data",
    "the habits of first-time buyers",
    "the rules for reporting failures",
    "a surprisingly large share of the budget",
    "the rhythm of the seasonal cycle",
    "the reputations of several early adopters",
    "the advice given to newcomers",
    "a set of benchmarks nobody fully trusts",
    "the line between experiment and production",
    "the price of a typical contract",
    "the schedules of three separate agencies",
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
    "long before the rules caught up",
    "partly because nobody owned the problem",
    "just as funding started to dry up",
    "after a winter of unusually high demand",
    "while the wider economy slowed",
    "at a pace that alarmed some observers",
    "though not always for the reasons promised",
    "largely out of public view",
    "which made planning almost impossible",
    "even as enthusiasm cooled elsewhere",
    "until a string of failures forced a rethink",
    "with little coordination between regions",
    "because the incentives pointed the other way",
    "once insurers started asking questions",
    "in a market that rarely rewards patience",
    "after a change of leadership",
    "thanks mostly to a few stubborn volunteers",
    "while the official guidance stayed vague",
    "at roughly the same time across several countries",
    "despite repeated warnings from auditors",
    "which surprised even its supporters",
    "as the first generation of equipment aged",
    "when interest rates were still low",
    "before anyone had measured the side effects",
    "in a way that favoured larger players",
    "with mixed consequences for consumers",
    "under growing scrutiny from journalists",
    "although the savings took years to appear",
    "because the paperwork simply took too long",
    "while the underlying demand kept rising",
];
/// Generic noun phrases any topic can use.
const GENERIC_NOUNS: &[&str] = &[
    "procurement teams",
    "the annual budget",
    "smaller firms",
    "regional suppliers",
    "public agencies",
    "the finance department",
    "early adopters",
    "independent auditors",
    "trade associations",
    "consultants",
    "the regulator",
    "local councils",
    "the board",
    "frontline staff",
    "investors",
    "insurers",
    "customers",
    "university labs",
    "industry groups",
    "the competition",
    "rival vendors",
    "seasonal workers",
    "the legal team",
    "policy makers",
    "the pilot programme",
    "venture capital firms",
    "hardware suppliers",
    "the training budget",
    "the national statistics office",
    "small landlords",
    "hospital managers",
    "trade unions",
    "school districts",
    "online forums",
    "the maintenance crew",
    "city officials",
    "family businesses",
    "the research community",
    "government inspectors",
    "the user community",
];
const NOUN_MODS: &[&str] = &[
    "newer",
    "cheaper",
    "smaller",
    "regional",
    "older",
    "larger",
    "experimental",
    "second-hand",
    "shared",
    "domestic",
    "imported",
    "refurbished",
    "public",
    "private",
    "standard",
    "custom",
    "mid-sized",
    "local",
];
const PLACES: &[&str] = &[
    "Rotterdam",
    "Lisbon",
    "Nairobi",
    "Osaka",
    "Leeds",
    "Porto Alegre",
    "Tampere",
    "Ghent",
    "Denver",
    "Bilbao",
    "Kraków",
    "Accra",
    "Adelaide",
    "Montréal",
    "Aarhus",
    "Turin",
    "Valparaíso",
    "Pune",
    "Halifax",
    "Graz",
    "Dundee",
    "Bergen",
    "Curitiba",
    "Lyon",
    "Busan",
    "Tucson",
    "Cork",
    "Wellington",
    "Hamburg",
    "Bordeaux",
    "Malmö",
    "Córdoba",
    "Seville",
    "Utrecht",
    "Brno",
    "Kyoto",
    "Calgary",
    "Zaragoza",
    "Cape Town",
    "Nantes",
    "Göteborg",
    "Bologna",
    "Quito",
    "Eindhoven",
    "Pittsburgh",
    "Tromsø",
    "Bristol",
    "Medellín",
    "Leipzig",
    "Galway",
];
const ORG_KINDS: &[&str] = &[
    "Institute for Applied Research",
    "City Council",
    "Chamber of Commerce",
    "Polytechnic",
    "Energy Cooperative",
    "Port Authority",
    "Technical University",
    "Development Agency",
    "Consumer Association",
    "Observatory",
    "Trade Council",
    "Planning Office",
    "Research Centre",
    "Credit Union",
    "Data Trust",
];
const ORG_NAMES: &[&str] = &[
    "Northwind Analytics",
    "Brightwater Partners",
    "Halvorsen & Ruiz",
    "Meridian Labs",
    "Copperleaf Systems",
    "Bluestone Capital",
    "Ostrava Works",
    "Keystone Logistics",
    "Fjordline Energy",
    "Silverpine Health",
    "Altamira Group",
    "Redwood Fieldworks",
    "Tidewater Insights",
    "Lumen Cooperative",
    "Granite Peak Advisors",
    "Vireo Robotics",
    "Pelican Freight",
    "Harbourlight Media",
    "Oakmont Research",
    "Sundial Software",
];
const ROLES: &[&str] = &[
    "a senior engineer",
    "an economist",
    "the chief operating officer",
    "a researcher",
    "a project manager",
    "the head of operations",
    "a policy analyst",
    "a former regulator",
    "a procurement officer",
    "a union representative",
    "a data scientist",
    "the founder",
    "a site manager",
    "an independent consultant",
    "a professor of engineering",
    "a city councillor",
    "a product lead",
    "the director of research",
    "a field technician",
    "an investor",
    "a veteran contractor",
    "a spokesperson",
    "a doctoral student",
    "the chief financial officer",
    "a volunteer coordinator",
    "an industry lobbyist",
];
const SHORT_SENTENCES: &[&str] = &[
    "Not everyone agrees.",
    "The reasons are mundane.",
    "That is only half the story.",
    "The numbers tell a more complicated story.",
    "Few saw it coming.",
    "The details matter here.",
    "It did not last.",
    "That is not a small thing.",
    "The answer, for now, is no.",
    "Nobody has a clean answer yet.",
    "That estimate has since been revised.",
    "It is a fair question.",
    "Then the money ran out.",
    "The backlash was swift.",
    "Others are less convinced.",
    "It has happened before.",
    "Progress has been slow but real.",
    "The irony is not lost on anyone.",
];
const QUESTIONS: &[&str] = &[
    "So why has so little changed?",
    "Who, then, is responsible?",
    "Is any of this worth the effort?",
    "What would a better system look like?",
    "Why does it keep happening?",
    "How did it come to this?",
    "What happens next?",
    "Can the gains last?",
    "Where does that leave everyone else?",
    "Why now?",
];
const TIMEFRAMES: &[&str] = &[
    "within a year",
    "over the summer",
    "in under six months",
    "by the following spring",
    "almost immediately",
    "over the course of a decade",
    "in the space of a few weeks",
    "before the end of the quarter",
    "during the first winter",
    "over two budget cycles",
];
const STAT_UNITS: &[&str] = &[
    "of respondents",
    "of the projects we reviewed",
    "of small firms surveyed",
    "of the sites inspected",
    "of new contracts",
    "of all applications",
    "of the households in the sample",
    "of the budget",
    "of installations",
];
const THINGS: &[&str] = &[
    "sites",
    "projects",
    "firms",
    "teams",
    "households",
    "contracts",
    "installations",
    "pilots",
    "applications",
    "offices",
];
/// English month names, January first.
pub const MONTH_NAMES: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];

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

/// A person quoted in an article: introduced once in full, then by surname.
#[derive(Debug, Clone)]
struct Source {
    first: &'static str,
    last: &'static str,
    role: &'static str,
    org: String,
}

/// Writes the prose of one article (or comment thread) from a seed.
///
/// Draws vocabulary without replacement (until a list runs dry) and keeps a
/// small cast of quoted people, so an article reads as one piece and rarely
/// repeats itself, as real writing does.
pub struct Writer<'t> {
    rng: Rng,
    topic: &'t Topic,
    fancy: bool,
    used: std::collections::HashSet<usize>,
    cast: Vec<Source>,
}

impl<'t> Writer<'t> {
    /// `fancy` enables non-ASCII punctuation (curly quotes, dashes) and
    /// accented words, which exercise charset handling.
    pub fn new(seed: u64, topic: &'t Topic, fancy: bool) -> Writer<'t> {
        Writer {
            rng: Rng::new(seed),
            topic,
            fancy,
            used: Default::default(),
            cast: Vec::new(),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// An entry of `items` not yet used by this writer when one is found in a
    /// few tries (entries are identified by address, so lists may share text).
    fn fresh(&mut self, items: &'static [&'static str]) -> &'static str {
        let mut pick = self.rng.word(items);
        for _ in 0..12 {
            if !self.used.contains(&(pick.as_ptr() as usize)) {
                break;
            }
            pick = self.rng.word(items);
        }
        self.used.insert(pick.as_ptr() as usize);
        pick
    }

    fn open_quote(&self) -> (&'static str, &'static str) {
        if self.fancy {
            ("“", "”")
        } else {
            ("\"", "\"")
        }
    }

    fn dash(&self) -> &'static str {
        if self.fancy {
            " – "
        } else {
            " - "
        }
    }

    /// A noun phrase: a topic noun (sometimes modified) or a generic one.
    fn noun(&mut self) -> String {
        let topic = self.topic;
        if self.rng.chance(0.55) {
            let n = *self.rng.pick(topic.nouns);
            if self.rng.chance(0.3) {
                let m = self.fresh(NOUN_MODS);
                return match n.strip_prefix("the ") {
                    Some(rest) => format!("the {m} {rest}"),
                    None => format!("{m} {n}"),
                };
            }
            n.to_string()
        } else {
            self.fresh(GENERIC_NOUNS).to_string()
        }
    }

    fn place(&mut self) -> &'static str {
        if self.fancy || self.rng.chance(0.6) {
            self.fresh(PLACES)
        } else {
            // ASCII-only places for plain pages.
            let mut p = self.fresh(PLACES);
            for _ in 0..6 {
                if p.is_ascii() {
                    break;
                }
                p = self.fresh(PLACES);
            }
            p
        }
    }

    fn org(&mut self) -> String {
        if self.rng.chance(0.5) {
            self.fresh(ORG_NAMES).to_string()
        } else {
            let p = self.place();
            let k = self.fresh(ORG_KINDS);
            format!("the {p} {k}")
        }
    }

    fn year(&mut self) -> usize {
        self.rng.range(2009, 2025)
    }

    fn date(&mut self) -> String {
        let m = self.rng.word(MONTH_NAMES);
        match self.rng.range(0, 3) {
            0 => format!("{m} {}", self.rng.range(1, 28)),
            1 => format!("last {}", self.rng.word(WEEKDAYS)),
            2 => format!("in {m} {}", self.year()),
            _ => format!("in early {m}"),
        }
    }

    fn number(&mut self) -> String {
        let r = &mut self.rng;
        match r.range(0, 6) {
            0 => format!("{} percent", r.range(3, 92)),
            1 => format!("{}.{} percent", r.range(1, 60), r.range(1, 9)),
            2 => format!("${} million", r.range(2, 900)),
            3 => {
                let eur = if self.fancy { "€" } else { "EUR " };
                format!("{eur}{}.{} billion", r.range(1, 40), r.range(1, 9))
            }
            4 => format!(
                "{} of the {} {}",
                r.range(2, 19),
                r.range(20, 60),
                r.word(THINGS)
            ),
            5 => format!("{} in {}", r.range(2, 9), r.range(10, 12)),
            _ => format!("roughly {},{:03}", r.range(1, 98), r.range(0, 999)),
        }
    }

    /// A person to quote: a new one, or (later in the article) a known one.
    fn source(&mut self) -> String {
        if !self.cast.is_empty() && (self.cast.len() >= 4 || self.rng.chance(0.4)) {
            let k = self.rng.range(0, self.cast.len() - 1);
            return self.cast[k].last.to_string();
        }
        let mut first = self.fresh(FIRST_NAMES);
        let mut last = self.fresh(LAST_NAMES);
        if !self.fancy {
            for _ in 0..6 {
                if first.is_ascii() && last.is_ascii() {
                    break;
                }
                first = self.fresh(FIRST_NAMES);
                last = self.fresh(LAST_NAMES);
            }
        }
        let role = self.fresh(ROLES);
        let org = self.org();
        self.cast.push(Source {
            first,
            last,
            role,
            org,
        });
        let s = self.cast.last().expect("just pushed");
        format!("{} {}, {} at {},", s.first, s.last, s.role, s.org)
    }

    /// A claim someone might make, in their own voice.
    fn claim(&mut self) -> String {
        let n = self.noun();
        let o = self.fresh(OBJECTS);
        match self.rng.range(0, 6) {
            0 => format!(
                "We {} {o} {}",
                self.fresh(VERB_PAST),
                self.fresh(TIMEFRAMES)
            ),
            1 => format!(
                "Nobody wants to admit that {n} {} {o}",
                self.fresh(VERB_PAST)
            ),
            2 => format!(
                "If you ask me, {n} {} {} {o}",
                self.fresh(MODALS),
                self.fresh(VERB_BASE)
            ),
            3 => format!("It is {} and it is {}", self.fresh(ADJ), self.fresh(ADJ)),
            4 => format!("The hard part was never {n}; it was {o}",),
            5 => format!(
                "Our {} numbers show {} percent {} {}",
                self.rng.word(MONTH_NAMES),
                self.rng.range(5, 95),
                self.fresh(STAT_UNITS),
                [
                    "agree",
                    "are behind schedule",
                    "came in under budget",
                    "want more time"
                ][self.rng.range(0, 3)]
            ),
            _ => format!("I have seen {n} {} {o} before", self.fresh(VERB_BASE)),
        }
    }

    /// One sentence about the writer's topic.
    pub fn sentence(&mut self) -> String {
        let (lq, rq) = self.open_quote();
        let form = self.rng.range(0, 21);
        let s = if form < 12 {
            self.sentence_forms_a(form, lq, rq)
        } else {
            self.sentence_forms_b(form, lq, rq)
        };
        let s = cap(&s);
        if self.fancy && self.rng.chance(0.12) {
            let acc = *self.rng.pick(ACCENTED);
            let s2 = s.trim_end_matches('.');
            if s2.len() + 1 == s.len() && !s2.contains('“') {
                return match self.rng.range(0, 1) {
                    0 => format!("{s2} – or so says {acc}."),
                    _ => format!("{s2}, as {acc} discovered."),
                };
            }
        }
        s
    }

    /// Sentence forms 0-11 of [`Writer::sentence`] (11 is the catch-all).
    fn sentence_forms_a(&mut self, form: usize, lq: &str, rq: &str) -> String {
        match form {
            0 | 1 => {
                let o = self.fresh(OPENERS);
                let n = self.noun();
                format!("{o} {n} {} {}.", self.fresh(VERB_PAST), self.fresh(OBJECTS))
            }
            2 => {
                let n = cap(&self.noun());
                let m = self.fresh(MODALS);
                let v = self.fresh(VERB_BASE);
                let n2 = self.noun();
                format!("{n} {m} {v} {n2}, {}.", self.fresh(CLAUSES))
            }
            3 => {
                let c = self.claim();
                let who = self.source();
                let who = who.trim_end_matches(',');
                format!("{lq}{c},{rq} {} {who}.", self.fresh(SAID))
            }
            4 => {
                let who = self.source();
                let n = self.noun();
                format!(
                    "{who} {} that {n} had {} {}.",
                    self.fresh(SAID),
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS)
                )
            }
            5 => {
                let org = cap(&self.org());
                let pct = self.rng.range(3, 92);
                format!(
                    "According to {org}, {pct} percent {} {} {} in {}.",
                    self.fresh(STAT_UNITS),
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS),
                    self.year()
                )
                .replace("According to The", "According to the")
            }
            6 => self.fresh(QUESTIONS).to_string(),
            7 => {
                let p = self.place();
                let n = self.noun();
                format!(
                    "In {p}, {n} {} {} {}.",
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS),
                    self.fresh(TIMEFRAMES)
                )
            }
            8 => {
                let a = self.fresh(ADJ);
                let now = self.rng.range(20, 90);
                format!(
                    "The figures are {a}: {now} percent {}, up from {} percent in {}.",
                    self.fresh(STAT_UNITS),
                    self.rng.range(2, now - 1),
                    self.year()
                )
            }
            9 => {
                let n = self.noun();
                format!(
                    "That matters because {n} {} {} {}.",
                    self.fresh(MODALS),
                    self.fresh(VERB_BASE),
                    self.fresh(OBJECTS)
                )
            }
            10 => {
                let org = cap(&self.org());
                let d = self.date();
                format!(
                    "{org} announced {d} that it would {} {}.",
                    self.fresh(VERB_BASE),
                    self.fresh(OBJECTS)
                )
            }
            _ => self.fresh(SHORT_SENTENCES).to_string(),
        }
    }

    /// Sentence forms 12-20 of [`Writer::sentence`].
    fn sentence_forms_b(&mut self, form: usize, lq: &str, rq: &str) -> String {
        match form {
            12 => {
                let who = self.source();
                format!(
                    "{who} described the change as {lq}{} but {}{rq}.",
                    self.fresh(ADJ),
                    self.fresh(ADJ)
                )
            }
            13 => {
                let y = self.rng.range(2009, 2019);
                let n = self.noun();
                format!(
                    "Between {y} and {}, {n} {} {} by {} percent.",
                    y + self.rng.range(2, 6),
                    ["grew", "shrank", "fell", "rose", "expanded", "contracted"]
                        [self.rng.range(0, 5)],
                    ["in size", "in number", "on average", "overall", "in cost"]
                        [self.rng.range(0, 4)],
                    self.rng.range(4, 70)
                )
            }
            14 => {
                let n = cap(&self.noun());
                let d = self.dash();
                let n2 = self.noun();
                format!(
                    "{n} {} {}{d}at least where {n2} were involved{d}{}.",
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS),
                    self.fresh(CLAUSES)
                )
            }
            15 => {
                let r = self.fresh(ROLES);
                let p = self.place();
                let n = self.noun();
                format!(
                    "One {} in {p} told us that {n} had {} {} within {} weeks.",
                    r.trim_start_matches("a ")
                        .trim_start_matches("an ")
                        .trim_start_matches("the "),
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS),
                    self.rng.range(2, 12)
                )
            }
            16 => {
                let who = self.source();
                let who = who.trim_end_matches(',');
                let n = self.noun();
                format!(
                    "Critics, including {who}, argue that {n} {} {} {}.",
                    self.fresh(MODALS),
                    self.fresh(VERB_BASE),
                    self.fresh(OBJECTS)
                )
            }
            17 => {
                let n = self.noun();
                format!(
                    "It took {} months for {n} to {} {}, {}.",
                    self.rng.range(3, 30),
                    self.fresh(VERB_BASE),
                    self.fresh(OBJECTS),
                    self.fresh(CLAUSES)
                )
            }
            18 => {
                let o = self.fresh(OPENERS);
                let n = self.noun();
                let n2 = self.noun();
                format!(
                    "{o} the {} problem is {n}, which {} {n2}.",
                    self.fresh(ADJ),
                    self.fresh(VERB_PAST)
                )
            }
            19 => {
                let n = cap(&self.noun());
                let num = self.number();
                format!(
                    "{n} now {} for {num}, {}.",
                    [
                        "accounts",
                        "is responsible",
                        "pays",
                        "is blamed",
                        "is credited"
                    ][self.rng.range(0, 4)],
                    self.fresh(CLAUSES)
                )
            }
            20 => {
                let c = self.claim();
                let who = self.source();
                let c2 = self.claim();
                format!("{lq}{c},{rq} {who} {}. {lq}{}.{rq}", self.fresh(SAID), c2)
            }
            _ => {
                let n = self.noun();
                format!(
                    "Nobody doubts that {n} {} {}; the open question is how fast.",
                    self.fresh(VERB_PAST),
                    self.fresh(OBJECTS)
                )
            }
        }
    }

    /// A paragraph of `lo..=hi` sentences.
    pub fn paragraph_n(&mut self, lo: usize, hi: usize) -> String {
        let n = self.rng.range(lo, hi);
        (0..n)
            .map(|_| self.sentence())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn paragraph(&mut self) -> String {
        self.paragraph_n(2, 6)
    }

    pub fn subheading(&mut self) -> String {
        match self.rng.range(0, 4) {
            0 | 1 => self.fresh(SUBHEADS).to_string(),
            2 => format!("The {} experiment", self.place()),
            3 => cap(&format!("{} and {}", self.noun(), self.noun())),
            _ => cap(&format!("{} {}", self.fresh(ADJ), self.fresh(TIMEFRAMES))),
        }
    }

    pub fn list_item(&mut self) -> String {
        let n = self.noun();
        match self.rng.range(0, 4) {
            0 => {
                cap(&format!(
                    "{n} {} {}",
                    self.fresh(MODALS),
                    self.fresh(VERB_BASE)
                )) + &format!(" {}", self.noun())
            }
            1 => format!(
                "Check how {n} {} {}",
                self.fresh(VERB_PAST),
                self.fresh(OBJECTS)
            ),
            2 => cap(&format!("{n} matters {}", self.fresh(CLAUSES))),
            3 => format!("{} {}", cap(&self.number()), self.fresh(STAT_UNITS)),
            _ => cap(&format!("{n}: {}", self.fresh(OBJECTS))),
        }
    }

    /// An identifier derived from a topic noun ("the query planner" ->
    /// "query_planner").
    fn ident(&mut self) -> String {
        let n = *self.rng.pick(self.topic.nouns);
        let n = n.strip_prefix("the ").unwrap_or(n);
        n.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(2)
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join("_")
    }

    /// A short code or configuration listing (ground truth on docs pages).
    pub fn code_block(&mut self) -> String {
        let mut lines = Vec::new();
        match self.rng.range(0, 3) {
            0 => {
                lines.push(format!("[{}]", self.ident()));
                for _ in 0..self.rng.range(3, 7) {
                    let k = self.ident();
                    let v = match self.rng.range(0, 2) {
                        0 => self.rng.range(1, 512).to_string(),
                        1 => format!("\"{}\"", self.fresh(NOUN_MODS)),
                        _ => ["true", "false"][self.rng.range(0, 1)].to_string(),
                    };
                    lines.push(format!("{k}_{} = {v}", self.rng.range(1, 9)));
                }
            }
            1 => {
                let t = self.ident();
                lines.push(format!(
                    "$ sim-cli {t} init --region {}",
                    self.place().to_lowercase().replace(' ', "-")
                ));
                lines.push(format!(
                    "$ sim-cli {t} apply --max-{} {}",
                    self.ident().replace('_', "-"),
                    self.rng.range(2, 64)
                ));
                lines.push(format!("$ sim-cli {t} status --watch"));
            }
            2 => {
                let a = self.ident();
                let b = self.ident();
                lines.push(format!(
                    "fn tune_{a}(limit: usize) -> Result<{}, Error> {{",
                    cap(&b.replace('_', ""))
                ));
                lines.push(format!("    let mut {b} = load_{b}(\"{}.toml\")?;", a));
                lines.push(format!(
                    "    {b}.set_limit(limit.min({}));",
                    self.rng.range(8, 4096)
                ));
                lines.push(format!("    if {b}.len() > {} {{", self.rng.range(10, 99)));
                lines.push(format!("        {b}.compact();"));
                lines.push("    }".to_string());
                lines.push(format!("    Ok({b})"));
                lines.push("}".to_string());
            }
            _ => {
                lines.push(format!(
                    "curl -s https://api.sim.test/v{}/{} \\",
                    self.rng.range(1, 4),
                    self.ident()
                ));
                lines.push(format!(
                    "  -H 'Accept: application/json' -d '{{\"limit\": {}}}'",
                    self.rng.range(5, 100)
                ));
            }
        }
        lines.join("\n")
    }

    /// A small data table: header cells and rows (ground truth).
    pub fn table(&mut self) -> (Vec<String>, Vec<Vec<String>>) {
        let n = self.rng.range(3, 7);
        match self.rng.range(0, 2) {
            0 => {
                let head = vec!["Setting".into(), "Default".into(), "Description".into()];
                let rows = (0..n)
                    .map(|k| {
                        let id = self.ident();
                        vec![
                            format!("{id}_{k}"),
                            self.rng.range(1, 256).to_string(),
                            cap(&format!(
                                "Controls how {} {}",
                                self.noun(),
                                self.fresh(VERB_BASE)
                            )),
                        ]
                    })
                    .collect();
                (head, rows)
            }
            1 => {
                let y = self.rng.range(2012, 2019);
                let head = vec![
                    "Year".into(),
                    "Share".into(),
                    "Change".into(),
                    "Notes".into(),
                ];
                let rows = (0..n)
                    .map(|k| {
                        vec![
                            (y + k).to_string(),
                            format!("{}%", self.rng.range(5, 80)),
                            format!(
                                "{}{}",
                                ["+", "-"][self.rng.range(0, 1)],
                                self.rng.range(1, 15)
                            ),
                            cap(self.fresh(CLAUSES)),
                        ]
                    })
                    .collect();
                (head, rows)
            }
            _ => {
                let head = vec!["City".into(), "Sites".into(), "Lead organisation".into()];
                let rows = (0..n)
                    .map(|_| {
                        let p = self.place().to_string();
                        let org = self.org();
                        vec![p, self.rng.range(2, 140).to_string(), cap(&org)]
                    })
                    .collect();
                (head, rows)
            }
        }
    }

    /// A photo caption with a credit line (never ground truth).
    pub fn caption(&mut self) -> String {
        let p = self.place();
        let n = self.noun();
        let first = self.rng.word(FIRST_NAMES);
        let last = self.rng.word(LAST_NAMES);
        let agency = [
            "Reuters",
            "AFP",
            "Getty Images",
            "AP",
            "for the paper",
            "Alamy",
        ][self.rng.range(0, 5)];
        format!(
            "{} in {p}, where {n} {} {}. Photo: {first} {last}/{agency}",
            cap(self.fresh(GENERIC_NOUNS)),
            self.fresh(VERB_PAST),
            self.fresh(OBJECTS)
        )
    }

    /// A reader comment: prose-like on purpose so extractors cannot use
    /// "looks like prose" alone to find the article.
    pub fn comment(&mut self) -> String {
        let mut s = self.fresh(COMMENT_OPENERS).to_string();
        s.push(' ');
        s.push_str(self.fresh(COMMENT_BODIES));
        s.push('.');
        for _ in 0..self.rng.range(0, 4) {
            s.push(' ');
            let x = match self.rng.range(0, 3) {
                0 => {
                    let n = self.noun();
                    format!(
                        "Where I work, {n} {} {} {}.",
                        self.fresh(VERB_PAST),
                        self.fresh(OBJECTS),
                        self.fresh(TIMEFRAMES)
                    )
                }
                1 => {
                    let n = self.noun();
                    format!(
                        "Honestly I think {n} {} {} {}.",
                        self.fresh(MODALS),
                        self.fresh(VERB_BASE),
                        self.fresh(OBJECTS)
                    )
                }
                _ => self.sentence(),
            };
            s.push_str(&x);
        }
        s
    }
}

const ACCENTED: &[&str] = &[
    "a café owner in Zürich",
    "the naïve estimate",
    "a résumé of past attempts",
    "the Málaga pilot",
    "a São Paulo start-up",
    "the Köln working group",
    "an entrepreneur from Besançon",
];

/// One sentence about `topic`. `fancy` enables non-ASCII punctuation and
/// accented words (exercises charset handling).
pub fn sentence(rng: &mut Rng, topic: &Topic, fancy: bool) -> String {
    Writer::new(rng.next_u64(), topic, fancy).sentence()
}

pub fn paragraph(rng: &mut Rng, topic: &Topic, fancy: bool) -> String {
    Writer::new(rng.next_u64(), topic, fancy).paragraph()
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
    "How we got here",
    "The view from the ground",
    "A slow start",
    "Counting the cost",
    "The sceptics",
    "Early results",
    "What the data show",
    "Not so fast",
    "Follow the incentives",
    "The missing piece",
    "A second chance",
    "Who benefits",
    "Growing pains",
    "The long game",
    "Beyond the pilot",
];

pub fn subheading(rng: &mut Rng) -> String {
    (*rng.pick(SUBHEADS)).to_string()
}

pub fn list_item(rng: &mut Rng, topic: &Topic) -> String {
    Writer::new(rng.next_u64(), topic, false).list_item()
}

/// A reader comment (see [`Writer::comment`]).
pub fn comment(rng: &mut Rng, topic: &Topic) -> String {
    Writer::new(rng.next_u64(), topic, false).comment()
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
    "Finally someone says it.",
    "Bookmarking this.",
    "Hmm.",
    "Respectfully,",
    "As someone who did this for ten years,",
    "Counterpoint:",
    "This is the third article this month on the topic.",
    "Agreed.",
    "Small correction:",
    "Good piece, one quibble.",
    "Wow.",
    "Devil's advocate here:",
    "Same here.",
    "Not buying it.",
    "Exactly this.",
    "Can confirm.",
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
    "the interview quotes are doing a lot of heavy lifting in this piece",
    "nobody in my town has even heard of this, so maybe it is a big-city thing",
    "the chart in the third section does not match the numbers in the text",
    "my landlord would never pay for any of this, so the whole debate feels academic",
    "we switched two years ago and I would not go back, although the first months were rough",
    "the people quoted here all seem to have something to sell",
    "I wish the piece had talked to someone who actually does the work every day",
    "this is exactly the kind of reporting I pay my subscription for",
    "the real story is the regulation, and it gets one paragraph",
    "I was at the conference mentioned here and the mood was much gloomier than described",
];

pub const FIRST_NAMES: &[&str] = &[
    "Maria", "James", "Aiko", "Lars", "Priya", "Tomás", "Olivia", "Kwame", "Sofia", "Daniel",
    "Mei", "Jonas", "Fatima", "Lucas", "Hannah", "Omar", "Ingrid", "Rafael", "Chiara", "Dmitri",
    "Amara", "Niamh", "Hiroshi", "Beatriz", "Samuel", "Leila", "Mateo", "Greta", "Tobias",
    "Yasmin", "Ravi", "Elena", "Joaquín", "Freya", "Kofi", "Astrid", "Pedro", "Noor", "Emeka",
    "Clara", "Søren", "Zoë", "Andrés", "Ines", "Viktor", "Ayesha",
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
    "Petrov",
    "Castillo",
    "Adeyemi",
    "O'Brien",
    "Yamamoto",
    "Bergström",
    "Duarte",
    "Kowalski",
    "Nguyen",
    "Hughes",
    "Ferreira",
    "Schmidt",
    "Banerjee",
    "Lambert",
    "Osei",
    "Jansen",
    "Mackenzie",
    "Ibáñez",
    "Varga",
    "Sato",
    "Delgado",
    "Whitfield",
    "Andersen",
    "Costa",
    "Müller",
    "Barros",
    "Kaplan",
    "Greene",
    "Tanaka",
    "Quinn",
];

pub fn person(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES))
}

/// Share of distinct word trigrams among all word trigrams of `text`
/// (lowercased alphanumeric words); real prose is above 0.9.
pub fn distinct_trigram_share(text: &str) -> f64 {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < 3 {
        return 1.0;
    }
    let all: Vec<&[String]> = words.windows(3).collect();
    let distinct: std::collections::HashSet<&[String]> = all.iter().copied().collect();
    distinct.len() as f64 / all.len() as f64
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
