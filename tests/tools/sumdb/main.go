// Command sumdb serves a signed checksum database for the modules of a
// GOPROXY-layout directory, so the go command verifies every module it
// downloads through modgate against a database this test owns.
//
// Usage: sumdb <goproxy-dir> <name>
//
// It listens on 127.0.0.1:0, prints "ready <verifier key> <address>", then
// one line per request path, and exits when stdin closes or after ten minutes.
//
// For tests of what a verifier must refuse:
//   - SUMDB_SEED=<text>: the signing key is derived from the text (the same
//     key on every start), not random;
//   - SUMDB_PREFILL=<n>: n made-up records come first, so the log's history
//     differs from a database that had none (a fork, under the same key);
//   - SUMDB_LIE=1: lookup answers carry a record altered after signing (a
//     record that is not in the signed tree).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	var random io.Reader = rand.Reader
	if seed := os.Getenv("SUMDB_SEED"); seed != "" {
		sum := sha256.Sum256([]byte(seed))
		random = bytes.NewReader(append(sum[:], sum[:]...))
	}
	skey, vkey, err := note.GenerateKey(random, name)
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
	ops := sumdb.NewTestServer(skey, func(path, version string) ([]byte, error) {
		if strings.HasPrefix(path, "prefill.example/") {
			return []byte(fmt.Sprintf("%s %s h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", path, version)), nil
		}
		return goSumLines(dir, path, version)
	})
	prefill, _ := strconv.Atoi(os.Getenv("SUMDB_PREFILL"))
	for i := 0; i < prefill; i++ {
		m := module.Version{Path: fmt.Sprintf("prefill.example/m%d", i), Version: "v1.0.0"}
		if _, err := ops.Lookup(context.Background(), m); err != nil {
			log.Fatal(err)
		}
	}
	server := sumdb.NewServer(ops)
	lie := os.Getenv("SUMDB_LIE") == "1"
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		say("%s", r.URL.Path)
		if lie && strings.HasPrefix(r.URL.Path, "/lookup/") {
			rec := httptest.NewRecorder()
			server.ServeHTTP(rec, r)
			// The record's first hash, one character changed.
			body := rec.Body.Bytes()
			if i := bytes.Index(body, []byte("h1:")); i >= 0 {
				body[i+3] ^= 1
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
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
