package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable says that JetStream could not take a message now — the
// stream is full, the server's storage is exhausted, the ack did not come
// in time or the connection is down — and that the same publish may succeed
// later. errors.Is(err, ErrUnavailable) holds for every such error; RetryAfter
// extracts the suggested wait. A publish that failed this way may still have
// been stored (a lost ack): publish again with the same Nats-Msg-Id to have
// it stored once.
var ErrUnavailable = errors.New("jetstream unavailable")

// ErrClosed is returned by a Publisher after Close.
var ErrClosed = errors.New("publisher closed")

// ErrNeedsServer210 is returned for a consumer on several subjects when the
// server is older than 2.10, which cannot filter a consumer on more than one
// subject.
var ErrNeedsServer210 = errors.New("several filter subjects need nats-server 2.10 or later")

// UnavailableError is the error behind ErrUnavailable: the cause and how
// long to wait before publishing again.
type UnavailableError struct {
	// RetryAfter is the suggested wait before the next attempt.
	RetryAfter time.Duration
	// Err is the cause (a JetStream API error, a timeout, a disconnect).
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("jetstream unavailable (retry after %v): %v", e.RetryAfter, e.Err)
}

// Unwrap returns ErrUnavailable and the cause, for errors.Is and errors.As.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// RetryAfter returns the wait an ErrUnavailable error suggests, and whether
// err is one.
func RetryAfter(err error) (time.Duration, bool) {
	var u *UnavailableError
	if errors.As(err, &u) {
		return u.RetryAfter, true
	}
	return 0, false
}

// JetStream API error codes that mean "not now" rather than "never".
const (
	codeStoreFailed          jetstream.ErrorCode = 10077 // maximum messages/bytes exceeded (DiscardNew), store errors
	codeInsufficientResource jetstream.ErrorCode = 10023 // server or account storage exhausted
	codeStorageExceeded      jetstream.ErrorCode = 10047 // insufficient storage resources available
	codeMemoryExceeded       jetstream.ErrorCode = 10028 // insufficient memory resources available
)

// publishError maps a publish failure to an UnavailableError when waiting
// can cure it and returns it unchanged otherwise (a wrong subject, a message
// over max_payload, a closed connection).
func publishError(err error, retryAfter time.Duration) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if transient(err) {
		return &UnavailableError{RetryAfter: retryAfter, Err: err}
	}
	return err
}

func transient(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case codeStoreFailed, codeInsufficientResource, codeStorageExceeded, codeMemoryExceeded:
			return true
		}
		// 503 is JetStream's own "temporarily unavailable".
		return api.Code == 503
	}
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrSlowConsumer),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// atLeast210 reports whether nc is connected to nats-server 2.10 or later.
func atLeast210(version string) (bool, error) {
	if version == "" {
		return false, errNoServer
	}
	v := strings.TrimPrefix(version, "v")
	major, rest, _ := strings.Cut(v, ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return false, fmt.Errorf("server version %q: not major.minor.patch", version)
	}
	return ma > 2 || ma == 2 && mi >= 10, nil
}

// NoStreamListening reports whether err says that no stream took the
// publish at all: nothing on the server was subscribed to its subject (no
// responders), as while a replicated stream elects a leader or has lost
// its quorum. For a first publish that is a refusal (nobody stored it);
// for a publish again of a message whose first publish had no answer, it
// says nothing about that first one, which a leader that is gone may have
// stored.
func NoStreamListening(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// OutcomeUnknown reports whether err leaves a publish's outcome unknown:
// no answer came (the ack timed out, the connection dropped or is
// reconnecting), so the message may or may not have been stored. Publishing
// it again with the same Nats-Msg-Id within the stream's duplicate window
// resolves it: JetStream stores it, or answers that it is a duplicate, or
// refuses it. Every answer JetStream gave (an API error such as a stream
// full under DiscardNew), no responders, ErrClosed and errors raised before
// the message left the client are definitive: false — but for "duplicate
// message id is in process", which a replicated stream answers to a copy
// sent while the first is still being stored: that one is unknown.
func OutcomeUnknown(err error) bool {
	if err == nil || errors.Is(err, ErrClosed) {
		return false
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		// "duplicate message id is in process": a clustered stream is
		// still storing an earlier copy (the first publish, whose ack was
		// late); that copy's outcome is the answer, not this one.
		return api.ErrorCode == errCodeDuplicateInProcess
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrReconnectBufExceeded):
		return false
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrSlowConsumer),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// errCodeDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict
// (409): a message with the same Nats-Msg-Id is being stored (replicated
// streams) and this copy is neither stored nor refused on its own account.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// DuplicateInProcess reports whether err is JetStream's "duplicate message
// id is in process": an earlier copy of the message is still being stored.
// Its outcome is unknown (OutcomeUnknown); the answer came at once, so a
// caller that sends again waits a moment first rather than spin.
func DuplicateInProcess(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errCodeDuplicateInProcess
}
