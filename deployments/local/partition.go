package local

import (
	"io"
	"net"
	"sync"
)

// Partition is a TCP proxy on loopback that can be cut like a network: a
// client connected through it loses its connections at once and cannot
// make new ones until it is healed. Tests use it to expire ZooKeeper
// sessions for real.
type Partition struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

// NewPartition forwards a fresh loopback port to target.
func NewPartition(target string) (*Partition, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Partition{ln: ln, target: target}
	go p.serve()
	return p, nil
}

// Addr is where clients connect instead of target.
func (p *Partition) Addr() string { return p.ln.Addr().String() }

func (p *Partition) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	}
}

// Cut drops every connection and refuses new ones.
func (p *Partition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Heal accepts connections again.
func (p *Partition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy for good.
func (p *Partition) Close() {
	p.ln.Close()
	p.Cut()
}
