package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// AccessEntry is one request as the access log records it.
type AccessEntry struct {
	Time                      time.Time // when the request started
	RequestID                 string    // X-Request-Id
	Remote                    string    // host:port of the peer, or the client IP from a trusted X-Forwarded-For
	Method, Host, Path, Proto string    // Path with the query, as received
	Status                    int
	BytesIn                   int64 // request body bytes read
	BytesOut                  int64 // response body bytes written
	Duration                  time.Duration
	Service                   string
	Upstream                  string // instance id, "" when none
	UpstreamAddr              string // host:port
	Color                     string
	// Preview marks check traffic: a request of the preview listener, or
	// one a trusted proxy sent to a color with Switchyard-Color.
	Preview            bool
	Retries            int
	Error              string // the upstream error of a 502 or 504, else ""
	UserAgent, Referer string
}

// AccessLogOptions tunes an AccessLog. The zero value is usable.
type AccessLogOptions struct {
	// Queue is how many lines may wait between the request path and the
	// writer; default 8192. They cost memory only as they wait: what is
	// kept after a burst is at most two buffers of 256 KB.
	Queue int
	// Rate is the most lines written per second, 0 for no limit. A burst
	// of up to Rate lines passes at once; lines over it are dropped and
	// counted, so that a flood cannot fill the disk.
	Rate int
	// Log is where dropped lines are reported, once per 10 s at most;
	// default logrus.StandardLogger().
	Log logrus.FieldLogger
}

var (
	// ErrAccessLogFormat is wrapped by OpenAccessLog for a format it does
	// not know.
	ErrAccessLogFormat = errors.New("gateway: unknown access log format")
	// ErrAccessLogClosed is returned by Reopen after Close.
	ErrAccessLogClosed = errors.New("gateway: access log is closed")
)

const (
	defaultAccessQueue = 8192
	accessLinger       = time.Millisecond // how long the writer lets lines gather after the first
	accessBatchBytes   = 64 << 10         // a batch buffer larger than 4× this is not kept
	accessLineBytes    = 512              // a line formatted in Log up to this size needs no allocation
	accessWarnEvery    = 10 * time.Second
)

var accessNewline = []byte{'\n'}

// accessFormat is how a line is written.
type accessFormat int

const (
	accessFormatJSON accessFormat = iota
	accessFormatCommon
)

func (f accessFormat) String() string {
	if f == accessFormatCommon {
		return "common"
	}
	return "json"
}

func parseAccessFormat(s string) (accessFormat, error) {
	switch s {
	case "", "json":
		return accessFormatJSON, nil
	case "common":
		return accessFormatCommon, nil
	}
	return 0, fmt.Errorf("%w %q (want json or common)", ErrAccessLogFormat, s)
}

// accessDropReason is why a line was not written.
type accessDropReason int

const (
	accessDropQueueFull accessDropReason = iota
	accessDropOverRate
	accessDropClosed
	accessDropWriteFailed
	numAccessDropReasons
)

func (r accessDropReason) String() string {
	return [...]string{"queue_full", "over_rate", "closed", "write_failed"}[r]
}

// AccessLog writes one line per request from its own goroutine, so that a
// slow disk or a flood of requests never holds up a request: Log formats
// the line and appends it to the lines waiting, and drops it when the
// writer cannot keep up.
//
// Log formats in the request's goroutine, into a buffer on its stack, and
// what waits for the writer is bytes: a queue of entries would hold every
// entry's strings until written and cost its whole capacity (8,192 entries
// of about 290 bytes, 2.3 MB that every collection scanned) in every
// gateway; waiting lines cost only their bytes, and nothing the collector
// scans.
// A nil *AccessLog is an access log that is off.
type AccessLog struct {
	format accessFormat
	queue  int         // the most lines that may wait
	limit  *accessRate // nil without a Rate
	log    logrus.FieldLogger
	path   string        // what Reopen opens again; "" unless we opened a file
	reopen chan *os.File // a freshly opened path, for the writer to switch to
	wake   chan struct{} // the first line after the writer took the last ones, or Close
	done   chan struct{} // closed when the writer has stopped
	start  time.Time     // the monotonic base of nextWarn
	err    error         // from closing the file, set before done is closed

	mu      sync.Mutex
	pending []byte // lines waiting for the writer
	lines   int    // in pending
	// closed is set under mu, so that no line is appended after the
	// writer's last take; Log also reads it before it formats.
	closed atomic.Bool

	nextWarn atomic.Int64   // nanoseconds after start before dropping may be reported again
	warners  sync.WaitGroup // the goroutines reporting drops, which Close waits for
	written  atomic.Uint64
	dropped  [numAccessDropReasons]atomic.Uint64
}

// OpenAccessLog opens dest, which is "stdout", "stderr", "off" or the path
// of a file that is appended to (and created 0640). For "off" it returns a
// nil *AccessLog, whose methods do nothing. format is "json" (the default
// for "") or "common". A line in the common format is nginx's common log
// format followed by the combined format's referer and user agent and by
// what the gateway adds:
//
//	remote - - [02/Jan/2006:15:04:05 -0700] "GET /path?q HTTP/1.1" 200 1234 "referer" "user agent" rt=0.012 svc=<service> up=<instance> color=<color> rid=<request id>
//
// where the time is in the entry's location, the byte count is of the
// response body, rt is the duration in seconds, and an empty field is "-";
// check traffic (Preview) ends with " preview=1".
// As nginx does, quotes, backslashes, control and non-ASCII bytes are
// written as \xHH; spaces are too, except inside the quoted referer and
// user agent, so that no field splits in two.
func OpenAccessLog(dest, format string, opts AccessLogOptions) (*AccessLog, error) {
	f, err := parseAccessFormat(format)
	if err != nil {
		return nil, err
	}
	switch dest {
	case "off":
		return nil, nil
	case "stdout":
		return startAccessLog(os.Stdout, nil, "", f, opts), nil
	case "stderr":
		return startAccessLog(os.Stderr, nil, "", f, opts), nil
	case "":
		return nil, errors.New("gateway: access log destination is empty (want stdout, stderr, off or a path)")
	}
	file, err := openAccessFile(dest)
	if err != nil {
		return nil, err
	}
	return startAccessLog(file, file, dest, f, opts), nil
}

func openAccessFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("gateway: open access log: %w", err)
	}
	return f, nil
}

// startAccessLog starts the writer on out. file is out when it is a file
// that the log opened, to be closed by Close and replaced by Reopen; path
// is its name.
func startAccessLog(out io.Writer, file *os.File, path string, format accessFormat, opts AccessLogOptions) *AccessLog {
	if opts.Queue <= 0 {
		opts.Queue = defaultAccessQueue
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	a := &AccessLog{
		format: format,
		queue:  opts.Queue,
		log:    opts.Log.WithFields(logrus.Fields{"access_log": accessLogName(path, out), "format": format}),
		path:   path,
		reopen: make(chan *os.File),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		start:  time.Now(),
	}
	if opts.Rate > 0 {
		a.limit = newAccessRate(opts.Rate)
	}
	w := &accessWriter{out: out, file: file}
	go a.run(w)
	return a
}

func accessLogName(path string, out io.Writer) string {
	switch {
	case path != "":
		return path
	case out == os.Stdout:
		return "stdout"
	case out == os.Stderr:
		return "stderr"
	}
	return fmt.Sprintf("%T", out)
}

// Log formats e and leaves the line for the writer, and returns at once;
// it keeps nothing of e. When Queue lines are waiting, when lines come
// faster than the Rate, or after Close, the line is dropped and counted
// instead.
func (a *AccessLog) Log(e *AccessEntry) {
	if a == nil || e == nil {
		return
	}
	switch {
	case a.closed.Load():
		a.dropped[accessDropClosed].Add(1)
		return
	case a.limit != nil && !a.limit.allow():
		a.drop(accessDropOverRate)
		return
	}
	var buf [accessLineBytes]byte
	var line []byte
	if a.format == accessFormatCommon {
		line = appendAccessCommon(buf[:0], e)
	} else {
		line = appendAccessJSON(buf[:0], e)
	}
	a.mu.Lock()
	switch {
	case a.closed.Load():
		a.mu.Unlock()
		a.dropped[accessDropClosed].Add(1)
	case a.lines >= a.queue:
		a.mu.Unlock()
		a.drop(accessDropQueueFull)
	default:
		a.pending = append(a.pending, line...)
		a.lines++
		first := a.lines == 1
		a.mu.Unlock()
		if first {
			select {
			case a.wake <- struct{}{}:
			default:
			}
		}
	}
}

// drop counts a line that Log dropped and, at most once per
// accessWarnEvery, reports dropping from a goroutine of its own, as
// logging may block and Log must not.
func (a *AccessLog) drop(r accessDropReason) {
	a.dropped[r].Add(1)
	now := int64(time.Since(a.start))
	next := a.nextWarn.Load()
	if now < next || !a.nextWarn.CompareAndSwap(next, now+int64(accessWarnEvery)) {
		return
	}
	a.warners.Add(1)
	go func() {
		defer a.warners.Done()
		a.log.WithFields(logrus.Fields{
			accessDropQueueFull.String(): a.dropped[accessDropQueueFull].Load(),
			accessDropOverRate.String():  a.dropped[accessDropOverRate].Load(),
			"queue":                      a.queue,
		}).Warn("access log is dropping lines; requests are still served, their lines only counted")
	}()
}

// Dropped is how many lines were not written: over the queue or the
// Rate, logged after Close, or lost to a failed write.
func (a *AccessLog) Dropped() uint64 {
	if a == nil {
		return 0
	}
	var n uint64
	for i := range a.dropped {
		n += a.dropped[i].Load()
	}
	return n
}

// Written is how many lines were written.
func (a *AccessLog) Written() uint64 {
	if a == nil {
		return 0
	}
	return a.written.Load()
}

// Reopen opens the log's path again and writes the next lines there, for
// after logrotate moved the file (SIGHUP). The lines still waiting go to the
// new file. For stdout and stderr it does nothing. It waits for a write in
// progress; if the path cannot be opened, lines keep going to the old file.
func (a *AccessLog) Reopen() error {
	if a == nil || a.path == "" {
		return nil
	}
	f, err := openAccessFile(a.path)
	if err != nil {
		return fmt.Errorf("gateway: reopen access log: %w", err)
	}
	select {
	case a.reopen <- f:
		return nil
	case <-a.done:
		_ = f.Close()
		return ErrAccessLogClosed
	}
}

// Close writes the lines waiting, closes a file the log opened and stops
// the writer. Later Log calls are dropped.
func (a *AccessLog) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	first := !a.closed.Swap(true)
	a.mu.Unlock()
	if first {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	<-a.done
	if !first {
		return nil
	}
	a.warners.Wait()
	return a.err
}

// accessWriter is the writer goroutine's own state.
type accessWriter struct {
	out      io.Writer
	file     *os.File // out, when the log opened it
	batch    []byte   // the lines being written, then the buffer Log fills next
	torn     bool     // a failed write ended inside a line
	lastWarn time.Time
}

// run writes the waiting lines with one write a millisecond after the
// first of them came, so that a quiet gateway's lines appear at once and a
// busy one's go out many to a write (one wake-up and one write for many
// lines instead of one each, which the request path pays for in
// scheduling).
func (a *AccessLog) run(w *accessWriter) {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
			if !a.closed.Load() {
				time.Sleep(accessLinger)
			}
			if closed := a.writePending(w); closed {
				if w.file != nil {
					a.err = w.file.Close()
				}
				return
			}
		case f := <-a.reopen:
			// The lines waiting go to the new file: there is a wake for
			// them, since the first of them sent one and only writePending
			// takes lines.
			if w.file != nil {
				if err := w.file.Close(); err != nil {
					a.log.WithError(err).Warn("access log: closing the file it reopened failed; writing to the new one")
				}
			}
			w.out, w.file, w.torn = f, f, false
		}
	}
}

// writePending takes the lines waiting, leaving Log the buffer of the
// last write to fill, and writes them with one Write. The lines of a
// failed write are counted as dropped and not retried, so that the next
// ones do not wait behind a broken disk. It reports whether the log is
// closed: then no line can come after these.
func (a *AccessLog) writePending(w *accessWriter) (closed bool) {
	a.mu.Lock()
	batch, lines, closed := a.pending, a.lines, a.closed.Load()
	a.pending, a.lines = w.batch[:0], 0
	a.mu.Unlock()
	w.batch = batch
	if lines == 0 {
		return closed
	}
	var err error
	if w.torn {
		// The next line must not be glued to the end of a cut one: a
		// batch whose newline was not written is not written either.
		if _, err = w.out.Write(accessNewline); err == nil {
			w.torn = false
		}
	}
	whole := uint64(0)
	if err == nil {
		var n int
		n, err = w.out.Write(batch)
		whole = uint64(lines)
		if err != nil {
			whole = uint64(bytes.Count(batch[:n], accessNewline))
			w.torn = n > 0 && batch[n-1] != '\n'
		}
	}
	if err != nil {
		a.dropped[accessDropWriteFailed].Add(uint64(lines) - whole)
		if time.Since(w.lastWarn) >= accessWarnEvery {
			w.lastWarn = time.Now()
			a.log.WithError(err).WithField(accessDropWriteFailed.String(), a.dropped[accessDropWriteFailed].Load()).
				Warn("access log write failed; its lines are dropped, the next ones will be tried")
		}
	}
	a.written.Add(whole)
	if cap(w.batch) > 4*accessBatchBytes {
		w.batch = nil // a burst must not pin its buffer
	}
	return closed
}

// accessRate limits lines per second with the generic cell rate algorithm:
// its whole state is one atomic time, where golang.org/x/time/rate takes a
// mutex per call, and it runs on every request.
type accessRate struct {
	start     time.Time
	interval  int64        // nanoseconds between lines at the steady rate
	tolerance int64        // how far ahead of that pace a burst may run
	tat       atomic.Int64 // when, after start, the next line is due at the steady pace
}

func newAccessRate(perSecond int) *accessRate {
	interval := max(int64(time.Second)/int64(perSecond), 1)
	return &accessRate{start: time.Now(), interval: interval, tolerance: interval * int64(perSecond-1)}
}

func (l *accessRate) allow() bool {
	now := int64(time.Since(l.start))
	for {
		tat := l.tat.Load()
		due := max(tat, now)
		if due-now > l.tolerance {
			return false
		}
		if l.tat.CompareAndSwap(tat, due+l.interval) {
			return true
		}
	}
}

// appendAccessJSON appends e as one JSON object and a newline. It is
// written by hand because encoding/json costs several times as much and
// allocates; the writer has to keep up with the whole gateway.
func appendAccessJSON(b []byte, e *AccessEntry) []byte {
	b = append(b, `{"time":"`...)
	b = appendTimeUTC(b, e.Time)
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, e.RequestID)
	b = append(b, `,"remote":`...)
	b = appendJSONString(b, e.Remote)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.Host)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.Path)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, e.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, e.Duration)
	b = append(b, `,"service":`...)
	b = appendJSONString(b, e.Service)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, e.Upstream)
	b = append(b, `,"upstream_addr":`...)
	b = appendJSONString(b, e.UpstreamAddr)
	b = append(b, `,"color":`...)
	b = appendJSONString(b, e.Color)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(e.Retries), 10)
	if e.Preview {
		b = append(b, `,"preview":true`...)
	}
	if e.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, e.Error)
	}
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, e.UserAgent)
	if e.Referer != "" {
		b = append(b, `,"referer":`...)
		b = appendJSONString(b, e.Referer)
	}
	return append(b, '}', '\n')
}

// appendTimeUTC appends t in UTC as AppendFormat's
// "2006-01-02T15:04:05.000Z07:00" does, in a fraction of its time: the
// writer formats one per request.
func appendTimeUTC(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	b = append(b, byte('0'+month/10), byte('0'+month%10), '-', byte('0'+day/10), byte('0'+day%10), 'T')
	b = append(b, byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+minute/10), byte('0'+minute%10), ':')
	b = append(b, byte('0'+sec/10), byte('0'+sec%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, 'Z')
}

// appendMillis appends d in milliseconds with three decimals, exactly as
// strconv.AppendFloat(b, float64(d)/1e6, 'f', 3, 64) does, with integers:
// only a duration that ends in exactly 500 ns is a tie whose rounding
// depends on the float, and it takes AppendFloat's path.
func appendMillis(b []byte, d time.Duration) []byte {
	if d < 0 || d >= 1e15 || d%1000 == 500 {
		return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	us := (d + 500) / 1000
	b = strconv.AppendInt(b, int64(us/1000), 10)
	frac := us % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

const jsonHexDigits = "0123456789abcdef"

// jsonPlainPrefix is how many bytes at the start of s appendJSONString
// copies as they are: eight at a time while no byte of the eight needs a
// look (one that is not ASCII, below 0x20, DEL, '"' or '\\'), then one at a
// time. Most fields need no escaping at all.
func jsonPlainPrefix(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if x&highBits != 0 || byteBelow(x, 0x20) || byteBelow(x^(oneBits*0x7f), 1) ||
			byteBelow(x^(oneBits*'"'), 1) || byteBelow(x^(oneBits*'\\'), 1) {
			break
		}
	}
	for i < len(s) && jsonPlain[s[i]] {
		i++
	}
	return i
}

const oneBits, highBits = 0x0101010101010101, 0x8080808080808080

// byteBelow reports whether a byte of the word x is below n, for n up to
// 0x80: the lowest such byte borrows and sets its top bit; without one
// nothing borrows, and no byte whose top bit is clear sets it. x^(oneBits*c)
// has a byte below 1 where x holds c.
func byteBelow(x, n uint64) bool { return (x-oneBits*n)&^x&highBits != 0 }

// jsonPlain marks the bytes appendJSONString copies as they are.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string. Like encoding/json, it
// writes each byte that is not UTF-8 as \ufffd and escapes U+2028 and
// U+2029, which JavaScript and some log viewers take for line ends. It
// also escapes every control character, C1 and DEL included, so that a
// line shown in a terminal cannot carry escape sequences.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := jsonPlainPrefix(s); i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError && r >= 0xa0 && r != '\u2028' && r != '\u2029' {
				i += size
				continue
			}
		}
		b = append(b, s[start:i]...)
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		default:
			b = append(b, '\\', 'u', jsonHexDigits[r>>12&0xf], jsonHexDigits[r>>8&0xf], jsonHexDigits[r>>4&0xf], jsonHexDigits[r&0xf])
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendAccessCommon appends e in the common format that OpenAccessLog
// describes, and a newline.
func appendAccessCommon(b []byte, e *AccessEntry) []byte {
	b = appendLogField(b, e.Remote, true)
	b = append(b, " - - ["...)
	b = e.Time.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, `] "`...)
	b = appendLogField(b, e.Method, true)
	b = append(b, ' ')
	b = appendLogField(b, e.Path, true)
	b = append(b, ' ')
	b = appendLogField(b, e.Proto, true)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, ` "`...)
	b = appendLogField(b, e.Referer, false)
	b = append(b, `" "`...)
	b = appendLogField(b, e.UserAgent, false)
	b = append(b, `" rt=`...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 3, 64)
	b = append(b, " svc="...)
	b = appendLogField(b, e.Service, true)
	b = append(b, " up="...)
	b = appendLogField(b, e.Upstream, true)
	b = append(b, " color="...)
	b = appendLogField(b, e.Color, true)
	b = append(b, " rid="...)
	b = appendLogField(b, e.RequestID, true)
	if e.Preview {
		b = append(b, " preview=1"...)
	}
	return append(b, '\n')
}

const nginxHexDigits = "0123456789ABCDEF"

// appendLogField appends s escaped as nginx escapes variables in its log:
// '"', '\\', and bytes below 0x20 or above 0x7e become \xHH. A space
// becomes \x20 too when escapeSpace is set, for fields outside quotes. An
// empty s is written "-".
func appendLogField(b []byte, s string, escapeSpace bool) []byte {
	if s == "" {
		return append(b, '-')
	}
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > 0x20 && c < 0x7f && c != '"' && c != '\\' || c == ' ' && !escapeSpace {
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\', 'x', nginxHexDigits[c>>4], nginxHexDigits[c&0xf])
		start = i + 1
	}
	return append(b, s[start:]...)
}
