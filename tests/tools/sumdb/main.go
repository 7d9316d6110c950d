// Command sumdb serves a signed checksum database for the modules of a
// GOPROXY-layout directory, so the go command verifies every module it
// downloads through modgate against a database this test owns.
//
// Usage: sumdb <goproxy-dir> <name>
//
// It listens on 127.0.0.1:0, prints "ready <verifier key> <address>", then
// one line per request path, and exits when stdin closes or after ten minutes.
package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: sumdb <goproxy-dir> <name>")
	}
	dir, name := os.Args[1], os.Args[2]
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		log.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	server := sumdb.NewServer(sumdb.NewTestServer(skey, func(path, version string) ([]byte, error) {
		return goSumLines(dir, path, version)
	}))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		say("%s", r.URL.Path)
		server.ServeHTTP(w, r)
	})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	go func() {
		time.Sleep(10 * time.Minute)
		os.Exit(0)
	}()
	say("ready %s %s", vkey, listener.Addr())
	log.Fatal(http.Serve(listener, handler))
}

// goSumLines computes the two go.sum lines of path@version from the tree.
func goSumLines(dir, path, version string) ([]byte, error) {
	escPath, err := module.EscapePath(path)
	if err != nil {
		return nil, err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return nil, err
	}
	base := filepath.Join(dir, filepath.FromSlash(escPath), "@v", escVersion)
	zipHash, err := dirhash.HashZip(base+".zip", dirhash.Hash1)
	if err != nil {
		return nil, err
	}
	mod, err := os.ReadFile(base + ".mod")
	if err != nil {
		return nil, err
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(mod)), nil
	})
	if err != nil {
		return nil, err
	}
	return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n", path, version, zipHash, path, version, modHash)), nil
}
