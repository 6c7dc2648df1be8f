package gateway

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// wsRelay stands for the instance's side of a proxied WebSocket.
// ReverseProxy copies instance→client by reading from it and
// client→instance by writing to it, so the relay sees where every frame
// begins in both directions. That is what lets the gateway end a WebSocket
// the protocol's own way (RFC 6455 close frames with 1001, going away)
// instead of cutting the TCP connection, which clients report as 1006: a
// close frame may only be put between two frames.
type wsRelay struct {
	backend io.ReadWriteCloser
	down    frameScanner // instance → client
	up      frameScanner // client → instance

	mu         sync.Mutex // up-side writes and the closing state
	closing    bool
	closeFrame []byte // to the client; sent once down is between frames
	sentDown   int    // bytes of closeFrame handed out
	upDone     bool   // a close frame went to the instance: drop client frames

	idle    *time.Timer // nil without an idle limit
	idleFor time.Duration
	client  func() net.Conn // the hijacked client connection, once known
}

// wsCloseWait is how long a client gets to answer the gateway's close
// frame before its connection is closed.
const wsCloseWait = 2 * time.Second

var errWSClosed = errors.New("gateway: websocket closed by the gateway")

func newWSRelay(backend io.ReadWriteCloser, idle time.Duration, client func() net.Conn) *wsRelay {
	r := &wsRelay{backend: backend, idleFor: idle, client: client}
	if idle > 0 {
		r.idle = time.AfterFunc(idle, func() { r.end(reasonIdle) })
	}
	return r
}

func (r *wsRelay) touch() {
	if r.idle != nil {
		r.idle.Reset(r.idleFor)
	}
}

func (r *wsRelay) Read(p []byte) (int, error) {
	if n, done := r.emitClose(p); n > 0 || done {
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	n, err := r.backend.Read(p)
	r.down.scan(p[:n])
	r.touch()
	if err != nil {
		r.mu.Lock()
		closing := r.closing
		r.mu.Unlock()
		if closing && n > 0 {
			return n, nil
		}
		if closing && r.down.boundary() {
			return r.Read(p)
		}
	}
	return n, err
}

// emitClose hands out the close frame to the client once the instance's
// stream is between frames; done reports that it was handed out whole.
func (r *wsRelay) emitClose(p []byte) (n int, done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closing || !r.down.boundary() {
		return 0, false
	}
	n = copy(p, r.closeFrame[r.sentDown:])
	r.sentDown += n
	return n, n == 0 && r.sentDown == len(r.closeFrame)
}

func (r *wsRelay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.touch()
	if r.upDone {
		// The instance has had its close frame; the client's frames after
		// it, its own close answer included, go nowhere. Once that answer
		// passed, the copy may end.
		r.up.scan(p)
		if r.up.sawClose {
			return 0, errWSClosed
		}
		return len(p), nil
	}
	n, err := r.backend.Write(p)
	r.up.scan(p[:n])
	return n, err
}

func (r *wsRelay) Close() error {
	if r.idle != nil {
		r.idle.Stop()
	}
	return r.backend.Close()
}

// end closes the WebSocket with 1001 and reason on both sides: a close
// frame to the instance (when the client is between frames) and one to the
// client, then closes the instance's connection; the client gets
// wsCloseWait to answer before its connection is closed too.
func (r *wsRelay) end(reason string) {
	locked := false
	for deadline := time.Now().Add(time.Second); !locked && time.Now().Before(deadline); {
		if locked = r.mu.TryLock(); !locked {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if locked {
		if !r.closing {
			r.closing = true
			r.closeFrame = closeFrame(1001, reason, false)
			if r.up.boundary() {
				_, _ = r.backend.Write(closeFrame(1001, reason, true))
				r.upDone = true
			}
		}
		r.mu.Unlock()
	}
	if r.idle != nil {
		r.idle.Stop()
	}
	_ = r.backend.Close()
	if c := r.client(); c != nil {
		time.AfterFunc(wsCloseWait, func() { _ = c.Close() })
	}
}

// closeFrame is a close frame with code and reason (cut to the 123 bytes a
// control frame allows), masked when it goes to a server.
func closeFrame(code uint16, reason string, masked bool) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := binary.BigEndian.AppendUint16(nil, code)
	payload = append(payload, reason...)
	f := []byte{0x88, byte(len(payload))}
	if !masked {
		return append(f, payload...)
	}
	f[1] |= 0x80
	var key [4]byte
	_, _ = rand.Read(key[:])
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// frameScanner follows RFC 6455 framing over a byte stream, to know where
// each frame ends. It never holds bytes back.
type frameScanner struct {
	hdr      [14]byte
	hn       int    // header bytes of the current frame seen so far
	need     int    // header length, once its first two bytes are in
	left     uint64 // payload bytes of the current frame still to come
	sawClose bool   // a close frame's header went by
}

// boundary reports whether the stream is between two frames.
func (f *frameScanner) boundary() bool { return f.hn == 0 && f.left == 0 }

func (f *frameScanner) scan(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(uint64(len(p)), f.left)
			f.left -= k
			p = p[k:]
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
		}
		if f.hn < 2 || f.hn < f.need {
			continue
		}
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.left = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			f.left = uint64(l)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.sawClose = true
		}
		f.hn = 0
	}
}
