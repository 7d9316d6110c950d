#!/bin/sh
# Office egress gateway: redirect the LAN's tcp/80 and tcp/443 to modgate's
# transparent listeners (iptables; IPv6 too when ip6tables is present).
#
#   LAN_IF=eth1 deploy/iptables-gateway.sh up     # apply (replaces an earlier apply)
#   LAN_IF=eth1 deploy/iptables-gateway.sh down   # undo
#
# HTTP_PORT / HTTPS_PORT: transparent.http / transparent.https ports (3129 / 3130).
# Only traffic arriving on LAN_IF is redirected: modgate's own connections
# leave through OUTPUT and are never caught, so no mark is needed here.
set -eu
: "${LAN_IF:?set LAN_IF to the LAN-facing interface}"
HTTP_PORT=${HTTP_PORT:-3129}
HTTPS_PORT=${HTTPS_PORT:-3130}
CHAIN=MODGATE_GATEWAY

tools() {
  echo iptables
  command -v ip6tables >/dev/null 2>&1 && echo ip6tables
  return 0
}

down() {
  for t in $(tools); do
    while $t -t nat -D PREROUTING -i "$LAN_IF" -p tcp -j "$CHAIN" 2>/dev/null; do :; done
    $t -t nat -F "$CHAIN" 2>/dev/null || true
    $t -t nat -X "$CHAIN" 2>/dev/null || true
  done
}

up() {
  down
  for t in $(tools); do
    $t -t nat -N "$CHAIN"
    $t -t nat -A "$CHAIN" -p tcp --dport 80 -j REDIRECT --to-ports "$HTTP_PORT"
    $t -t nat -A "$CHAIN" -p tcp --dport 443 -j REDIRECT --to-ports "$HTTPS_PORT"
    $t -t nat -A PREROUTING -i "$LAN_IF" -p tcp -j "$CHAIN"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: LAN_IF=<interface> $0 up|down" >&2; exit 2 ;;
esac
