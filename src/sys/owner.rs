//! Which process listens on an address, from `/proc`: so `modgate check`
//! can tell "in use by the running modgate" (fine) from "in use by
//! something else" (named). Linux; elsewhere nothing is known.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The listening socket inodes in `table` (`/proc/net/tcp` or `tcp6`
/// text) that hold `addr`'s port on its address or on every address.
pub fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = hex_ip(ip)?;
            let holds = port == addr.port()
                && (ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified());
            (*state == "0A" && holds).then(|| inode.parse().ok())?
        })
        .collect()
}

/// An address as `/proc/net/tcp*` writes it: each 32-bit word in host
/// (little-endian) order.
fn hex_ip(text: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..text.len() / 8)
        .map(|i| u32::from_str_radix(text.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let array: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(array);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// The process (pid, name) listening on `addr`, if `/proc` tells.
pub fn listener_owner(addr: SocketAddr) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        inodes.extend(listening_inodes(&text, addr));
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|link| wanted.iter().any(|w| link.as_os_str() == w.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41001 1 0000000000000000 100 0 0 10 0
   1: 00000000:23A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0C39 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 41003 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52001 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_the_listener_of_an_address() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(listening_inodes(TCP, at("127.0.0.1:3128")), [41001]);
        assert_eq!(
            listening_inodes(TCP, at("10.0.0.1:9120")),
            [41002],
            "0.0.0.0 holds it"
        );
        assert!(
            listening_inodes(TCP, at("127.0.0.1:3129")).is_empty(),
            "not listening"
        );
        assert!(listening_inodes(TCP, at("127.0.0.2:3128")).is_empty());
        assert_eq!(listening_inodes(TCP6, at("[::1]:8080")), [52001]);
    }
}
