package loadgen

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Schedule says when each player sends, relative to t0, whatever the
// answers (open loop). Exactly one shape is used:
//
//   - steady: Rate > 0 and Duration > 0 (RateAt nil): player i sends at
//     phase_i + k/Rate for k = 0, 1, … while before Duration; phase_i is
//     a seeded uniform offset in [0, 1/Rate).
//   - ramp: RateAt != nil and Duration > 0: player i's first move is at a
//     seeded uniform offset in [0, 1/RateAt(0)), each next one 1/RateAt(t)
//     after the previous one at t, while before Duration. RateAt must
//     return a per-player rate > 0 (it is clamped to [MinRate, MaxRate]).
//   - drop: Window > 0: in wave w (0 ≤ w < Waves, Waves 0 meaning 1)
//     every player sends one move at w×Window + u_{i,w}×Window, u a seeded
//     uniform number in [0, 1).
type Schedule struct {
	Rate     float64
	Duration time.Duration
	Window   time.Duration
	Waves    int
	RateAt   func(elapsed time.Duration) float64
}

// noMore is a player's next send time once its schedule is over.
const noMore = math.MaxInt64

// check validates s.
func (s Schedule) check() error {
	switch {
	case s.Window > 0:
		if s.Waves < 0 {
			return fmt.Errorf("schedule: %d waves", s.Waves)
		}
	case s.Duration <= 0:
		return errors.New("schedule: set Window (drop) or a positive Duration (steady, ramp)")
	case s.RateAt == nil && !(s.Rate >= MinRate && s.Rate <= MaxRate):
		return fmt.Errorf("schedule: rate per player must be from %v to %v, got %v", MinRate, MaxRate, s.Rate)
	}
	return nil
}

func (s Schedule) waves() int { return max(s.Waves, 1) }

// End is how long the schedule lasts after t0.
func (s Schedule) End() time.Duration {
	if s.Window > 0 {
		return time.Duration(s.waves()) * s.Window
	}
	return s.Duration
}

// rateAt is the per-player rate at elapsed, clamped.
func (s Schedule) rateAt(elapsed int64) float64 {
	r := s.Rate
	if s.RateAt != nil {
		r = s.RateAt(time.Duration(elapsed))
	}
	if !(r >= MinRate) { // NaN too
		r = MinRate
	}
	return min(r, MaxRate)
}

// At returns when player i (seeded by seed) sends its move k (k ≥ 0), in
// nanoseconds after t0, given prev, the time of its move k-1 (ignored for
// k = 0); noMore when the schedule has no move k.
func (s Schedule) At(seed uint64, i int, k int, prev int64) int64 {
	end := int64(s.End())
	var t int64
	switch {
	case s.Window > 0:
		if k >= s.waves() {
			return noMore
		}
		w := int64(s.Window)
		t = int64(k)*w + int64(unit(seed, i, k)*float64(w))
	case s.RateAt == nil:
		interval := float64(time.Second) / s.rateAt(0)
		t = int64((unit(seed, i, -1) + float64(k)) * interval)
	case k == 0:
		t = int64(unit(seed, i, -1) * float64(time.Second) / s.rateAt(0))
	default:
		t = prev + int64(float64(time.Second)/s.rateAt(prev))
	}
	if t >= end {
		return noMore
	}
	return t
}

// unit is a seeded uniform number in [0, 1) for (player i, draw k).
func unit(seed uint64, i, k int) float64 {
	x := splitmix(seed ^ splitmix(uint64(i)+1) ^ splitmix(uint64(int64(k))+0x51ed27))
	return float64(x>>11) / (1 << 53)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// offered returns how many moves of players players the schedule puts in
// second sec (an estimate for steady and ramp, from the rate at the
// second's middle; exact for drop, where it counts the draws).
func (s Schedule) offered(seed uint64, first, players, sec int) uint64 {
	lo, hi := int64(sec)*int64(time.Second), int64(sec+1)*int64(time.Second)
	end := int64(s.End())
	if lo >= end {
		return 0
	}
	if s.Window > 0 {
		var n uint64
		for k := 0; k < s.waves(); k++ {
			w := int64(k) * int64(s.Window)
			if w+int64(s.Window) <= lo || w >= hi {
				continue
			}
			for i := first; i < first+players; i++ {
				if t := s.At(seed, i, k, 0); t >= lo && t < hi {
					n++
				}
			}
		}
		return n
	}
	span := min(hi, end) - lo
	mid := lo + span/2
	return uint64(math.Round(s.rateAt(mid) * float64(players) * float64(span) / float64(time.Second)))
}
