//! The built-in web UI: static files compiled into the binary (`src/api/ui/`), so it works offline and needs
//! nothing beside the binary. `/` serves the page; `/ui/<file>` its scripts, styles and icon. The page is a
//! single-page app with hash routes (`#/search`, `#/trace/<id>`, `#/compare/<a>/<b>`, `#/graph`): the server
//! never sees its paths, and it talks to the same API as Grafana (search, traces, tags, SQL).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Every file the page loads: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("ui/app.js")),
    ("util.js", "text/javascript; charset=utf-8", include_str!("ui/util.js")),
    ("trace.js", "text/javascript; charset=utf-8", include_str!("ui/trace.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_str!("ui/favicon.svg")),
];

const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { file("index.html") })).route("/ui/{file}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        // Revalidated on every load: a new binary may carry new files under the same names.
        Some((_, ty, body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // The page loads only its own files and talks only to this origin.
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no UI file {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_the_page_names_is_served() {
        let names: Vec<&str> = super::FILES.iter().map(|f| f.0).collect();
        // Each `/ui/<file>` in the page and each `./<file>.js` import must be one of FILES.
        for (_, _, body) in super::FILES {
            for piece in body.split("/ui/").skip(1).chain(body.split("from './").skip(1)) {
                let name: String =
                    piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_').collect();
                if name.contains('.') {
                    assert!(names.contains(&name.as_str()), "{name} is referenced but not embedded");
                }
            }
        }
    }
}
