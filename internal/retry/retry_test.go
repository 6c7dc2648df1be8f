package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffDoublesUpToItsCapAndResets(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v; want %v ms", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != 10*time.Millisecond {
		t.Fatalf("after Reset the delay is %v; want the minimum", d)
	}
}

func TestUntil(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := Until(ctx, time.Minute, func() (bool, error) { n++; return n == 3, nil }); err != nil || n != 3 {
		t.Fatalf("Until = %v after %d calls; want nil after 3", err, n)
	}
	boom := errors.New("boom")
	err := Until(ctx, 30*time.Millisecond, func() (bool, error) { return false, boom })
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, boom) {
		t.Fatalf("Until = %v; want a timeout that carries the last error", err)
	}
	if err := Until(ctx, time.Minute, func() (bool, error) { return true, boom }); err != boom {
		t.Fatalf("Until = %v; want the error of the final call", err)
	}
}
