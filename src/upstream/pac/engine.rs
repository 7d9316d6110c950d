//! Runs a PAC file's `FindProxyForURL(url, host)` in QuickJS (`rquickjs`),
//! each call in a fresh runtime with a memory limit and a deadline: a PAC
//! that loops, allocates without end or throws costs at most that, and
//! says so. The standard functions are `prelude.js`; `dnsResolve` and
//! `myIpAddress` are this host's resolver and address.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use rquickjs::{Context, Function, Runtime};

/// The most one call may run.
pub const TIME_LIMIT: Duration = Duration::from_millis(200);
/// The most memory one call's runtime may hold.
pub const MEMORY_LIMIT: usize = 16 << 20;

const PRELUDE: &str = include_str!("prelude.js");

/// `FindProxyForURL(url, host)`'s answer, or why there is none. Blocking
/// (DNS, and up to [`TIME_LIMIT`] of JavaScript): run it off the async threads.
pub fn find_proxy(script: &str, url: &str, host: &str) -> Result<String, String> {
    in_sandbox(script, |ctx| {
        let find: Function = ctx
            .globals()
            .get("FindProxyForURL")
            .map_err(|_| "the PAC file defines no FindProxyForURL".to_string())?;
        let answer: rquickjs::Value = find.call((url, host)).map_err(|e| e.to_string())?;
        match answer.as_string().map(|s| s.to_string()) {
            Some(Ok(text)) => Ok(text),
            _ => Err(format!("FindProxyForURL returned {answer:?}, not a string")),
        }
    })
}

/// Whether `script` runs and defines `FindProxyForURL` (without calling
/// it), for `modgate check`.
pub fn check(script: &str) -> Result<(), String> {
    in_sandbox(script, |ctx| {
        let kind: String = ctx
            .eval("typeof FindProxyForURL")
            .map_err(|e| e.to_string())?;
        if kind == "function" {
            Ok(())
        } else {
            Err("it defines no FindProxyForURL function".to_string())
        }
    })
}

/// Runs `script` in a fresh runtime under [`TIME_LIMIT`] and
/// [`MEMORY_LIMIT`], after the prelude, `dnsResolve` and `myIpAddress`;
/// then `then`. A JavaScript failure is told by what was thrown, or as the
/// time limit when that ran out.
fn in_sandbox<T>(
    script: &str,
    then: impl for<'js> FnOnce(&rquickjs::Ctx<'js>) -> Result<T, String>,
) -> Result<T, String> {
    let runtime = Runtime::new().map_err(|e| format!("cannot start JavaScript: {e}"))?;
    runtime.set_memory_limit(MEMORY_LIMIT);
    let deadline = Instant::now() + TIME_LIMIT;
    runtime.set_interrupt_handler(Some(Box::new(move || Instant::now() > deadline)));
    let context = Context::full(&runtime).map_err(|e| format!("cannot start JavaScript: {e}"))?;
    context.with(|ctx| {
        let defined = (|| {
            let globals = ctx.globals();
            globals.set("dnsResolve", Function::new(ctx.clone(), dns_resolve)?)?;
            globals.set("myIpAddress", Function::new(ctx.clone(), my_ip_address)?)?;
            ctx.eval::<(), _>(PRELUDE)?;
            ctx.eval::<(), _>(script)
        })();
        let ran = defined.map_err(|e| e.to_string()).and_then(|()| then(&ctx));
        ran.map_err(|plain| {
            let thrown = ctx.catch();
            let message = thrown.as_exception().and_then(|x| x.message());
            if Instant::now() > deadline {
                format!("took longer than {TIME_LIMIT:?}")
            } else {
                message.unwrap_or(plain)
            }
        })
    })
}

/// `dnsResolve(host)`: this host's first IPv4 address for `host`, or null.
fn dns_resolve(host: String) -> Option<String> {
    (host.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(IpAddr::is_ipv4)
        .map(|ip| ip.to_string())
}

/// `myIpAddress()`: this host's first IPv4 address that is not loopback.
fn my_ip_address() -> String {
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|all| {
            all.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .map_or_else(|| "127.0.0.1".into(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAC: &str = r#"
        function FindProxyForURL(url, host) {
            if (host === "me") return myIpAddress();
            if (dnsDomainIs(host, ".corp.example") || isPlainHostName(host)) return "DIRECT";
            if (shExpMatch(host, "*.a.test")) return "PROXY a.corp:3128";
            if (isInNet(host, "10.0.0.0", "255.0.0.0")) return "PROXY ten.corp:3128";
            return "PROXY b.corp:3128; DIRECT";
        }"#;

    #[test]
    fn the_standard_functions() {
        let find = |host: &str| find_proxy(PAC, &format!("http://{host}/"), host).unwrap();
        assert_eq!(find("git.corp.example"), "DIRECT");
        assert_eq!(find("intranet"), "DIRECT");
        assert_eq!(find("x.a.test"), "PROXY a.corp:3128");
        assert_eq!(find("10.1.2.3"), "PROXY ten.corp:3128");
        assert_eq!(find("example.org"), "PROXY b.corp:3128; DIRECT");
        assert!(find("me").parse::<std::net::Ipv4Addr>().is_ok());
    }

    #[test]
    fn broken_pac_files_fail_within_their_limits() {
        let started = Instant::now();
        let looping = "function FindProxyForURL(u, h) { while (true) {} }";
        let err = find_proxy(looping, "http://x/", "x").unwrap_err();
        assert!(err.contains("took longer"), "{err}");
        assert!(started.elapsed() < TIME_LIMIT * 10);
        let hungry =
            "function FindProxyForURL(u, h) { var a = []; while (true) a.push('x'.repeat(1000)); }";
        assert!(find_proxy(hungry, "http://x/", "x").is_err());
        let throwing = "function FindProxyForURL(u, h) { throw new Error('no way'); }";
        assert!(
            find_proxy(throwing, "http://x/", "x")
                .unwrap_err()
                .contains("no way")
        );
        assert!(
            find_proxy("var x = 1;", "http://x/", "x")
                .unwrap_err()
                .contains("FindProxyForURL")
        );
        assert!(find_proxy("function FindProxyForURL() { return 7; }", "u", "h").is_err());
        assert!(find_proxy("this is not javascript", "u", "h").is_err());
        assert!(check(looping).is_ok(), "defined, not called");
        assert!(check("var x = 1;").is_err());
        assert!(check("function FindProxyForURL( {").is_err());
    }
}
