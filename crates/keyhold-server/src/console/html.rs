//! HTML for the console: escaping, the page shell (navigation, sign-out form, CSRF meta),
//! the security headers every console answer carries, and small builders for what pages
//! repeat (tables, badges, times, findings).
//!
//! Every value that comes from a request or the registry goes through [`esc`]; attribute
//! values are always double-quoted. Pages load only `/console/assets/*` (the Content
//! Security Policy allows nothing else: no inline script or style, no other origin).

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// HTML-escapes `s` for text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a path segment or query value.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time (ms since the Unix epoch) as `2026-12-03 16:10:18 UTC`.
pub fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replace('T', " "))
}

/// An optional time, or `never`.
pub fn time_or(ms: Option<u64>, none: &str) -> String {
    ms.map_or_else(|| none.to_owned(), time)
}

/// A status badge: its class says how it reads (`ok`, `warn`, `bad`, `info`).
pub fn badge(text: &str) -> String {
    let class = match text {
        "active" | "valid" | "ok" | "intact" | "delivered" | "enabled" | "complete" => "ok",
        "degraded" | "decrypt_only" | "pending" | "warning" | "in_progress" | "disabled" => "warn",
        "suspended" | "invalid" | "revoked" | "error" | "broken" | "failed" | "deleted" => "bad",
        _ => "info",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(&text.replace('_', " ")))
}

/// A table with a caption, header cells and rows of already-escaped HTML cells.
pub fn table(caption: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from(r#"<div class="scroll" role="region" tabindex="0" aria-label=""#);
    let _ = write!(out, r#"{}"><table><caption>{}</caption><thead><tr>"#, esc(caption), esc(caption));
    for h in head {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(out, r#"<tr><td colspan="{}">None.</td></tr>"#, head.len().max(1));
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// Findings (JSON values with `severity`, `code`, `message`, `fix`, maybe `region`) as a
/// table.
pub fn findings(caption: &str, list: &[serde_json::Value]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|f| {
            let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            vec![
                badge(&s("severity")),
                format!("<code>{}</code>", esc(&s("code"))),
                esc(&s("region")),
                esc(&s("message")),
                esc(&s("fix")),
            ]
        })
        .collect();
    table(caption, &["Severity", "Code", "Region", "What is wrong", "How to fix it"], &rows)
}

/// A hidden CSRF field for a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="_csrf" value="{}">"#, esc(csrf))
}

/// A one-button form posting to `action`.
pub fn button_form(action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="inline">{}<button type="submit" class="{}">{}</button></form>"#,
        esc(action),
        csrf_field(csrf),
        esc(class),
        esc(label)
    )
}

/// What a page's navigation shows.
pub struct Nav<'a> {
    /// The signed-in user's name (`admin`, or the tenant admin's tenant).
    pub user: String,
    /// Whether the admin is signed in (the operators' links).
    pub admin: bool,
    /// The tenant whose pages are linked, if any.
    pub tenant: Option<&'a str>,
    /// The current path, marked `aria-current`.
    pub current: &'a str,
    /// The session's CSRF token (sign-out form, and `<meta name="csrf">` for scripts).
    pub csrf: &'a str,
}

/// A whole page: shell, navigation and `body` (already HTML).
pub fn page(title: &str, nav: Option<&Nav<'_>>, body: &str) -> Response {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · keyhold console</title><link rel="stylesheet" href="/console/assets/console.css"><script src="/console/assets/console.js" defer></script>"#,
        esc(title)
    );
    if let Some(nav) = nav {
        let _ = write!(out, r#"<meta name="csrf" content="{}">"#, esc(nav.csrf));
    }
    out.push_str(r##"</head><body><a class="skip" href="#main">Skip to content</a><header><p class="brand">keyhold console</p>"##);
    if let Some(nav) = nav {
        out.push_str(r#"<nav aria-label="Console"><ul>"#);
        let mut link = |href: String, label: &str| {
            let current = if href == nav.current { r#" aria-current="page""# } else { "" };
            let _ = write!(out, r#"<li><a href="{}"{current}>{}</a></li>"#, esc(&href), esc(label));
        };
        if nav.admin {
            link("/console/tenants".into(), "Tenants");
            link("/console/events".into(), "Platform events");
        }
        if let Some(t) = nav.tenant {
            let base = format!("/console/t/{}", url(t));
            link(format!("{base}/"), "Key health");
            link(format!("{base}/setup"), "Set up keys");
            link(format!("{base}/keys"), "Key change");
            link(format!("{base}/events"), "Notices");
            link(format!("{base}/webhooks"), "Webhooks");
            link(format!("{base}/audit"), "Audit");
            link(format!("{base}/usage"), "Usage");
        }
        out.push_str("</ul></nav>");
        let _ = write!(
            out,
            r#"<div class="who"><span>Signed in as <strong>{}</strong></span>{}</div>"#,
            esc(&nav.user),
            button_form("/console/logout", nav.csrf, "Sign out", "secondary")
        );
    }
    let _ = write!(out, r#"</header><main id="main" tabindex="-1"><h1>{}</h1>{body}</main></body></html>"#, esc(title));
    html(StatusCode::OK, out)
}

/// An HTML answer with the console's headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

/// The headers every console answer carries: nothing but the console's own assets may
/// load, no framing, no referrer to another origin (a sign-in link in a URL never leaks), no caching.
pub fn secure_headers(resp: &mut Response, cache: bool) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(if cache { "public, max-age=3600" } else { "no-store" }));
}

/// An error page: the status, the stable code and the message.
pub fn error_page(status: StatusCode, code: &str, message: &str, signed_in: bool) -> Response {
    let hint = if status == StatusCode::UNAUTHORIZED {
        "<p>Sign in with a console link from your platform (<code>keyhold console-link</code> mints one).</p>"
    } else if signed_in {
        r#"<p><a href="/console/">Back to the console</a></p>"#
    } else {
        ""
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · keyhold console</title><link rel="stylesheet" href="/console/assets/console.css"></head><body><main id="main"><h1>{}</h1><div class="banner bad" role="alert"><p><code>{}</code>: {}</p></div>{hint}</main></body></html>"#,
        esc(title),
        esc(title),
        esc(code),
        esc(message)
    );
    html(status, body)
}
