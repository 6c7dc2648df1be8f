package gateway

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func TestAccessLogTimeIsAppendFormats(t *testing.T) {
	const layout = "2006-01-02T15:04:05.000Z07:00"
	times := []time.Time{
		time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 1_000_000, time.FixedZone("x", -7*3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		times = append(times, time.Unix(r.Int64N(400*365*86400)-100*365*86400, r.Int64N(1e9)).In(time.FixedZone("z", r.IntN(86400)-43200)))
	}
	for _, tm := range times {
		if got, want := string(appendTimeUTC(nil, tm)), tm.UTC().Format(layout); got != want {
			t.Fatalf("appendTimeUTC(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestAccessLogMillisAreAppendFloats(t *testing.T) {
	ds := []time.Duration{0, 1, 499, 500, 501, 999, 1000, 1499, 1500, 1501, 999_999_499, 999_999_500, 999_999_501,
		123_456_789, -1, -1500, 1e15 - 1, 1e15, 1<<63 - 1, -1 << 63}
	r := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		ds = append(ds, time.Duration(r.Int64N(1e12)), time.Duration(r.Int64N(1e6))*1000+500, time.Duration(r.Int64N(1e6)))
	}
	for _, d := range ds {
		want := strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', 3, 64)
		if got := appendMillis(nil, d); string(got) != string(want) {
			t.Fatalf("appendMillis(%d) = %q, want %q", d, got, want)
		}
	}
}

func TestJSONPlainPrefixStopsAtTheFirstByteToEscape(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 200_000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(0x20 + r.IntN(0x5f))
			if r.IntN(30) == 0 {
				b[i] = byte(r.IntN(256))
			}
		}
		want := 0
		for want < len(b) && jsonPlain[b[want]] {
			want++
		}
		if got := jsonPlainPrefix(string(b)); got != want {
			t.Fatalf("jsonPlainPrefix(%q) = %d, want %d", b, got, want)
		}
	}
}
