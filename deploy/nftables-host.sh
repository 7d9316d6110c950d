#!/bin/sh
# Single host with nftables: redirect this machine's own outgoing tcp/80 and
# tcp/443 (IPv4 and IPv6) to modgate's transparent listeners, except modgate's
# own connections, which carry transparent.outbound_mark.
#
#   deploy/nftables-host.sh up      # apply (replaces an earlier apply)
#   deploy/nftables-host.sh down    # undo: deletes table inet modgate_host
#
# MARK: transparent.outbound_mark (0x2a). HTTP_PORT / HTTPS_PORT: the
# transparent listeners' ports (3129 / 3130). Loopback destinations are left alone.
set -eu
MARK=${MARK:-0x2a}
HTTP_PORT=${HTTP_PORT:-3129}
HTTPS_PORT=${HTTPS_PORT:-3130}

down() {
  nft delete table inet modgate_host 2>/dev/null || true
}

up() {
  down
  nft -f - <<RULES
table inet modgate_host {
  chain output {
    type nat hook output priority -100; policy accept;
    meta mark $MARK return
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    tcp dport 80 redirect to :$HTTP_PORT
    tcp dport 443 redirect to :$HTTPS_PORT
  }
}
RULES
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
