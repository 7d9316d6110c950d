// The functions a PAC file may call (Netscape's PAC conventions), written
// for modgate. dnsResolve and myIpAddress come from modgate itself.
function isPlainHostName(host) {
  return host.indexOf(".") < 0;
}
function dnsDomainIs(host, domain) {
  host = host.toLowerCase();
  domain = domain.toLowerCase();
  return host.length >= domain.length &&
    host.substring(host.length - domain.length) === domain;
}
function localHostOrDomainIs(host, hostdom) {
  return host === hostdom ||
    (host.indexOf(".") < 0 && hostdom.split(".")[0] === host);
}
function isResolvable(host) {
  return dnsResolve(host) !== null;
}
function dnsDomainLevels(host) {
  return host.split(".").length - 1;
}
function __modgate_ipv4(text) {
  var parts = String(text).split(".");
  if (parts.length !== 4) return null;
  var n = 0;
  for (var i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return null;
    var v = Number(parts[i]);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}
function isInNet(host, pattern, mask) {
  var address = __modgate_ipv4(host) === null ? dnsResolve(host) : host;
  if (address === null) return false;
  var a = __modgate_ipv4(address), p = __modgate_ipv4(pattern), m = __modgate_ipv4(mask);
  if (a === null || p === null || m === null) return false;
  return ((a & m) >>> 0) === ((p & m) >>> 0);
}
function shExpMatch(text, pattern) {
  var escaped = String(pattern).replace(/[.+^${}()|[\]\\]/g, "\\$&");
  var source = "^" + escaped.replace(/\*/g, ".*").replace(/\?/g, ".") + "$";
  return new RegExp(source).test(text);
}
var __modgate_days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
function weekdayRange(first, last, gmt) {
  if (last === "GMT") { gmt = last; last = undefined; }
  var now = new Date();
  var day = gmt === "GMT" ? now.getUTCDay() : now.getDay();
  var a = __modgate_days.indexOf(first);
  var b = last === undefined ? a : __modgate_days.indexOf(last);
  if (a < 0 || b < 0) return false;
  return a <= b ? (day >= a && day <= b) : (day >= a || day <= b);
}
function timeRange() {
  var args = Array.prototype.slice.call(arguments);
  var gmt = args[args.length - 1] === "GMT";
  if (gmt) args.pop();
  var now = new Date();
  var h = gmt ? now.getUTCHours() : now.getHours();
  var m = gmt ? now.getUTCMinutes() : now.getMinutes();
  var s = gmt ? now.getUTCSeconds() : now.getSeconds();
  var t = h * 3600 + m * 60 + s;
  if (args.length === 1) return h === args[0];
  if (args.length === 2) return h >= args[0] && h < args[1];
  if (args.length === 4) {
    var from = args[0] * 3600 + args[1] * 60, to = args[2] * 3600 + args[3] * 60;
    return t >= from && t < to;
  }
  if (args.length === 6) {
    var from6 = args[0] * 3600 + args[1] * 60 + args[2], to6 = args[3] * 3600 + args[4] * 60 + args[5];
    return t >= from6 && t < to6;
  }
  return false;
}
function dateRange() {
  throw new Error("dateRange is not supported by modgate");
}
