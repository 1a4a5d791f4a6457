// Command gotlog checks a static tlog-tiles export of an interlock audit log with the Go
// project's own transparency-log code (golang.org/x/mod/sumdb/note and sumdb/tlog, the
// implementation the C2SP signed-note and tiles formats come from), not with interlock's.
//
// Usage: gotlog VERIFIER-KEY DIR
//
// It opens DIR/checkpoint as a signed note under the key, reads the tree's hashes only
// through tlog's TileHashReader (which authenticates every tile it reads against the
// signed root), recomputes the root, checks every entry bundle against the level 0 hashes
// and an inclusion proof for every entry, and prints "ok SIZE".
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8 // tlog-tiles: 256 hashes per tile

// indexPath encodes a tile index as tlog-tiles does: groups of three digits, all but the
// last prefixed with x.
func indexPath(n int64) string {
	s := fmt.Sprintf("%03d", n)
	for len(s)%3 != 0 {
		s = "0" + s
	}
	var parts []string
	for i := 0; i < len(s); i += 3 {
		parts = append(parts, s[i:i+3])
	}
	for i := 0; i < len(parts)-1; i++ {
		parts[i] = "x" + parts[i]
	}
	return strings.Join(parts, "/")
}

func tilePath(level string, n int64, w int) string {
	p := "tile/" + level + "/" + indexPath(n)
	if w != 1<<height {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

type dirTiles struct {
	dir string
}

func (d dirTiles) Height() int { return height }

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := os.ReadFile(filepath.Join(d.dir, tilePath(strconv.Itoa(t.L), t.N, t.W)))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (d dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gotlog: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: gotlog VERIFIER-KEY DIR")
	}
	verifier, err := note.NewVerifier(os.Args[1])
	if err != nil {
		fail("verifier key: %v", err)
	}
	dir := os.Args[2]
	msg, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		fail("%v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		fail("checkpoint size %q", lines[1])
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("checkpoint root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := tlog.TileHashReader(tree, dirTiles{dir})
	got, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("tree hash from tiles: %v", err)
	}
	if got != root {
		fail("tiles hash to %v, the checkpoint says %v", got, root)
	}
	for b := int64(0); b*(1<<height) < size; b++ {
		w := int(size - b*(1<<height))
		if w > 1<<height {
			w = 1 << height
		}
		bundle, err := os.ReadFile(filepath.Join(dir, tilePath("entries", b, w)))
		if err != nil {
			fail("%v", err)
		}
		rest := bundle
		for i := 0; i < w; i++ {
			if len(rest) < 2 {
				fail("entry bundle %d ends early", b)
			}
			length := int(binary.BigEndian.Uint16(rest))
			if len(rest) < 2+length {
				fail("entry bundle %d ends early", b)
			}
			entry := rest[2 : 2+length]
			rest = rest[2+length:]
			index := b*(1<<height) + int64(i)
			hashes, err := reader.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
			if err != nil {
				fail("leaf %d: %v", index, err)
			}
			if tlog.RecordHash(entry) != hashes[0] {
				fail("entry %d does not hash to its leaf", index)
			}
			proof, err := tlog.ProveRecord(size, index, reader)
			if err != nil {
				fail("inclusion proof %d: %v", index, err)
			}
			if err := tlog.CheckRecord(proof, size, root, index, hashes[0]); err != nil {
				fail("inclusion of %d: %v", index, err)
			}
		}
		if !bytes.Equal(rest, nil) && len(rest) != 0 {
			fail("entry bundle %d has %d bytes past its entries", b, len(rest))
		}
	}
	fmt.Printf("ok %d\n", size)
}
