//! HTML site templates. Five layouts (semantic, div soup, old tables, docs,
//! comment-heavy blog) with per-domain class names, all wrapped in the
//! boilerplate a main-content extractor has to remove.

use std::fmt::Write;

use super::corpus::Block;
use super::text::{self, esc, Rng, Topic};

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

fn comments(o: &mut String, ctx: &mut PageCtx, lo: usize, hi: usize) {
    let n = ctx.rng.range(lo, hi);
    let _ = write!(
        o,
        r##"<section id="comments" class="comments-area"><h3>{n} comments</h3><p class="comment-policy">Comments are moderated. Please keep the discussion civil and on topic; see our community guidelines.</p><ol class="comment-list">"##
    );
    for i in 0..n {
        let who = text::person(&mut ctx.rng);
        let body = text::comment(&mut ctx.rng, ctx.topic);
        let _ = write!(
            o,
            r##"<li class="comment" id="comment-{i}"><div class="comment-author vcard"><b class="fn">{}</b> <span class="says">says:</span></div><div class="comment-meta"><a href="#comment-{i}">{} hours ago</a></div><div class="comment-content"><p>{}</p></div><div class="reply"><a href="#reply">Reply</a> · <a href="#like">Like ({})</a></div></li>"##,
            esc(&who),
            ctx.rng.range(1, 23),
            esc(&body),
            ctx.rng.range(0, 99)
        );
    }
    o.push_str(r##"</ol><form class="comment-form"><textarea placeholder="Join the discussion"></textarea><button>Post comment</button></form></section>"##);
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

fn head(o: &mut String, ctx: &mut PageCtx) {
    let rules = ctx.rng.range(250, 700);
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
    o.push_str(&big_style(&mut ctx.rng, rules));
    json_ld(o, ctx);
    o.push_str("</head>");
}

fn tail_scripts(o: &mut String, ctx: &mut PageCtx) {
    let m = ctx.rng.range(120, 380);
    o.push_str(&big_script(&mut ctx.rng, m));
    o.push_str(r##"<script async src="https://analytics.example/tag.js"></script>"##);
}

/// The article body: blocks plus inline ads (the ads are not ground truth).
fn body_blocks(o: &mut String, ctx: &mut PageCtx, old_style: bool) {
    let blocks = ctx.blocks;
    for (i, b) in blocks.iter().enumerate() {
        match b {
            Block::P(t) => {
                let _ = write!(o, "<p>{}</p>", esc(t));
                if old_style {
                    o.push('\n');
                }
            }
            Block::H2(t) => {
                if old_style {
                    let _ = write!(o, "<h3>{}</h3>", esc(t));
                } else {
                    let _ = write!(o, "<h2>{}</h2>", esc(t));
                }
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
        }
        if i == 2 || (i > 0 && i % 6 == 0 && i + 1 < blocks.len()) {
            inline_ad(o, ctx);
        }
    }
}

/// Draw a complete article page with the template `ctx.template`.
pub fn render(mut ctx: PageCtx) -> String {
    let mut o = String::with_capacity(96 * 1024);
    let ctx = &mut ctx;
    head(&mut o, ctx);
    let bc = BODY_CLASSES[(text::hash_str(0, ctx.domain) % BODY_CLASSES.len() as u64) as usize];
    let (title, site, author, date) = (
        esc(ctx.title),
        esc(ctx.site),
        esc(ctx.author),
        esc(ctx.date),
    );
    match ctx.template % NUM_TEMPLATES {
        0 => {
            o.push_str("<body class=\"article-page\">");
            cookie_banner(&mut o, ctx);
            let _ = write!(
                o,
                r##"<header class="site-header"><a class="logo" href="/">{site}</a>"##
            );
            nav(&mut o, ctx);
            o.push_str("</header><main id=\"main\">");
            breadcrumb(&mut o, ctx);
            let _ = write!(
                o,
                r##"<article class="story"><header class="story-header"><h1>{title}</h1><p class="byline">By <a rel="author" href="/authors/x">{author}</a> · <time datetime="{date}">{date}</time> · 6 min read</p></header>"##
            );
            share(&mut o);
            let _ = write!(o, r##"<div class="{bc}" itemprop="articleBody">"##);
            body_blocks(&mut o, ctx, false);
            o.push_str("</div><footer class=\"story-footer\">");
            share(&mut o);
            author_bio(&mut o, ctx);
            o.push_str("</footer></article>");
            newsletter(&mut o, ctx);
            related(&mut o, ctx, "Related stories");
            trending(&mut o, ctx);
            comments(&mut o, ctx, 3, 6);
            o.push_str("</main>");
            footer(&mut o, ctx);
        }
        1 => {
            o.push_str("<body><div id=\"wrapper\"><div class=\"top-bar\">");
            nav(&mut o, ctx);
            o.push_str("</div>");
            cookie_banner(&mut o, ctx);
            o.push_str(
                r##"<div class="container"><div class="row"><div class="col-md-8 col-content">"##,
            );
            let _ = write!(
                o,
                r##"<div class="post"><div class="post-header"><div class="post-title h1">{title}</div><div class="post-meta"><span class="author">{author}</span><span class="sep">|</span><span class="date">{date}</span><span class="cat">Filed under: {}</span></div></div>"##,
                esc(ctx.topic.name)
            );
            let _ = write!(o, r##"<div class="{bc} clearfix">"##);
            body_blocks(&mut o, ctx, false);
            o.push_str("</div><div class=\"post-tags\">Tags: <a href=\"/tag/a\">analysis</a> <a href=\"/tag/b\">features</a></div>");
            share(&mut o);
            author_bio(&mut o, ctx);
            o.push_str("</div>");
            related(&mut o, ctx, "You may also like");
            comments(&mut o, ctx, 2, 5);
            o.push_str(r##"</div><div class="col-md-4 sidebar-col">"##);
            newsletter(&mut o, ctx);
            trending(&mut o, ctx);
            o.push_str("</div></div></div>");
            footer(&mut o, ctx);
            o.push_str("</div>");
        }
        2 => {
            o.push_str(r##"<body bgcolor="#ffffff"><center><table width="980" border="0" cellpadding="0" cellspacing="0"><tr><td colspan="3" class="masthead">"##);
            let _ = write!(
                o,
                r##"<font size="6" face="Georgia"><b>{site}</b></font><br>"##
            );
            nav(&mut o, ctx);
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
            cookie_banner(&mut o, ctx);
            let _ = write!(
                o,
                r##"<font size="5"><b>{title}</b></font><br><font size="2" color="#666666">Posted by {author} on {date}</font><hr>"##
            );
            o.push_str(r##"<div class="articletext">"##);
            body_blocks(&mut o, ctx, true);
            o.push_str("</div><hr>");
            share(&mut o);
            related(&mut o, ctx, "More from this section");
            o.push_str(r##"</td><td width="200" valign="top" class="rightcol">"##);
            trending(&mut o, ctx);
            newsletter(&mut o, ctx);
            o.push_str(r##"</td></tr><tr><td colspan="3">"##);
            footer(&mut o, ctx);
            o.push_str("</td></tr></table></center>");
        }
        3 => {
            o.push_str(r##"<body class="docs"><div class="docs-header">"##);
            let _ = write!(
                o,
                r##"<a class="brand" href="/">{site} Docs</a><span class="version">v3.{} </span>"##,
                ctx.rng.range(0, 12)
            );
            nav(&mut o, ctx);
            o.push_str(r##"</div><div class="docs-layout"><nav class="sidebar-nav docs-sidebar"><h5>Guides</h5><ul>"##);
            for k in 0..ctx.rng.range(25, 45) {
                let _ = write!(
                    o,
                    r##"<li><a href="/docs/guide/page-{k}">{} {}</a></li>"##,
                    [
                        "Getting started with",
                        "Configuring",
                        "Deploying",
                        "Monitoring",
                        "Troubleshooting",
                        "Migrating"
                    ][k % 6],
                    ctx.topic.name
                );
            }
            o.push_str(r##"</ul></nav><div class="docs-content" role="main">"##);
            breadcrumb(&mut o, ctx);
            let _ = write!(
                o,
                r##"<h1 class="page-title">{title}</h1><div class="page-meta">Last updated {date} · Edit this page on GitHub</div><div class="markdown-body {bc}">"##
            );
            body_blocks(&mut o, ctx, false);
            o.push_str(r##"</div><div class="page-nav"><a class="prev" href="/docs/prev">← Previous: Installation</a><a class="next" href="/docs/next">Next: Configuration →</a></div><div class="feedback-widget"><p>Was this page helpful?</p><button>Yes</button><button>No</button><p>Help us improve the documentation by telling us what was missing or confusing on this page. Your feedback goes straight to the docs team.</p></div></div><div class="toc-col"><h5>On this page</h5><ul>"##);
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
            cookie_banner(&mut o, ctx);
            related(&mut o, ctx, "See also");
            footer(&mut o, ctx);
        }
        _ => {
            o.push_str(
                r##"<body class="single-post"><div class="site"><header class="masthead">"##,
            );
            let _ = write!(
                o,
                r##"<h2 class="site-title"><a href="/">{site}</a></h2><p class="site-description">Notes, essays and occasional rants</p>"##
            );
            nav(&mut o, ctx);
            o.push_str(r##"</header><div class="content-area"><div class="entry hentry">"##);
            let _ = write!(
                o,
                r##"<h1 class="entry-title">{title}</h1><div class="entry-meta">Posted on <span class="published">{date}</span> by <span class="author vcard">{author}</span> — 14 Comments</div><div class="{bc}">"##
            );
            body_blocks(&mut o, ctx, false);
            o.push_str("</div>");
            share(&mut o);
            author_bio(&mut o, ctx);
            o.push_str("</div>");
            related(&mut o, ctx, "Related posts");
            comments(&mut o, ctx, 8, 16);
            o.push_str(r##"</div><div class="widget-area">"##);
            newsletter(&mut o, ctx);
            trending(&mut o, ctx);
            o.push_str("</div>");
            footer(&mut o, ctx);
            cookie_banner(&mut o, ctx);
            o.push_str("</div>");
        }
    }
    tail_scripts(&mut o, ctx);
    o.push_str("</body></html>");
    o
}

/// A JavaScript-only application shell: no article text in the markup.
/// With `embed_state` the article sits in a JSON state blob inside a
/// `<script>`, which an extractor must not treat as page content.
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
        let body: Vec<String> = ctx.blocks.iter().map(|b| b.plain()).collect();
        let v = serde_json::json!({"props": {"pageProps": {"article": {"title": ctx.title, "author": ctx.author, "body": body}}}, "page": "/article/[slug]", "buildId": "sim"});
        // Keep `</` out of the script element.
        let _ = write!(
            o,
            r##"<script id="__NEXT_DATA__" type="application/json">{}</script>"##,
            v.to_string().replace("</", "<\\/")
        );
    }
    let m = ctx.rng.range(500, 900);
    o.push_str(&big_script(&mut ctx.rng, m));
    o.push_str("</body></html>");
    o
}
