package ranker

import (
	"strconv"
	"strings"
)

// Positions and versions.
const (
	// posShift: a claim's log position is its message's stream sequence
	// shifted left by posShift, or'ed with its index in the message's
	// batch (a batch holds far fewer than 2^20 events).
	posShift = 20
	// versionShift: a snapshot's version is the stream sequence of the
	// last input whose events were published when it was taken, shifted
	// left by versionShift, plus a counter of snapshots taken at that
	// same point (after redeliveries, which publish nothing new).
	versionShift = 16
	versionMask  = 1<<versionShift - 1
)

// position returns the log position of event index of stream message seq.
func position(seq uint64, index int) uint64 { return seq<<posShift | uint64(index) }

// Nats-Msg-Ids of the ranker's output messages on P.out.rank. Each names
// how far into the input the events stored so far reach, so that a ranker
// that starts again knows, from the subject's last message alone, which
// inputs already have their events published:
//
//	rank-<s>      the events of every input message up to stream sequence s;
//	rank-<s>-<k>  part k of the events of input s, which did not fit one
//	              message (every input before s is covered);
//	board-<v>     a leaderboard snapshot of version v (see versionShift),
//	              taken once every input up to v>>versionShift was covered.
//
// The ids are unique: a delivery of the same events again after a crash
// (before the ack) is stored once by JetStream's duplicate window.
func rankID(seq uint64) string { return "rank-" + strconv.FormatUint(seq, 10) }

func rankPartID(seq uint64, k int) string {
	return "rank-" + strconv.FormatUint(seq, 10) + "-" + strconv.Itoa(k)
}

func boardID(version uint64) string { return "board-" + strconv.FormatUint(version, 10) }

// resumePoint reads the Nats-Msg-Id of the last message on P.out.rank:
// published is the last input stream sequence whose events are all stored,
// lastVersion a bound every earlier snapshot's version is at most; board
// says the message is a snapshot. ok is false for an id the ranker did not
// write (then nothing is known to be published).
func resumePoint(id string) (published, lastVersion uint64, board, ok bool) {
	if v, found := strings.CutPrefix(id, "board-"); found {
		ver, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, false, false
		}
		return ver >> versionShift, ver, true, true
	}
	rest, found := strings.CutPrefix(id, "rank-")
	if !found {
		return 0, 0, false, false
	}
	seqStr, part, isPart := strings.Cut(rest, "-")
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil || seq == 0 || seq >= 1<<(64-versionShift) {
		return 0, 0, false, false
	}
	if isPart {
		if _, err := strconv.Atoi(part); err != nil {
			return 0, 0, false, false
		}
		return seq - 1, seq<<versionShift - 1, false, true
	}
	// A snapshot is taken between handler calls, so every earlier one saw
	// at most seq-1 covered: its version is below seq<<versionShift.
	return seq, seq<<versionShift - 1, false, true
}

// nextVersion returns the version of a snapshot taken when the events of
// every input up to published are stored, above last; ok is false when
// no version is free (a snapshot must wait for more input to be covered).
func nextVersion(published, last uint64) (v uint64, ok bool) {
	if published >= 1<<(64-versionShift) {
		return 0, false
	}
	if base := published << versionShift; base > last {
		return base, true
	}
	if last>>versionShift == published && last&versionMask < versionMask {
		return last + 1, true
	}
	return 0, false
}
