//! A project's index page as a mirror serves it (PEP 503 HTML), read into
//! its file links, and as modgate serves it back: PEP 503 HTML or PEP 691
//! JSON, each file link rewritten to come back through modgate
//! (`../../files/<project>/<sha256>/<filename>`, relative to the page, so
//! the same page serves the endpoint and interception). Links without a
//! sha256 are left out: modgate could not check what they name. Pure.

use std::borrow::Cow;

/// One file a project's page links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub filename: String,
    /// Where the mirror has it, as its page wrote it (without the fragment).
    pub href: String,
    /// Lower-case hex.
    pub sha256: String,
    /// `data-requires-python`, as written.
    pub requires_python: Option<String>,
    /// `data-yanked`: `Some("")` when yanked without a reason.
    pub yanked: Option<String>,
}

/// The media type of PEP 691's JSON form.
pub const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// The links of a PEP 503 page, and how many were left out (no sha256,
/// or a file name modgate does not serve).
pub fn links(html: &str) -> Result<(Vec<Link>, usize), String> {
    let dom = tl::parse(html, tl::ParserOptions::default())
        .map_err(|e| format!("not an index page: {e}"))?;
    let parser = dom.parser();
    let mut found = Vec::new();
    let mut left_out = 0;
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        if !tag.name().as_utf8_str().eq_ignore_ascii_case("a") {
            continue;
        }
        let attribute = |name: &str| {
            let value = tag.attributes().get(name).flatten()?;
            Some(decode(&value.as_utf8_str()))
        };
        let Some(href) = attribute("href") else {
            continue;
        };
        let text = decode(&tag.inner_text(parser)).trim().to_string();
        match link(
            &href,
            text,
            attribute("data-requires-python"),
            attribute("data-yanked"),
        ) {
            Some(link) => found.push(link),
            None => left_out += 1,
        }
    }
    Ok((found, left_out))
}

fn decode(text: &str) -> String {
    html_escape::decode_html_entities(text).into_owned()
}

fn link(
    href: &str,
    text: String,
    requires_python: Option<String>,
    yanked: Option<String>,
) -> Option<Link> {
    let (href, fragment) = href.split_once('#')?;
    let sha256 = fragment.strip_prefix("sha256=")?.to_ascii_lowercase();
    let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
    let from_href = href.rsplit('/').next().unwrap_or_default();
    let filename = if text.is_empty() {
        from_href.to_string()
    } else {
        text
    };
    let safe = super::tree::file_key("x", &sha256, &filename).is_some();
    (hex && safe).then(|| Link {
        filename,
        href: href.to_string(),
        sha256,
        requires_python,
        yanked,
    })
}

/// Where modgate serves `link` of `project`, relative to the page.
pub fn served_at(project: &str, link: &Link) -> String {
    format!("../../files/{project}/{}/{}", link.sha256, link.filename)
}

/// The page modgate serves as PEP 503 HTML.
pub fn html(project: &str, links: &[Link]) -> String {
    let attr = |v: &str| html_escape::encode_double_quoted_attribute(v).into_owned();
    let mut page = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for {project}</title></head>\n<body>\n<h1>Links for {project}</h1>\n"
    );
    for link in links {
        let mut extra = String::new();
        if let Some(python) = &link.requires_python {
            extra.push_str(&format!(" data-requires-python=\"{}\"", attr(python)));
        }
        if let Some(reason) = &link.yanked {
            extra.push_str(&format!(" data-yanked=\"{}\"", attr(reason)));
        }
        page.push_str(&format!(
            "<a href=\"{}#sha256={}\"{extra}>{}</a><br>\n",
            served_at(project, link),
            link.sha256,
            html_escape::encode_text(&link.filename)
        ));
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// The page modgate serves as PEP 691 JSON.
pub fn json(project: &str, links: &[Link]) -> String {
    let files: Vec<serde_json::Value> = links
        .iter()
        .map(|link| {
            let mut file = serde_json::json!({
                "filename": link.filename,
                "url": served_at(project, link),
                "hashes": { "sha256": link.sha256 },
            });
            if let Some(python) = &link.requires_python {
                file["requires-python"] = python.clone().into();
            }
            if let Some(reason) = &link.yanked {
                file["yanked"] = match reason.as_str() {
                    "" => true.into(),
                    reason => reason.into(),
                };
            }
            file
        })
        .collect();
    let page = serde_json::json!({
        "meta": { "api-version": "1.0" },
        "name": project,
        "files": files,
    });
    page.to_string()
}

/// The legacy JSON API's document (`/pypi/<project>/json`), made from
/// the project's page: every release's files (at `base`, modgate's own
/// address as the client named it), the newest release as `info.version`
/// and `urls`. Only what the page says: no metadata beyond it.
pub fn legacy_json(project: &str, links: &[Link], base: &str) -> serde_json::Value {
    let mut releases = serde_json::Map::new();
    for link in links {
        let Some((_, version)) = super::tree::name_and_version(&link.filename) else {
            continue;
        };
        let wheel = link.filename.ends_with(".whl");
        let file = serde_json::json!({
            "filename": link.filename,
            "url": format!("{base}/files/{project}/{}/{}", link.sha256, link.filename),
            "digests": { "sha256": link.sha256 },
            "requires_python": link.requires_python,
            "yanked": link.yanked.is_some(),
            "yanked_reason": link.yanked.as_deref().filter(|r| !r.is_empty()),
            "packagetype": if wheel { "bdist_wheel" } else { "sdist" },
        });
        let files = releases
            .entry(version.to_string())
            .or_insert_with(|| serde_json::json!([]));
        if let Some(files) = files.as_array_mut() {
            files.push(file);
        }
    }
    // The newest final release (a pre-release only when there is no other).
    let finals = releases.keys().filter(|v| is_final(v));
    let newest = (finals.max_by(|a, b| version_order(a, b)))
        .or_else(|| releases.keys().max_by(|a, b| version_order(a, b)))
        .cloned();
    let urls = newest
        .as_ref()
        .and_then(|v| releases.get(v).cloned())
        .unwrap_or_else(|| serde_json::json!([]));
    serde_json::json!({
        "info": { "name": project, "version": newest },
        "releases": releases,
        "urls": urls,
    })
}

/// A release that is not a pre-release or a development release.
fn is_final(version: &str) -> bool {
    let numeric = version.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    numeric.is_empty() || numeric.starts_with("post") || numeric.starts_with(".post")
}

/// Orders versions by their release numbers, a final release after its
/// pre-releases and before its post-releases (`1.0rc1` < `1.0` < `1.0.post1`). An approximation of PEP 440 that is
/// right for the common forms.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |v: &str| {
        let numeric: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts: Vec<u64> = numeric
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        // Pre-releases, then the final release, then its post-releases.
        let rest = v[numeric.len()..].trim_start_matches('.');
        let rank = match rest {
            "" => 1,
            post if post.starts_with("post") => 2,
            _ => 0,
        };
        (parts, rank)
    };
    let ((pa, fa), (pb, fb)) = (key(a), key(b));
    let width = pa.len().max(pb.len());
    let pad = |mut p: Vec<u64>| {
        p.resize(width, 0);
        p
    };
    (pad(pa), fa).cmp(&(pad(pb), fb))
}

/// Whether a client's `Accept` asks for PEP 691 JSON before HTML.
pub fn wants_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let quality = |media: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.split(';').map(str::trim);
                let name = pieces.next()?;
                (name.eq_ignore_ascii_case(media)).then(|| {
                    pieces
                        .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse().ok()))
                        .unwrap_or(1.0)
                })
            })
            .fold(0.0, f32::max)
    };
    let html = quality("application/vnd.pypi.simple.v1+html").max(quality("text/html"));
    quality(JSON) > 0.0 && quality(JSON) >= html
}

/// `href` resolved against the page at `page_url`.
pub fn resolve<'a>(page_url: &str, href: &'a str) -> Option<Cow<'a, str>> {
    if href.starts_with("http://") || href.starts_with("https://") {
        return Some(Cow::Borrowed(href));
    }
    let base = url::Url::parse(page_url).ok()?;
    Some(Cow::Owned(base.join(href).ok()?.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "22c08eeec3c78961c095df819d20b1991e8199394e265dd1d6947e14544f3ae9";

    #[test]
    fn a_mirror_page_is_read_and_served_back_through_modgate() {
        let page = format!(
            "<html><body><h1>Links for alpha</h1>\n\
             <a href=\"/packages/alpha-1.0-py3-none-any.whl#sha256={SHA}\">alpha-1.0-py3-none-any.whl</a><br>\n\
             <a href=\"https://files.example/a/alpha-0.9.tar.gz#sha256={SHA}\" data-requires-python=\"&gt;=3.8\" data-yanked=\"\">alpha-0.9.tar.gz</a>\n\
             <a href=\"../alpha-0.1.zip#md5=00\">alpha-0.1.zip</a>\n\
             <a href=\"/x#sha256={SHA}\">../../etc/passwd</a></body></html>"
        );
        let (links, left_out) = links(&page).unwrap();
        assert_eq!(left_out, 2, "no sha256, and an unsafe name");
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].href, "/packages/alpha-1.0-py3-none-any.whl");
        assert_eq!(links[1].requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(links[1].yanked.as_deref(), Some(""));
        let html = html("alpha", &links);
        assert!(html.contains(&format!(
            "href=\"../../files/alpha/{SHA}/alpha-1.0-py3-none-any.whl#sha256={SHA}\""
        )));
        assert!(html.contains("data-requires-python=\"&gt;=3.8\""));
        assert!(!html.contains("files.example") && !html.contains("/packages/"));
        let json: serde_json::Value = serde_json::from_str(&json("alpha", &links)).unwrap();
        assert_eq!(json["files"][1]["yanked"], true);
        assert_eq!(json["files"][0]["hashes"]["sha256"], SHA);
        assert_eq!(
            json["files"][0]["url"],
            format!("../../files/alpha/{SHA}/alpha-1.0-py3-none-any.whl")
        );
    }

    #[test]
    fn the_legacy_json_api_from_the_page() {
        let link = |filename: &str| Link {
            filename: filename.into(),
            href: format!("/p/{filename}"),
            sha256: SHA.into(),
            requires_python: None,
            yanked: None,
        };
        let links = [
            link("alpha-1.0-py3-none-any.whl"),
            link("alpha-1.10.tar.gz"),
            link("alpha-1.9-py3-none-any.whl"),
            link("alpha-2.0rc1.tar.gz"),
        ];
        let doc = legacy_json("alpha", &links, "https://pypi.org");
        assert_eq!(doc["info"]["version"], "1.10");
        assert_eq!(doc["urls"][0]["packagetype"], "sdist");
        assert_eq!(
            doc["releases"]["1.0"][0]["url"],
            format!("https://pypi.org/files/alpha/{SHA}/alpha-1.0-py3-none-any.whl")
        );
        assert_eq!(doc["releases"].as_object().unwrap().len(), 4);
        assert!(version_order("2.0rc1", "2.0").is_lt());
        assert!(version_order("1.0.post1", "1.0").is_gt());
    }

    #[test]
    fn json_only_when_asked_first() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
        assert!(wants_json(Some(pip)));
        assert!(!wants_json(Some("text/html")));
        assert!(!wants_json(None));
        assert!(!wants_json(Some(
            "application/vnd.pypi.simple.v1+json; q=0.1, text/html"
        )));
    }

    #[test]
    fn links_resolve_against_their_page() {
        let page = "http://127.0.0.1:8080/simple/alpha/";
        assert_eq!(
            resolve(page, "/packages/a.whl").unwrap(),
            "http://127.0.0.1:8080/packages/a.whl"
        );
        assert_eq!(
            resolve(page, "../../packages/a.whl").unwrap(),
            "http://127.0.0.1:8080/packages/a.whl"
        );
        assert_eq!(
            resolve(page, "https://f.example/a.whl").unwrap(),
            "https://f.example/a.whl"
        );
    }
}
