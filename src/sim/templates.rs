//! HTML site templates. Five layouts (semantic, div soup, old tables, docs,
//! comment-heavy blog) with per-domain class names, all wrapped in the
//! boilerplate a main-content extractor has to remove.
//!
//! Within a site, pages differ: each page draws a [`Look`] from its seed
//! that mixes in the hard cases real sites have — comment threads longer
//! than a short article, promos, ads with copy, figures with captions and
//! share rows *inside* the body container, author bios, old-CMS paragraph
//! markup (`<br><br>`, `<div class="para">`, `<span>`), an article split in
//! two containers around an ad, the headline repeated as `<h1>` in the body,
//! and teaser lists with real prose below the article. Which of these are
//! ground truth is defined in the `corpus` module docs.

use std::fmt::Write;

use super::block::Block;
use super::text::{self, esc, Rng, Topic, Writer};

/// Everything a template needs to draw one article page.
pub struct PageCtx<'a> {
    pub template: usize,
    pub site: &'a str,
    pub domain: &'a str,
    pub charset: &'a str,
    pub canonical: &'a str,
    pub title: &'a str,
    pub author: &'a str,
    pub date: &'a str,
    pub blocks: &'a [Block],
    /// (url, title, teaser) of other pages on the site.
    pub related: &'a [(String, String, String)],
    pub topic: &'a Topic,
    /// Seeds the boilerplate (comments, nav, CSS, JS) of this page.
    pub rng: Rng,
}

pub const NUM_TEMPLATES: usize = 5;

const NAV_WORDS: &[&str] = &[
    "World",
    "Business",
    "Technology",
    "Science",
    "Climate",
    "Opinion",
    "Sports",
    "Culture",
    "Health",
    "Travel",
    "Podcasts",
    "Video",
    "Markets",
    "Cities",
    "Education",
    "Food",
    "Style",
    "Books",
    "Data",
    "Jobs",
];
const BODY_CLASSES: &[&str] = &[
    "post-body",
    "entry-content",
    "story-text",
    "td-post-content",
    "article__content",
    "c-article-body",
    "rich-text",
    "node-body",
];
const FOOTER_WORDS: &[&str] = &[
    "About us",
    "Contact",
    "Careers",
    "Advertise",
    "Privacy policy",
    "Terms of use",
    "Cookie settings",
    "Accessibility",
    "Sitemap",
    "RSS",
    "Newsletters",
    "Corrections",
    "Ethics policy",
    "Help center",
    "Subscribe",
    "Gift subscriptions",
    "Licensing",
    "Press",
    "Events",
    "Archive",
];

fn cookie_banner(o: &mut String, ctx: &mut PageCtx) {
    let id = [
        "cookie-consent",
        "gdpr-banner",
        "cc-window",
        "consent-modal",
        "privacy-notice",
    ][ctx.rng.range(0, 4)];
    let _ = write!(
        o,
        r##"<div id="{id}" class="{id} banner" role="dialog" aria-label="Cookie consent"><div class="{id}__inner"><h3>We value your privacy</h3><p>We and our 214 partners use cookies and similar technologies to store and access information on your device, to personalise content and ads, to provide social media features and to analyse our traffic. We also share information about your use of our site with our social media, advertising and analytics partners who may combine it with other information that you have provided to them or that they have collected from your use of their services. You can change your choices at any time by visiting the privacy settings page linked in the footer of every page.</p><p>By clicking “Accept all” you consent to the processing of your data for these purposes. If you reject, only strictly necessary cookies will be used, which may limit some features of the site such as saved articles and comment notifications.</p><div class="buttons"><button class="accept">Accept all</button><button class="reject">Reject all</button><a href="/privacy">Manage preferences</a></div></div></div>"##
    );
}

fn nav(o: &mut String, ctx: &mut PageCtx) {
    let n = ctx.rng.range(12, 20);
    o.push_str(r##"<nav class="main-nav" aria-label="Main"><ul class="menu">"##);
    for w in NAV_WORDS.iter().take(n) {
        let _ = write!(
            o,
            r##"<li class="menu-item"><a href="/section/{}">{}</a><ul class="sub-menu">"##,
            w.to_lowercase(),
            w
        );
        for k in 0..ctx.rng.range(2, 5) {
            let _ = write!(
                o,
                r##"<li><a href="/section/{}/{}">{} {}</a></li>"##,
                w.to_lowercase(),
                k,
                w,
                ["Latest", "Analysis", "Explainers", "Interviews", "Live"][k % 5]
            );
        }
        o.push_str("</ul></li>");
    }
    o.push_str(r##"</ul><form class="search-form" action="/search"><input type="search" name="q" placeholder="Search"><button>Go</button></form><a class="subscribe-btn" href="/subscribe">Subscribe</a><a class="login" href="/login">Sign in</a></nav>"##);
}

fn breadcrumb(o: &mut String, ctx: &mut PageCtx) {
    let sec = ctx.rng.pick(NAV_WORDS);
    let _ = write!(
        o,
        r##"<nav class="breadcrumb" aria-label="Breadcrumb"><ol><li><a href="/">Home</a></li><li><a href="/section/{}">{}</a></li><li aria-current="page">{}</li></ol></nav>"##,
        sec.to_lowercase(),
        sec,
        esc(ctx.title)
    );
}

fn share(o: &mut String) {
    o.push_str(r##"<div class="share-buttons social-share"><span>Share this article</span><a class="share-fb" href="https://facebook.example/share">Facebook</a><a class="share-x" href="https://x.example/intent">X</a><a class="share-li" href="https://linkedin.example/share">LinkedIn</a><a class="share-mail" href="mailto:?subject=Read">Email</a><button class="copy-link">Copy link</button></div>"##);
}

fn newsletter(o: &mut String, ctx: &mut PageCtx) {
    let _ = write!(
        o,
        r##"<div class="newsletter-signup promo-box"><h3>Get the {} briefing</h3><p>Sign up for our free morning newsletter and get the most important stories delivered to your inbox every weekday, plus exclusive analysis from our reporters and a weekly digest of the best long reads. You can unsubscribe at any time.</p><form action="/newsletter"><input type="email" placeholder="Your email address"><button type="submit">Sign up</button></form><small>By signing up you agree to our terms and privacy policy. This site is protected by reCAPTCHA.</small></div>"##,
        esc(ctx.site)
    );
}

fn author_bio(o: &mut String, ctx: &mut PageCtx) {
    let _ = write!(
        o,
        r##"<div class="author-bio about-author"><img src="/img/authors/{}.jpg" alt=""><div><h4>About {}</h4><p>{} is a senior correspondent covering {} for {}. Before joining the team, they spent eight years reporting for regional newspapers and a technology trade magazine. Follow them for regular updates and send tips securely through our contact page.</p></div></div>"##,
        text::slugify(ctx.author),
        esc(ctx.author),
        esc(ctx.author),
        esc(ctx.topic.name),
        esc(ctx.site)
    );
}

fn related(o: &mut String, ctx: &mut PageCtx, heading: &str) {
    let _ = write!(
        o,
        r##"<section class="related-articles"><h3>{heading}</h3><ul>"##
    );
    for (u, t, teaser) in ctx.related {
        let _ = write!(
            o,
            r##"<li class="related-item"><a href="{}"><h4>{}</h4></a><p class="teaser">{}</p></li>"##,
            esc(u),
            esc(t),
            esc(teaser)
        );
    }
    o.push_str("</ul></section>");
}

fn trending(o: &mut String, ctx: &mut PageCtx) {
    o.push_str(r##"<aside class="sidebar trending-widget"><h3>Trending now</h3><ol>"##);
    for (i, (u, t, _)) in ctx.related.iter().rev().enumerate() {
        let _ = write!(
            o,
            r##"<li><span class="rank">{}</span><a href="{}">{}</a></li>"##,
            i + 1,
            esc(u),
            esc(t)
        );
    }
    o.push_str(r##"</ol><div class="ad-slot ad-sidebar" data-slot="sidebar-1"><span class="ad-label">Advertisement</span><div class="ad-inner">Upgrade your home office today – save 20% on ergonomic chairs. Shop now.</div></div></aside>"##);
}

/// A reader comment thread of `n` top-level comments, some with replies.
fn comments(o: &mut String, ctx: &mut PageCtx, w: &mut Writer, n: usize) {
    let _ = write!(
        o,
        r##"<section id="comments" class="comments-area"><h3>{n} comments</h3><p class="comment-policy">Comments are moderated. Please keep the discussion civil and on topic; see our community guidelines.</p><ol class="comment-list">"##
    );
    for i in 0..n {
        one_comment(o, ctx, w, i, 0);
    }
    o.push_str(r##"</ol><form class="comment-form"><textarea placeholder="Join the discussion"></textarea><button>Post comment</button></form></section>"##);
}

fn one_comment(o: &mut String, ctx: &mut PageCtx, w: &mut Writer, i: usize, depth: usize) {
    let who = text::person(&mut ctx.rng);
    let body = w.comment();
    let id = i * 10 + depth;
    let _ = write!(
        o,
        r##"<li class="comment depth-{}" id="comment-{id}"><div class="comment-author vcard"><b class="fn">{}</b> <span class="says">says:</span></div><div class="comment-meta"><a href="#comment-{id}">{} hours ago</a></div><div class="comment-content"><p>{}</p></div><div class="reply"><a href="#reply">Reply</a> · <a href="#like">Like ({})</a></div>"##,
        depth + 1,
        esc(&who),
        ctx.rng.range(1, 23),
        esc(&body),
        ctx.rng.range(0, 99)
    );
    if depth < 2 && ctx.rng.chance(0.25) {
        o.push_str(r##"<ol class="children">"##);
        for _ in 0..ctx.rng.range(1, 2) {
            one_comment(o, ctx, w, i, depth + 1);
        }
        o.push_str("</ol>");
    }
    o.push_str("</li>");
}

fn footer(o: &mut String, ctx: &mut PageCtx) {
    o.push_str(r##"<footer class="site-footer"><div class="footer-links">"##);
    for w in FOOTER_WORDS {
        let _ = write!(o, r##"<a href="/{}">{}</a> "##, text::slugify(w), w);
    }
    let _ = write!(
        o,
        r##"</div><p class="legal">© 2026 {} Media Group. All rights reserved. Reproduction of material from this site without written permission is strictly prohibited. Our journalism is supported by readers and advertisers; some links on this page are affiliate links and we may earn a commission when you buy through them.</p><p class="address">{} Media Group, 12 Harbour Street, Suite 400. Registered in the simulated web under company number 00{}.</p></footer>"##,
        esc(ctx.site),
        esc(ctx.site),
        ctx.rng.range(100000, 999999)
    );
}

fn inline_ad(o: &mut String, ctx: &mut PageCtx) {
    let _ = write!(
        o,
        r##"<div class="ad-slot inline-ad" data-slot="in-article-{}"><span class="ad-label">Advertisement</span><div class="ad-inner"><a href="https://ads.example/click">Sponsored: the smarter way to manage your cloud spend. Try it free for 30 days.</a></div></div>"##,
        ctx.rng.range(1, 9)
    );
}

/// A large inline stylesheet, as real sites ship.
pub fn big_style(rng: &mut Rng, rules: usize) -> String {
    let mut o = String::from("<style>");
    let props = [
        "margin",
        "padding",
        "color",
        "background",
        "border",
        "font-size",
        "line-height",
        "display",
        "gap",
    ];
    for i in 0..rules {
        let _ = write!(
            o,
            ".c-{}-{}{{{}:{}px {}px;{}:#{:06x};transition:all .{}s ease-in-out}}",
            rng.pick(NAV_WORDS).to_lowercase(),
            i,
            rng.pick(&props),
            rng.range(0, 40),
            rng.range(0, 40),
            rng.pick(&props),
            rng.next_u64() & 0xff_ffff,
            rng.range(1, 9)
        );
        if i % 40 == 0 {
            let _ = write!(
                o,
                "@media (max-width:{}px){{.grid-{i}{{grid-template-columns:1fr}}}}",
                rng.range(480, 1200)
            );
        }
    }
    o.push_str("</style>");
    o
}

/// An inline stylesheet of about `bytes` bytes.
fn style_sized(rng: &mut Rng, bytes: usize) -> String {
    let mut o = String::with_capacity(bytes + 256);
    while o.len() < bytes {
        let chunk = big_style(rng, 40);
        o.push_str(&chunk["<style>".len()..chunk.len() - "</style>".len()]);
    }
    format!("<style>{o}</style>")
}

/// A script bundle of about `bytes` bytes.
fn script_sized(rng: &mut Rng, bytes: usize) -> String {
    // One module is about 230 bytes.
    big_script(rng, (bytes / 230).max(1))
}

/// A minified-looking script bundle.
pub fn big_script(rng: &mut Rng, modules: usize) -> String {
    let mut o = String::from("<script>!function(e){var t={};function n(r){if(t[r])return t[r].exports;var o=t[r]={i:r,l:!1,exports:{}};return e[r].call(o.exports,o,o.exports,n),o.l=!0,o.exports}n.m=e,n.c=t,n(n.s=0)}([");
    for i in 0..modules {
        let _ = write!(o, "function(e,t,n){{\"use strict\";var r=n({}),o=\"{:x}\";e.exports=function(a,b){{return void 0===a?r.f(o,{}):a.map(function(x){{return x*b+{}}})}};window.__m{}=o}},", rng.range(0, modules.max(1)), rng.next_u64(), rng.range(1, 999), rng.range(1, 9999), i);
    }
    o.push_str("function(e,t){window.dataLayer=window.dataLayer||[];window.dataLayer.push({event:'pageview'})}]);</script>");
    o
}

fn json_ld(o: &mut String, ctx: &PageCtx) {
    let v = serde_json::json!({"@context": "https://schema.org", "@type": "NewsArticle", "headline": ctx.title, "datePublished": ctx.date, "author": {"@type": "Person", "name": ctx.author}, "publisher": {"@type": "Organization", "name": ctx.site}});
    let _ = write!(o, r##"<script type="application/ld+json">{v}</script>"##);
}

fn head(o: &mut String, ctx: &mut PageCtx, style_bytes: usize) {
    let _ = write!(
        o,
        r##"<!DOCTYPE html><html lang="en"><head><meta charset="{}"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} | {}</title><link rel="canonical" href="{}"><meta property="og:title" content="{}"><meta name="description" content="{}">"##,
        ctx.charset,
        esc(ctx.title),
        esc(ctx.site),
        esc(ctx.canonical),
        esc(ctx.title),
        esc(ctx.title)
    );
    o.push_str(&style_sized(&mut ctx.rng, style_bytes));
    json_ld(o, ctx);
    o.push_str("</head>");
}

fn tail_scripts(o: &mut String, ctx: &mut PageCtx, script_bytes: usize) {
    o.push_str(&script_sized(&mut ctx.rng, script_bytes));
    o.push_str(r##"<script async src="https://analytics.example/tag.js"></script>"##);
}

/// How paragraphs are marked up (all of them are ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParaStyle {
    /// `<p>`.
    P,
    /// Old CMS: text runs separated by `<br><br>` directly in the container.
    BrBr,
    /// `<div class="para">`.
    DivPara,
    /// `<span>` followed by `<br><br>`.
    Span,
}

/// Non-truth material inserted into the article body container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    Figure,
    ReadMore,
    RelatedList,
    Newsletter,
    Ad,
    Share,
}

/// The per-page choice of hard-but-realistic features; see the module docs.
#[derive(Debug)]
struct Look {
    para: ParaStyle,
    h1_in_body: bool,
    /// (after block index, what) — inserted after that block.
    inserts: Vec<(usize, Insert)>,
    /// Close the body container after this block, show an interstitial,
    /// and continue the article in a second container.
    split_after: Option<usize>,
    bio_in_body: bool,
    teasers: bool,
    /// Number of top-level reader comments (0 = no comment section).
    comments: usize,
    /// Comments nested in the article element just after the body, rather
    /// than a sibling section further down.
    comments_nested: bool,
}

fn choose_look(ctx: &mut PageCtx) -> Look {
    let t = ctx.template % NUM_TEMPLATES;
    let n = ctx.blocks.len();
    let words: usize = ctx.blocks.iter().map(Block::words).sum();
    let r = &mut ctx.rng;
    let docs = t == 3;
    let para = match t {
        1 if r.chance(0.4) => ParaStyle::DivPara,
        2 => match r.range(0, 9) {
            0..=4 => ParaStyle::BrBr,
            5 | 6 => ParaStyle::Span,
            _ => ParaStyle::P,
        },
        4 if r.chance(0.15) => ParaStyle::DivPara,
        _ => ParaStyle::P,
    };
    let last = n.saturating_sub(2);
    let mut inserts = Vec::new();
    let mut add = |r: &mut Rng, p: f64, max: usize, what: Insert| {
        if r.chance(p) {
            for _ in 0..r.range(1, max.max(1)) {
                inserts.push((r.range(0, last), what));
            }
        }
    };
    if docs {
        add(r, 0.2, 1, Insert::Figure);
        add(r, 0.15, 1, Insert::RelatedList);
    } else {
        add(r, 0.6, (n / 4).clamp(1, 3), Insert::Figure);
        add(r, 0.55, (n / 5).clamp(1, 3), Insert::ReadMore);
        add(r, 0.2, 1, Insert::RelatedList);
        add(r, 0.25, 1, Insert::Newsletter);
        // In-article ads are a site policy: news sites mostly run them,
        // personal blogs mostly do not.
        let ads_share = [0.85, 0.5, 0.85, 0.0, 0.25][t];
        let site_ads = (text::hash_str(5, ctx.domain) % 100) as f64 / 100.0 < ads_share;
        if site_ads {
            add(r, 0.9, 1 + n / 8, Insert::Ad);
        }
        if r.chance(0.25) {
            inserts.push((n.saturating_sub(1), Insert::Share));
        }
    }
    inserts.sort_by_key(|x| x.0);
    let split_after = (t != 3 && n >= 6 && r.chance(0.25)).then(|| n / 2 - 1);
    let brief = words < 300;
    // Whether a site has comments is mostly a site policy; articles on such
    // a site sometimes have them closed. On briefs the thread is usually
    // longer than the article (a comment averages ~45 words).
    let site_comments = t == 4 || (t != 3 && text::hash_str(3, ctx.domain) % 3 != 0);
    let comments = if docs {
        if r.chance(0.15) {
            r.range(2, 6)
        } else {
            0
        }
    } else if site_comments && (t == 4 || r.chance(0.8)) {
        if brief {
            (words * r.range(8, 40) / 10 / 45).clamp(3, 50)
        } else {
            r.range(3, 24)
        }
    } else {
        0
    };
    Look {
        para,
        h1_in_body: t != 3 && r.chance(0.25),
        inserts,
        split_after,
        bio_in_body: matches!(t, 0 | 1 | 4) && r.chance(0.35),
        teasers: !docs && r.chance(0.6),
        comments,
        comments_nested: r.chance(0.35),
    }
}

const AD_COPY: &[&str] = &[
    "Thousands of small businesses already use our accounting platform to send invoices, track expenses and get paid faster.",
    "Planning a trip this autumn? Compare hotel prices across hundreds of booking sites and save up to 40 percent.",
    "Our online courses are taught by industry experts and fit around your schedule, with a certificate at the end.",
    "Switch your energy supplier in five minutes and lock in a fixed rate for the next two years.",
    "The new model combines a longer battery life with a lighter frame, and it ships free this week only.",
    "Protect your family with life insurance from a provider rated excellent by more than ten thousand customers.",
    "Meal kits with fresh local ingredients, delivered to your door, with your first box half price.",
    "Get a free quote for solar installation on your roof from certified installers near you.",
];

fn ad_with_copy(o: &mut String, ctx: &mut PageCtx) {
    let _ = write!(
        o,
        r##"<div class="ad-slot inline-ad" data-slot="in-article-{}"><span class="ad-label">Advertisement</span><div class="ad-inner"><p>{}</p><a class="ad-cta" href="https://ads.example/click">Learn more</a></div></div>"##,
        ctx.rng.range(1, 9),
        esc(ctx.rng.word(AD_COPY))
    );
}

fn figure(o: &mut String, ctx: &mut PageCtx, w: &mut Writer) {
    let cap = w.caption();
    let (text, credit) = cap.split_once(". Photo: ").unwrap_or((&cap, "Staff"));
    let k = ctx.rng.range(1, 99);
    let slug = text::slugify(ctx.title);
    match ctx.rng.range(0, 2) {
        0 => {
            let _ = write!(
                o,
                r##"<figure class="article-figure"><img src="/img/2026/{slug}-{k}.jpg" alt="{}" loading="lazy" width="1200" height="800"><figcaption><span class="caption-text">{}.</span> <span class="credit">Photo: {}</span></figcaption></figure>"##,
                esc(text),
                esc(text),
                esc(credit)
            );
        }
        1 => {
            let _ = write!(
                o,
                r##"<div class="wp-caption"><img src="/uploads/{slug}-{k}.jpg" alt="" width="640"><p class="wp-caption-text">{}. ({})</p></div>"##,
                esc(text),
                esc(credit)
            );
        }
        _ => {
            let _ = write!(
                o,
                r##"<figure><picture><source srcset="/img/{slug}-{k}.webp" type="image/webp"><img src="/img/{slug}-{k}.jpg" alt="{}"></picture><figcaption>{}. Photograph: {}</figcaption></figure>"##,
                esc(text),
                esc(text),
                esc(credit)
            );
        }
    }
}

fn read_more(o: &mut String, ctx: &mut PageCtx) {
    let (u, t, _) = ctx.rng.pick(ctx.related).clone();
    let (u, t) = (esc(&u), esc(&t));
    let _ = match ctx.rng.range(0, 3) {
        0 => write!(
            o,
            r##"<p><strong>Read more:</strong> <a href="{u}">{t}</a></p>"##
        ),
        1 => write!(
            o,
            r##"<p class="related-link">Related: <a href="{u}">{t}</a></p>"##
        ),
        2 => write!(o, r##"<p><em>Also read: <a href="{u}">{t}</a></em></p>"##),
        _ => write!(
            o,
            r##"<aside class="pullout-link"><span>Read next</span> <a href="{u}">{t}</a></aside>"##
        ),
    };
}

fn related_list(o: &mut String, ctx: &mut PageCtx) {
    o.push_str(r##"<div class="inline-related"><h4>Related coverage</h4><ul>"##);
    for (u, t, _) in ctx.related.iter().take(3) {
        let _ = write!(o, r##"<li><a href="{}">{}</a></li>"##, esc(u), esc(t));
    }
    o.push_str("</ul></div>");
}

fn about_the_author(o: &mut String, ctx: &mut PageCtx, w: &mut Writer) {
    if ctx.rng.chance(0.5) {
        author_bio(o, ctx);
        return;
    }
    let extra = w.sentence();
    let _ = write!(
        o,
        r##"<div class="about-the-author"><h3>About the author</h3><p>{} has written about {} for {} since {}. {}</p></div>"##,
        esc(ctx.author),
        esc(ctx.topic.name),
        esc(ctx.site),
        ctx.rng.range(2012, 2024),
        esc(&extra)
    );
}

/// The interstitial between the two halves of a split article.
fn interstitial(o: &mut String, ctx: &mut PageCtx) {
    match ctx.rng.range(0, 2) {
        0 => {
            o.push_str(r##"<div class="continue-reading"><p>Continue reading below</p></div>"##);
            ad_with_copy(o, ctx);
        }
        1 => {
            let (u, t, s) = ctx.rng.pick(ctx.related).clone();
            let _ = write!(
                o,
                r##"<aside class="mid-article-promo"><h4>Don't miss</h4><a href="{}">{}</a><p>{}</p></aside>"##,
                esc(&u),
                esc(&t),
                esc(&s)
            );
        }
        _ => {
            ad_with_copy(o, ctx);
            o.push_str(r##"<p class="story-continues">Story continues after advertisement</p>"##);
        }
    }
}

fn block(o: &mut String, b: &Block, style: ParaStyle, old: bool) {
    match b {
        Block::P(t) => {
            let _ = match style {
                ParaStyle::P => write!(o, "<p>{}</p>", esc(t)),
                ParaStyle::BrBr => write!(o, "{}<br><br>", esc(t)),
                ParaStyle::DivPara => write!(o, r##"<div class="para">{}</div>"##, esc(t)),
                ParaStyle::Span => write!(o, r##"<span class="text">{}</span><br><br>"##, esc(t)),
            };
            if old {
                o.push('\n');
            }
        }
        Block::H2(t) => {
            let _ = match style {
                ParaStyle::BrBr => write!(o, "<b>{}</b><br><br>", esc(t)),
                _ if old || style == ParaStyle::Span => write!(o, "<h3>{}</h3>", esc(t)),
                _ => write!(o, "<h2>{}</h2>", esc(t)),
            };
        }
        Block::List(items) => {
            o.push_str("<ul>");
            for it in items {
                let _ = write!(o, "<li>{}</li>", esc(it));
            }
            o.push_str("</ul>");
        }
        Block::Quote(t) => {
            let _ = write!(o, "<blockquote><p>{}</p></blockquote>", esc(t));
        }
        Block::Summary(label, items) => {
            let _ = write!(
                o,
                r##"<div class="key-takeaways"><p class="kt-label"><strong>{}</strong></p><ul>"##,
                esc(label)
            );
            for it in items {
                let _ = write!(o, "<li>{}</li>", esc(it));
            }
            o.push_str("</ul></div>");
        }
        Block::Table(head, rows) => {
            o.push_str(r##"<table class="data-table"><thead><tr>"##);
            for h in head {
                let _ = write!(o, "<th>{}</th>", esc(h));
            }
            o.push_str("</tr></thead><tbody>");
            for row in rows {
                o.push_str("<tr>");
                for c in row {
                    let _ = write!(o, "<td>{}</td>", esc(c));
                }
                o.push_str("</tr>");
            }
            o.push_str("</tbody></table>");
        }
        Block::Code(t) => {
            let _ = write!(
                o,
                r##"<pre class="highlight"><code>{}</code></pre>"##,
                esc(t)
            );
        }
    }
}

/// The article body container(s): blocks (ground truth) plus the inserted
/// non-truth material chosen in `look`.
fn body_blocks(o: &mut String, ctx: &mut PageCtx, look: &Look, open: &str, w: &mut Writer) {
    let blocks = ctx.blocks;
    let old = ctx.template % NUM_TEMPLATES == 2;
    o.push_str(open);
    if look.h1_in_body {
        let _ = write!(o, r##"<h1 class="headline">{}</h1>"##, esc(ctx.title));
    }
    for (i, b) in blocks.iter().enumerate() {
        block(o, b, look.para, old);
        for &(at, what) in &look.inserts {
            if at != i {
                continue;
            }
            match what {
                Insert::Figure => figure(o, ctx, w),
                Insert::ReadMore => read_more(o, ctx),
                Insert::RelatedList => related_list(o, ctx),
                Insert::Newsletter => newsletter(o, ctx),
                Insert::Ad if ctx.rng.chance(0.3) => inline_ad(o, ctx),
                Insert::Ad => ad_with_copy(o, ctx),
                Insert::Share => share(o),
            }
        }
        if look.split_after == Some(i) {
            o.push_str("</div>");
            interstitial(o, ctx);
            o.push_str(open);
        }
    }
    if look.bio_in_body {
        about_the_author(o, ctx, w);
    }
    o.push_str("</div>");
}

/// "More from {section}": teasers with real prose snippets (not truth).
fn teasers(o: &mut String, ctx: &mut PageCtx, w: &mut Writer) {
    let sec = *ctx.rng.pick(NAV_WORDS);
    let _ = write!(
        o,
        r##"<section class="more-from"><h3>More from {sec}</h3><div class="teaser-list">"##
    );
    for (u, t, _) in ctx.related.iter().take(5) {
        let snippet = format!("{} {}", w.sentence(), w.sentence());
        let _ = write!(
            o,
            r##"<article class="teaser"><h4><a href="{}">{}</a></h4><p>{}</p><span class="teaser-meta">{} min read</span></article>"##,
            esc(u),
            esc(t),
            esc(&snippet),
            ctx.rng.range(2, 15)
        );
    }
    o.push_str("</div></section>");
}

fn docs_sidebar(o: &mut String, ctx: &mut PageCtx) {
    o.push_str(r##"<nav class="sidebar-nav docs-sidebar" aria-label="Documentation">"##);
    let sections = [
        (
            "Getting started",
            ["Installation", "Quick start", "Concepts", "First project"],
        ),
        (
            "Guides",
            ["Configuring", "Deploying", "Monitoring", "Troubleshooting"],
        ),
        (
            "Reference",
            ["API overview", "CLI flags", "Settings", "Error codes"],
        ),
        (
            "Operations",
            ["Scaling", "Backups", "Upgrading", "Security"],
        ),
        (
            "Community",
            ["Contributing", "Release notes", "Roadmap", "FAQ"],
        ),
    ];
    for (h, items) in sections {
        let _ = write!(o, "<h5>{h}</h5><ul>");
        for k in 0..ctx.rng.range(6, 14) {
            let _ = write!(
                o,
                r##"<li><a href="/docs/{}/{k}">{} {}</a></li>"##,
                text::slugify(h),
                items[k % 4],
                if k < 4 { "" } else { ctx.topic.name }
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</nav>");
}

/// The escaped page metadata and body class every template writes.
struct Meta {
    bc: &'static str,
    title: String,
    site: String,
    author: String,
    date: String,
}

/// Draw a complete article page with the template `ctx.template`.
pub fn render(mut ctx: PageCtx) -> String {
    let ctx = &mut ctx;
    let look = choose_look(ctx);
    let mut w = Writer::new(ctx.rng.next_u64(), ctx.topic, false);
    let w = &mut w;
    let mut o = String::with_capacity(64 * 1024);
    let bc = BODY_CLASSES[(text::hash_str(0, ctx.domain) % BODY_CLASSES.len() as u64) as usize];
    let meta = Meta {
        bc,
        title: esc(ctx.title),
        site: esc(ctx.site),
        author: esc(ctx.author),
        date: esc(ctx.date),
    };
    match ctx.template % NUM_TEMPLATES {
        0 => template_news(&mut o, ctx, &look, w, &meta),
        1 => template_bootstrap(&mut o, ctx, &look, w, &meta),
        2 => template_table_layout(&mut o, ctx, &look, w, &meta),
        3 => template_docs(&mut o, ctx, &look, w, &meta),
        _ => template_blog(&mut o, ctx, &look, w, &meta),
    }
    // Real article pages weigh 50-150 KB, mostly CSS and JS: size the
    // stylesheet and script bundle so the whole page lands in that range.
    let target = ctx.rng.range(60_000, 140_000);
    let rest = target.saturating_sub(o.len() + 1_500);
    let style = (rest * ctx.rng.range(30, 50) / 100).max(3_000);
    let script = rest.saturating_sub(style).max(3_000);
    let mut page = String::with_capacity(o.len() + style + script + 4_096);
    head(&mut page, ctx, style);
    page.push_str(&o);
    tail_scripts(&mut page, ctx, script);
    page.push_str("</body></html>");
    page
}
/// A news site: header, story, share bar, bio, comments, teasers, trending.
fn template_news(o: &mut String, ctx: &mut PageCtx, look: &Look, w: &mut Writer, m: &Meta) {
    let Meta {
        bc,
        title,
        site,
        author,
        date,
    } = m;
    let n_comments = look.comments;
    o.push_str("<body class=\"article-page\">");
    cookie_banner(o, ctx);
    let _ = write!(
        o,
        r##"<header class="site-header"><a class="logo" href="/">{site}</a>"##
    );
    nav(o, ctx);
    o.push_str("</header><main id=\"main\">");
    breadcrumb(o, ctx);
    let _ = write!(
        o,
        r##"<article class="story"><header class="story-header"><h1>{title}</h1><p class="byline">By <a rel="author" href="/authors/x">{author}</a> · <time datetime="{date}">{date}</time> · 6 min read</p></header>"##
    );
    share(o);
    let open = format!(r##"<div class="{bc}" itemprop="articleBody">"##);
    body_blocks(o, ctx, look, &open, w);
    o.push_str("<footer class=\"story-footer\">");
    share(o);
    if !look.bio_in_body {
        author_bio(o, ctx);
    }
    o.push_str("</footer>");
    if look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str("</article>");
    newsletter(o, ctx);
    if look.teasers {
        teasers(o, ctx, w);
    } else {
        related(o, ctx, "Related stories");
    }
    trending(o, ctx);
    if !look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str("</main>");
    footer(o, ctx);
}

/// A Bootstrap-style page: top bar, content column, sidebar.
fn template_bootstrap(o: &mut String, ctx: &mut PageCtx, look: &Look, w: &mut Writer, m: &Meta) {
    let Meta {
        bc,
        title,
        author,
        date,
        ..
    } = m;
    let n_comments = look.comments;
    o.push_str("<body><div id=\"wrapper\"><div class=\"top-bar\">");
    nav(o, ctx);
    o.push_str("</div>");
    cookie_banner(o, ctx);
    o.push_str(r##"<div class="container"><div class="row"><div class="col-md-8 col-content">"##);
    let _ = write!(
        o,
        r##"<div class="post"><div class="post-header"><div class="post-title h1">{title}</div><div class="post-meta"><span class="author">{author}</span><span class="sep">|</span><span class="date">{date}</span><span class="cat">Filed under: {}</span></div></div>"##,
        esc(ctx.topic.name)
    );
    let open = format!(r##"<div class="{bc} clearfix">"##);
    body_blocks(o, ctx, look, &open, w);
    o.push_str("<div class=\"post-tags\">Tags: <a href=\"/tag/a\">analysis</a> <a href=\"/tag/b\">features</a></div>");
    share(o);
    if !look.bio_in_body {
        author_bio(o, ctx);
    }
    if look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str("</div>");
    if look.teasers {
        teasers(o, ctx, w);
    } else {
        related(o, ctx, "You may also like");
    }
    if !look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str(r##"</div><div class="col-md-4 sidebar-col">"##);
    newsletter(o, ctx);
    trending(o, ctx);
    o.push_str("</div></div></div>");
    footer(o, ctx);
    o.push_str("</div>");
}

/// A table-layout page of the early web: masthead, left nav, content, right column.
fn template_table_layout(o: &mut String, ctx: &mut PageCtx, look: &Look, w: &mut Writer, m: &Meta) {
    let Meta {
        title,
        site,
        author,
        date,
        ..
    } = m;
    let n_comments = look.comments;
    o.push_str(r##"<body bgcolor="#ffffff"><center><table width="980" border="0" cellpadding="0" cellspacing="0"><tr><td colspan="3" class="masthead">"##);
    let _ = write!(
        o,
        r##"<font size="6" face="Georgia"><b>{site}</b></font><br>"##
    );
    nav(o, ctx);
    o.push_str(r##"</td></tr><tr><td width="180" valign="top" class="leftnav">"##);
    for (u, t, _) in ctx.related.iter() {
        let _ = write!(
            o,
            r##"<a href="{}"><font size="2">{}</font></a><br><br>"##,
            esc(u),
            esc(t)
        );
    }
    o.push_str(r##"</td><td width="600" valign="top" class="content">"##);
    cookie_banner(o, ctx);
    let _ = write!(
        o,
        r##"<font size="5"><b>{title}</b></font><br><font size="2" color="#666666">Posted by {author} on {date}</font><hr>"##
    );
    body_blocks(o, ctx, look, r##"<div class="articletext">"##, w);
    if look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str("<hr>");
    share(o);
    if look.teasers {
        teasers(o, ctx, w);
    } else {
        related(o, ctx, "More from this section");
    }
    if !look.comments_nested && n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str(r##"</td><td width="200" valign="top" class="rightcol">"##);
    trending(o, ctx);
    newsletter(o, ctx);
    o.push_str(r##"</td></tr><tr><td colspan="3">"##);
    footer(o, ctx);
    o.push_str("</td></tr></table></center>");
}

/// A documentation page: sidebar, breadcrumb, content, table of contents.
fn template_docs(o: &mut String, ctx: &mut PageCtx, look: &Look, w: &mut Writer, m: &Meta) {
    let Meta {
        bc,
        title,
        site,
        date,
        ..
    } = m;
    let n_comments = look.comments;
    o.push_str(r##"<body class="docs"><div class="docs-header">"##);
    let _ = write!(
        o,
        r##"<a class="brand" href="/">{site} Docs</a><span class="version">v3.{} </span>"##,
        ctx.rng.range(0, 12)
    );
    nav(o, ctx);
    o.push_str(r##"</div><div class="docs-layout">"##);
    docs_sidebar(o, ctx);
    o.push_str(r##"<div class="docs-content" role="main">"##);
    breadcrumb(o, ctx);
    let _ = write!(
        o,
        r##"<h1 class="page-title">{title}</h1><div class="page-meta">Last updated {date} · Edit this page on GitHub</div>"##
    );
    let open = format!(r##"<div class="markdown-body {bc}">"##);
    body_blocks(o, ctx, look, &open, w);
    o.push_str(r##"<div class="page-nav"><a class="prev" href="/docs/prev">← Previous: Installation</a><a class="next" href="/docs/next">Next: Configuration →</a></div><div class="feedback-widget"><p>Was this page helpful?</p><button>Yes</button><button>No</button><p>Help us improve the documentation by telling us what was missing or confusing on this page. Your feedback goes straight to the docs team.</p></div>"##);
    if n_comments > 0 {
        comments(o, ctx, w, n_comments);
    }
    o.push_str(r##"</div><div class="toc-col"><h5>On this page</h5><ul>"##);
    for b in ctx.blocks {
        if let Block::H2(h) = b {
            let _ = write!(
                o,
                r##"<li><a href="#{}">{}</a></li>"##,
                text::slugify(h),
                esc(h)
            );
        }
    }
    o.push_str("</ul></div></div>");
    cookie_banner(o, ctx);
    related(o, ctx, "See also");
    footer(o, ctx);
}

/// A blog post: masthead, entry, widget area.
fn template_blog(o: &mut String, ctx: &mut PageCtx, look: &Look, w: &mut Writer, m: &Meta) {
    let Meta {
        bc,
        title,
        site,
        author,
        date,
    } = m;
    let n_comments = look.comments;
    o.push_str(r##"<body class="single-post"><div class="site"><header class="masthead">"##);
    let _ = write!(
        o,
        r##"<h2 class="site-title"><a href="/">{site}</a></h2><p class="site-description">Notes, essays and occasional rants</p>"##
    );
    nav(o, ctx);
    o.push_str(r##"</header><div class="content-area"><div class="entry hentry">"##);
    let _ = write!(
        o,
        r##"<h1 class="entry-title">{title}</h1><div class="entry-meta">Posted on <span class="published">{date}</span> by <span class="author vcard">{author}</span> — {n_comments} Comments</div>"##
    );
    let open = format!(r##"<div class="{bc}">"##);
    body_blocks(o, ctx, look, &open, w);
    share(o);
    if !look.bio_in_body {
        author_bio(o, ctx);
    }
    if look.comments_nested {
        comments(o, ctx, w, n_comments);
    }
    o.push_str("</div>");
    if look.teasers {
        teasers(o, ctx, w);
    } else {
        related(o, ctx, "Related posts");
    }
    if !look.comments_nested {
        comments(o, ctx, w, n_comments);
    }
    o.push_str(r##"</div><div class="widget-area">"##);
    newsletter(o, ctx);
    trending(o, ctx);
    o.push_str("</div>");
    footer(o, ctx);
    cookie_banner(o, ctx);
    o.push_str("</div>");
}

/// A JavaScript-only application shell: no article text in the markup.
/// With `embed_state` the article sits in a JSON state blob inside a
/// `<script>`, which an extractor must not treat as page content.
/// The app of a JS shell: it takes the article from the embedded state
/// (`__NEXT_DATA__`) when the page has one, else fetches it from
/// `/_content/<path>` (JSON), and writes it into `#root`. Only a client
/// that runs the script sees the article.
const SHELL_APP: &str = r##"<script>(function(){
function el(t,x){var e=document.createElement(t);if(x!=null)e.textContent=x;return e}
function list(items){var u=el('ul');items.forEach(function(i){u.appendChild(el('li',i))});return u}
function render(d){var a=el('article');a.appendChild(el('h1',d.title));if(d.author){a.appendChild(el('p','By '+d.author))}
d.blocks.forEach(function(b){var k=Object.keys(b)[0],v=b[k];
if(k==='P')a.appendChild(el('p',v));
else if(k==='H2')a.appendChild(el('h2',v));
else if(k==='Quote')a.appendChild(el('blockquote',v));
else if(k==='Code'){var p=el('pre');p.appendChild(el('code',v));a.appendChild(p)}
else if(k==='List')a.appendChild(list(v));
else if(k==='Summary'){var s=el('section');s.appendChild(el('strong',v[0]));s.appendChild(list(v[1]));a.appendChild(s)}
else if(k==='Table'){var t=el('table'),th=el('thead'),h=el('tr'),tb=el('tbody');v[0].forEach(function(c){h.appendChild(el('th',c))});th.appendChild(h);t.appendChild(th);
v[1].forEach(function(r){var tr=el('tr');r.forEach(function(c){tr.appendChild(el('td',c))});tb.appendChild(tr)});t.appendChild(tb);a.appendChild(t)}});
document.getElementById('root').appendChild(a)}
var s=document.getElementById('__NEXT_DATA__');
if(s){render(JSON.parse(s.textContent).props.pageProps.article)}
else{fetch('/_content'+location.pathname,{headers:{'Accept':'application/json'}}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.json()}).then(render)['catch'](function(e){document.getElementById('root').textContent='Could not load the article: '+e.message})}
})();</script>"##;

pub fn js_shell(ctx: &mut PageCtx, embed_state: bool) -> String {
    let mut o = String::with_capacity(120 * 1024);
    let _ = write!(
        o,
        r##"<!DOCTYPE html><html lang="en"><head><meta charset="{}"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} | {}</title><link rel="preload" href="/static/js/main.{:x}.js" as="script">"##,
        ctx.charset,
        esc(ctx.title),
        esc(ctx.site),
        ctx.rng.next_u64()
    );
    let rules = ctx.rng.range(60, 150);
    o.push_str(&big_style(&mut ctx.rng, rules));
    o.push_str(r##"</head><body><noscript>You need to enable JavaScript to run this app. Please enable JavaScript in your browser settings and reload the page.</noscript><div id="root"></div>"##);
    if embed_state {
        let v = serde_json::json!({"props": {"pageProps": {"article": {"title": ctx.title, "author": ctx.author, "blocks": ctx.blocks}}}, "page": "/article/[slug]", "buildId": "sim"});
        // Keep `</` out of the script element.
        let _ = write!(
            o,
            r##"<script id="__NEXT_DATA__" type="application/json">{}</script>"##,
            v.to_string().replace("</", "<\\/")
        );
    }
    o.push_str(SHELL_APP);
    let m = ctx.rng.range(500, 900);
    o.push_str(&big_script(&mut ctx.rng, m));
    o.push_str("</body></html>");
    o
}
