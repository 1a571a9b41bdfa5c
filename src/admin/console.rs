//! The web console: a page and its assets under `/dashboard`, embedded in the binary (no build
//! step, no external font, script or CDN: it works on a machine with no internet). It is a
//! client of the admin API and nothing else: every figure it shows and every change it makes
//! goes through `/api/*`, which authenticates (the session cookie, `HttpOnly` and
//! `SameSite=Strict`), checks the CSRF token and the caller's role, and audits.

/// Where the console starts.
pub const HOME: &str = "/dashboard";

/// Headers of every console answer: a strict Content-Security-Policy (scripts, styles and
/// connections from the console's own origin only; no inline script or style; never framed),
/// no referrer, no caching of pages that show account data.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
];

/// An embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../console/index.html"),
};

const ASSETS: &[(&str, Asset)] = &[
    (
        "app.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../console/app.js"),
        },
    ),
    (
        "chart.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../console/chart.js"),
        },
    ),
    (
        "style.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../../console/style.css"),
        },
    ),
    (
        "favicon.svg",
        Asset {
            content_type: "image/svg+xml",
            body: include_bytes!("../../console/favicon.svg"),
        },
    ),
];

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == HOME || path.starts_with("/dashboard/")
}

/// The file at `path`: an asset under `/dashboard/assets/`, else the page (the console routes
/// its pages itself: `/dashboard/settings`, `/dashboard/audit`, ...).
pub fn asset(path: &str) -> Option<&'static Asset> {
    if !is_console(path) {
        return None;
    }
    let rest = path.strip_prefix(HOME)?;
    if let Some(name) = rest.strip_prefix("/assets/") {
        return ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| a);
    }
    // Page paths are plain words: anything else (dots, encoded bytes) is not the console's.
    rest.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
        .then_some(&INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_get_the_page_assets_their_file_and_nothing_else_is_served() {
        for p in [
            "/dashboard",
            "/dashboard/",
            "/dashboard/settings",
            "/dashboard/audit",
        ] {
            assert_eq!(asset(p).unwrap().content_type, INDEX.content_type, "{p}");
        }
        assert!(asset("/dashboard/assets/app.js")
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        for p in [
            "/dashboard/assets/nope.js",
            "/dashboard/assets/../app.js",
            "/dashboard/%2e%2e/x",
            "/dashboard/a.b",
            "/dashboardx",
            "/api/orgs",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
        assert!(!is_console("/dashboardx"));
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_nothing_from_elsewhere() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!page.contains("style="), "inline style");
        assert!(!page.contains("<style"), "inline style");
        for chunk in page.split("<script").skip(1) {
            assert!(chunk
                .trim_start()
                .starts_with("type=\"module\" src=\"/dashboard/assets/"));
        }
        for (name, a) in ASSETS.iter().chain([("index", INDEX)].iter()) {
            // The SVG namespace is a name, not a place anything is loaded from.
            let text = String::from_utf8_lossy(a.body).replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{name} refers to another origin"
            );
        }
    }
}
