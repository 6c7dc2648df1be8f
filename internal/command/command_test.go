package command_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/command"
)

func TestRunReturnsTheEndOfTheOutput(t *testing.T) {
	out, err := command.Run(context.Background(), []string{"/bin/sh", "-c", "echo first; echo \"$WHO\" >&2; exit 3"}, append(os.Environ(), "WHO=last"), 5)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v, want exit status 3", err)
	}
	if string(out) != "last" {
		t.Fatalf("output = %q, want the end of it, trimmed: %q", out, "last")
	}
}

// A shell whose child keeps the output open must not hold Run past its
// timeout: the whole process group goes.
func TestRunStopsWhatTheCommandStartedAtTheTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := command.Run(ctx, []string{"/bin/sh", "-c", "sleep 30; true"}, os.Environ(), 100)
	if err == nil {
		t.Fatal("a command killed at its timeout reported success")
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("Run returned %s after a 200ms timeout: the child holding the output kept it waiting", took)
	}
}
