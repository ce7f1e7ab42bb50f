package push

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

// ckptBuild writes a push checkpoint with the given sections, its header
// and checksums right, so that a fuzzer reaches the section decoders.
func ckptBuild(seq uint64, players, board []byte) []byte {
	le := binary.LittleEndian
	out := make([]byte, ckptHeaderSize, ckptHeaderSize+len(players)+len(board)+8)
	copy(out, ckptMagic)
	le.PutUint32(out[8:], CheckpointVersion)
	le.PutUint64(out[16:], seq)
	le.PutUint64(out[24:], uint64(len(players)))
	le.PutUint64(out[32:], uint64(len(board)))
	le.PutUint32(out[ckptCRCOff:], crc32.Checksum(out, castagnoli))
	out = append(out, players...)
	out = le.AppendUint32(out, crc32.Checksum(players, castagnoli))
	out = append(out, board...)
	return le.AppendUint32(out, crc32.Checksum(board, castagnoli))
}

// ckptSections splits a checkpoint appendCheckpoint wrote.
func ckptSections(data []byte) (seq uint64, players, board []byte) {
	le := binary.LittleEndian
	pn, bn := le.Uint64(data[24:]), le.Uint64(data[32:])
	players = data[ckptHeaderSize : ckptHeaderSize+pn]
	board = data[ckptHeaderSize+pn+4 : ckptHeaderSize+pn+4+bn]
	return le.Uint64(data[16:]), players, board
}

// FuzzReadCheckpoint feeds push's checkpoint reader fuzzed sections in a
// checkpoint whose header and checksums are right (raw, whole-file bytes
// when raw is set): it never panics, every error wraps one of the
// checkpoint errors, and a state it accepts is restorable, every retained
// update renders as JSON, and it re-encodes to bytes that read back to
// the same encoding.
//
//	go test -run '^$' -fuzz '^FuzzReadCheckpoint$' -fuzztime 60s -fuzzminimizetime 50x ./services/push/
func FuzzReadCheckpoint(f *testing.F) {
	_, data := checkpointOf(f, 8, 120, ckptWorkload(3, 120))
	seq, players, board := ckptSections(data)
	f.Add(seq, players, board, false)
	f.Add(seq, players, board, true)
	f.Add(uint64(0), []byte{0}, []byte{0, 0, 0}, false)
	f.Add(uint64(1), []byte{1, 1, 'a', 1, 0, 0, 0}, []byte{1, 7, 2, '{', '}'}, false)
	f.Add(uint64(1), players[:len(players)/2], board, false)
	f.Fuzz(func(t *testing.T, seq uint64, players, board []byte, raw bool) {
		var data []byte
		if raw {
			data = append(players, board...)
		} else {
			data = ckptBuild(seq, players, board)
		}
		s := feedServer()
		s.hub.ringSize = 1 << 16
		fs, err := readCheckpoint(data, s.hub)
		if err != nil {
			if !errors.Is(err, ErrCheckpointTruncated) && !errors.Is(err, ErrCheckpointCorrupt) &&
				!errors.Is(err, ErrNotCheckpoint) && !errors.Is(err, ErrCheckpointVersion) {
				t.Fatalf("error %v wraps none of the checkpoint errors", err)
			}
			return
		}
		s.restore(fs)
		for i := range s.hub.shards {
			for id := range s.hub.shards[i].players {
				delivered(t, s, id) // fails on a record that does not render
			}
		}
		_, again := s.checkpointData()
		s2 := feedServer()
		s2.hub.ringSize = 1 << 16
		fs2, err := readCheckpoint(again, s2.hub)
		if err != nil {
			t.Fatalf("an accepted checkpoint re-encodes to one that does not read: %v", err)
		}
		s2.restore(fs2)
		if _, third := s2.checkpointData(); !bytes.Equal(third, again) {
			t.Fatal("an accepted checkpoint does not re-encode stably")
		}
	})
}

// TestCkptBuildMatches: the fuzzer's builder writes what appendCheckpoint
// writes, so that its seeds start where the reader accepts.
func TestCkptBuildMatches(t *testing.T) {
	_, data := checkpointOf(t, 8, 120, ckptWorkload(3, 120))
	if got := ckptBuild(ckptSections(data)); !bytes.Equal(got, data) {
		t.Fatal("ckptBuild differs from appendCheckpoint")
	}
}
