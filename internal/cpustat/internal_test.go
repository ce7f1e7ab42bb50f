package cpustat

import (
	"math"
	"strings"
	"testing"
)

func TestGroupDeltaFollowsProcessesThatComeAndGo(t *testing.T) {
	parent := procKey{pid: 10, start: 1}
	child := procKey{pid: 11, start: 5}
	orphan := procKey{pid: 12, start: 6}
	for _, tc := range []struct {
		name                string
		a, b                map[procKey]procTimes
		cpu                 float64
		exited, unaccounted int
	}{
		{
			name: "alive at both: own and reaped children's growth",
			a:    map[procKey]procTimes{parent: {self: 1, children: 2}},
			b:    map[procKey]procTimes{parent: {self: 1.5, children: 2.25}},
			cpu:  0.75,
		},
		{
			name: "born since: all of it",
			a:    map[procKey]procTimes{parent: {self: 1}},
			b:    map[procKey]procTimes{parent: {self: 1}, child: {ppid: 10, self: 0.5, children: 0.25}},
			cpu:  0.75,
		},
		{
			name: "exited and reaped by a member: its time after a, through the parent's cutime",
			a:    map[procKey]procTimes{parent: {self: 1}, child: {ppid: 10, self: 3}},
			b:    map[procKey]procTimes{parent: {self: 1, children: 3.5}},
			cpu:  0.5, exited: 1,
		},
		{
			name: "exited, parent outside the group: unaccounted",
			a:    map[procKey]procTimes{parent: {self: 1}, orphan: {ppid: 99, self: 3}},
			b:    map[procKey]procTimes{parent: {self: 1.25}},
			cpu:  0.25, exited: 1, unaccounted: 1,
		},
		{
			name: "pid reused: a new process, the old one gone",
			a:    map[procKey]procTimes{parent: {self: 1}, child: {ppid: 10, self: 3}},
			b:    map[procKey]procTimes{parent: {self: 1, children: 3}, {pid: 11, start: 9}: {ppid: 10, self: 0.5}},
			cpu:  0.5, exited: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := groupDelta(tc.a, tc.b)
			if math.Abs(d.cpu-tc.cpu) > 1e-9 || d.exited != tc.exited || d.unaccounted != tc.unaccounted {
				t.Errorf("got %+v, want cpu %v exited %d unaccounted %d", d, tc.cpu, tc.exited, tc.unaccounted)
			}
		})
	}
}

func TestPauseBoundIsTheHighestBucketThatGrew(t *testing.T) {
	inf := math.Inf(1)
	h := func(counts ...uint64) []Bucket {
		bounds := []float64{1e-6, 1e-4, inf}
		out := make([]Bucket, len(counts))
		for i, c := range counts {
			out[i] = Bucket{UpperBound: bounds[i], Count: c}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		a, b []Bucket
		want float64
	}{
		{"no pause", h(1, 2, 2), h(1, 2, 2), 0},
		{"only small ones", h(1, 2, 2), h(3, 4, 4), 1e-6},
		{"a middle one", h(1, 2, 2), h(1, 3, 3), 1e-4},
		{"one beyond the last bound", h(1, 2, 2), h(1, 2, 3), inf},
		{"an old long pause does not count", h(1, 2, 3), h(2, 3, 4), 1e-6},
		{"from an empty start (restart)", []Bucket{}, h(0, 1, 1), 1e-4},
		{"no histogram", nil, h(0, 1, 1), math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pauseBound(tc.a, tc.b)
			if got != tc.want && !(math.IsNaN(got) && math.IsNaN(tc.want)) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClockTicksIsUserHZ(t *testing.T) {
	// USER_HZ is 100 on every Linux Go supports; the auxiliary vector must
	// agree, else /proc times are misread.
	if got := clockTicks(); got != 100 {
		t.Errorf("clock ticks %v, want 100", got)
	}
}

func TestINFOErrorsNameTheField(t *testing.T) {
	var s Source
	err := fromInfo(&s, "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:x\r\n")
	for _, want := range []string{"used_cpu_user: ", "used_cpu_sys_children missing", "used_memory_rss missing"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if err := fromInfo(&s, "# CPU\r\nnonsense\r\n"); err == nil || !strings.Contains(err.Error(), `line "nonsense" is not key:value`) {
		t.Errorf("error %v", err)
	}
	ok := "used_cpu_sys:1.5\r\nused_cpu_user:2\r\nused_cpu_sys_children:0.25\r\nused_cpu_user_children:0.25\r\nused_memory_rss:1000\r\nrun_id:abc\r\n"
	if err := fromInfo(&s, ok); err != nil || s.CPUSeconds != 4 || s.RSSBytes != 1000 || s.Instance != "abc" {
		t.Errorf("%+v %v", s, err)
	}
}
