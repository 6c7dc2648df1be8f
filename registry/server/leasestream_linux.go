//go:build linux

package server

import (
	"cmp"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// poller reads the registry's heartbeat streams in batches: a few times a
// second it asks epoll which of them have data and reads those. A
// goroutine per stream blocked in Read costs a thread wake-up and two
// context switches for every heartbeat of every stream, which at 10,000
// leases beating once a second is most of the registry's CPU. A lease
// lasts seconds; a renewal that waits a fiftieth of one costs nothing.
//
// Each polled socket is a duplicate of the hijacked connection's, whose
// net.Conn is closed: Go's own poller then no longer watches it, and wakes
// for none of its heartbeats.
type poller struct {
	s         *streams
	tick, ttl time.Duration
	log       logrus.FieldLogger

	mu      sync.Mutex
	epfd    int // -1 while no stream is polled
	byFD    map[int32]*polled
	running bool
	events  []syscall.EpollEvent
	swept   time.Time
}

type polled struct {
	st   *leaseStream
	fd   int
	last time.Time // when it last sent anything
}

// maxReadsPerTick bounds what one stream may make the poller read at each
// tick, so that a client that floods its stream delays no other.
const maxReadsPerTick = 16

// pollStream hands st, upgraded on conn, to the poller, and reports
// whether it did; a connection it cannot poll (TLS, say) is not touched.
func (s *streams) pollStream(st *leaseStream, conn net.Conn, ttl time.Duration) bool {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return false
	}
	fd, err := dupFD(tcp)
	if err != nil {
		return false
	}
	_ = conn.Close() // the socket lives on in fd
	s.mu.Lock()
	if s.poll == nil {
		s.poll = &poller{s: s, ttl: ttl, log: st.srv.cfg.Log, tick: min(100*time.Millisecond, max(ttl/50, 2*time.Millisecond)),
			epfd: -1, byFD: map[int32]*polled{}, events: make([]syscall.EpollEvent, 1024)}
	}
	p := s.poll
	s.mu.Unlock()
	pd := &polled{st: st, fd: fd, last: time.Now()}
	st.send = func(b []byte) bool {
		// Never blocks: a client that does not read its answers loses
		// its stream rather than holding up every other.
		n, err := syscall.Write(fd, b)
		return err == nil && n == len(b)
	}
	st.close = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closeLocked(pd)
	}
	if !s.add(st) {
		_ = syscall.Close(fd)
		st.release()
		return true
	}
	if err := p.add(pd); err != nil {
		st.srv.cfg.Log.WithError(err).WithField("peer", st.peer).Warn("could not poll a heartbeat stream; closed, the client falls back to PUT heartbeats")
		s.remove(st)
		_ = syscall.Close(fd)
		st.release()
	}
	return true
}

// dupFD duplicates c's socket, close-on-exec and, as the original,
// non-blocking.
func dupFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	cerr := rc.Control(func(f uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, f, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = e
			return
		}
		fd = int(r)
	})
	return fd, cmp.Or(cerr, derr)
}

// add polls pd, first taking the frames that came with the upgrade.
func (p *poller) add(pd *polled) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		p.epfd = epfd
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(pd.fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, pd.fd, &ev); err != nil {
		return err
	}
	p.byFD[int32(pd.fd)] = pd
	if p.s.stopped() || pd.st.n > 0 && !pd.st.take() {
		p.closeLocked(pd)
	}
	if !p.running {
		p.running = true
		go p.loop()
	}
	return nil
}

// closeLocked ends pd's stream, once. Callers hold mu.
func (p *poller) closeLocked(pd *polled) {
	if p.byFD[int32(pd.fd)] != pd {
		return
	}
	delete(p.byFD, int32(pd.fd))
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, pd.fd, nil)
	_ = syscall.Close(pd.fd)
	p.s.remove(pd.st)
	pd.st.release()
}

// loop reads what the streams sent at every tick, and ends, letting go of
// epoll, when no stream is left.
func (p *poller) loop() {
	t := time.NewTicker(p.tick)
	defer t.Stop()
	for range t.C {
		p.mu.Lock()
		if len(p.byFD) == 0 {
			_ = syscall.Close(p.epfd)
			p.epfd, p.running = -1, false
			p.mu.Unlock()
			return
		}
		now := time.Now()
		p.harvest(now)
		if now.Sub(p.swept) >= p.ttl/4 {
			p.sweep(now)
			p.swept = now
		}
		p.mu.Unlock()
	}
}

// harvest reads every stream that has data. Callers hold mu.
func (p *poller) harvest(now time.Time) {
	for range len(p.byFD)/len(p.events) + 2 {
		n, err := syscall.EpollWait(p.epfd, p.events, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			p.log.WithError(err).Error("polling heartbeat streams failed; retrying at the next tick")
			return
		}
		for _, ev := range p.events[:n] {
			if pd := p.byFD[ev.Fd]; pd != nil {
				p.read(pd, now)
			}
		}
		if n < len(p.events) {
			return
		}
	}
}

// read takes what pd's client sent. Callers hold mu.
func (p *poller) read(pd *polled, now time.Time) {
	st := pd.st
	for range maxReadsPerTick {
		room := len(st.buf) - st.n
		m, err := syscall.Read(pd.fd, st.buf[st.n:])
		switch {
		case m > 0:
			st.n += m
			pd.last = now
			if !st.take() {
				p.closeLocked(pd)
				return
			}
			if m < room {
				return // all there was
			}
		case err == syscall.EAGAIN || err == syscall.EINTR:
			return
		default: // the client left
			p.closeLocked(pd)
			return
		}
	}
}

// sweep closes the streams silent for longer than a lease, as a read
// deadline would. Callers hold mu.
func (p *poller) sweep(now time.Time) {
	for _, pd := range p.byFD {
		if now.Sub(pd.last) > p.ttl+p.ttl/4 {
			pd.st.silent(p.ttl)
			p.closeLocked(pd)
		}
	}
}
