// Package command runs an operator's command, a pre-switch check or an
// agent's hook, so that neither it nor anything it started outlives its
// context.
package command

import (
	"bytes"
	"context"
	"os/exec"
	"syscall"
	"time"
)

// Run runs argv with env and returns the end of its combined output, at
// most keep bytes, trimmed. The command runs in a process group of its
// own, and the whole group is killed when ctx ends; Run returns at most a
// second after that even if something the command started still holds its
// output open.
func Run(ctx context.Context, argv, env []string, keep int) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	return Clip(out.Bytes(), keep), err
}

// Clip keeps the last keep bytes of b, where a failure usually says why,
// trimmed.
func Clip(b []byte, keep int) []byte {
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return bytes.TrimSpace(b)
}
