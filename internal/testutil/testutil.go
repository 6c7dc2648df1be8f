// Package testutil holds what switchyard's tests share: waiting for a
// condition with a deadline instead of a fixed sleep.
package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/retry"
)

// Eventually fails t unless cond holds within the given time; what names
// the condition in the failure.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := retry.Until(context.Background(), within, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// EventuallyWhy is Eventually for a condition that says what it saw each
// time it did not hold; the failure reports the last of those reasons.
func EventuallyWhy(t testing.TB, within time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	var last string
	err := retry.Until(context.Background(), within, func() (bool, error) {
		ok, why := cond()
		last = why
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: %v; last saw %s", what, err, last)
	}
}
