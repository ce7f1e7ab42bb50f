package loadgen

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// sender is one sender goroutine and its share of the players: a min-heap of
// their next send times (ns after t0), one timer, and a wake list through
// which the socket readers hand back players they unblocked.
type sender struct {
	e    *engine
	id   int
	heap []due
	buf  []byte

	mu     sync.Mutex
	woken  []int32
	spare  []int32
	wakeCh chan struct{}
}

type due struct {
	at  int64
	idx int32 // local player index
}

func newSender(e *engine, id int) *sender {
	return &sender{e: e, id: id, buf: make([]byte, 0, 4096), wakeCh: make(chan struct{}, 1)}
}

// wake asks the sender to look at player local now. Safe for concurrent
// use; it never blocks.
func (sh *sender) wake(local int) {
	sh.mu.Lock()
	sh.woken = append(sh.woken, int32(local))
	sh.mu.Unlock()
	select {
	case sh.wakeCh <- struct{}{}:
	default:
	}
}

// schedule puts player p in the heap at at, unless it is already there
// earlier. Sender only.
func (sh *sender) schedule(p *oplayer, at int64) {
	if p.queued && p.heapDue <= at {
		return
	}
	p.queued, p.heapDue = true, at
	sh.push(due{at: at, idx: int32(p.local)})
}

// run sends until stop closes.
func (sh *sender) run(stop <-chan struct{}) {
	e := sh.e
	for _, p := range e.players {
		if p.sh == sh && p.due != noMore {
			sh.schedule(p, p.due)
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	endCh := e.endCh
	for {
		now := e.now()
		sh.mu.Lock()
		woken := sh.woken
		sh.woken, sh.spare = sh.spare[:0], woken
		sh.mu.Unlock()
		for _, i := range woken {
			sh.schedule(e.players[i], now)
		}
		for len(sh.heap) > 0 && sh.heap[0].at <= now {
			d := sh.pop()
			p := e.players[d.idx]
			if !p.queued || p.heapDue != d.at {
				continue // stale entry
			}
			p.queued = false
			sh.service(p, now)
			select {
			case <-stop:
				return
			default:
			}
		}
		wait := time.Hour
		if len(sh.heap) > 0 {
			wait = time.Duration(sh.heap[0].at - e.now())
		}
		timer.Reset(wait)
		select {
		case <-stop:
			return
		case <-sh.wakeCh:
		case <-timer.C:
		case <-endCh:
			endCh = nil
			for _, p := range e.players {
				if p.sh == sh {
					p.endEarly(e)
				}
			}
		}
	}
}

// service sends what player p owes at now and reschedules it.
func (sh *sender) service(p *oplayer, now int64) {
	frame, n, next := p.fill(sh.e, now, sh.buf[:0])
	sh.buf = frame[:0]
	if n > 0 {
		p.ingest.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := p.ingest.WriteMessage(websocket.TextMessage, frame); err != nil {
			sh.e.kill(p)
			return
		}
	}
	if next != noMore {
		sh.schedule(p, next)
	}
}

func (sh *sender) push(d due) {
	h := append(sh.heap, d)
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].at <= h[i].at {
			break
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
	sh.heap = h
}

func (sh *sender) pop() due {
	h := sh.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h) && h[l].at < h[m].at {
			m = l
		}
		if r < len(h) && h[r].at < h[m].at {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	sh.heap = h
	return top
}
