// Command sumdbvectors writes the test vectors of modgate's checksum
// database verification (src/sumdb), made by golang.org/x/mod/sumdb itself:
// a database of 300 synthetic modules signed with a fixed test key, its
// signed heads at sizes 100 and 300 with every hash tile of both trees,
// lookups, and a fork (the same key, another history) at size 300.
//
// Usage: sumdbvectors <out-dir>   (tests/data/sumdb is its output)
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const name = "sum.test"

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: sumdbvectors <out-dir>")
	}
	out := os.Args[1]
	// Fixed seeds: the vectors are the same on every run.
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)), name)
	check(err)
	_, otherVkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{9}, 64)), name)
	check(err)
	write(out, "key", []byte(vkey))
	write(out, "other-key", []byte(otherVkey))

	honest := sumdb.NewTestServer(skey, gosum)
	add(honest, "example.com/m", 0, 100)
	capture(out, "", honest, 100)
	add(honest, "example.com/m", 100, 300)
	capture(out, "", honest, 300)
	for _, i := range []int{0, 5, 99, 256, 299} {
		m := module.Version{Path: fmt.Sprintf("example.com/m%03d", i), Version: "v1.0.0"}
		write(out, fmt.Sprintf("lookup/%s@%s", m.Path, m.Version), lookup(honest, m))
	}

	fork := sumdb.NewTestServer(skey, gosum)
	add(fork, "example.com/fork", 0, 300)
	capture(out, "fork/", fork, 300)
}

// gosum makes up go.sum lines for any module.
func gosum(path, version string) ([]byte, error) {
	h := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "h1:" + base64.StdEncoding.EncodeToString(sum[:])
	}
	return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n",
		path, version, h(path+" "+version), path, version, h(path+" "+version+"/go.mod"))), nil
}

// add looks up modules prefix<from>..prefix<to-1>, which appends them in order.
func add(s sumdb.ServerOps, prefix string, from, to int) {
	for i := from; i < to; i++ {
		_, err := s.Lookup(context.Background(), module.Version{Path: fmt.Sprintf("%s%03d", prefix, i), Version: "v1.0.0"})
		check(err)
	}
}

// lookup is the /lookup/M@V answer: id, record, signed head.
func lookup(s sumdb.ServerOps, m module.Version) []byte {
	ctx := context.Background()
	id, err := s.Lookup(ctx, m)
	check(err)
	records, err := s.ReadRecords(ctx, id, 1)
	check(err)
	signed, err := s.Signed(ctx)
	check(err)
	return []byte(fmt.Sprintf("%d\n%s\n%s", id, records[0], signed))
}

// capture writes the current signed head as latest-<n> and every hash tile of the tree.
func capture(out, prefix string, s sumdb.ServerOps, n int64) {
	ctx := context.Background()
	signed, err := s.Signed(ctx)
	check(err)
	write(out, fmt.Sprintf("%slatest-%d", prefix, n), signed)
	for _, t := range tlog.NewTiles(8, 0, n) {
		// Only the tiles of this size: full ones and the last partial one per level.
		if t.W != 256 && int64(t.W) != (n>>(8*uint(t.L)))%256 {
			continue
		}
		data, err := s.ReadTileData(ctx, t)
		check(err)
		write(out, prefix+t.Path(), data)
	}
}

func write(out, name string, data []byte) {
	path := filepath.Join(out, filepath.FromSlash(name))
	check(os.MkdirAll(filepath.Dir(path), 0o755))
	check(os.WriteFile(path, data, 0o644))
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
