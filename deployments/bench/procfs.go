package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times; Linux
// fixes it at 100 for every architecture Go runs on.
const clockTicks = 100

// pidOf finds the PID of a process the local harness started: local.Proc
// keeps its exec.Cmd to itself, so the child of this process whose command
// line is p.Args is it.
func pidOf(p *local.Proc) (int, error) {
	if p == nil {
		return 0, errors.New("no process")
	}
	me := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if ppid, err := parentOf(pid); err != nil || ppid != me {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if slices.Equal(args, p.Args) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process runs %s", strings.Join(p.Args, " "))
}

// statFields returns the fields of /proc/<pid>/stat after the command name,
// which may itself hold spaces and parentheses: index 0 is field 3 (state).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

func parentOf(pid int) (int, error) {
	f, err := statFields(pid)
	if err != nil || len(f) < 2 {
		return 0, fmt.Errorf("stat of %d: %v", pid, err)
	}
	return strconv.Atoi(f[1])
}

// childrenOf lists the PIDs whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		c, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if p, err := parentOf(c); err == nil && p == pid {
			out = append(out, c)
		}
	}
	return out
}

// cpuTime is the user plus system CPU time pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15.
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// Mem is a process's resident memory: now and at its peak, in bytes.
type Mem struct{ RSS, HWM int64 }

// memOf reads VmRSS and VmHWM from /proc/<pid>/status.
func memOf(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) != 2 || fs[1] != "kB" {
			return Mem{}, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return Mem{}, err
		}
		if name == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	return m, nil
}

// memOfTree adds up a process and its direct children (nginx's master and
// workers).
func memOfTree(pid int) (Mem, error) {
	total, err := memOf(pid)
	if err != nil {
		return total, err
	}
	for _, c := range childrenOf(pid) {
		if m, err := memOf(c); err == nil {
			total.RSS += m.RSS
			total.HWM += m.HWM
		}
	}
	return total, nil
}

// rssSampler polls a process's RSS while a load runs and keeps the largest
// value it saw.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	max  Mem
}

func sampleRSS(read func() (Mem, error), every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := read(); err == nil {
				s.max.RSS = max(s.max.RSS, m.RSS)
				s.max.HWM = max(s.max.HWM, m.HWM)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the largest RSS and HWM seen.
func (s *rssSampler) Stop() Mem {
	close(s.stop)
	<-s.done
	return s.max
}

// childRunning finds a child of this process whose command line contains
// needle (the ZooKeeper JVM, which local keeps to itself).
func childRunning(needle string) (int, error) {
	for _, pid := range childrenOf(os.Getpid()) {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(raw), needle) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process runs %s", needle)
}

// cpuSampler reads the CPU time of several processes every interval, so
// that the CPU each used over a window known only afterwards can be told.
type cpuSampler struct {
	pids    map[string]int
	stop    chan struct{}
	done    chan struct{}
	samples []cpuSample
}

type cpuSample struct {
	at  time.Time
	cpu map[string]time.Duration
}

func sampleCPU(pids map[string]int, every time.Duration) *cpuSampler {
	s := &cpuSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			cs := cpuSample{at: time.Now(), cpu: map[string]time.Duration{}}
			for name, pid := range pids {
				if d, err := cpuTime(pid); err == nil {
					cs.cpu[name] = d
				}
			}
			s.samples = append(s.samples, cs)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling.
func (s *cpuSampler) Stop() {
	close(s.stop)
	<-s.done
}

// Between is the CPU time each process used from the last sample at or
// before from to the first sample at or after to, and that span.
func (s *cpuSampler) Between(from, to time.Time) (map[string]time.Duration, time.Duration) {
	var a, b *cpuSample
	for i := range s.samples {
		if !s.samples[i].at.After(from) {
			a = &s.samples[i]
		}
		if b == nil && !s.samples[i].at.Before(to) {
			b = &s.samples[i]
		}
	}
	if a == nil || b == nil {
		return nil, 0
	}
	out := map[string]time.Duration{}
	for name, d := range b.cpu {
		out[name] = d - a.cpu[name]
	}
	return out, b.at.Sub(a.at)
}
