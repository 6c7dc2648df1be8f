package gateway

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"pgregory.net/rapid"

	"github.com/switchyard/switchyard/internal/testutil"
)

// sampleAccessEntry is a 502 with every field set; i makes its request id.
func sampleAccessEntry(i int) AccessEntry {
	return AccessEntry{
		Time:         time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.FixedZone("MST", -7*3600)),
		RequestID:    fmt.Sprintf("req-%d", i),
		Remote:       "203.0.113.7:51234",
		Method:       "GET",
		Host:         "shop.example",
		Path:         "/api/orders?id=7",
		Proto:        "HTTP/1.1",
		Status:       502,
		BytesIn:      321,
		BytesOut:     1234,
		Duration:     12345 * time.Microsecond,
		Service:      "orders",
		Upstream:     "orders-blue-1",
		UpstreamAddr: "10.0.0.5:8080",
		Color:        "blue",
		Retries:      2,
		Error:        "dial tcp 10.0.0.5:8080: connection refused",
		UserAgent:    "curl/8.5.0",
		Referer:      "https://example.com/",
	}
}

// accessJSON is a JSON line as a consumer decodes it.
type accessJSON struct {
	Time         string  `json:"time"`
	RequestID    string  `json:"request_id"`
	Remote       string  `json:"remote"`
	Method       string  `json:"method"`
	Host         string  `json:"host"`
	Path         string  `json:"path"`
	Proto        string  `json:"proto"`
	Status       int     `json:"status"`
	BytesIn      int64   `json:"bytes_in"`
	BytesOut     int64   `json:"bytes_out"`
	DurationMS   float64 `json:"duration_ms"`
	Service      string  `json:"service"`
	Upstream     string  `json:"upstream"`
	UpstreamAddr string  `json:"upstream_addr"`
	Color        string  `json:"color"`
	Retries      int     `json:"retries"`
	Error        string  `json:"error"`
	UserAgent    string  `json:"user_agent"`
	Referer      string  `json:"referer"`
}

// decodeAccessJSON decodes line strictly: no unknown key, nothing after it.
func decodeAccessJSON(t testing.TB, line string) (accessJSON, map[string]any) {
	t.Helper()
	var v accessJSON
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("line %q does not decode: %v", line, err)
	}
	if dec.More() {
		t.Fatalf("line %q holds more than one object", line)
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(line), &keys); err != nil {
		t.Fatalf("line %q does not decode: %v", line, err)
	}
	return v, keys
}

// readAccessLines reads a log file, which must end with a whole line.
func readAccessLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitAccessLines(t, string(b))
}

func splitAccessLines(t testing.TB, s string) []string {
	t.Helper()
	if s == "" {
		return nil
	}
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("the log ends inside a line: %q", s)
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// logAccessToFile writes entries to a fresh file in format and returns its lines.
func logAccessToFile(t testing.TB, format string, entries ...AccessEntry) []string {
	t.Helper()
	log, _ := quietLog()
	path := filepath.Join(t.TempDir(), "access.log")
	a, err := OpenAccessLog(path, format, AccessLogOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		a.Log(&entries[i])
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return readAccessLines(t, path)
}

func accessRequestIDs(t testing.TB, lines []string) []string {
	t.Helper()
	ids := make([]string, len(lines))
	for i, l := range lines {
		v, _ := decodeAccessJSON(t, l)
		ids[i] = v.RequestID
	}
	return ids
}

func wantAccessRequestIDs(from, to int) []string {
	var ids []string
	for i := from; i <= to; i++ {
		ids = append(ids, fmt.Sprintf("req-%d", i))
	}
	return ids
}

// breaksAccessLine reports a rune that a terminal, a log shipper or JavaScript
// may take for a line end or a control sequence.
func breaksAccessLine(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }

// hostileAccessValues are header-derived values that try to split or forge a line.
var hostileAccessValues = []struct{ desc, v string }{
	{desc: "a newline", v: "a\nb"},
	{desc: "a CRLF and a forged JSON line", v: "a\r\n{\"status\":200,\"path\":\"/\"}"},
	{desc: "quotes that close the string", v: `a","status":999,"x":"`},
	{desc: "a forged common log line", v: "x\" 200 1 \"-\" \"-\"\n1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 0"},
	{desc: "backslashes", v: `a\"b\`},
	{desc: "a NUL", v: "a\x00b"},
	{desc: "a terminal escape sequence", v: "\x1b[31mred\x1b[0m"},
	{desc: "DEL and a C1 control", v: "a\x7fb\u009bc"},
	{desc: "invalid UTF-8", v: "a\xff\xfeb\xe2\x80"},
	{desc: "U+2028 and U+2029", v: "a\u2028b\u2029c"},
	{desc: "valid non-ASCII", v: "héllo 世界 🚀"},
	{desc: "U+FFFD itself", v: "\ufffd"},
	{desc: "a tab and spaces", v: "a\tb c"},
}

func hostileAccessEntry(v string) AccessEntry {
	e := sampleAccessEntry(0)
	e.RequestID, e.Remote, e.Method, e.Host, e.Path, e.Proto = v, v, v, v, v, v
	e.Service, e.Upstream, e.UpstreamAddr, e.Color = v, v, v, v
	e.Error, e.UserAgent, e.Referer = v, v, v
	return e
}

func TestAccessLogJSON(t *testing.T) {
	t.Run("a line carries every field", func(t *testing.T) {
		lines := logAccessToFile(t, "json", sampleAccessEntry(1))
		if len(lines) != 1 {
			t.Fatalf("got %d lines, want 1: %q", len(lines), lines)
		}
		got, keys := decodeAccessJSON(t, lines[0])
		want := accessJSON{
			Time: "2026-03-04T12:06:07.890Z", RequestID: "req-1", Remote: "203.0.113.7:51234",
			Method: "GET", Host: "shop.example", Path: "/api/orders?id=7", Proto: "HTTP/1.1",
			Status: 502, BytesIn: 321, BytesOut: 1234, DurationMS: 12.345,
			Service: "orders", Upstream: "orders-blue-1", UpstreamAddr: "10.0.0.5:8080", Color: "blue", Retries: 2,
			Error: "dial tcp 10.0.0.5:8080: connection refused", UserAgent: "curl/8.5.0", Referer: "https://example.com/",
		}
		if got != want {
			t.Errorf("decoded %+v,\nwant    %+v", got, want)
		}
		if len(keys) != 19 {
			t.Errorf("line has %d keys, want all 19: %s", len(keys), lines[0])
		}
	})

	t.Run("error and referer are left out when empty", func(t *testing.T) {
		e := sampleAccessEntry(1)
		e.Error, e.Referer, e.Upstream = "", "", ""
		lines := logAccessToFile(t, "json", e)
		_, keys := decodeAccessJSON(t, lines[0])
		for _, k := range []string{"error", "referer"} {
			if _, ok := keys[k]; ok {
				t.Errorf("key %q is present: %s", k, lines[0])
			}
		}
		if v, ok := keys["upstream"]; !ok || v != "" {
			t.Errorf("upstream = %v, %v; want an empty string: %s", v, ok, lines[0])
		}
	})

	for _, tc := range hostileAccessValues {
		t.Run(tc.desc+" stays within its line and field", func(t *testing.T) {
			lines := logAccessToFile(t, "json", hostileAccessEntry(tc.v), sampleAccessEntry(1))
			if len(lines) != 2 {
				t.Fatalf("got %d lines, want 2: %q", len(lines), lines)
			}
			if !utf8.ValidString(lines[0]) || strings.ContainsFunc(lines[0], breaksAccessLine) {
				t.Errorf("line holds invalid UTF-8 or a raw control or line separator: %q", lines[0])
			}
			got, _ := decodeAccessJSON(t, lines[0])
			want := string([]rune(tc.v)) // each byte that is not UTF-8 becomes U+FFFD, as in encoding/json
			for field, v := range map[string]string{
				"request_id": got.RequestID, "remote": got.Remote, "method": got.Method, "host": got.Host,
				"path": got.Path, "proto": got.Proto, "service": got.Service, "upstream": got.Upstream,
				"upstream_addr": got.UpstreamAddr, "color": got.Color, "error": got.Error,
				"user_agent": got.UserAgent, "referer": got.Referer,
			} {
				if v != want {
					t.Errorf("%s = %q, want %q", field, v, want)
				}
			}
			if got.Status != 502 {
				t.Errorf("status = %d, want 502", got.Status)
			}
			if next, _ := decodeAccessJSON(t, lines[1]); next.RequestID != "req-1" {
				t.Errorf("the next line's request_id = %q, want req-1", next.RequestID)
			}
		})
	}
}

var commonAccessLine = regexp.MustCompile(`^(\S+) - - \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+) "([^"]*)" "([^"]*)" rt=(\d+\.\d{3}) svc=(\S+) up=(\S+) color=(\S+) rid=(\S+)$`)

// unescapeCommon undoes nginx's \xHH escaping and its "-" for empty.
func unescapeCommon(s string) (string, error) {
	if s == "-" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) || s[i+1] != 'x' {
			return "", fmt.Errorf("bad escape at %d in %q", i, s)
		}
		c, err := hex.DecodeString(s[i+2 : i+4])
		if err != nil {
			return "", fmt.Errorf("bad escape at %d in %q: %w", i, s, err)
		}
		b.Write(c)
		i += 3
	}
	return b.String(), nil
}

func TestAccessLogCommon(t *testing.T) {
	t.Run("a line is nginx's combined format with the gateway's fields", func(t *testing.T) {
		e := sampleAccessEntry(1)
		e.Status = 200
		lines := logAccessToFile(t, "common", e)
		want := `203.0.113.7:51234 - - [04/Mar/2026:05:06:07 -0700] "GET /api/orders?id=7 HTTP/1.1" 200 1234 "https://example.com/" "curl/8.5.0" rt=0.012 svc=orders up=orders-blue-1 color=blue rid=req-1`
		if len(lines) != 1 || lines[0] != want {
			t.Errorf("got  %q\nwant %q", lines, want)
		}
	})

	t.Run("empty fields are written -", func(t *testing.T) {
		e := sampleAccessEntry(1)
		e.Referer, e.UserAgent, e.Upstream, e.RequestID = "", "", "", ""
		lines := logAccessToFile(t, "common", e)
		m := commonAccessLine.FindStringSubmatch(lines[0])
		if m == nil {
			t.Fatalf("line does not match: %q", lines[0])
		}
		if m[8] != "-" || m[9] != "-" || m[12] != "-" || m[14] != "-" {
			t.Errorf("empty referer, user agent, upstream and request id are not -: %q", lines[0])
		}
	})

	for _, tc := range hostileAccessValues {
		t.Run(tc.desc+" is escaped as nginx does", func(t *testing.T) {
			lines := logAccessToFile(t, "common", hostileAccessEntry(tc.v), sampleAccessEntry(1))
			if len(lines) != 2 {
				t.Fatalf("got %d lines, want 2: %q", len(lines), lines)
			}
			for _, c := range []byte(lines[0]) {
				if c < 0x20 || c > 0x7e {
					t.Fatalf("line holds byte %#x: %q", c, lines[0])
				}
			}
			m := commonAccessLine.FindStringSubmatch(lines[0])
			if m == nil {
				t.Fatalf("line does not match the format: %q", lines[0])
			}
			for i, field := range map[int]string{1: "remote", 3: "method", 4: "path", 5: "proto", 8: "referer", 9: "user agent", 11: "svc", 12: "up", 13: "color", 14: "rid"} {
				if got, err := unescapeCommon(m[i]); err != nil || got != tc.v {
					t.Errorf("%s %q unescapes to %q, %v; want %q", field, m[i], got, err, tc.v)
				}
			}
			if m[6] != "502" {
				t.Errorf("status = %s, want 502", m[6])
			}
			if !strings.HasSuffix(lines[1], " rid=req-1") {
				t.Errorf("the next line is not req-1's: %q", lines[1])
			}
		})
	}
}

func TestAccessLogEscapesAnyBytes(t *testing.T) {
	specials := rapid.SampledFrom([]rune{'"', '\\', '\n', '\r', ' ', 0, 0x1b, 0x7f, 0x9b, 0xa0, 0x2028, 0x2029, 0xfffd, 'é', '🚀'})
	part := rapid.OneOf(
		rapid.String(),
		rapid.StringOf(specials),
		rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) }),
	)
	rapid.Check(t, func(t *rapid.T) {
		s := strings.Join(rapid.SliceOf(part).Draw(t, "parts"), "")

		enc := string(appendJSONString(nil, s))
		var got string
		if err := json.Unmarshal([]byte(enc), &got); err != nil {
			t.Fatalf("JSON %q of %q does not decode: %v", enc, s, err)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("JSON %q decodes to %q, want %q", enc, got, want)
		}
		if !utf8.ValidString(enc) || strings.ContainsFunc(enc, breaksAccessLine) {
			t.Fatalf("JSON %q holds invalid UTF-8 or a raw control or line separator", enc)
		}

		for _, escapeSpace := range []bool{true, false} {
			field := string(appendLogField(nil, s, escapeSpace))
			want := s
			if s == "-" {
				// As in nginx's log, a value of "-" reads as none.
				want = ""
			}
			if got, err := unescapeCommon(field); err != nil || got != want {
				t.Fatalf("common field %q unescapes to %q, %v; want %q", field, got, err, want)
			}
			if strings.ContainsFunc(field, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == ' ' && escapeSpace }) {
				t.Fatalf("common field %q (spaces escaped: %v) holds a byte that ends a field or line", field, escapeSpace)
			}
		}
	})
}

func TestAccessLogOff(t *testing.T) {
	a, err := OpenAccessLog("off", "", AccessLogOptions{})
	if err != nil || a != nil {
		t.Fatalf("OpenAccessLog(off) = %v, %v; want nil, nil", a, err)
	}
	e := sampleAccessEntry(1)
	a.Log(&e)
	if a.Written() != 0 || a.Dropped() != 0 {
		t.Errorf("an off log counts written %d, dropped %d", a.Written(), a.Dropped())
	}
	if err := a.Reopen(); err != nil {
		t.Errorf("Reopen: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestAccessLogOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "access.log")
	for _, tc := range []struct {
		desc, dest, format string
		is                 error // nil: no sentinel to check
		names              string
	}{
		{desc: "an unknown format is refused and named", dest: filepath.Join(dir, "a.log"), format: "xml", is: ErrAccessLogFormat, names: `"xml"`},
		{desc: "an unknown format is refused even when the log is off", dest: "off", format: "yaml", is: ErrAccessLogFormat, names: `"yaml"`},
		{desc: "a path in a missing directory is refused and named", dest: missing, format: "json", is: fs.ErrNotExist, names: missing},
		{desc: "an empty destination is refused", dest: "", format: "json", names: "destination is empty"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			a, err := OpenAccessLog(tc.dest, tc.format, AccessLogOptions{})
			if err == nil {
				_ = a.Close()
				t.Fatal("OpenAccessLog succeeded")
			}
			if a != nil {
				t.Errorf("OpenAccessLog returned a log with its error %v", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name %s", err, tc.names)
			}
		})
	}
}

func TestAccessLogAppendsToAFileCreated0640(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	log, _ := quietLog()
	a, err := OpenAccessLog(path, "json", AccessLogOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	e := sampleAccessEntry(1)
	a.Log(&e)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o640 != 0 || perm&0o600 != 0o600 {
		t.Errorf("file mode %v, want 0640 (less what the umask takes)", perm)
	}

	if a, err = OpenAccessLog(path, "json", AccessLogOptions{Log: log}); err != nil {
		t.Fatal(err)
	}
	e = sampleAccessEntry(2)
	a.Log(&e)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := accessRequestIDs(t, readAccessLines(t, path)), wantAccessRequestIDs(1, 2); !slices.Equal(got, want) {
		t.Errorf("request ids %q, want %q", got, want)
	}
}

// stuckAccessWriter is an output that stopped taking lines, as a pipe nobody
// reads or a hung disk does, until release is closed.
type stuckAccessWriter struct {
	stuck   atomic.Bool
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newStuckAccessWriter() *stuckAccessWriter {
	return &stuckAccessWriter{release: make(chan struct{})}
}

func (w *stuckAccessWriter) Write(p []byte) (int, error) {
	w.stuck.Store(true)
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stuckAccessWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// stuckAccessLog returns a log whose writer is stuck on the first line,
// req-0, with an empty queue of size queue behind it.
func stuckAccessLog(t *testing.T, queue int, log logrus.FieldLogger) (*AccessLog, *stuckAccessWriter) {
	t.Helper()
	w := newStuckAccessWriter()
	a := startAccessLog(w, nil, "", accessFormatJSON, AccessLogOptions{Queue: queue, Log: log})
	e := sampleAccessEntry(0)
	a.Log(&e)
	testutil.Eventually(t, 5*time.Second, "the writer is stuck on the first line", w.stuck.Load)
	return a, w
}

func TestAccessLogFullQueueDropsInsteadOfBlocking(t *testing.T) {
	log, hook := quietLog()
	const queue, burst = 16, 1000
	a, w := stuckAccessLog(t, queue, log)

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := 1; i <= burst; i++ {
			e := sampleAccessEntry(i)
			a.Log(&e)
		}
	}()
	testutil.Eventually(t, 5*time.Second, "Log returns while the writer is stuck", func() bool {
		select {
		case <-returned:
			return true
		default:
			return false
		}
	})
	if got, want := a.Dropped(), uint64(burst-queue); got != want {
		t.Errorf("Dropped = %d, want %d", got, want)
	}

	close(w.release)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := a.Written(), uint64(queue+1); got != want {
		t.Errorf("Written = %d, want %d", got, want)
	}
	if got, want := accessRequestIDs(t, splitAccessLines(t, w.String())), wantAccessRequestIDs(0, queue); !slices.Equal(got, want) {
		t.Errorf("written request ids %q, want %q", got, want)
	}

	// Close waits for the warnings, so none can still come.
	var warnings []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "dropping lines") {
			warnings = append(warnings, e)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("got %d warnings about dropped lines, want 1 per 10 s", len(warnings))
	}
	if n, _ := warnings[0].Data["queue_full"].(uint64); n == 0 {
		t.Errorf("the warning does not count lines over the queue: %v", warnings[0].Data)
	}
}

func TestAccessLogRateDropsLinesOverIt(t *testing.T) {
	log, _ := quietLog()
	path := filepath.Join(t.TempDir(), "access.log")
	const rate, burst = 100, 1000
	start := time.Now()
	a, err := OpenAccessLog(path, "json", AccessLogOptions{Rate: rate, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := range burst {
		e := sampleAccessEntry(i)
		a.Log(&e)
	}
	testutil.Eventually(t, 5*time.Second, "every line is written or dropped", func() bool { return a.Written()+a.Dropped() == burst })
	elapsed := time.Since(start)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// The first Rate lines pass at once; after them, Rate a second.
	written, limit := a.Written(), uint64(rate+rate*elapsed.Seconds()+1)
	if written < rate || written > limit {
		t.Errorf("written %d lines of a burst of %d in %v, want %d to %d", written, burst, elapsed, rate, limit)
	}
	if got := a.dropped[accessDropOverRate].Load(); got != burst-written {
		t.Errorf("dropped over the rate %d, want %d", got, burst-written)
	}
	if got := len(readAccessLines(t, path)); uint64(got) != written {
		t.Errorf("file holds %d lines, Written says %d", got, written)
	}
}

func TestAccessLogReopen(t *testing.T) {
	t.Run("after the file was moved, new lines go to a new file at the path", func(t *testing.T) {
		log, _ := quietLog()
		path := filepath.Join(t.TempDir(), "access.log")
		a, err := OpenAccessLog(path, "json", AccessLogOptions{Log: log})
		if err != nil {
			t.Fatal(err)
		}
		logIDs := func(from, to int) {
			for i := from; i <= to; i++ {
				e := sampleAccessEntry(i)
				a.Log(&e)
			}
			testutil.Eventually(t, 5*time.Second, "the lines are written", func() bool { return a.Written() == uint64(to+1) })
		}
		logIDs(0, 2)
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		if err := a.Reopen(); err != nil {
			t.Fatalf("Reopen: %v", err)
		}
		logIDs(3, 4)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if got, want := accessRequestIDs(t, readAccessLines(t, path+".1")), wantAccessRequestIDs(0, 2); !slices.Equal(got, want) {
			t.Errorf("the moved file holds %q, want %q", got, want)
		}
		if got, want := accessRequestIDs(t, readAccessLines(t, path)), wantAccessRequestIDs(3, 4); !slices.Equal(got, want) {
			t.Errorf("the new file holds %q, want %q", got, want)
		}
		if err := a.Reopen(); !errors.Is(err, ErrAccessLogClosed) {
			t.Errorf("Reopen after Close = %v, want %v", err, ErrAccessLogClosed)
		}
	})

	t.Run("stdout is neither reopened nor closed", func(t *testing.T) {
		a, err := OpenAccessLog("stdout", "json", AccessLogOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Reopen(); err != nil {
			t.Errorf("Reopen: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Stdout.Stat(); err != nil {
			t.Errorf("stdout was closed: %v", err)
		}
	})
}

func TestAccessLogCloseWritesWhatIsQueued(t *testing.T) {
	log, _ := quietLog()
	const queue = 64
	a, w := stuckAccessLog(t, queue, log)
	for i := 1; i <= queue; i++ {
		e := sampleAccessEntry(i)
		a.Log(&e)
	}

	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	// While the queue is full, a probe is dropped as over the queue; once
	// Close has begun, as closed.
	testutil.Eventually(t, 5*time.Second, "Close stops taking lines", func() bool {
		e := sampleAccessEntry(-1)
		a.Log(&e)
		return a.dropped[accessDropClosed].Load() > 0
	})
	close(w.release)
	testutil.Eventually(t, 5*time.Second, "Close returns", func() bool { return len(closed) == 1 })
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := accessRequestIDs(t, splitAccessLines(t, w.String())), wantAccessRequestIDs(0, queue); !slices.Equal(got, want) {
		t.Errorf("written request ids %q, want %q", got, want)
	}
	if got := a.Written(); got != queue+1 {
		t.Errorf("Written = %d, want %d", got, queue+1)
	}
}

func TestAccessLogLogDuringCloseIsDroppedNotPanics(t *testing.T) {
	log, _ := quietLog()
	path := filepath.Join(t.TempDir(), "access.log")
	a, err := OpenAccessLog(path, "json", AccessLogOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Uint64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			// Each goroutine logs until its own lines are refused, so it
			// is logging while Close runs.
			for a.dropped[accessDropClosed].Load() == 0 {
				e := sampleAccessEntry(int(calls.Add(1)))
				a.Log(&e)
			}
		})
	}
	testutil.Eventually(t, 5*time.Second, "lines are being written", func() bool { return a.Written() > 0 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got, want := a.Written()+a.Dropped(), calls.Load(); got != want {
		t.Errorf("written %d + dropped %d = %d, want the %d lines logged", a.Written(), a.Dropped(), got, want)
	}
	if got := len(readAccessLines(t, path)); uint64(got) != a.Written() {
		t.Errorf("file holds %d lines, Written says %d", got, a.Written())
	}
}

var errAccessDiskFull = errors.New("no space left on device")

type failingAccessWriter struct{}

func (failingAccessWriter) Write([]byte) (int, error) { return 0, errAccessDiskFull }

// tearingAccessWriter writes half of its first batch and fails, as a disk that
// filled up mid-write does, then works.
type tearingAccessWriter struct {
	mu   sync.Mutex
	tore bool
	buf  bytes.Buffer
}

func (w *tearingAccessWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.tore {
		w.tore = true
		n, _ := w.buf.Write(p[:len(p)/2])
		return n, errAccessDiskFull
	}
	return w.buf.Write(p)
}

func (w *tearingAccessWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// scriptedAccessWriter fails its writes as fail says, one entry per
// write: the first failing one writes half of what it was given.
type scriptedAccessWriter struct {
	mu     sync.Mutex
	fail   []bool
	writes int
	buf    bytes.Buffer
}

func (w *scriptedAccessWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.writes
	w.writes++
	if i < len(w.fail) && w.fail[i] {
		if i == 0 {
			n, _ := w.buf.Write(p[:len(p)/2])
			return n, errAccessDiskFull
		}
		return 0, errAccessDiskFull
	}
	return w.buf.Write(p)
}

func (w *scriptedAccessWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestAccessLogWriteFailure(t *testing.T) {
	t.Run("a failed write drops its lines and is reported once", func(t *testing.T) {
		log, hook := quietLog()
		a := startAccessLog(failingAccessWriter{}, nil, "", accessFormatJSON, AccessLogOptions{Log: log})
		for i := range 3 {
			e := sampleAccessEntry(i)
			a.Log(&e)
		}
		testutil.Eventually(t, 5*time.Second, "the lines are dropped", func() bool { return a.Dropped() == 3 })
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if a.Written() != 0 {
			t.Errorf("Written = %d, want 0", a.Written())
		}
		var warned int
		for _, e := range hook.AllEntries() {
			if err, _ := e.Data[logrus.ErrorKey].(error); e.Level == logrus.WarnLevel && errors.Is(err, errAccessDiskFull) {
				warned++
			}
		}
		if warned != 1 {
			t.Errorf("got %d warnings with the write error, want 1 per 10 s", warned)
		}
	})

	t.Run("a batch whose newline after a cut line fails is not glued to it", func(t *testing.T) {
		log, _ := quietLog()
		w := &scriptedAccessWriter{fail: []bool{true, true}} // the cut write, then the newline
		a := startAccessLog(w, nil, "", accessFormatJSON, AccessLogOptions{Log: log})
		for i := range 3 {
			e := sampleAccessEntry(i)
			a.Log(&e)
			if i < 2 {
				testutil.Eventually(t, 5*time.Second, "the line is dropped", func() bool { return a.Dropped() == uint64(i+1) })
			}
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		lines := splitAccessLines(t, w.String())
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want the cut one and req-2: %q", len(lines), lines)
		}
		if got := accessRequestIDs(t, lines[1:]); got[0] != "req-2" {
			t.Errorf("second line is %q, want req-2", got[0])
		}
		if a.Written() != 1 || a.Dropped() != 2 {
			t.Errorf("Written = %d, Dropped = %d; want 1 and 2", a.Written(), a.Dropped())
		}
	})

	t.Run("the line after a cut one starts on a line of its own", func(t *testing.T) {
		log, _ := quietLog()
		w := &tearingAccessWriter{}
		a := startAccessLog(w, nil, "", accessFormatJSON, AccessLogOptions{Log: log})
		e := sampleAccessEntry(0)
		a.Log(&e)
		testutil.Eventually(t, 5*time.Second, "the first line is dropped", func() bool { return a.Dropped() == 1 })
		e = sampleAccessEntry(1)
		a.Log(&e)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		lines := splitAccessLines(t, w.String())
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want the cut one and req-1: %q", len(lines), lines)
		}
		if got := accessRequestIDs(t, lines[1:]); got[0] != "req-1" {
			t.Errorf("second line is %q, want req-1", got[0])
		}
		if a.Written() != 1 {
			t.Errorf("Written = %d, want 1", a.Written())
		}
	})
}

// The lines waiting for the writer cost memory only while they wait: a
// log that may hold 65,536 of them allocates nothing for them up front (a
// queue of entries did: 65,536 × 290 bytes, 19 MB, scanned by every
// collection), and once its lines are written it holds no more than the
// buffers of its last write.
func TestAccessLogQueueCostsOnlyTheLinesWaiting(t *testing.T) {
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	var a *AccessLog
	if n := allocated(func() {
		a = startAccessLog(io.Discard, nil, "", accessFormatJSON, AccessLogOptions{Queue: 1 << 16})
	}); n > 64<<10 {
		t.Errorf("opening a log that may hold 65,536 lines allocated %d bytes", n)
	}
	_ = a.Close()

	// A burst of 2,000 lines (about 600 KB) waits while the writer is
	// stuck, then goes out in one write; the next write hands Log back
	// that write's buffer, which must not be the burst's.
	log, _ := quietLog()
	a, w := stuckAccessLog(t, 4096, log)
	defer func() { _ = a.Close() }()
	for i := 1; i <= 2000; i++ {
		e := sampleAccessEntry(i)
		a.Log(&e)
	}
	close(w.release)
	testutil.Eventually(t, 5*time.Second, "the burst is written", func() bool { return a.Written() == 2001 })
	e := sampleAccessEntry(2001)
	a.Log(&e)
	testutil.Eventually(t, 5*time.Second, "the line after it is written", func() bool { return a.Written() == 2002 })
	a.mu.Lock()
	pending, lines := cap(a.pending), a.lines
	a.mu.Unlock()
	if lines != 0 || pending > 4*accessBatchBytes {
		t.Errorf("after a burst was written the log holds %d lines in a buffer of %d bytes", lines, pending)
	}
}

func TestAccessLogLogDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		desc string
		rate int
	}{
		{desc: "without a rate"},
		{desc: "with a rate", rate: 1 << 30},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			a := startAccessLog(io.Discard, nil, "", accessFormatJSON, AccessLogOptions{Rate: tc.rate})
			defer func() { _ = a.Close() }()
			e := sampleAccessEntry(1)
			if n := testing.AllocsPerRun(1000, func() { a.Log(&e) }); n != 0 {
				t.Errorf("Log allocates %v times per call", n)
			}
		})
	}
}

func BenchmarkAccessLog(b *testing.B) {
	for _, bc := range []struct {
		desc string
		rate int
	}{
		{desc: "file"},
		{desc: "file with a rate of 10000 per s", rate: 10000},
	} {
		b.Run(bc.desc, func(b *testing.B) {
			log, _ := quietLog()
			a, err := OpenAccessLog(filepath.Join(b.TempDir(), "access.log"), "json", AccessLogOptions{Rate: bc.rate, Log: log})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				e := sampleAccessEntry(1)
				for pb.Next() {
					a.Log(&e)
				}
			})
			b.StopTimer()
			if err := a.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
		})
	}
}

// BenchmarkAccessLogEncode is the writer's cost per line, with
// encoding/json for comparison.
func BenchmarkAccessLogEncode(b *testing.B) {
	e := sampleAccessEntry(1)
	var buf []byte
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendAccessJSON(buf[:0], &e)
		}
	})
	b.Run("common", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendAccessCommon(buf[:0], &e)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		v := accessJSON{Time: e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), RequestID: e.RequestID, Remote: e.Remote,
			Method: e.Method, Host: e.Host, Path: e.Path, Proto: e.Proto, Status: e.Status, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
			DurationMS: float64(e.Duration) / 1e6, Service: e.Service, Upstream: e.Upstream, UpstreamAddr: e.UpstreamAddr,
			Color: e.Color, Retries: e.Retries, Error: e.Error, UserAgent: e.UserAgent, Referer: e.Referer}
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if buf, err = json.Marshal(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
