package retention

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/game"
	"treasure/internal/natsjs"
)

// readArchive returns the archiver's holders of IN and OUT (keys KeyIn
// and KeyOut), each missing when its key or the bucket is absent or
// unreadable; the error is for the unreadable ones.
func readArchive(ctx context.Context, js jetstream.JetStream, t natsjs.Topology) (map[string]Holder, error) {
	bucket := ArchiveBucket(t)
	out := map[string]Holder{}
	missing := func(detail string) {
		for _, k := range []string{KeyIn, KeyOut} {
			out[k] = Holder{Kind: "archiver", Name: bucket + "/" + k, Missing: true, Detail: detail}
		}
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		missing("no archive bucket " + bucket + ": no archiver has run, nothing is trimmed")
		return out, nil
	}
	if err != nil {
		missing("archive bucket unreadable: " + err.Error())
		return out, fmt.Errorf("archive bucket %s: %w", bucket, err)
	}
	var errs []error
	for _, k := range []string{KeyIn, KeyOut} {
		h := Holder{Kind: "archiver", Name: bucket + "/" + k}
		e, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			h.Missing, h.Detail = true, "key absent: the archiver has archived nothing of this stream yet"
		case err != nil:
			h.Missing, h.Detail = true, "unreadable: "+err.Error()
			errs = append(errs, fmt.Errorf("archive key %s/%s: %w", bucket, k, err))
		default:
			v, perr := strconv.ParseUint(strings.TrimSpace(string(e.Value())), 10, 64)
			if perr != nil {
				h.Missing, h.Detail = true, fmt.Sprintf("value %q is not a decimal sequence", e.Value())
				errs = append(errs, fmt.Errorf("archive key %s/%s: %s", bucket, k, h.Detail))
			} else {
				h.Seq = v
			}
		}
		out[k] = h
	}
	return out, errors.Join(errs...)
}

// ckptHolders are the checkpoint holders: per partition of IN, and push's
// for OUT.
type ckptHolders struct {
	part map[int]Holder
	push Holder
}

// readCheckpoints finds, per partition and for push, the oldest kept
// checkpoint that passes retention's checks (see checkProximity and
// checkPush): a process falling back from newer ones may use it, so the
// messages after it must stay. None, or one that cannot be fetched, makes
// the holder missing.
func readCheckpoints(ctx context.Context, js jetstream.JetStream, t natsjs.Topology, cache *checkCache) (ckptHolders, error) {
	ck := ckptHolders{part: map[int]Holder{}}
	missing := func(detail string) {
		for k := 0; k < t.Partitions; k++ {
			ck.part[k] = Holder{Kind: "proximity-checkpoint", Name: fmt.Sprintf("in-%d", k), Missing: true, Detail: detail}
		}
		ck.push = Holder{Kind: "push-checkpoint", Name: "out-push", Missing: true, Detail: detail}
	}
	store, err := natsjs.BindCheckpoints(ctx, js, t)
	if errors.Is(err, natsjs.ErrNoCheckpoints) {
		missing("no checkpoint bucket " + t.CheckpointBucket() + ": nothing is trimmed until checkpoints are written")
		return ck, nil
	}
	if err != nil {
		missing("checkpoint bucket unreadable: " + err.Error())
		return ck, err
	}
	// natsjs lists from the bucket's meta subjects, bounded (the object
	// store's own listing can wait for ever on nats-server 2.9 when a
	// delete races it).
	all, pushes, err := store.ListAll(ctx)
	if err != nil {
		missing("checkpoints could not be listed: " + err.Error())
		return ck, err
	}
	var errs []error
	keep := map[string]bool{}
	for k := 0; k < t.Partitions; k++ {
		var list []natsjs.CheckpointInfo
		for _, ci := range all {
			if ci.Partition == k {
				list = append(list, ci)
			}
		}
		h, err := oldestValid(ctx, "proximity-checkpoint", fmt.Sprintf("in-%d", k), list, cache, keep, func(ci natsjs.CheckpointInfo) ([]byte, error) {
			return store.Get(ctx, k, ci.Seq)
		}, func(data []byte, seq uint64) error { return checkProximity(data, k, t.Partitions, seq) })
		ck.part[k] = h
		errs = append(errs, err)
	}
	ck.push, err = oldestValid(ctx, "push-checkpoint", "out-push", pushes, cache, keep, func(ci natsjs.CheckpointInfo) ([]byte, error) {
		return store.PushGet(ctx, ci.Seq)
	}, checkPush)
	errs = append(errs, err)
	cache.retain(keep)
	return ck, errors.Join(errs...)
}

// oldestValid walks list (newest first) from its oldest end and returns
// the first checkpoint that passes check as the holder. A fetch failure
// makes the holder missing (the checkpoint may be one a process falls
// back to); a refused one is skipped (no process can use it).
func oldestValid(ctx context.Context, kind, series string, list []natsjs.CheckpointInfo, cache *checkCache, keep map[string]bool,
	get func(natsjs.CheckpointInfo) ([]byte, error), check func([]byte, uint64) error) (Holder, error) {
	refused := 0
	for _, ci := range slices.Backward(list) {
		key := cacheKey(ci)
		keep[key] = true
		verdict, known := cache.get(key)
		if !known {
			data, err := get(ci)
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				continue // deleted since the listing (pruned): nobody falls back to it
			}
			if err != nil {
				return Holder{Kind: kind, Name: ci.Name, Missing: true, Detail: "could not be fetched: " + err.Error()},
					fmt.Errorf("checkpoint %s: %w", ci.Name, err)
			}
			verdict = check(data, ci.Seq)
			cache.put(key, verdict)
		}
		if verdict != nil {
			refused++
			continue
		}
		h := Holder{Kind: kind, Name: ci.Name, Seq: ci.Seq}
		if refused > 0 {
			h.Detail = fmt.Sprintf("%d older checkpoint(s) refused", refused)
		}
		return h, nil
	}
	detail := "no checkpoint yet: nothing is trimmed until one is written"
	if refused > 0 {
		detail = fmt.Sprintf("none of the %d checkpoints passes the checks: nothing is trimmed", refused)
	}
	return Holder{Kind: kind, Name: series, Missing: true, Detail: detail}, nil
}

// checkCache remembers verdicts on checkpoint objects, so that each one
// is fetched once (an object's name, time and size identify its content:
// a replaced object gets a new time).
type checkCache struct{ m map[string]error }

func newCheckCache() *checkCache { return &checkCache{m: map[string]error{}} }

func cacheKey(ci natsjs.CheckpointInfo) string {
	return ci.Name + "|" + strconv.FormatInt(ci.Time.UnixNano(), 10) + "|" + strconv.FormatUint(ci.Size, 10)
}

func (c *checkCache) get(key string) (error, bool) {
	err, ok := c.m[key]
	return err, ok
}

func (c *checkCache) put(key string, verdict error) { c.m[key] = verdict }

// retain forgets the verdicts on objects no longer listed.
func (c *checkCache) retain(keep map[string]bool) {
	for k := range c.m {
		if !keep[k] {
			delete(c.m, k)
		}
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkProximity checks what retention can check of a proximity
// checkpoint without the graph: the header (game.ReadCheckpointHeader:
// magic, version, header checksum, lengths), that it names partition k of
// partitions at seq, and every section's checksum. The worker checks
// more (the graph, the field); a checkpoint it refuses for those reasons
// alone passes here.
func checkProximity(data []byte, k, partitions int, seq uint64) error {
	h, err := game.ReadCheckpointHeader(data)
	if err != nil {
		return err
	}
	if h.Partition != uint32(k) || h.Partitions != uint32(partitions) || h.Seq != seq {
		return fmt.Errorf("checkpoint of partition %d of %d at seq %d, stored as partition %d of %d at seq %d",
			h.Partition, h.Partitions, h.Seq, k, partitions, seq)
	}
	lens := []uint64{h.TreasuresLen, h.PlayersLen}
	if h.Version >= 2 {
		lens = append(lens, h.FieldLen)
	}
	return sections(data, 96, lens)
}

// Push checkpoint header (services/push/checkpoint.go, version 1).
const (
	pushMagic   = "TRPUSH\x00\x01"
	pushHdrSize = 48
	pushCRCOff  = 12
	pushVersion = 1
)

// checkPush checks a push checkpoint's header (magic, version, header
// checksum, lengths, the sequence it names) and its sections' checksums.
func checkPush(data []byte, seq uint64) error {
	if len(data) < pushHdrSize || string(data[:len(pushMagic)]) != pushMagic {
		return errors.New("not a push checkpoint (bad magic or shorter than its header)")
	}
	le := binary.LittleEndian
	if v := le.Uint32(data[8:]); v != pushVersion {
		return fmt.Errorf("push checkpoint version %d, retention reads %d", v, pushVersion)
	}
	hdr := slices.Clone(data[:pushHdrSize])
	le.PutUint32(hdr[pushCRCOff:], 0)
	if crc32.Checksum(hdr, castagnoli) != le.Uint32(data[pushCRCOff:]) {
		return errors.New("push checkpoint header checksum mismatch")
	}
	if s := le.Uint64(data[16:]); s != seq {
		return fmt.Errorf("push checkpoint of seq %d stored as seq %d", s, seq)
	}
	return sections(data, pushHdrSize, []uint64{le.Uint64(data[24:]), le.Uint64(data[32:])})
}

// sections checks that data holds, from off, sections of the given
// lengths each followed by its CRC-32C, and nothing after.
func sections(data []byte, off uint64, lens []uint64) error {
	for i, n := range lens {
		if n > uint64(len(data)) || off+n+4 > uint64(len(data)) {
			return fmt.Errorf("section %d: truncated", i)
		}
		if crc32.Checksum(data[off:off+n], castagnoli) != binary.LittleEndian.Uint32(data[off+n:]) {
			return fmt.Errorf("section %d: checksum mismatch", i)
		}
		off += n + 4
	}
	if off != uint64(len(data)) {
		return fmt.Errorf("%d bytes after the last section", uint64(len(data))-off)
	}
	return nil
}

// purgeSubject removes subject's messages of stream with sequences up to
// upTo and returns how many went. It sends JetStream's purge request
// ({"filter": subject, "seq": upTo+1}: "below seq") itself, as
// jetstream.Stream.Purge with WithPurgeSubject and WithPurgeSequence does,
// because that method drops the count the server answers.
func purgeSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, upTo uint64) (uint64, error) {
	req, err := json.Marshal(jetstream.StreamPurgeRequest{Subject: subject, Sequence: upTo + 1})
	if err != nil {
		return 0, err
	}
	msg, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.PURGE."+stream, req)
	if err != nil {
		return 0, err
	}
	var resp struct {
		Success bool                `json:"success"`
		Purged  uint64              `json:"purged"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("purge answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	if !resp.Success {
		return 0, fmt.Errorf("purge answer %q: not a success", msg.Data)
	}
	return resp.Purged, nil
}

// apiPrefix is the JetStream API prefix js sends its requests to.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}
