#!/bin/sh
# Single host: redirect this machine's own outgoing tcp/80 and tcp/443 to
# modgate's transparent listeners, except modgate's own connections, which
# carry transparent.outbound_mark (iptables; IPv6 too when ip6tables is present).
#
#   deploy/iptables-host.sh up      # apply (replaces an earlier apply)
#   deploy/iptables-host.sh down    # undo
#
# MARK: transparent.outbound_mark (0x2a). HTTP_PORT / HTTPS_PORT: the
# transparent listeners' ports (3129 / 3130). Loopback destinations are left alone.
set -eu
MARK=${MARK:-0x2a}
HTTP_PORT=${HTTP_PORT:-3129}
HTTPS_PORT=${HTTPS_PORT:-3130}
CHAIN=MODGATE_HOST

tools() {
  echo iptables
  command -v ip6tables >/dev/null 2>&1 && echo ip6tables
  return 0
}

loopback() {
  if [ "$1" = ip6tables ]; then echo ::1/128; else echo 127.0.0.0/8; fi
}

down() {
  for t in $(tools); do
    while $t -t nat -D OUTPUT -p tcp -j "$CHAIN" 2>/dev/null; do :; done
    $t -t nat -F "$CHAIN" 2>/dev/null || true
    $t -t nat -X "$CHAIN" 2>/dev/null || true
  done
}

up() {
  down
  for t in $(tools); do
    $t -t nat -N "$CHAIN"
    # modgate's own traffic: never redirected back to it (loop prevention).
    $t -t nat -A "$CHAIN" -m mark --mark "$MARK" -j RETURN
    $t -t nat -A "$CHAIN" -d "$(loopback "$t")" -j RETURN
    $t -t nat -A "$CHAIN" -p tcp --dport 80 -j REDIRECT --to-ports "$HTTP_PORT"
    $t -t nat -A "$CHAIN" -p tcp --dport 443 -j REDIRECT --to-ports "$HTTPS_PORT"
    $t -t nat -A OUTPUT -p tcp -j "$CHAIN"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
