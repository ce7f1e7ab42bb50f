package game

// nodeIndex maps whole-graph node indices to a subgraph's local indices:
// an open-addressing hash table in two flat arrays, no pointers, no
// allocation on lookup. Built once; read-only afterwards.
type nodeIndex struct {
	keys []uint32 // whole-graph index + 1; 0 marks an empty slot
	vals []uint32
	mask uint32
}

func newNodeIndex(global []uint32) nodeIndex {
	size := uint32(1)
	for size < uint32(len(global))*2 {
		size <<= 1
	}
	ix := nodeIndex{keys: make([]uint32, size), vals: make([]uint32, size), mask: size - 1}
	for l, g := range global {
		i := hash32(g) & ix.mask
		for ix.keys[i] != 0 {
			i = (i + 1) & ix.mask
		}
		ix.keys[i] = g + 1
		ix.vals[i] = uint32(l)
	}
	return ix
}

func (ix *nodeIndex) get(g uint32) (uint32, bool) {
	i := hash32(g) & ix.mask
	for {
		k := ix.keys[i]
		if k == g+1 {
			return ix.vals[i], true
		}
		if k == 0 {
			return 0, false
		}
		i = (i + 1) & ix.mask
	}
}

// hash32 is a multiplicative hash with a final mix (from murmur3's fmix32).
func hash32(x uint32) uint32 {
	x ^= x >> 16
	x *= 0x85ebca6b
	x ^= x >> 13
	x *= 0xc2b2ae35
	x ^= x >> 16
	return x
}
