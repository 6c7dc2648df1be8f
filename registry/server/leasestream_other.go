//go:build !linux

package server

import (
	"net"
	"time"
)

type poller struct{}

// pollStream reads streams in batches on Linux only; elsewhere each stream
// has a goroutine of its own.
func (s *streams) pollStream(*leaseStream, net.Conn, time.Duration) bool { return false }
