//! The `/ca` page the explicit listener serves (as mitmproxy's `mitm.it`):
//! the certificate to download and the commands that trust it, per OS.
//! Pure: [`render`] turns the proxy's name and the CA into HTML.

use std::fmt::Write;

/// Text made safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for clients of the proxy at `proxy` (host:port), for the CA
/// with this SHA-256 `fingerprint`, permitting only `names`.
pub fn render(proxy: &str, fingerprint: &str, names: &[String]) -> String {
    let url = format!("http://{proxy}/ca.pem");
    let get = format!("curl -fsS --noproxy '*' -o modgate-ca.pem {url}");
    let steps = [
        (
            "Debian, Ubuntu",
            format!(
                "{get}\nsudo cp modgate-ca.pem /usr/local/share/ca-certificates/modgate-ca.crt\nsudo update-ca-certificates"
            ),
        ),
        (
            "RHEL, Fedora",
            format!(
                "{get}\nsudo cp modgate-ca.pem /etc/pki/ca-trust/source/anchors/modgate-ca.pem\nsudo update-ca-trust"
            ),
        ),
        (
            "macOS",
            format!(
                "{get}\nsudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain modgate-ca.pem"
            ),
        ),
        (
            "Windows (PowerShell as administrator)",
            format!(
                "Invoke-WebRequest {url} -OutFile modgate-ca.pem\ncertutil -addstore -f Root modgate-ca.pem"
            ),
        ),
        (
            "Go alone (no system change)",
            format!(
                "{get}\ncat /etc/ssl/certs/ca-certificates.crt modgate-ca.pem > ~/.config/modgate-bundle.pem\nexport SSL_CERT_FILE=~/.config/modgate-bundle.pem"
            ),
        ),
    ];
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Trust modgate's CA</title><style>body{font:14px sans-serif;margin:2em;max-width:60em}\
         pre{background:#eee;padding:8px}</style></head><body>\n<h1>Trust modgate's CA</h1>\n",
    );
    let _ = writeln!(
        page,
        "<p>Download <a href=\"/ca.pem\">the certificate</a>, check its SHA-256 fingerprint, \
         then trust it on this machine.</p>\n<p>SHA-256: <code id=\"fingerprint\">{}</code></p>",
        escape(fingerprint)
    );
    let _ = writeln!(
        page,
        "<p>Its name constraints permit only <b>{}</b>: it cannot vouch for any other site.</p>",
        escape(&names.join(", "))
    );
    for (system, commands) in steps {
        let _ = writeln!(page, "<h2>{system}</h2>\n<pre>{}</pre>", escape(&commands));
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_proxy_and_escapes() {
        let page = super::render("gw.example:3128", "AB:CD", &["proxy.golang.org".into()]);
        assert!(
            page.contains(
                "curl -fsS --noproxy '*' -o modgate-ca.pem http://gw.example:3128/ca.pem"
            )
        );
        assert!(page.contains("<code id=\"fingerprint\">AB:CD</code>"));
        assert!(page.contains("certutil -addstore -f Root modgate-ca.pem"));
        let hostile = super::render("<x>:1", "-", &[]);
        assert!(!hostile.contains("<x>"));
    }
}
