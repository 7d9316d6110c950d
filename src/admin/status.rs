//! The status page (`/` on the admin listener): one server-rendered HTML
//! page, no scripts, no external assets. Pure: [`render`] turns a
//! [`Status`] snapshot into the page.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::mirrors::Health;

/// What the page shows, taken when it is asked for.
pub struct Status {
    pub uptime: Duration,
    /// `(what it serves, address)`.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Each mirror's health.
    pub mirrors: Vec<Health>,
    /// Each parent proxy (`host:port`) and whether it is reachable.
    pub parents: Vec<(String, bool)>,
    /// Cache entries and bytes, when the cache is on.
    pub cache: Option<(u64, u64)>,
    /// False while storing fails (a full disk): files are served, not kept.
    pub storing: bool,
    /// The shared tier's bucket, whether it answers, and its object count
    /// at start, when there is one.
    pub shared: Option<(String, bool, Option<usize>)>,
    /// Module requests answered 200, and how many of them from the cache.
    pub module_hits: (u64, u64),
    pub requests: u64,
    pub tunnels: u64,
    /// Tunnels open now.
    pub tunnels_open: i64,
    pub forwarded: u64,
    /// The last reload: when, and what came of it.
    pub last_reload: Option<(SystemTime, String)>,
    /// The newest security events, newest last.
    pub events: Vec<(SystemTime, String)>,
}

/// `1.5 GiB`, `12 KiB`, `300 bytes`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit == "bytes" {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// `3 d 4 h`, `2 h 5 min`, `42 s`.
fn duration(took: Duration) -> String {
    let s = took.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Text made safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

pub fn render(status: &Status) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>modgate status</title><style>body{font:14px sans-serif;margin:2em}\
         td,th{padding:2px 12px;text-align:left}.down{color:#b00}.up{color:#080}</style>\
         </head><body>\n<h1>modgate</h1>\n",
    );
    let _ = writeln!(page, "<p id=\"uptime\">up {}</p>", duration(status.uptime));
    page.push_str("<h2>Listeners</h2><table>\n");
    for (serves, addr) in &status.listeners {
        let _ = writeln!(page, "<tr><td>{}</td><td>{addr}</td></tr>", escape(serves));
    }
    page.push_str("</table>\n");
    mirrors(&mut page, &status.mirrors);
    parents(&mut page, &status.parents);
    traffic(&mut page, status);
    events(&mut page, &status.events);
    page.push_str("</body></html>\n");
    page
}

fn mirrors(page: &mut String, mirrors: &[Health]) {
    page.push_str("<h2>Mirrors</h2><table id=\"mirrors\">\n");
    for mirror in mirrors {
        let why = mirror
            .failure
            .as_deref()
            .map_or(String::new(), |why| format!(": {}", escape(why)));
        let health = match mirror.demoted_for {
            None => "<td class=\"up\">healthy</td>".to_string(),
            Some(left) => format!(
                "<td class=\"down\">demoted for {} s more{why}</td>",
                left.as_secs().max(1)
            ),
        };
        let latency = mirror.latency.map_or("no answer yet".to_string(), |l| {
            format!("{:.1} ms to answer", l.as_secs_f64() * 1000.0)
        });
        let _ = writeln!(
            page,
            "<tr><td>{}</td>{health}<td>{latency}</td></tr>",
            escape(&mirror.mirror)
        );
    }
    page.push_str("</table>\n");
}

fn parents(page: &mut String, parents: &[(String, bool)]) {
    if parents.is_empty() {
        return;
    }
    page.push_str("<h2>Parent proxies</h2><table id=\"parents\">\n");
    for (parent, up) in parents {
        let health = if *up {
            "<td class=\"up\">reachable</td>"
        } else {
            "<td class=\"down\">unreachable: skipped for now</td>"
        };
        let _ = writeln!(page, "<tr><td>{}</td>{health}</tr>", escape(parent));
    }
    page.push_str("</table>\n");
}

fn traffic(page: &mut String, status: &Status) {
    page.push_str("<h2>Traffic</h2><table>\n");
    let (served, cached) = status.module_hits;
    let ratio = if served == 0 {
        0.0
    } else {
        100.0 * cached as f64 / served as f64
    };
    let rows = [
        ("requests", status.requests.to_string()),
        ("tunnels established", status.tunnels.to_string()),
        ("tunnels open", status.tunnels_open.to_string()),
        ("requests forwarded", status.forwarded.to_string()),
        ("module files served", served.to_string()),
        ("cache hit ratio", format!("{ratio:.1}%")),
        (
            "cache",
            status.cache.map_or("off".into(), |(entries, bytes)| {
                let failing = if status.storing {
                    ""
                } else {
                    "; NOT STORING (a full disk? see the log): files are served, not kept"
                };
                format!("{entries} files, {}{failing}", size(bytes))
            }),
        ),
        (
            "shared tier",
            status
                .shared
                .as_ref()
                .map_or("off".into(), |(bucket, up, counted)| {
                    let state = if *up {
                        "up"
                    } else {
                        "DOWN: files come from this gateway and the mirrors"
                    };
                    let count =
                        counted.map_or(String::new(), |n| format!(" ({n} objects at start)"));
                    format!("{bucket}: {state}{count}")
                }),
        ),
        (
            "last reload",
            status
                .last_reload
                .as_ref()
                .map_or("none since start".into(), |(when, what)| {
                    format!("{}: {what}", httpdate::fmt_http_date(*when))
                }),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(page, "<tr><th>{what}</th><td>{}</td></tr>", escape(&value));
    }
    page.push_str("</table>\n");
}

fn events(page: &mut String, events: &[(SystemTime, String)]) {
    page.push_str("<h2>Security events</h2>\n");
    if events.is_empty() {
        page.push_str("<p>none</p>\n");
    } else {
        page.push_str("<ul id=\"events\">\n");
        for (when, what) in events.iter().rev() {
            let when = httpdate::fmt_http_date(*when);
            let _ = writeln!(page, "<li>{when}: {}</li>", escape(what));
        }
        page.push_str("</ul>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_and_events_are_shown_escaped() {
        let status = Status {
            uptime: Duration::from_secs(42),
            listeners: vec![("explicit proxy".into(), "127.0.0.1:3128".parse().unwrap())],
            mirrors: vec![
                Health {
                    mirror: "https://good.example".into(),
                    demoted_for: None,
                    latency: Some(Duration::from_micros(12_345)),
                    failure: None,
                },
                Health {
                    mirror: "https://bad.example/<x>".into(),
                    demoted_for: Some(Duration::from_secs(29)),
                    latency: None,
                    failure: Some("certificate signed by an unknown CA <x>".into()),
                },
            ],
            parents: vec![("a.corp:8080".into(), true), ("b.corp:8080".into(), false)],
            cache: Some((3, 1024)),
            storing: true,
            shared: None,
            module_hits: (4, 1),
            requests: 9,
            tunnels: 2,
            tunnels_open: 1,
            forwarded: 1,
            last_reload: Some((SystemTime::UNIX_EPOCH, "config reloaded".into())),
            events: vec![(
                SystemTime::UNIX_EPOCH,
                "verification failed: <script>".into(),
            )],
        };
        let page = render(&status);
        assert!(page.contains("<td>https://good.example</td><td class=\"up\">healthy</td>"));
        assert!(page.contains(
            "https://bad.example/&lt;x&gt;</td><td class=\"down\">demoted for 29 s more: certificate signed by an unknown CA &lt;x&gt;</td>"
        ));
        assert!(page.contains("healthy</td><td>12.3 ms to answer"));
        assert!(page.contains("25.0%") && page.contains("3 files, 1.0 KiB"));
        assert!(page.contains("up 42 s"));
        assert!(page.contains("<td>a.corp:8080</td><td class=\"up\">reachable</td>"));
        assert!(page.contains("<td>b.corp:8080</td><td class=\"down\">unreachable"));
        assert_eq!(
            (size(300), size(3 << 30)),
            ("300 bytes".into(), "3.0 GiB".to_string())
        );
        assert_eq!(duration(Duration::from_secs(7500)), "2 h 5 min");
        assert!(page.contains("1970 00:00:00 GMT: config reloaded"));
        assert!(page.contains("verification failed: &lt;script&gt;") && !page.contains("<script>"));
    }
}
