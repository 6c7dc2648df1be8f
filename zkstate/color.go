package zkstate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Color is one of the two deployments of a service.
type Color string

// The two colors.
const (
	Blue  Color = "blue"
	Green Color = "green"
)

// Colors lists both colors in a fixed order.
var Colors = [2]Color{Blue, Green}

// ErrBadColor is wrapped by every refusal of a color value.
var ErrBadColor = errors.New("zkstate: bad color")

// ParseColor accepts the data of /active_color: "blue" or "green", with
// surrounding whitespace ignored. Anything else is refused with a reason
// that quotes a bounded, printable prefix of the value.
func ParseColor(b []byte) (Color, error) {
	switch c := Color(strings.TrimSpace(string(b))); c {
	case Blue, Green:
		return c, nil
	}
	return "", fmt.Errorf("%w: %s is not blue or green", ErrBadColor, Describe(b))
}

// Other returns the color that is not c.
func (c Color) Other() Color {
	if c == Blue {
		return Green
	}
	return Blue
}

// String is the color's name.
func (c Color) String() string { return string(c) }

// Describe renders untrusted node data for a log line or a reason: empty,
// binary and oversized values stay short and readable.
func Describe(b []byte) string {
	switch {
	case len(b) == 0:
		return "an empty value"
	case !utf8.Valid(b):
		return fmt.Sprintf("%d bytes of binary data", len(b))
	case len(b) > 32:
		return fmt.Sprintf("%q... (%d bytes)", b[:32], len(b))
	}
	return strconv.Quote(string(b))
}
