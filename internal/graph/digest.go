package graph

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Digest returns a hex SHA-256 of what the game depends on in g: the node
// count, the adjacency (offsets) and every arc's neighbour and length, in
// a fixed little-endian layout. Coordinates are left out (no rule uses
// them), so a graph read from DIMACS with or without its .co file and its
// compiled snapshot have the same digest. It is recorded with the streams
// when the pipeline is created, and every service loading the graph
// compares it (natsjs.CheckConfig). It reads every array once: about
// 0.1 s for the 2.3 M-node city.
func Digest(g *Graph) string {
	h := sha256.New()
	var hdr [24]byte
	copy(hdr[:16], "treasure-graph-1")
	binary.LittleEndian.PutUint64(hdr[16:], uint64(g.NumNodes()))
	h.Write(hdr[:])
	var buf [8192]byte
	for arr := g.Offsets; len(arr) > 0; {
		n := min(len(arr), len(buf)/4)
		for i, v := range arr[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], v)
		}
		h.Write(buf[:4*n])
		arr = arr[n:]
	}
	for arr := g.Arcs; len(arr) > 0; {
		n := min(len(arr), len(buf)/8)
		for i, a := range arr[:n] {
			binary.LittleEndian.PutUint32(buf[8*i:], a.To)
			binary.LittleEndian.PutUint32(buf[8*i+4:], a.Len)
		}
		h.Write(buf[:8*n])
		arr = arr[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}
