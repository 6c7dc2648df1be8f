package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// child is the application the agent supervises.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int // valid once done is closed
	log  logrus.FieldLogger
}

// startChild starts argv with the agent's stdio and environment, in a
// process group of its own: a Ctrl-C at a terminal reaches the agent only,
// which drains before it passes the signal on.
func startChild(argv []string, log logrus.FieldLogger) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The application must not outlive an agent that was killed: nothing
	// would take it out of routing or stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent: start the application %q: %w", argv[0], err)
	}
	c := &child{cmd: cmd, done: make(chan struct{}), log: log.WithField("pid", cmd.Process.Pid)}
	c.log.WithField("command", argv).Info("started the application")
	go func() {
		_ = cmd.Wait()
		c.code = exitCode(cmd.ProcessState)
		close(c.done)
	}()
	return c, nil
}

// exitCode is the shell's convention: the code, or 128 plus the signal
// that ended the process.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// exitedC is closed once the application exited; never, without one.
func (c *child) exitedC() <-chan struct{} {
	if c == nil {
		return nil
	}
	return c.done
}

// stop sends SIGTERM and, after timeout, SIGKILL. An exit caused by the
// SIGTERM is a clean stop; any other failure is reported.
func (c *child) stop(timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	c.log.Info("stopping the application with SIGTERM")
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.log.WithField("timeout", timeout).Warn("the application did not stop in time; killing it")
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("the application did not stop within %s of SIGTERM and was killed", timeout)
	}
	if c.code != 0 && c.code != 128+int(syscall.SIGTERM) {
		return errors.New("the application exited with code " + fmt.Sprint(c.code) + " on SIGTERM")
	}
	c.log.Info("the application stopped")
	return nil
}

// forwardSignals passes the signals an application may act on to it as
// they come. SIGINT and SIGTERM are not among them: they stop the agent,
// which drains first and then stops the application itself.
func forwardSignals(c *child, log logrus.FieldLogger) (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH)
	end := make(chan struct{})
	go func() {
		for {
			select {
			case <-end:
				return
			case s := <-sigs:
				log.WithField("signal", s).Debug("forwarding a signal to the application")
				_ = c.cmd.Process.Signal(s)
			}
		}
	}()
	return func() { signal.Stop(sigs); close(end) }
}
