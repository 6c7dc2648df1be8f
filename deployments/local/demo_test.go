package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDemoShowsSwitchAndRollbackWithoutFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "switchyard-demo-*"))
	var out bytes.Buffer
	if err := RunDemo(ctx, DemoOptions{Bin: binDir, Once: true}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"set /active_color green", "after:  green 100.0%",
		"set /active_color blue", "after:  blue 100.0%",
		"through two switches, 0 failed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "switchyard-demo-*"))
	if len(after) > len(before) {
		t.Errorf("demo left its temp dir behind: %v", after)
	}
}

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
