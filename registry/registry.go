// Package registry keeps the status of every service instance that the
// gateway routes on: the types, the Backend interface the other parts use,
// the built-in server with leases and blocking queries, its HTTP client, and
// the Consul backend.
package registry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Status is an instance's registry status, with Eureka's meanings.
type Status string

const (
	// StatusUp receives traffic.
	StatusUp Status = "UP"
	// StatusDown failed its health check.
	StatusDown Status = "DOWN"
	// StatusStarting is not ready yet.
	StatusStarting Status = "STARTING"
	// StatusOutOfService is healthy and kept out of traffic on purpose.
	StatusOutOfService Status = "OUT_OF_SERVICE"
)

// ParseStatus accepts exactly one of the four statuses.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusUp, StatusDown, StatusStarting, StatusOutOfService:
		return st, nil
	}
	return "", fmt.Errorf("%w: unknown status %q (want UP, DOWN, STARTING or OUT_OF_SERVICE)", ErrInvalid, s)
}

var (
	// ErrNotFound means the registry does not know the instance, for example
	// after a registry restart; the instance should register again.
	ErrNotFound = errors.New("registry: instance not found")
	// ErrUnauthorized means a write came without the right token.
	ErrUnauthorized = errors.New("registry: unauthorized")
	// ErrInvalid means the request itself was malformed.
	ErrInvalid = errors.New("registry: invalid request")
)

// Instance is one running copy of a service.
type Instance struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Color   string `json:"color"`
	Version string `json:"version,omitempty"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Status  Status `json:"status"`
	// Protocol is what the instance speaks on Port: ProtocolHTTP1 (also
	// when empty) or ProtocolH2C, HTTP/2 with prior knowledge, which
	// gateways then use upstream (a gRPC server needs it).
	Protocol string `json:"protocol,omitempty"`
	// ControlPort is the port on Address where the instance's
	// /_switchyard/ endpoints answer when they are not on Port: that of a
	// `switchyard agent` running beside an application that does not
	// embed the SDK. 0 means Port. Gateways never use it.
	ControlPort int `json:"control_port,omitempty"`
	// Switch is the id of the switch whose instruction last changed
	// Status, 0 when none is known (a registration, a health check, a
	// drain, or an UP in Consul, which has nowhere to keep it). It labels
	// log lines, so that a gateway's line about a change names the switch
	// behind it; it decides nothing, and routing never looks at it.
	Switch int64 `json:"switch,omitempty"`
}

// SwitchHeader carries the id of the switch an instruction belongs to, so
// that an instance's log line about it names the switch, and, through
// Instance.Switch, the registry's and the gateways' lines too. It is not
// signed: it labels log lines and decides nothing.
const SwitchHeader = "Switchyard-Switch"

type switchKey struct{}

// WithSwitch returns a copy of ctx that names switch id as the reason for
// what is done with it. Like a trace id it travels with the call rather
// than in every signature: a backend's SetStatus records it in
// Instance.Switch where it can. An id of 0 or below names none.
func WithSwitch(ctx context.Context, id int64) context.Context {
	return context.WithValue(ctx, switchKey{}, id)
}

// SwitchOf is the switch ctx names (see WithSwitch), 0 when none.
func SwitchOf(ctx context.Context) int64 {
	if id, ok := ctx.Value(switchKey{}).(int64); ok && id > 0 {
		return id
	}
	return 0
}

// The protocols an instance may announce.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
)

// HostPort is the instance's dialable address.
func (i Instance) HostPort() string { return net.JoinHostPort(i.Address, strconv.Itoa(i.Port)) }

// ControlHostPort is where the instance's /_switchyard/ endpoints answer:
// on Address, at ControlPort when set, otherwise at Port.
func (i Instance) ControlHostPort() string {
	if i.ControlPort == 0 {
		return i.HostPort()
	}
	return net.JoinHostPort(i.Address, strconv.Itoa(i.ControlPort))
}

// Limits on what a registration may carry, so that no registration can
// make every view, and every watcher's copy of it, large.
const (
	MaxNameLen    = 128 // instance ids and service names
	MaxAddressLen = 253 // a DNS name at most
	MaxVersionLen = 64
)

// CheckName checks an instance id or service name: 1 to MaxNameLen
// letters, digits, '.', '_', '-' or ':'.
func CheckName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s must be 1 to %d characters", ErrInvalid, what, MaxNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:", r)) {
			return fmt.Errorf("%w: %s %q may hold only letters, digits, '.', '_', '-' and ':'", ErrInvalid, what, s)
		}
	}
	return nil
}

// checkAddress accepts an IP address or a DNS host name.
func checkAddress(a string) error {
	if net.ParseIP(a) != nil {
		return nil
	}
	if a == "" || len(a) > MaxAddressLen {
		return fmt.Errorf("%w: address must be an IP or a host name of 1 to %d characters", ErrInvalid, MaxAddressLen)
	}
	for _, label := range strings.Split(a, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: address %q is neither an IP nor a host name", ErrInvalid, a)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%w: address %q is neither an IP nor a host name", ErrInvalid, a)
			}
		}
	}
	return nil
}

// Validate reports what is wrong with a registration.
func (i Instance) Validate() error {
	if err := CheckName("instance id", i.ID); err != nil {
		return err
	}
	if err := CheckName("service", i.Service); err != nil {
		return err
	}
	if err := checkAddress(i.Address); err != nil {
		return err
	}
	switch {
	case i.Color != "blue" && i.Color != "green":
		return fmt.Errorf("%w: color must be blue or green, not %q", ErrInvalid, i.Color)
	case len(i.Version) > MaxVersionLen || strings.ContainsFunc(i.Version, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("%w: version must be at most %d printable characters", ErrInvalid, MaxVersionLen)
	case i.Port <= 0 || i.Port > 65535:
		return fmt.Errorf("%w: port %d out of range", ErrInvalid, i.Port)
	case i.ControlPort < 0 || i.ControlPort > 65535:
		return fmt.Errorf("%w: control port %d out of range", ErrInvalid, i.ControlPort)
	case i.Protocol != "" && i.Protocol != ProtocolHTTP1 && i.Protocol != ProtocolH2C:
		return fmt.Errorf("%w: protocol must be %q or %q, not %q", ErrInvalid, ProtocolHTTP1, ProtocolH2C, i.Protocol)
	case i.Switch < 0:
		return fmt.Errorf("%w: switch id %d is negative", ErrInvalid, i.Switch)
	}
	_, err := ParseStatus(string(i.Status))
	return err
}

// Snapshot is the registry's view of a service (or of all services) at Index.
type Snapshot struct {
	Index uint64 `json:"index"`
	// Ready is false while a freshly restarted registry waits for its
	// instances to register again; its partial view must not replace a
	// gateway's last good table.
	Ready     bool       `json:"ready"`
	Instances []Instance `json:"instances"`
}

// Changes is the built-in registry's answer to a list of all services
// that names the view it last gave the asker (GET /v1/instances?since=
// with that view's index and EpochHeader): every service whose instances
// changed after Since, each with all its instances now (none when it has
// none left), as Eureka's delta of its applications. A watcher of every
// service then decodes what changed rather than the whole fleet on each
// change. A registry that cannot answer from Since (another registry, a
// restart, an index it never gave) answers the whole view instead.
type Changes struct {
	Index    uint64                `json:"index"`
	Ready    bool                  `json:"ready"`
	Since    uint64                `json:"since"`
	Services map[string][]Instance `json:"services"`
}

// GatewayReport is what a gateway has applied: for each service it routes,
// the registry index of the snapshot behind its current routing table.
type GatewayReport struct {
	ID      string            `json:"id"`
	Applied map[string]uint64 `json:"applied"`
	// Streams counts the open long-lived connections (WebSocket, SSE,
	// gRPC streams) by instance id.
	Streams map[string]int `json:"streams,omitempty"`
	// Moved counts the streams the gateway has ended since it started
	// because their instance left the UP set.
	Moved uint64 `json:"moved,omitempty"`
	// Traffic counts, by instance id, what the gateway has sent each
	// instance it routes to since the instance last went UP there:
	// cumulative, so that a reader takes rates from two reports.
	Traffic map[string]Traffic `json:"traffic,omitempty"`
	// Colors is what each color of each service answered, by color.
	Colors []ColorTraffic `json:"colors,omitempty"`
	// At is when the gateway took Traffic, by its own clock: rates come
	// from two reports of one gateway, whenever they are read.
	At time.Time `json:"at,omitzero"`
}

// ColorTraffic is what one color's instances of one service answered
// through one gateway, cumulative since the gateway started: what the
// controller's post-switch analysis compares the colors by.
type ColorTraffic struct {
	Service  string `json:"service"`
	Color    string `json:"color"`
	Requests uint64 `json:"requests"`
	// Errors counts the 5xx answers, the gateway's own for an instance
	// that failed included.
	Errors uint64 `json:"errors,omitempty"`
	// Latency counts the answers by how long they took: one count per
	// bound of LatencyBounds, and a last one for the slower ones.
	Latency []uint64 `json:"latency,omitempty"`
}

// LatencyBuckets is how many bounds LatencyBounds has.
const LatencyBuckets = 30

// LatencyBounds are the upper bounds, in seconds, of the buckets a gateway
// counts answer times in: from 0.25 ms up by a factor of √2 to 5.8 s, fine
// enough to tell a p99 that doubled.
var LatencyBounds = func() []float64 {
	b := make([]float64, LatencyBuckets)
	for i := range b {
		b[i] = 0.00025 * math.Pow(math.Sqrt2, float64(i))
	}
	return b
}()

// Traffic is what one gateway sent one instance. A count that goes down
// started again (the gateway restarted, or the instance left and rejoined
// its table).
type Traffic struct {
	Requests uint64 `json:"requests"`
	// Errors counts the 5xx answers and the attempts that got no answer.
	Errors uint64 `json:"errors,omitempty"`
}

// StatusChange is the body of PUT /v1/instances/<id>/status. The switch
// on whose instruction the status changes, if any, comes in SwitchHeader;
// it becomes Instance.Switch when the status does change.
type StatusChange struct {
	Status Status `json:"status"`
}

// HeartbeatBatch is the body of PUT /v1/heartbeats, which renews the
// leases of several instances in one request: what a client sends when
// heartbeats of several instances are due at once. The shared token may
// renew any instance; an instance token only its own.
type HeartbeatBatch struct {
	IDs []string `json:"ids"`
}

// HeartbeatResult answers a HeartbeatBatch: the ids the registry does not
// know, each of which must register again.
type HeartbeatResult struct {
	Missing []string `json:"missing"`
}

// MaxHeartbeatBatch caps the ids of one HeartbeatBatch; at MaxNameLen
// each it stays well within the server's 64 KB body limit.
const MaxHeartbeatBatch = 256

// Backend is a registry as switchyard uses it: the built-in server through
// Client, or Consul. Consumers declare the subset they call.
type Backend interface {
	// Register adds or replaces an instance and starts its lease.
	Register(ctx context.Context, inst Instance) error
	// Heartbeat renews the lease; ErrNotFound asks for a new Register.
	Heartbeat(ctx context.Context, id string) error
	// SetStatus changes the status and returns the index at which the
	// change is visible to Instances. The switch ctx names (SwitchOf), if
	// any, labels the change where the backend can keep it.
	SetStatus(ctx context.Context, id string, status Status) (uint64, error)
	// Deregister removes an instance.
	Deregister(ctx context.Context, id string) error
	// Instances lists a service's instances ("" for all services). With
	// waitIndex > 0 it blocks until the index passes waitIndex or wait ends.
	Instances(ctx context.Context, service string, waitIndex uint64, wait time.Duration) (Snapshot, error)
	// ReportGateway records what a gateway has applied, under a lease.
	ReportGateway(ctx context.Context, report GatewayReport) error
	// Gateways lists the reports of the live gateways.
	Gateways(ctx context.Context) ([]GatewayReport, error)
	// WatchGateways is Gateways with the index of the reports listed.
	// With waitIndex > 0 it first blocks until the index moves from
	// waitIndex or wait ends, so that one waiting for gateways to confirm a
	// change learns of each report as it lands instead of polling.
	WatchGateways(ctx context.Context, waitIndex uint64, wait time.Duration) ([]GatewayReport, uint64, error)
}
