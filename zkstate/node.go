package zkstate

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// InstanceNode is the JSON an instance writes into its ephemeral node.
type InstanceNode struct {
	Service   string    `json:"service"`
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Port      int       `json:"port"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// ControlPort is the port on Address of the instance's /_switchyard/
	// endpoints when not Port (an agent's); it must match the registration.
	ControlPort int `json:"control_port,omitempty"`
}

// ParseInstanceNode decodes and checks an instance node's data.
func ParseInstanceNode(b []byte) (InstanceNode, error) {
	var n InstanceNode
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("zkstate: instance node is not JSON (%w): %s", boundedError{err}, Describe(b))
	}
	if n.Service == "" || n.ID == "" || n.Address == "" || n.Port <= 0 || n.Port > 65535 || n.ControlPort < 0 || n.ControlPort > 65535 {
		return n, fmt.Errorf("zkstate: instance node lacks service, id, address or a valid port: %s", Describe(b))
	}
	return n, nil
}

// maxDetail bounds what a decoder's own error adds to a refusal: some
// quote the offending value whole (a time, a number), and the value is the
// node writer's to choose.
const maxDetail = 48

// boundedError is err with its message cut to maxDetail bytes.
type boundedError struct{ err error }

func (e boundedError) Error() string {
	s := e.err.Error()
	if len(s) <= maxDetail {
		return s
	}
	return strings.ToValidUTF8(s[:maxDetail], "") + "..."
}

func (e boundedError) Unwrap() error { return e.err }

// Candidate is what a controller publishes in its election node.
type Candidate struct {
	ID  string `json:"id"`
	API string `json:"api,omitempty"`
}
