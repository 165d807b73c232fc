//! The `VectorIndex` contract, checked against every back end.
//!
//! Each behaviour is one generic async function over a [`Fixture`]; the
//! `backend_tests!` macro runs each of them against `edge` (always, in a
//! fresh directory under the system temp dir) and against `qdrant` when
//! `QDRANT_URL` is set (e.g. `QDRANT_URL=http://localhost:6334`, optional
//! `QDRANT_API_KEY`), in a fresh collection that is deleted afterwards.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use freshet::dataplane::index::edge::EdgeIndex;
use freshet::dataplane::index::qdrant::QdrantIndex;
use freshet::dataplane::index::{
    chunk_id, search_filtered, sparse, ChunkPayload, ChunkPoint, DocState, IndexError,
    SearchFilter, SearchQuery, VectorIndex,
};
use freshet::dataplane::retry::ErrorClass;
use uuid::Uuid;

const DIM: usize = 8;

/// A back end under test that can be closed and opened again.
#[async_trait::async_trait]
trait Fixture: Send + Sync {
    fn index(&self) -> &dyn VectorIndex;
    /// Closes the index and opens the same data again with `dim`.
    async fn reopen(&mut self, dim: usize) -> Result<(), IndexError>;
    async fn cleanup(self: Box<Self>);
}

// ---------------------------------------------------------------- edge

struct EdgeFixture {
    dir: PathBuf,
    index: Option<EdgeIndex>,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

impl EdgeFixture {
    fn open(test: &str) -> Box<dyn Fixture> {
        let dir = std::env::temp_dir().join(format!(
            "freshet-index-{test}-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let index = EdgeIndex::open(&dir, DIM).expect("open a fresh edge index");
        Box::new(EdgeFixture {
            dir,
            index: Some(index),
        })
    }
}

#[async_trait::async_trait]
impl Fixture for EdgeFixture {
    fn index(&self) -> &dyn VectorIndex {
        self.index.as_ref().expect("index is open")
    }
    async fn reopen(&mut self, dim: usize) -> Result<(), IndexError> {
        // Drop (and so close) the shard before opening the directory again.
        self.index = None;
        self.index = Some(EdgeIndex::open(&self.dir, dim)?);
        Ok(())
    }
    async fn cleanup(mut self: Box<Self>) {
        self.index = None;
        std::fs::remove_dir_all(&self.dir).expect("remove the test directory");
    }
}

impl Drop for EdgeFixture {
    /// Also cleans up after a failed (panicking) test.
    fn drop(&mut self) {
        self.index = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- qdrant

struct QdrantFixture {
    url: String,
    api_key: Option<String>,
    collection: String,
    index: Option<QdrantIndex>,
}

impl QdrantFixture {
    async fn connect(test: &str) -> Option<Box<dyn Fixture>> {
        let Ok(url) = std::env::var("QDRANT_URL") else {
            println!("skipping the qdrant back end for {test}: QDRANT_URL is not set");
            return None;
        };
        let api_key = std::env::var("QDRANT_API_KEY").ok();
        let collection = format!("freshet_test_{test}_{}", Uuid::new_v4().simple());
        let index = QdrantIndex::connect(&url, api_key.clone(), &collection, DIM)
            .await
            .expect("connect to QDRANT_URL and create a test collection");
        Some(Box::new(QdrantFixture {
            url,
            api_key,
            collection,
            index: Some(index),
        }))
    }
}

#[async_trait::async_trait]
impl Fixture for QdrantFixture {
    fn index(&self) -> &dyn VectorIndex {
        self.index.as_ref().expect("index is connected")
    }
    async fn reopen(&mut self, dim: usize) -> Result<(), IndexError> {
        self.index = None;
        self.index = Some(
            QdrantIndex::connect(&self.url, self.api_key.clone(), &self.collection, dim).await?,
        );
        Ok(())
    }
    async fn cleanup(self: Box<Self>) {
        let client = qdrant_client::Qdrant::from_url(&self.url)
            .api_key(self.api_key.clone())
            .skip_compatibility_check()
            .build()
            .expect("client");
        client
            .delete_collection(self.collection.as_str())
            .await
            .expect("delete the test collection");
    }
}

// ---------------------------------------------------------------- data

/// A unit vector mostly along axis `axis`, tilted by `tilt` towards the next.
fn vector(axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = [0.0f32; DIM];
    v[axis % DIM] = 1.0;
    v[(axis + 1) % DIM] = tilt;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn point(doc: &str, index: u32, count: u32, doc_hash: &str, vector: Vec<f32>) -> ChunkPoint {
    ChunkPoint {
        id: chunk_id(doc, index),
        vector,
        payload: ChunkPayload {
            doc_id: doc.to_owned(),
            chunk_index: index,
            chunk_count: count,
            url: format!("https://example.com/{doc}"),
            title: format!("Title of {doc}"),
            text: format!("chunk {index} of {doc}: ünïcødé \"quoted\" text"),
            content_hash: format!("{doc}-{index}-content"),
            doc_hash: doc_hash.to_owned(),
            fetched_at_ms: 1_760_000_000_000 + u64::from(index),
            event_ts_ms: 1_759_999_999_000 + u64::from(index),
            indexed_ts_ms: 1_760_000_000_500 + u64::from(index),
            domain: "example.com".to_owned(),
            render_mode: "http".to_owned(),
            quality: 0.5 + f64::from(index) / 10.0,
            source_offset: format!("embedded:0:{index}"),
            metadata: Default::default(),
        },
    }
}

/// Three documents of three chunks; `a` and `c` have the same content hash.
fn corpus() -> Vec<ChunkPoint> {
    let mut points = Vec::new();
    for (d, (doc, hash)) in [("a", "hash-ac"), ("b", "hash-b"), ("c", "hash-ac")]
        .into_iter()
        .enumerate()
    {
        for i in 0..3u32 {
            let axis = d * 3 + i as usize;
            points.push(point(doc, i, 3, hash, vector(axis, 0.1 * d as f32)));
        }
    }
    points
}

fn ids_of(points: &[ChunkPoint], doc: &str) -> Vec<Uuid> {
    points
        .iter()
        .filter(|p| p.payload.doc_id == doc)
        .map(|p| p.id)
        .collect()
}

async fn sorted_points(index: &dyn VectorIndex) -> Vec<(Uuid, String)> {
    let mut all = index.all_points().await.expect("all_points");
    all.sort();
    all
}

// ---------------------------------------------------------------- behaviours

async fn upsert_then_search_finds_nearest(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points = corpus();
    index.upsert(points.clone()).await.expect("upsert");
    assert_eq!(index.count().await.unwrap(), points.len() as u64);

    for target in [&points[0], &points[4], &points[8]] {
        let hits = index
            .search(target.vector.clone(), 3)
            .await
            .expect("search");
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].id, target.id, "nearest point is the query itself");
        assert!(
            (hits[0].score - 1.0).abs() < 1e-4,
            "cosine of a vector with itself: {}",
            hits[0].score
        );
        assert_eq!(hits[0].payload, target.payload, "payload survives intact");
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score),
            "hits sorted by score"
        );
    }

    let all = index.search(points[0].vector.clone(), 100).await.unwrap();
    assert_eq!(
        all.len(),
        points.len(),
        "k above the count returns every point"
    );
    assert!(index
        .search(points[0].vector.clone(), 0)
        .await
        .unwrap()
        .is_empty());
    fx.cleanup().await;
}

async fn upsert_is_idempotent(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points = corpus();
    index.upsert(points.clone()).await.unwrap();
    let before = sorted_points(index).await;
    index.upsert(points.clone()).await.unwrap();
    index.upsert(points[..4].to_vec()).await.unwrap();
    assert_eq!(index.count().await.unwrap(), points.len() as u64);
    assert_eq!(sorted_points(index).await, before);

    // Same id, new content: replaced, not added.
    let mut changed = points[1].clone();
    changed.payload.title = "edited".into();
    changed.vector = vector(7, 0.9);
    index.upsert(vec![changed.clone()]).await.unwrap();
    assert_eq!(index.count().await.unwrap(), points.len() as u64);
    let hits = index.search(changed.vector.clone(), 1).await.unwrap();
    assert_eq!(hits[0].id, changed.id);
    assert_eq!(hits[0].payload.title, "edited");
    fx.cleanup().await;
}

async fn delete_points_removes_only_those(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points = corpus();
    index.upsert(points.clone()).await.unwrap();
    let gone = vec![points[0].id, points[5].id, chunk_id("never-indexed", 0)];
    index
        .delete_points(gone.clone())
        .await
        .expect("delete_points");
    assert_eq!(index.count().await.unwrap(), points.len() as u64 - 2);
    let left = sorted_points(index).await;
    assert!(left.iter().all(|(id, _)| !gone.contains(id)));
    // Deleting again, or nothing, is fine.
    index.delete_points(gone).await.unwrap();
    index.delete_points(Vec::new()).await.unwrap();
    assert_eq!(index.count().await.unwrap(), points.len() as u64 - 2);
    fx.cleanup().await;
}

async fn delete_doc_removes_exactly_that_doc(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points = corpus();
    index.upsert(points.clone()).await.unwrap();
    assert_eq!(index.delete_doc("b").await.expect("delete_doc"), 3);
    let left = sorted_points(index).await;
    assert_eq!(left.len(), 6);
    assert!(left.iter().all(|(_, doc)| doc != "b"));
    let mut expected: Vec<_> = ids_of(&points, "a")
        .into_iter()
        .map(|id| (id, "a".to_owned()))
        .chain(
            ids_of(&points, "c")
                .into_iter()
                .map(|id| (id, "c".to_owned())),
        )
        .collect();
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(
        index.delete_doc("b").await.unwrap(),
        0,
        "second delete finds nothing"
    );
    assert_eq!(index.delete_doc("unknown").await.unwrap(), 0);
    fx.cleanup().await;
}

async fn doc_state_reports_chunks_and_hash(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points = corpus();
    // Upsert in reverse so that the order of the answer is not insertion order.
    index
        .upsert(points.iter().rev().cloned().collect())
        .await
        .unwrap();
    let state = index.doc_state("b").await.expect("doc_state");
    assert_eq!(
        state,
        DocState {
            chunk_ids: (0..3).map(|i| chunk_id("b", i)).collect(),
            doc_hash: Some("hash-b".into()),
        },
        "chunk ids in chunk order, with the document hash"
    );
    assert_eq!(
        index.doc_state("unknown").await.unwrap(),
        DocState::default()
    );
    fx.cleanup().await;
}

async fn find_doc_hash_skips_except_doc(fx: Box<dyn Fixture>) {
    let index = fx.index();
    index.upsert(corpus()).await.unwrap();
    assert_eq!(
        index
            .find_doc_hash("hash-ac", "a")
            .await
            .unwrap()
            .as_deref(),
        Some("c")
    );
    assert_eq!(
        index
            .find_doc_hash("hash-ac", "c")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    let any = index.find_doc_hash("hash-ac", "z").await.unwrap();
    assert!(matches!(any.as_deref(), Some("a") | Some("c")), "{any:?}");
    assert_eq!(index.find_doc_hash("hash-b", "b").await.unwrap(), None);
    assert_eq!(
        index.find_doc_hash("no-such-hash", "a").await.unwrap(),
        None
    );
    fx.cleanup().await;
}

async fn data_survives_reopen(mut fx: Box<dyn Fixture>) {
    let points = corpus();
    fx.index().upsert(points.clone()).await.unwrap();
    fx.index().delete_doc("c").await.unwrap();
    fx.reopen(DIM).await.expect("reopen");
    let index = fx.index();
    assert_eq!(index.count().await.unwrap(), 6);
    let hits = index.search(points[4].vector.clone(), 1).await.unwrap();
    assert_eq!(hits[0].payload, points[4].payload);
    assert_eq!(
        index.doc_state("a").await.unwrap().doc_hash.as_deref(),
        Some("hash-ac")
    );
    // The payload indexes still work after a reopen (and were not duplicated).
    assert_eq!(index.find_doc_hash("hash-ac", "a").await.unwrap(), None);
    assert_eq!(index.delete_doc("a").await.unwrap(), 3);
    fx.reopen(DIM).await.expect("reopen twice");
    assert_eq!(fx.index().count().await.unwrap(), 3);
    fx.cleanup().await;
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, IndexError>, what: &str) -> IndexError {
    let e = r.expect_err(what);
    assert_eq!(e.class, ErrorClass::Invalid, "{what}: {e}");
    assert!(!e.class.retryable());
    e
}

async fn bad_vectors_are_invalid(mut fx: Box<dyn Fixture>) {
    let index = fx.index();
    let good = point("a", 0, 1, "h", vector(0, 0.0));
    let mut long = point("b", 0, 1, "h", vec![0.5; DIM + 1]);
    let e = assert_invalid(
        index.upsert(vec![good.clone(), long.clone()]).await,
        "too long",
    );
    assert!(e.message.contains(&(DIM + 1).to_string()), "{e}");
    long.vector.truncate(DIM - 1);
    assert_invalid(index.upsert(vec![long]).await, "too short");
    let mut nan = good.clone();
    nan.vector[3] = f32::NAN;
    assert_invalid(index.upsert(vec![nan]).await, "NaN");
    let mut inf = good.clone();
    inf.vector[0] = f32::INFINITY;
    assert_invalid(index.upsert(vec![inf]).await, "infinity");
    assert_invalid(
        index.search(vec![1.0; DIM + 2], 3).await,
        "search dimension",
    );
    assert_invalid(index.search(vec![f32::NAN; DIM], 3).await, "search NaN");
    assert_eq!(
        index.count().await.unwrap(),
        0,
        "a rejected batch writes nothing"
    );
    index.upsert(vec![good]).await.unwrap();

    // The stored data has DIM dimensions: opening it with another size fails.
    let e = match fx.reopen(DIM * 2).await {
        Err(e) => e,
        Ok(()) => panic!("reopen with another dimension succeeded"),
    };
    assert_eq!(e.class, ErrorClass::Invalid, "{e}");
    assert!(e.message.contains("vector size 8"), "{e}");
    fx.reopen(DIM)
        .await
        .expect("reopen with the right dimension");
    assert_eq!(fx.index().count().await.unwrap(), 1);
    fx.cleanup().await;
}

async fn empty_operations_are_fine(fx: Box<dyn Fixture>) {
    let index = fx.index();
    index.upsert(Vec::new()).await.expect("empty upsert");
    index.delete_points(Vec::new()).await.unwrap();
    assert_eq!(index.count().await.unwrap(), 0);
    assert!(index.all_points().await.unwrap().is_empty());
    assert!(index.search(vector(0, 0.0), 5).await.unwrap().is_empty());
    assert_eq!(index.delete_doc("a").await.unwrap(), 0);
    assert_eq!(index.doc_state("a").await.unwrap(), DocState::default());
    assert_eq!(index.find_doc_hash("h", "a").await.unwrap(), None);
    fx.cleanup().await;
}

async fn concurrent_writes_and_reads(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let docs: Vec<String> = (0..8).map(|d| format!("doc-{d}")).collect();
    let writes = docs.iter().enumerate().map(|(d, doc)| {
        let points = (0..20u32)
            .map(|i| point(doc, i, 20, doc, vector(d + i as usize, 0.01 * i as f32)))
            .collect();
        index.upsert(points)
    });
    let reads = (0..8).map(|d| index.search(vector(d, 0.5), 5));
    let (w, r) = tokio::join!(
        futures::future::join_all(writes),
        futures::future::join_all(reads)
    );
    w.into_iter().for_each(|r| r.expect("concurrent upsert"));
    r.into_iter().for_each(|r| {
        r.expect("concurrent search");
    });
    assert_eq!(index.count().await.unwrap(), 160);
    let deletes = docs[..4].iter().map(|doc| index.delete_doc(doc));
    let counts = futures::future::join_all(deletes).await;
    assert!(counts.into_iter().all(|c| c.unwrap() == 20));
    assert_eq!(index.count().await.unwrap(), 80);
    fx.cleanup().await;
}

/// Filters by document, domain, URL prefix and metadata, each alone and
/// together, agree with [`SearchFilter::matches`] and keep score order.
async fn filtered_search_matches_the_reference(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let mut points = Vec::new();
    for d in 0..6u32 {
        let doc = format!("doc-{d}");
        for i in 0..3u32 {
            let mut p = point(&doc, i, 3, &doc, vector((d * 3 + i) as usize % DIM, 0.2));
            let host = if d % 2 == 0 { "a.example" } else { "b.example" };
            p.payload.url = format!(
                "https://{host}/{}/{doc}",
                if d < 3 { "docs" } else { "blog" }
            );
            p.payload.domain = host.to_owned();
            p.payload.metadata.insert(
                "lang".into(),
                serde_json::json!(if d < 4 { "en" } else { "de" }),
            );
            p.payload
                .metadata
                .insert("year".into(), serde_json::json!(2020 + d as i64));
            p.payload
                .metadata
                .insert("public".into(), serde_json::json!(d != 1));
            points.push(p);
        }
    }
    index.upsert(points.clone()).await.unwrap();
    let meta = |pairs: &[(&str, serde_json::Value)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let filters = [
        SearchFilter::default(),
        SearchFilter {
            doc_id: Some("doc-2".into()),
            ..Default::default()
        },
        SearchFilter {
            domain: Some("b.example".into()),
            ..Default::default()
        },
        SearchFilter {
            url_prefix: Some("https://a.example/docs/".into()),
            ..Default::default()
        },
        SearchFilter {
            url_prefix: Some("https://b.example".into()),
            ..Default::default()
        },
        SearchFilter {
            metadata: meta(&[("lang", serde_json::json!("de"))]),
            ..Default::default()
        },
        SearchFilter {
            metadata: meta(&[("year", serde_json::json!(2023))]),
            ..Default::default()
        },
        SearchFilter {
            metadata: meta(&[("public", serde_json::json!(false))]),
            ..Default::default()
        },
        SearchFilter {
            domain: Some("a.example".into()),
            url_prefix: Some("https://a.example/blog/".into()),
            metadata: meta(&[("lang", serde_json::json!("de"))]),
            ..Default::default()
        },
        SearchFilter {
            domain: Some("nowhere.example".into()),
            ..Default::default()
        },
        SearchFilter {
            domain: Some("b.example".into()),
            url_prefix: Some("https://a.example/".into()),
            ..Default::default()
        },
    ];
    // Every chunk's text says "quoted text", so each mode matches them all.
    let queries = [
        SearchQuery::Dense(vector(1, 0.3)),
        SearchQuery::Sparse(sparse::query("quoted text")),
        SearchQuery::Hybrid {
            dense: vector(1, 0.3),
            sparse: sparse::query("quoted text"),
        },
    ];
    for query in &queries {
        let mode = query.mode();
        for f in &filters {
            let want: std::collections::BTreeSet<Uuid> = points
                .iter()
                .filter(|p| f.matches(&p.payload))
                .map(|p| p.id)
                .collect();
            let hits = search_filtered(index, query, 100, f).await.unwrap();
            let got: std::collections::BTreeSet<Uuid> = hits.iter().map(|h| h.id).collect();
            assert_eq!(got, want, "{mode}: filter {f:?}");
            assert!(
                hits.windows(2).all(|w| w[0].score >= w[1].score),
                "{mode}: score order for {f:?}"
            );
            let top = search_filtered(index, query, 2, f).await.unwrap();
            assert_eq!(top.len(), want.len().min(2), "{mode}: k bounds {f:?}");
            let scores = |h: &[freshet::dataplane::index::Hit]| {
                h.iter().map(|h| h.score).collect::<Vec<_>>()
            };
            assert_eq!(
                scores(&top),
                scores(&hits[..top.len()]),
                "{mode}: the top 2 are the best of all for {f:?}"
            );
        }
    }
    // The stored timestamps and domain come back.
    let hit = &search_filtered(index, &queries[0], 1, &filters[1])
        .await
        .unwrap()[0];
    assert_eq!(hit.payload.domain, "a.example");
    assert!(hit.payload.event_ts_ms > 0 && hit.payload.indexed_ts_ms > hit.payload.event_ts_ms);
    fx.cleanup().await;
}

/// Sparse search ranks by the query's terms (stemmed, stop words ignored,
/// rare terms weigh more); hybrid finds what either side alone finds.
async fn sparse_and_hybrid_rank_by_terms_and_meaning(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let texts = [
        "Refunds are paid within fourteen days of the return.",
        "The glacier report covers melt rates in the Alps.",
        "Shipping takes three days; returns are free.",
        "Opening hours of the harbour office and the ferry.",
        "The ferry timetable changes in winter.",
        "Melt water feeds the rivers below the glacier.",
    ];
    let points: Vec<ChunkPoint> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut p = point(&format!("doc-{i}"), 0, 1, &format!("h{i}"), vector(i, 0.0));
            p.payload.text = (*t).to_owned();
            p
        })
        .collect();
    index.upsert(points.clone()).await.unwrap();
    let ids = |hits: &[freshet::dataplane::index::Hit]| {
        hits.iter()
            .map(|h| h.payload.doc_id.clone())
            .collect::<Vec<_>>()
    };
    let all = SearchFilter::default();
    let sparse_search = |text: &'static str| {
        let query = SearchQuery::Sparse(sparse::query(text));
        let all = all.clone();
        async move { search_filtered(index, &query, 10, &all).await.unwrap() }
    };

    // "refund" stems like "Refunds"; "the" and "of" are stop words.
    let hits = sparse_search("the refund").await;
    assert_eq!(ids(&hits), ["doc-0"], "only doc-0 has the term");
    // Both glacier texts match; "report" only in doc-1, so it ranks first.
    let hits = sparse_search("glacier report").await;
    assert_eq!(ids(&hits), ["doc-1", "doc-5"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);
    // Only stop words: nothing to match, no error.
    let none = SearchQuery::Sparse(sparse::query("the of and"));
    assert!(search_filtered(index, &none, 10, &all)
        .await
        .unwrap()
        .is_empty());

    // Hybrid: the dense side points at doc-4 (its vector), the sparse side
    // at doc-3 ("harbour office"): both are in the answer, and a chunk
    // both sides rank first beats either.
    let hybrid = SearchQuery::Hybrid {
        dense: vector(4, 0.0),
        sparse: sparse::query("harbour office"),
    };
    let hits = search_filtered(index, &hybrid, 3, &all).await.unwrap();
    let got = ids(&hits);
    assert!(
        got.contains(&"doc-4".to_owned()) && got.contains(&"doc-3".to_owned()),
        "{got:?}"
    );
    let both = SearchQuery::Hybrid {
        dense: vector(3, 0.0),
        sparse: sparse::query("harbour office"),
    };
    let hits = search_filtered(index, &both, 3, &all).await.unwrap();
    assert_eq!(hits[0].payload.doc_id, "doc-3");
    assert!(
        hits[0].score > hits[1].score,
        "fused score of agreement is higher"
    );

    // An update replaces the sparse vector with the new text's.
    let mut changed = points[0].clone();
    changed.payload.text = "Exchanges only, no money back.".into();
    index.upsert(vec![changed]).await.unwrap();
    let refund = SearchQuery::Sparse(sparse::query("refund"));
    assert!(search_filtered(index, &refund, 10, &all)
        .await
        .unwrap()
        .is_empty());
    let exchange = SearchQuery::Sparse(sparse::query("exchange"));
    assert_eq!(
        ids(&search_filtered(index, &exchange, 10, &all).await.unwrap()),
        ["doc-0"]
    );
    fx.cleanup().await;
}

/// A `url_prefix` search that needs several pages of candidates returns
/// distinct chunks in every mode (hybrid pages are fused per page).
async fn paged_prefix_search_returns_distinct_chunks(fx: Box<dyn Fixture>) {
    let index = fx.index();
    let points: Vec<ChunkPoint> = (0..120u32)
        .map(|i| {
            let doc = format!("doc-{i}");
            let mut p = point(
                &doc,
                0,
                1,
                &doc,
                vector(i as usize % DIM, 0.1 * (i % 7) as f32),
            );
            p.payload.url = format!(
                "https://a.example/{}/{doc}",
                if i % 4 == 0 { "keep" } else { "other" }
            );
            p.payload.domain = "a.example".into();
            p
        })
        .collect();
    index.upsert(points).await.unwrap();
    let filter = SearchFilter {
        url_prefix: Some("https://a.example/keep/".into()),
        ..Default::default()
    };
    for query in [
        SearchQuery::Dense(vector(1, 0.3)),
        SearchQuery::Sparse(sparse::query("quoted text")),
        SearchQuery::Hybrid {
            dense: vector(1, 0.3),
            sparse: sparse::query("quoted text"),
        },
    ] {
        let hits = search_filtered(index, &query, 25, &filter).await.unwrap();
        let ids: std::collections::BTreeSet<Uuid> = hits.iter().map(|h| h.id).collect();
        assert_eq!(hits.len(), 25, "{}: {} hits", query.mode(), hits.len());
        assert_eq!(ids.len(), 25, "{}: distinct chunks", query.mode());
        assert!(hits.iter().all(|h| h.payload.url.contains("/keep/")));
    }
    fx.cleanup().await;
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod edge {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::EdgeFixture::open(stringify!($name))).await;
                }
            )*
        }
        mod qdrant {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(fx) = super::QdrantFixture::connect(stringify!($name)).await {
                        super::$name(fx).await;
                    }
                }
            )*
        }
    };
}

backend_tests!(
    upsert_then_search_finds_nearest,
    upsert_is_idempotent,
    delete_points_removes_only_those,
    delete_doc_removes_exactly_that_doc,
    doc_state_reports_chunks_and_hash,
    find_doc_hash_skips_except_doc,
    data_survives_reopen,
    bad_vectors_are_invalid,
    empty_operations_are_fine,
    concurrent_writes_and_reads,
    filtered_search_matches_the_reference,
    sparse_and_hybrid_rank_by_terms_and_meaning,
    paged_prefix_search_returns_distinct_chunks,
);

/// A shard written before sparse vectors existed (dense only) gets the
/// `bm25` vector when it is opened, computed from the stored texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_shard_without_sparse_vectors_is_upgraded_on_open() {
    use qdrant_edge::{
        Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PointId, PointInsertOperations,
        PointOperations, PointStructPersisted, UpdateOperation, VectorStructPersisted,
        DEFAULT_VECTOR_NAME,
    };
    let dir = std::env::temp_dir().join(format!("freshet-index-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let texts = [
        "The glacier report covers melt rates.",
        "Ferry timetable for winter.",
    ];
    {
        let config = EdgeConfig::builder()
            .vector(
                DEFAULT_VECTOR_NAME,
                EdgeVectorParams::builder(DIM, Distance::Cosine).build(),
            )
            .build();
        let shard = EdgeShard::new(&dir, config).expect("an old-style shard");
        let points = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut p = point(&format!("old-{i}"), 0, 1, "h", vector(i, 0.0));
                p.payload.text = (*t).to_owned();
                let payload: qdrant_edge::Payload =
                    serde_json::from_value(serde_json::to_value(&p.payload).unwrap()).unwrap();
                PointStructPersisted {
                    id: PointId::Uuid(p.id),
                    vector: VectorStructPersisted::Single(p.vector),
                    payload: Some(payload),
                }
            })
            .collect();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .unwrap();
        shard.flush();
    }
    let index = EdgeIndex::open(&dir, DIM).expect("open and upgrade");
    let q = SearchQuery::Sparse(sparse::query("ferry"));
    let hits = search_filtered(&index, &q, 10, &SearchFilter::default())
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].payload.doc_id, "old-1");
    // Dense search and new writes work as before; reopening does not redo it.
    assert_eq!(
        index.search(vector(0, 0.0), 1).await.unwrap()[0]
            .payload
            .doc_id,
        "old-0"
    );
    drop(index);
    let index = EdgeIndex::open(&dir, DIM).expect("reopen");
    assert_eq!(index.count().await.unwrap(), 2);
    let hits = search_filtered(&index, &q, 10, &SearchFilter::default())
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    drop(index);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- crash (edge)

/// `upsert` is durable when it returns, not only after a clean shutdown: a
/// child process upserts and then aborts (no destructors, no flush on drop);
/// the parent reopens the directory and finds every point.
#[test]
fn edge_upsert_survives_abort() {
    const CHILD_ENV: &str = "FRESHET_INDEX_CRASH_DIR";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // The child: write, then die without any cleanup.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let index = EdgeIndex::open(std::path::Path::new(&dir), DIM).unwrap();
        rt.block_on(index.upsert(corpus())).unwrap();
        rt.block_on(index.delete_doc("b")).unwrap();
        std::process::abort();
    }
    let dir = std::env::temp_dir().join(format!("freshet-index-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "edge_upsert_survives_abort", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index = EdgeIndex::open(&dir, DIM).expect("reopen after the crash");
    assert_eq!(
        rt.block_on(index.count()).unwrap(),
        6,
        "upserts and deletes were durable"
    );
    assert_eq!(
        rt.block_on(index.doc_state("b")).unwrap(),
        DocState::default()
    );
    drop(index);
    std::fs::remove_dir_all(&dir).unwrap();
}
