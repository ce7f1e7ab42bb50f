package cpustat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// procKey identifies a process across samples: a pid may be reused, its
// start time (in clock ticks since boot) tells the instances apart.
type procKey struct {
	pid   int
	start uint64
}

// procTimes is one process's counters in seconds.
type procTimes struct {
	ppid     int
	self     float64 // utime + stime
	children float64 // cutime + cstime: the children it has reaped
}

// procInfo is one process as a walk of /proc found it.
type procInfo struct {
	key   procKey
	comm  string
	times procTimes
	rss   uint64
}

// atClkTck is the auxiliary-vector entry holding sysconf(_SC_CLK_TCK).
const atClkTck = 17

// clockTicks returns the unit of /proc/PID/stat's times per second: the
// kernel's USER_HZ, which the kernel hands every process in its auxiliary
// vector (AT_CLKTCK, where glibc's sysconf(_SC_CLK_TCK) reads it too).
// When the vector cannot be read it assumes 100, USER_HZ on every Linux
// architecture Go supports.
func clockTicks() float64 {
	if auxv, err := unix.Auxv(); err == nil {
		for _, kv := range auxv {
			if kv[0] == atClkTck && kv[1] > 0 {
				return float64(kv[1])
			}
		}
	}
	return 100
}

// listProcs walks /proc once. Processes that exit during the walk are
// skipped.
func listProcs(clk float64) ([]procInfo, error) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("proc: %w", err)
	}
	page := uint64(os.Getpagesize())
	out := make([]procInfo, 0, len(all))
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue // gone, or not ours to read
		}
		out = append(out, infoOf(st, clk, page))
	}
	return out, nil
}

func infoOf(st procfs.ProcStat, clk float64, page uint64) procInfo {
	return procInfo{
		key:  procKey{pid: st.PID, start: st.Starttime},
		comm: st.Comm,
		times: procTimes{
			ppid:     st.PPID,
			self:     float64(st.UTime+st.STime) / clk,
			children: float64(st.CUTime+st.CSTime) / clk,
		},
		rss: uint64(max(st.RSS, 0)) * page,
	}
}

// readProcName sums every process whose command name is name.
func (s *Sampler) readProcName(name string, list func() ([]procInfo, error)) Source {
	src := Source{Key: KindProcess + " name " + name, Name: name, Kind: KindProcess, procs: map[procKey]procTimes{}}
	procs, err := list()
	if err != nil {
		src.Err = err
		return src
	}
	want := name
	if len(want) > 15 {
		want = want[:15] // TASK_COMM_LEN - 1
	}
	for _, p := range procs {
		if p.comm == want {
			src.add(p)
		}
	}
	return src
}

// readPID reads one process by id.
func (s *Sampler) readPID(pid int) Source {
	src := Source{Key: KindProcess + " pid " + strconv.Itoa(pid), Name: "pid " + strconv.Itoa(pid), Kind: KindProcess, procs: map[procKey]procTimes{}}
	p, err := procfs.NewProc(pid)
	var st procfs.ProcStat
	if err == nil {
		st, err = p.Stat()
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("no such process")
		}
		src.Err = fmt.Errorf("pid %d: %w", pid, err)
		return src
	}
	info := infoOf(st, s.clkTck, uint64(os.Getpagesize()))
	src.Name = info.comm + " " + strconv.Itoa(pid)
	src.add(info)
	return src
}

func (s *Source) add(p procInfo) {
	s.procs[p.key] = p.times
	s.Procs++
	s.CPUSeconds += p.times.self + p.times.children
	s.RSSBytes += p.rss
}

// delta is a process group's CPU between two samples.
type delta struct {
	cpu                 float64
	exited, unaccounted int
}

// groupDelta is the CPU a process group used from a to b, per the rule
// written at Source.Exited.
func groupDelta(a, b map[procKey]procTimes) delta {
	var d delta
	alive := make(map[int]bool, len(b)) // pids alive at both samples
	for k, tb := range b {
		ta, ok := a[k]
		if !ok {
			d.cpu += tb.self + tb.children // born since a
			continue
		}
		alive[k.pid] = true
		d.cpu += tb.self - ta.self + tb.children - ta.children
	}
	for k, ta := range a {
		if _, ok := b[k]; ok {
			continue
		}
		d.exited++
		if alive[ta.ppid] {
			// Its final total is in the parent's children's time, which
			// grew by it in full: take off what a already counted.
			d.cpu -= ta.self + ta.children
			continue
		}
		d.unaccounted++
	}
	return d
}
