//! The live execution monitor: the page at `/` (for a browser, not a
//! WebSocket upgrade), `/client.js` and the page's other assets, embedded in
//! the binary so the monitor works offline and always matches its broker.
//!
//! The files live in `web/`; this module only serves them. Assets answer
//! with `Cache-Control: no-cache` and an `ETag`: their paths carry no content
//! hash, so a browser must revalidate (a cheap 304) rather than keep a stale
//! `client.js` after the broker is upgraded.

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};

/// One embedded file and the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A quoted strong validator, computed at compile time from `body`.
    etag: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Embeds `web/<file>` as the asset served at `path`.
macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $file));
        const HEX: [u8; 18] = etag_of(BODY);
        Asset {
            path: $path,
            content_type: $content_type,
            body: BODY,
            etag: match std::str::from_utf8(&HEX) {
                Ok(etag) => etag,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

/// Every file of the monitor but the page itself. Modules import each other
/// by relative path (`./monitor/model.js`), so these paths are the layout of `web/`.
static ASSETS: [Asset; 15] = [
    asset!("/client.js", JS, "client.js"),
    asset!("/monitor.js", JS, "monitor.js"),
    asset!("/analytics.js", JS, "analytics.js"),
    asset!("/monitor.css", "text/css; charset=utf-8", "monitor.css"),
    asset!("/favicon.svg", "image/svg+xml", "favicon.svg"),
    asset!("/monitor/axis.js", JS, "monitor/axis.js"),
    asset!("/monitor/cards.js", JS, "monitor/cards.js"),
    asset!("/monitor/describe.js", JS, "monitor/describe.js"),
    asset!("/monitor/dom.js", JS, "monitor/dom.js"),
    asset!("/monitor/list.js", JS, "monitor/list.js"),
    asset!("/monitor/log.js", JS, "monitor/log.js"),
    asset!("/monitor/model.js", JS, "monitor/model.js"),
    asset!("/monitor/quality.js", JS, "monitor/quality.js"),
    asset!("/monitor/replay.js", JS, "monitor/replay.js"),
    asset!("/monitor/timeline.js", JS, "monitor/timeline.js"),
];

/// The page.
const INDEX_HTML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/index.html"));

/// The analytics page (`/analytics`), drawn by `analytics.js` from `GET /api/analytics`.
const ANALYTICS_HTML: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/analytics.html"));

/// Only this origin's scripts, styles and connections: the page renders text
/// from events, and a policy this strict makes an injection inert anyway.
/// `ws:`/`wss:` because older browsers do not count WebSockets as 'self'.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The paths of the asset files, for the OpenAPI document.
pub fn asset_paths() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|asset| (asset.path, asset.content_type))
}

/// `GET /analytics`: the analytics page.
pub(crate) async fn analytics_page() -> HttpResponse {
    page(ANALYTICS_HTML)
}

/// Registers the monitor's asset routes (GET and HEAD); the pages are in
/// `routes::ROUTES`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for asset in &ASSETS {
        cfg.route(
            asset.path,
            web::route()
                .guard(get_or_head())
                .to(move |req: HttpRequest| async move { serve(asset, &req) }),
        );
    }
}

/// GET, and HEAD with it, as HTTP asks (`curl -I`, health checks and link
/// checkers use it): the same handler answers, and actix sends no body for HEAD.
pub fn get_or_head() -> impl guard::Guard {
    guard::Any(guard::Get()).or(guard::Head())
}

/// The monitor page, for `GET /` without a WebSocket upgrade.
pub fn index() -> HttpResponse {
    page(INDEX_HTML)
}

/// A page of the monitor, with the headers every page gets.
fn page(html: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

/// An asset, or 304 when the browser's copy is current.
fn serve(asset: &'static Asset, req: &HttpRequest) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, asset.etag))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return response.finish();
    }
    response.content_type(asset.content_type).body(asset.body)
}

/// `"` + 16 hex digits of the FNV-1a hash of `bytes` + `"`: no crypto
/// needed, only a different tag whenever a file changes.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut tag = [b'"'; 18];
    let mut n = 0;
    while n < 16 {
        tag[1 + n] = digits[((hash >> (60 - 4 * n)) & 0xf) as usize];
        n += 1;
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;

    fn asset(path: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.path == path).expect("registered")
    }

    /// The paths a file refers to: `import … from './x.js'`, `href=`, `src=`.
    fn references(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for marker in ["from '", "href=\"", "src=\""] {
            for part in text.split(marker).skip(1) {
                let end = part.find(['\'', '"']).unwrap_or(part.len());
                found.push(part[..end].to_owned());
            }
        }
        found
    }

    /// `./b.js` seen from `/monitor/a.js` is `/monitor/b.js`.
    fn resolve(from: &str, reference: &str) -> String {
        if reference.starts_with('/') {
            return reference.to_owned();
        }
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for segment in reference.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    #[test]
    fn every_reference_of_the_page_and_its_modules_is_served() {
        let mut files = vec![("/index.html", INDEX_HTML), ("/analytics", ANALYTICS_HTML)];
        for asset in &ASSETS {
            if asset.content_type == JS {
                files.push((asset.path, std::str::from_utf8(asset.body).unwrap()));
            }
        }
        for (path, text) in files {
            for reference in references(text) {
                let reference = reference.split(['?', '#']).next().unwrap();
                let target = resolve(path, reference);
                // The pages link each other; everything else is an asset.
                let page = ["/", "/analytics"].contains(&target.as_str());
                assert!(
                    page || ASSETS.iter().any(|a| a.path == target),
                    "{path} refers to {reference} ({target}), which is not served"
                );
            }
        }
    }

    #[test]
    fn etags_differ_by_content_and_are_quoted_hex() {
        let a = etag_of(b"one");
        assert_ne!(a, etag_of(b"two"));
        assert_eq!((a[0], a[17]), (b'"', b'"'));
        assert!(a[1..17].iter().all(u8::is_ascii_hexdigit));
    }

    #[actix_web::test]
    async fn assets_have_their_type_and_revalidate() {
        let app = init_service(App::new().configure(configure)).await;
        let req = TestRequest::get().uri("/client.js").to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers().clone();
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), JS);
        assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-cache");
        assert_eq!(read_body(res).await, asset("/client.js").body);
        let css = TestRequest::get().uri("/monitor.css").to_request();
        let res = call_service(&app, css).await;
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/css; charset=utf-8"
        );

        let etag = headers.get(header::ETAG).unwrap().to_str().unwrap();
        let again = TestRequest::get()
            .uri("/client.js")
            .insert_header((header::IF_NONE_MATCH, format!("\"stale\", {etag}")))
            .to_request();
        let res = call_service(&app, again).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(read_body(res).await.is_empty());
    }

    #[test]
    fn the_page_is_html_with_a_strict_policy() {
        let res = index();
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/html; charset=utf-8"
        );
        let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(csp.to_str().unwrap().contains("script-src 'self'"));
        assert!(INDEX_HTML.contains("type=\"module\" src=\"monitor.js\""));
        assert!(ANALYTICS_HTML.contains("type=\"module\" src=\"analytics.js\""));
    }
}
