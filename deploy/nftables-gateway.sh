#!/bin/sh
# Office egress gateway with nftables: redirect the LAN's tcp/80 and tcp/443
# (IPv4 and IPv6) to modgate's transparent listeners, in a table of its own.
#
#   LAN_IF=eth1 deploy/nftables-gateway.sh up     # apply (replaces an earlier apply)
#   LAN_IF=eth1 deploy/nftables-gateway.sh down   # undo: deletes table inet modgate_gateway
#
# HTTP_PORT / HTTPS_PORT: transparent.http / transparent.https ports (3129 / 3130).
set -eu
: "${LAN_IF:?set LAN_IF to the LAN-facing interface}"
HTTP_PORT=${HTTP_PORT:-3129}
HTTPS_PORT=${HTTPS_PORT:-3130}

down() {
  nft delete table inet modgate_gateway 2>/dev/null || true
}

up() {
  down
  nft -f - <<RULES
table inet modgate_gateway {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$LAN_IF" tcp dport 80 redirect to :$HTTP_PORT
    iifname "$LAN_IF" tcp dport 443 redirect to :$HTTPS_PORT
  }
}
RULES
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: LAN_IF=<interface> $0 up|down" >&2; exit 2 ;;
esac
