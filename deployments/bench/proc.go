package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
)

// proc is a process the bench started itself (nginx, Caddy, the seed's
// app, a registry). Only these, by their PID, are ever signalled.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProc runs argv in dir, logging to dir/name.log, and with listen
// waits until it accepts connections there.
func startProc(ctx context.Context, dir, name, listen string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Nothing the bench starts may outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	if listen == "" {
		return p, nil
	}
	err = retry.Until(ctx, 20*time.Second, func() (bool, error) {
		if c, err := net.DialTimeout("tcp", listen, 200*time.Millisecond); err == nil {
			c.Close()
			return true, nil
		}
		select {
		case <-p.done:
			tail, _ := os.ReadFile(logPath)
			return true, fmt.Errorf("%s exited before listening on %s: %s", name, listen, tail[max(len(tail)-1500, 0):])
		default:
			return false, nil
		}
	})
	if err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends sig, waits up to grace, then kills.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freeAddr() (string, error) {
	port, err := local.FreePort()
	return fmt.Sprintf("127.0.0.1:%d", port), err
}

// childOf finds the child of this process whose command line match
// accepts.
func childOf(match func(cmdline []string) bool) (int, error) {
	for _, c := range childrenOf(os.Getpid()) {
		if args, err := c.CmdLine(); err == nil && match(args) {
			return c.PID, nil
		}
	}
	return 0, errors.New("no such child process")
}

// pidOf finds a process the local harness started: local.Proc keeps its
// PID to itself, so it is the child of this process running p.Args.
func pidOf(p *local.Proc) (int, error) {
	if p == nil {
		return 0, errors.New("no process")
	}
	return childOf(func(args []string) bool { return slices.Equal(args, p.Args) })
}

// childRunning finds a child of this process whose command line contains
// needle (the ZooKeeper JVM, which local keeps to itself).
func childRunning(needle string) (int, error) {
	return childOf(func(args []string) bool { return strings.Contains(strings.Join(args, " "), needle) })
}

func childrenOf(pid int) []procfs.Proc {
	all, _ := procfs.AllProcs()
	return slices.DeleteFunc(all, func(p procfs.Proc) bool {
		st, err := p.Stat()
		return err != nil || st.PPID != pid
	})
}

// cpuTime is the user plus system CPU time pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	return time.Duration(st.CPUTime() * float64(time.Second)), err
}

// treeCPU is the CPU time of pid and its direct children (nginx's master
// and workers) so far; 0 without pid.
func treeCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	total, _ := cpuTime(pid)
	for _, c := range childrenOf(pid) {
		if t, err := cpuTime(c.PID); err == nil {
			total += t
		}
	}
	return total
}

// Mem is resident memory now and at its peak, in bytes.
type Mem struct{ RSS, HWM uint64 }

// memOf is VmRSS and VmHWM of pid plus its direct children (nginx's
// master and workers).
func memOf(pid int) (Mem, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	for i, p := range append([]procfs.Proc{p}, childrenOf(pid)...) {
		st, err := p.NewStatus()
		if err != nil && i == 0 {
			return m, err
		}
		m.RSS += st.VmRSS
		m.HWM += st.VmHWM
	}
	return m, nil
}

// every calls f now and then every d until stop is called; stop returns
// once f's last call has.
func every(d time.Duration, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f()
			if retry.Sleep(ctx, d) != nil {
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// peakMem samples pid's memory every 250ms until stop and then returns the
// largest RSS and HWM it saw.
func peakMem(pid int) (stop func() Mem) {
	var peak Mem
	end := every(250*time.Millisecond, func() {
		if m, err := memOf(pid); err == nil {
			peak = Mem{max(peak.RSS, m.RSS), max(peak.HWM, m.HWM)}
		}
	})
	return func() Mem { end(); return peak }
}
