package sdk

import (
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// batching stands for a registry client that batches heartbeats or not.
type batching struct {
	Registry
	batches bool
}

func (b batching) BatchesHeartbeats() bool { return b.batches }

func TestFirstHeartbeat(t *testing.T) {
	const iv = time.Second
	start := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	for _, tc := range []struct {
		desc    string
		reg     Registry
		aligned bool // every instance beats at the process's phase
	}{
		{desc: "instances sharing a batching client beat at the process's phase", reg: batching{batches: true}, aligned: true},
		{desc: "with a client that does not batch, each beats one interval after its start", reg: batching{batches: false}},
		{desc: "with a registry that knows nothing of batches, each beats one interval after its start", reg: struct{ Registry }{}},
		{desc: "a client holding an instance token does not batch", reg: registry.NewClient("http://127.0.0.1:1", registry.InstanceToken("secret", "a"))},
		{desc: "the built-in registry's client batches", reg: registry.NewClient("http://127.0.0.1:1", "secret"), aligned: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var beats []time.Time
			// Instances started at different moments of the same process.
			for _, after := range []time.Duration{0, 123 * time.Millisecond, 2*iv + 999*time.Millisecond, 5 * time.Second} {
				i := &Instance{cfg: Config{HeartbeatInterval: iv, Registry: tc.reg}}
				now := start.Add(after)
				d := i.untilFirstBeat(now)
				if d <= 0 || d > iv {
					t.Fatalf("first beat %s after the start, want within (0, %s]", d, iv)
				}
				if !tc.aligned && d != iv {
					t.Fatalf("first beat %s after the start, want %s", d, iv)
				}
				beats = append(beats, now.Add(d))
			}
			if !tc.aligned {
				return
			}
			for _, b := range beats[1:] {
				if off := b.Sub(beats[0]) % iv; off != 0 {
					t.Errorf("first beats %s and %s are %s apart within the interval, want the same phase", beats[0], b, off)
				}
			}
		})
	}
}
