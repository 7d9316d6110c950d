module modgate.test/sumdbvectors

go 1.21

require golang.org/x/mod v0.7.0

// Debian's golang-golang-x-mod-dev: no network needed to build the helper.
replace golang.org/x/mod => /usr/share/gocode/src/golang.org/x/mod
