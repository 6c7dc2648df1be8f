package gateway

// A gateway config file (switchyard gateway --config gateway.yaml) is a
// YAML mapping; deployments/gateway.example.yaml is a full example.
//
//	preview_listen: 127.0.0.1:8087   # optional: serve each service's idle color here
//	# defaults apply to every route that does not set its own
//	defaults:
//	  timeouts: {connect: 5s, response_header: 60s, read: 60s, request: 0s, client_body: 60s}
//	  retry: {attempts: 3, on: [error, timeout], non_idempotent: false}
//	  max_body: 0          # bytes, or with a unit: 512KiB, 10MB, 1GiB; 0 = no limit
//	routes:                # at least one
//	  - match:
//	      host: "*.example.com"   # optional: a name, "*." and a name, or an IP; no port
//	      prefix: /api             # required
//	      headers: {X-Canary: "1"} # optional: "" means present with any value
//	    service: api               # required
//	    strip_prefix: true
//	    preserve_host: false
//	    timeouts: {response_header: 5s}
//	    retry: {attempts: 2, on: [error, http_503]}
//	    max_body: 10MiB
//
// Durations are Go durations (5s, 1m30s), never negative; 0s means the
// gateway's built-in default, which for request is no limit. Sizes are
// bytes, or a whole number with a unit: B, KB, MB, GB (powers of 1000),
// KiB, MiB, GiB (powers of 1024). retry.attempts is 1 to 10 and retry.on
// names error, timeout, http_502, http_503 or http_504.
//
// Defaults merge field by field: a route that writes only
// timeouts.response_header keeps the default connect timeout. A field a
// route writes wins even when zero (max_body: 0 lifts a default limit);
// a route's retry.on replaces the default list. Unknown keys, two routes
// with the same match and a file over 1 MiB are errors.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidConfig means a gateway config file is malformed. Errors about
// one route also wrap ErrInvalidRoute.
var ErrInvalidConfig = errors.New("gateway: invalid config")

// maxConfigSize bounds a config file: a real one is a few KiB, and a
// bigger one is more likely a wrong path than a config.
const maxConfigSize = 1 << 20

// FileConfig is the content of a gateway config file.
type FileConfig struct {
	// Routes are normalized, in file order, with the file's defaults
	// merged in. Fields left zero by both take the gateway's defaults.
	Routes []Route
	// PreviewListen is the preview listener's address (host:port), ""
	// for none. It is read at start; a reload does not move a listener.
	PreviewListen string
}

// LoadConfig reads and checks a config file; every error names the file
// and line ("gateway.yaml:12: route 3: ...").
func LoadConfig(path string) (*FileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("gateway: read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig checks the config data read from the file name, which only
// serves to name it in errors.
func ParseConfig(name string, data []byte) (*FileConfig, error) {
	p := &configParser{name: name}
	if len(data) > maxConfigSize {
		return nil, p.errorf(nil, "file is larger than 1 MiB")
	}
	doc, err := p.document(data)
	if err != nil {
		return nil, err
	}
	top, err := p.fields(doc, "the config", "preview_listen", "defaults", "routes")
	if err != nil {
		return nil, err
	}
	var previewListen string
	if n := top["preview_listen"]; n != nil {
		if previewListen, err = p.scalar(n, "preview_listen"); err != nil {
			return nil, err
		}
		if _, _, err := net.SplitHostPort(previewListen); err != nil {
			return nil, p.errorf(n, "preview_listen %q must be an address such as 127.0.0.1:8087", previewListen)
		}
	}
	def, err := p.defaults(top["defaults"])
	if err != nil {
		return nil, err
	}
	list := resolve(top["routes"])
	switch {
	case list == nil:
		return nil, p.errorf(doc, "routes: at least one route is required")
	case isNull(list) || list.Kind == yaml.SequenceNode && len(list.Content) == 0:
		return nil, p.errorf(list, "routes: at least one route is required")
	case list.Kind != yaml.SequenceNode:
		return nil, p.errorf(list, "routes must be a list of routes, got %s", kindName(list))
	}
	cfg := &FileConfig{Routes: make([]Route, 0, len(list.Content)), PreviewListen: previewListen}
	seen := make(map[string]int, len(list.Content)) // routeKey → index in cfg.Routes
	for i, item := range list.Content {
		p.route = i + 1
		r, err := p.readRoute(item, def)
		if err != nil {
			return nil, err
		}
		key := routeKey(&r)
		if j, dup := seen[key]; dup {
			return nil, p.errorf(item, "same match as route %d (line %d): %s; only the first would ever be used",
				j+1, cfg.Routes[j].Line, describeMatch(&r))
		}
		seen[key] = i
		cfg.Routes = append(cfg.Routes, r)
	}
	return cfg, nil
}

// configError places an error in a config file. It wraps ErrInvalidConfig,
// and ErrInvalidRoute when it is about one route.
type configError struct {
	name  string
	line  int // 0: the file as a whole
	route int // 1-based; 0: not about one route
	err   error
}

func (e *configError) Error() string {
	var b strings.Builder
	b.WriteString(e.name)
	if e.line > 0 {
		b.WriteString(":" + strconv.Itoa(e.line))
	}
	b.WriteString(": ")
	if e.route > 0 {
		b.WriteString("route " + strconv.Itoa(e.route) + ": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *configError) Unwrap() []error {
	if e.route > 0 {
		return []error{ErrInvalidConfig, ErrInvalidRoute, e.err}
	}
	return []error{ErrInvalidConfig, e.err}
}

// configParser walks the YAML nodes rather than decoding into structs, so
// that every error, semantic ones included, names the line of the value
// at fault and the route it belongs to.
type configParser struct {
	name  string
	route int // the route being read, 1-based; 0 outside routes
}

func (p *configParser) errorf(n *yaml.Node, format string, args ...any) error {
	return p.fail(n, fmt.Errorf(format, args...))
}

func (p *configParser) fail(n *yaml.Node, err error) error {
	e := &configError{name: p.name, route: p.route, err: err}
	if n != nil {
		e.line = n.Line
	}
	return e
}

// document returns the mapping at the root of data, which must hold one
// YAML document.
func (p *configParser) document(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, p.errorf(nil, "file is empty: want a mapping with routes")
		}
		return nil, p.syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.syntaxError(err)
	default:
		return nil, p.errorf(firstContent(&next), "only one YAML document is allowed")
	}
	root := resolve(firstContent(&doc))
	switch {
	case isNull(root):
		return nil, p.errorf(root, "file is empty: want a mapping with routes")
	case root.Kind != yaml.MappingNode:
		return nil, p.errorf(root, "want a mapping with routes, got %s", kindName(root))
	}
	return root, nil
}

func firstContent(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0]
	}
	return doc
}

// syntaxError moves the line of a YAML parser error ("yaml: line 3:
// ...") to where the other errors have theirs. The parser offers the
// line only inside its message.
func (p *configParser) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, convErr := strconv.Atoi(num); convErr == nil {
				return &configError{name: p.name, line: line, err: fmt.Errorf("YAML syntax: %s", text)}
			}
		}
	}
	return &configError{name: p.name, err: fmt.Errorf("YAML syntax: %s", msg)}
}

// fields returns the values of mapping n by key. It refuses a key not in
// known and a key written twice. An absent n, or a null one as "retry:"
// with nothing after, gives no fields.
func (p *configParser) fields(n *yaml.Node, what string, known ...string) (map[string]*yaml.Node, error) {
	m := resolve(n)
	if m == nil || isNull(m) {
		return nil, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, p.errorf(n, "%s must be a mapping, got %s", what, kindName(m))
	}
	out := make(map[string]*yaml.Node, len(m.Content)/2)
	keys := make(map[string]int, len(m.Content)/2) // key → its line
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := resolve(m.Content[i])
		if k.Kind != yaml.ScalarNode {
			return nil, p.errorf(k, "%s: keys must be plain names", what)
		}
		if !slices.Contains(known, k.Value) {
			return nil, p.errorf(k, "unknown key %q in %s (want %s)", k.Value, what, strings.Join(known, ", "))
		}
		if line, dup := keys[k.Value]; dup {
			return nil, p.errorf(k, "key %q in %s is written twice (first at line %d)", k.Value, what, line)
		}
		keys[k.Value] = k.Line
		out[k.Value] = m.Content[i+1]
	}
	return out, nil
}

// defaults reads the defaults section as a route holding only the fields
// that routes inherit.
func (p *configParser) defaults(n *yaml.Node) (Route, error) {
	var def Route
	f, err := p.fields(n, "defaults", "timeouts", "retry", "max_body")
	if err != nil {
		return def, err
	}
	if err := p.timeouts(f["timeouts"], "defaults.timeouts", &def.Timeouts); err != nil {
		return def, err
	}
	if err := p.retry(f["retry"], "defaults.retry", &def.Retry); err != nil {
		return def, err
	}
	if v := f["max_body"]; v != nil {
		if def.MaxBody, err = p.size(v, "defaults.max_body"); err != nil {
			return def, err
		}
	}
	return def, nil
}

// readRoute reads one item of routes, starting from the defaults so that
// what the item writes overrides them field by field.
func (p *configParser) readRoute(item *yaml.Node, def Route) (Route, error) {
	r := def
	r.Retry.On = slices.Clone(def.Retry.On)
	r.Line = item.Line
	if isNull(resolve(item)) {
		return r, p.errorf(item, "route is empty: want match and service")
	}
	f, err := p.fields(item, "route", "match", "service", "strip_prefix", "preserve_host", "timeouts", "retry", "max_body")
	if err != nil {
		return r, err
	}
	if err := p.match(item, f["match"], &r); err != nil {
		return r, err
	}

	sn := f["service"]
	if sn == nil {
		return r, p.errorf(item, "service is required")
	}
	if r.Service, err = p.str(sn, "service"); err != nil {
		return r, err
	}
	if err := checkService(r.Service); err != nil {
		return r, p.fail(sn, err)
	}

	if v := f["strip_prefix"]; v != nil {
		if r.StripPrefix, err = p.boolean(v, "strip_prefix"); err != nil {
			return r, err
		}
	}
	if v := f["preserve_host"]; v != nil {
		if r.PreserveHost, err = p.boolean(v, "preserve_host"); err != nil {
			return r, err
		}
	}
	if err := p.timeouts(f["timeouts"], "timeouts", &r.Timeouts); err != nil {
		return r, err
	}
	if err := p.retry(f["retry"], "retry", &r.Retry); err != nil {
		return r, err
	}
	if v := f["max_body"]; v != nil {
		if r.MaxBody, err = p.size(v, "max_body"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// match reads a route's match section into r's Host, Prefix and Headers.
func (p *configParser) match(item, n *yaml.Node, r *Route) error {
	if n == nil {
		return p.errorf(item, "match is required")
	}
	f, err := p.fields(n, "match", "host", "prefix", "headers")
	if err != nil {
		return err
	}
	pn := f["prefix"]
	if pn == nil {
		return p.errorf(n, "match.prefix is required")
	}
	prefix, err := p.str(pn, "match.prefix")
	if err != nil {
		return err
	}
	if r.Prefix, err = normalizePrefix(prefix); err != nil {
		return p.fail(pn, err)
	}
	if hn := f["host"]; hn != nil {
		host, err := p.str(hn, "match.host")
		if err != nil {
			return err
		}
		if r.Host, err = normalizeHost(host); err != nil {
			return p.fail(hn, err)
		}
	}
	r.Headers, err = p.headers(f["headers"])
	return err
}

// headers reads match.headers under canonical names; a header with no
// value ("X-Canary:" or "X-Canary: ”") matches any value.
func (p *configParser) headers(n *yaml.Node) (map[string]string, error) {
	m := resolve(n)
	if m == nil || isNull(m) {
		return nil, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, p.errorf(n, "match.headers must be a mapping of header names to values, got %s", kindName(m))
	}
	if len(m.Content) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m.Content)/2)
	lines := make(map[string]int, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := resolve(m.Content[i]), m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, p.errorf(k, "match.headers: keys must be header names")
		}
		if err := checkHeaderName(k.Value); err != nil {
			return nil, p.fail(k, err)
		}
		canon := http.CanonicalHeaderKey(k.Value)
		if line, dup := lines[canon]; dup {
			return nil, p.errorf(k, "header %s is written twice in match.headers (first at line %d)", canon, line)
		}
		value, err := p.str(v, "match.headers."+canon)
		if err != nil {
			return nil, err
		}
		if err := checkHeaderValue(canon, value); err != nil {
			return nil, p.fail(v, err)
		}
		lines[canon] = k.Line
		out[canon] = value
	}
	return out, nil
}

// timeouts overwrites the fields of t that n writes.
func (p *configParser) timeouts(n *yaml.Node, what string, t *Timeouts) error {
	f, err := p.fields(n, what, "connect", "response_header", "read", "request", "client_body")
	if err != nil {
		return err
	}
	for _, field := range []struct {
		key string
		dst *time.Duration
	}{
		{"connect", &t.Connect}, {"response_header", &t.ResponseHeader}, {"read", &t.Read},
		{"request", &t.Request}, {"client_body", &t.ClientBody},
	} {
		if v := f[field.key]; v != nil {
			if *field.dst, err = p.duration(v, what+"."+field.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// retry overwrites the fields of rp that n writes; a written on list
// replaces the inherited one.
func (p *configParser) retry(n *yaml.Node, what string, rp *RetryPolicy) error {
	f, err := p.fields(n, what, "attempts", "on", "non_idempotent")
	if err != nil {
		return err
	}
	if v := f["attempts"]; v != nil {
		s, err := p.scalar(v, what+".attempts")
		if err != nil {
			return err
		}
		a, convErr := strconv.Atoi(s)
		if convErr != nil || a < 1 || a > maxRetryAttempts {
			return p.errorf(v, "%s.attempts %q must be a whole number from 1 to %d (1: no retry)", what, s, maxRetryAttempts)
		}
		rp.Attempts = a
	}
	if v := f["on"]; v != nil {
		on, err := p.retryOn(v, what+".on")
		if err != nil {
			return err
		}
		rp.On = on
	}
	if v := f["non_idempotent"]; v != nil {
		if rp.NonIdempotent, err = p.boolean(v, what+".non_idempotent"); err != nil {
			return err
		}
	}
	return nil
}

func (p *configParser) retryOn(n *yaml.Node, what string) ([]string, error) {
	l := resolve(n)
	if !isNull(l) && l.Kind != yaml.SequenceNode {
		return nil, p.errorf(n, "%s must be a list such as [error, timeout], got %s", what, kindName(l))
	}
	if isNull(l) || len(l.Content) == 0 {
		// Retrying on nothing is what attempts: 1 says; an empty list
		// more likely lost its entries.
		return nil, p.errorf(n, "%s is empty: list the failures to retry, or set attempts: 1 for no retry", what)
	}
	on := make([]string, 0, len(l.Content))
	for _, item := range l.Content {
		s, err := p.scalar(item, what)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(retryConditions, s) {
			return nil, p.errorf(item, "%s: %q is not one of %s", what, s, strings.Join(retryConditions, ", "))
		}
		on = append(on, s)
	}
	return on, nil
}

// str reads a string value; null reads as "".
func (p *configParser) str(n *yaml.Node, what string) (string, error) {
	v := resolve(n)
	if isNull(v) {
		return "", nil
	}
	if v.Kind != yaml.ScalarNode {
		return "", p.errorf(n, "%s must be a single value, got %s", what, kindName(v))
	}
	return v.Value, nil
}

// scalar reads a value that must be written out.
func (p *configParser) scalar(n *yaml.Node, what string) (string, error) {
	v := resolve(n)
	if isNull(v) {
		return "", p.errorf(n, "%s has no value", what)
	}
	return p.str(n, what)
}

func (p *configParser) boolean(n *yaml.Node, what string) (bool, error) {
	s, err := p.scalar(n, what)
	if err != nil {
		return false, err
	}
	var b bool
	if err := resolve(n).Decode(&b); err != nil {
		return false, p.errorf(n, "%s %q must be true or false", what, s)
	}
	return b, nil
}

func (p *configParser) duration(n *yaml.Node, what string) (time.Duration, error) {
	s, err := p.scalar(n, what)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, p.errorf(n, "%s %q is not a duration such as 5s, 1m30s or 0s", what, s)
	}
	if d < 0 {
		return 0, p.errorf(n, "%s %q must not be negative", what, s)
	}
	return d, nil
}

func (p *configParser) size(n *yaml.Node, what string) (int64, error) {
	s, err := p.scalar(n, what)
	if err != nil {
		return 0, err
	}
	b, err := parseSize(s)
	if err != nil {
		return 0, p.errorf(n, "%s %w", what, err)
	}
	return b, nil
}

type sizeUnit struct {
	name string
	mult int64
}

// sizeUnits are the units parseSize knows, matched without regard to
// case: nobody means bits in a body size.
var sizeUnits = []sizeUnit{
	{"", 1}, {"B", 1},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
}

// ParseSize reads a byte count as a config file writes one ("10MiB").
func ParseSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w: size %q: %w", ErrInvalidConfig, s, err)
	}
	return n, nil
}

// parseSize reads a byte count: a whole number, then perhaps a space and
// a unit of sizeUnits.
func parseSize(s string) (int64, error) {
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%q must not be negative", s)
	}
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	num, unit := s[:digits], strings.TrimPrefix(s[digits:], " ")
	i := slices.IndexFunc(sizeUnits, func(u sizeUnit) bool { return strings.EqualFold(u.name, unit) })
	if num == "" || i < 0 {
		return 0, fmt.Errorf("%q is not a size: want bytes, or a whole number with a unit B, KB, MB, GB, KiB, MiB or GiB", s)
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v > math.MaxInt64/sizeUnits[i].mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v * sizeUnits[i].mult, nil
}

// describeMatch says what r matches, for errors.
func describeMatch(r *Route) string {
	var parts []string
	if r.Host != "" {
		parts = append(parts, fmt.Sprintf("host %q", r.Host))
	}
	parts = append(parts, fmt.Sprintf("prefix %q", r.Prefix))
	if len(r.Headers) > 0 {
		names := make([]string, 0, len(r.Headers))
		for name := range r.Headers {
			names = append(names, name)
		}
		slices.Sort(names)
		for i, name := range names {
			names[i] = fmt.Sprintf("%s=%q", name, r.Headers[name])
		}
		parts = append(parts, "headers "+strings.Join(names, ", "))
	}
	return strings.Join(parts, ", ")
}

// resolve follows aliases ("*name") to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is an absent value: "key:" with nothing after,
// "~" or null.
func isNull(n *yaml.Node) bool {
	return n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}
