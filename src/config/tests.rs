use super::*;

#[test]
fn embedded_default_equals_built_in_defaults() {
    let mut from_file = Config::parse("modgate.toml", DEFAULT_TOML).unwrap();
    let mut from_nothing = Config::parse("empty.toml", "").unwrap();
    // Where each came from differs by design; what they say must not.
    from_file.origin = Origin::default();
    from_nothing.origin = Origin::default();
    assert_eq!(format!("{from_file:?}"), format!("{from_nothing:?}"));
    assert_eq!(from_file.proxy.listen, ["127.0.0.1:3128".parse().unwrap()]);
}

#[test]
fn every_error_is_reported_with_its_line() {
    let text = "[proxy]\nlisten = [\"nope\"]\nconnect_ports = [443, 70000]\n\n[upstream]\nconnect_timeout = \"ten\"\ncolour = \"blue\"\n";
    let Err(LoadError::Invalid(errors)) = Config::parse("bad.toml", text) else {
        panic!("expected errors");
    };
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 6, 7], "{errors:#?}");
    assert!(errors[3].message.contains("unknown key upstream.colour"));
    assert!(errors[0].to_string().starts_with("bad.toml:2:"));
}

#[test]
fn syntax_errors_have_a_line() {
    let Err(LoadError::Invalid(errors)) = Config::parse("x.toml", "[proxy]\nlisten = [\n") else {
        panic!("expected errors");
    };
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line >= 2);
}

#[test]
fn parent_proxy_url() {
    let c = Config::parse(
        "p.toml",
        "[upstream]\nproxy = \"http://u%40x:p%3Ass@parent.corp:8080\"\n",
    )
    .unwrap();
    let parent = c.upstream.parents[0].clone();
    assert_eq!(parent.port, 8080);
    let credentials = parent.login.credentials.unwrap();
    assert_eq!(
        (credentials.user.as_str(), credentials.password.as_str()),
        ("u@x", "p:ss")
    );
    // base64("u@x:p:ss")
    assert_eq!(credentials.basic().unwrap(), "Basic dUB4OnA6c3M=");
    assert_eq!(parent.login.auth, None);
    let c = Config::parse(
        "p.toml",
        "[upstream]\nproxy = \"http://CORP%5Calice:pw@parent.corp:8080\"\nauth = \"ntlm\"\n",
    )
    .unwrap();
    let parent = c.upstream.parents[0].clone();
    assert_eq!(parent.login.auth, Some(crate::config::Scheme::Ntlm));
    assert_eq!(
        parent.login.credentials.unwrap().domain_and_user(),
        ("CORP", "alice")
    );
    assert!(
        Config::parse(
            "p.toml",
            "[upstream]\nproxy = \"http://p:1\"\nauth = \"digest\"\n"
        )
        .is_err()
    );
    let c = Config::parse("p.toml", "[upstream]\nproxy = \"https://p:3129\"\n").unwrap();
    assert!(c.upstream.parents[0].tls);
    assert!(Config::parse("p.toml", "[upstream]\nproxy = \"socks5://p:1\"\n").is_err());
    assert!(Config::parse("p.toml", "[upstream]\nproxy = \"http://p:1/path\"\n").is_err());
    // Several parents, in order; one login for all of them.
    let c = Config::parse(
        "p.toml",
        "[upstream]\nproxy = [\"http://a.corp:8080\", \"http://b.corp:3128\"]\ndown_for = \"5s\"\n",
    )
    .unwrap();
    let shown = c.upstream.parents_shown().unwrap();
    assert_eq!(
        shown,
        "http://a.corp:8080 (no login), http://b.corp:3128 (no login)"
    );
    assert_eq!(c.upstream.down_for, std::time::Duration::from_secs(5));
    let two_users = "[upstream]\nproxy = [\"http://u:p@a:1\", \"http://v:q@b:1\"]\n";
    assert!(Config::parse("p.toml", two_users).is_err());
}

#[test]
fn bad_no_proxy_entries_are_errors() {
    assert!(
        Config::parse(
            "n.toml",
            "[upstream]\nno_proxy = \"ok.example, 10.0.0.0/77\"\n"
        )
        .is_err()
    );
}

#[test]
fn transparent_listeners_and_mark() {
    let c = Config::parse(
        "t.toml",
        "[transparent]\nhttp = \"0.0.0.0:3129\"\nhttps = \"[::]:3130\"\noutbound_mark = 0x2a\n",
    )
    .unwrap();
    assert_eq!(c.transparent.http, Some("0.0.0.0:3129".parse().unwrap()));
    assert_eq!(c.transparent.https, Some("[::]:3130".parse().unwrap()));
    assert_eq!(c.transparent.outbound_mark, Some(0x2a));
    assert!(!Config::parse("d.toml", "").unwrap().transparent.enabled());

    let text = "[proxy]\nlisten = [\"127.0.0.1:3128\"]\n[transparent]\nhttp = \"127.0.0.1:3128\"\nhttps = \"nope\"\noutbound_mark = -1\n";
    let Err(LoadError::Invalid(errors)) = Config::parse("t.toml", text) else {
        panic!("expected errors");
    };
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [4, 5, 6], "{errors:#?}");
    assert!(errors[0].message.contains("already a listener"));
}

#[test]
fn verification_keys() {
    let c = Config::parse("v.toml", "").unwrap();
    assert!(c.gomod.verification.verify);
    assert_eq!(c.gomod.verification.sumdb_key, SUMDB_KEY);
    let c = Config::parse(
        "v.toml",
        "[gomod]\nverify = \"off\"\nnosumdb = \"corp.example/*\"\n",
    )
    .unwrap();
    assert!(!c.gomod.verification.verify);
    let Err(LoadError::Invalid(errors)) = Config::parse(
        "v.toml",
        "[gomod]\nverify = \"yes\"\nsumdb_key = \"sum.golang.org+1234+AAAA\"\n",
    ) else {
        panic!("expected errors");
    };
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3], "{errors:#?}");
    assert!(
        errors[1]
            .message
            .contains("not a checksum database verifier key")
    );
}

#[test]
fn an_unknown_key_names_the_one_it_may_mean() {
    let text = "[cache]\nmax_sise = \"5G\"\n[proxy]\nlisen = []\n";
    let Err(LoadError::Invalid(errors)) = Config::parse("t.toml", text) else {
        panic!("expected errors");
    };
    let said: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        said.iter()
            .any(|m| m.contains("unknown key cache.max_sise (did you mean cache.max_size?)")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.contains("unknown key proxy.lisen (did you mean proxy.listen?)")),
        "{said:?}"
    );
    let Err(LoadError::Invalid(errors)) = Config::parse("t.toml", "[cache]\nzzz = 1\n") else {
        panic!("expected errors");
    };
    assert!(!errors[0].message.contains("did you mean"), "{errors:?}");
}

#[test]
fn the_config_file_is_chosen_by_precedence() {
    use std::path::{Path, PathBuf};
    let user = Some(PathBuf::from("/home/u/.config/modgate/modgate.toml"));
    let env = Some(PathBuf::from("/srv/m.toml"));
    let all = |_: &Path| true;
    let none = |_: &Path| false;
    let only_system = |p: &Path| p == Path::new(SYSTEM_FILE);
    let given = Path::new("/x.toml");
    assert_eq!(
        choose(Some(given), env.clone(), user.clone(), all),
        Some(given.into())
    );
    assert_eq!(choose(None, env.clone(), user.clone(), none), env);
    assert_eq!(choose(None, None, user.clone(), all), user);
    assert_eq!(
        choose(None, None, user.clone(), only_system),
        Some(SYSTEM_FILE.into())
    );
    assert_eq!(choose(None, None, user, none), None);
}

#[test]
fn a_keytab_must_be_one_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let keytab = dir.path().join("modgate.keytab");
    let config = format!("[upstream]\nproxy = \"http://p:1\"\nkeytab = {keytab:?}\n");
    let error = |c: &str| format!("{:?}", Config::parse("p.toml", c).unwrap_err());
    assert!(error(&config).contains("No such file"));
    // A keytab starts with its format version, 5.2 (or the old 5.1).
    std::fs::write(&keytab, b"user = \"x\"\n").unwrap();
    let mode = |m| {
        let permissions = std::os::unix::fs::PermissionsExt::from_mode(m);
        std::fs::set_permissions(&keytab, permissions).unwrap();
    };
    mode(0o600);
    assert!(error(&config).contains("is not a Kerberos keytab"));
    std::fs::write(&keytab, [5u8, 2, 0, 0]).unwrap();
    mode(0o644);
    assert!(error(&config).contains("chmod 600"));
    mode(0o600);
    let c = Config::parse("p.toml", &config).unwrap();
    let parent = &c.upstream.parents[0];
    assert_eq!(parent.login.keytab.as_deref(), Some(keytab.as_path()));
    assert!(parent.login.can(crate::config::Scheme::Negotiate));
    assert!(!parent.login.can(crate::config::Scheme::Ntlm));
    let shown = parent.to_string();
    assert!(shown.contains("the Kerberos principal in"), "{shown}");
}
