package zkstate

import (
	"strings"
	"testing"
	"time"
)

func TestParseRelease(t *testing.T) {
	r, err := ParseRelease(nil)
	if err != nil || len(r.Checks) != 0 || r.Analysis.Disabled {
		t.Fatalf("an empty node = %+v %v, want the defaults", r, err)
	}
	if a := r.Analysis.WithDefaults(); time.Duration(a.Window) != DefaultAnalysisWindow || a.MaxErrorRate != 0.05 || a.MinErrors != 20 || a.MaxP99Ratio != 2 {
		t.Fatalf("defaults = %+v", a)
	}
	good := `{"checks":[{"name":"home","http":{"url":"http://127.0.0.1:8089/","status":200,"body":"v2"},"timeout":"2s"},
		{"name":"smoke","command":["./smoke.sh","--quick"]}],"analysis":{"window":"30s","max_error_rate":0.01}}`
	r, err = ParseRelease([]byte(good))
	if err != nil || len(r.Checks) != 2 || time.Duration(r.Checks[0].Timeout) != 2*time.Second || time.Duration(r.Analysis.Window) != 30*time.Second {
		t.Fatalf("ParseRelease(good) = %+v, %v", r, err)
	}
	for _, tc := range []struct{ in, says string }{
		{`{`, "release settings"},
		{`{"checks":[],"surprise":1}`, "unknown field"},
		{`{"checks":[{"name":"x"}]}`, "exactly one of http and command"},
		{`{"checks":[{"name":"x","http":{"url":"http://a/"},"command":["true"]}]}`, "exactly one"},
		{`{"checks":[{"name":"x","http":{"url":"file:///etc/passwd"}}]}`, "not an http:// or https:// URL"},
		{`{"checks":[{"name":"x","http":{"url":"http://a/","status":700}}]}`, "not an HTTP status"},
		{`{"checks":[{"name":"x","http":{"url":"http://a/"}},{"name":"x","command":["true"]}]}`, "two checks"},
		{`{"checks":[{"name":"","command":["true"]}]}`, "name of 1 to 64"},
		{`{"checks":[{"name":"x","command":["true"],"timeout":"1h"}]}`, "timeout"},
		{`{"checks":[{"name":"x","command":["true"],"timeout":"soon"}]}`, "not a duration"},
		{`{"analysis":{"window":"2h"}}`, "window"},
		{`{"analysis":{"max_error_rate":2}}`, "max_error_rate"},
		{`{"analysis":{"max_p99_ratio":0.5}}`, "max_p99_ratio"},
		{`{} {}`, "more than one"},
		{`{"analysis":{"window":"` + strings.Repeat("9", 70000) + `s"}}`, "over"},
	} {
		if _, err := ParseRelease([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseRelease(%.60s) = %v, want an error saying %q", tc.in, err, tc.says)
		}
	}
}
