package server

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// perSourceListener bounds the connections one source address holds open
// on a listener (limits.max_conns_per_source): one beyond the limit is
// closed as soon as it is accepted, before its TLS handshake, and the
// ones already open stay. Idle and slow connections cost a goroutine and
// buffers each; without the bound, one address could hold thousands.
//
// The source is the TCP peer: behind a load balancer that does not keep
// client addresses, every connection has the balancer's address and the
// limit becomes one per balancer (docs/deploy.md).
type perSourceListener struct {
	net.Listener
	limit   int
	v6Bits  int
	refused prometheus.Counter

	mu    sync.Mutex
	open  map[string]int
	conns map[string]*countedConn // by remote address, for cutAfter
}

// limitPerSource wraps ln; limit < 0 is no limit. IPv6 peers count by
// their first v6Bits (sourceOf).
func limitPerSource(ln net.Listener, limit, v6Bits int, refused prometheus.Counter) *perSourceListener {
	return &perSourceListener{Listener: ln, limit: limit, v6Bits: v6Bits, refused: refused, open: map[string]int{}, conns: map[string]*countedConn{}}
}

// Accept returns the next connection within its source's limit.
func (l *perSourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := l.sourceOf(c.RemoteAddr())
		l.mu.Lock()
		if l.limit >= 0 && l.open[src] >= l.limit {
			l.mu.Unlock()
			c.Close()
			l.refused.Inc()
			continue
		}
		l.open[src]++
		cc := &countedConn{Conn: c, l: l, src: src}
		l.conns[c.RemoteAddr().String()] = cc
		l.mu.Unlock()
		return cc, nil
	}
}

func (l *perSourceListener) done(c *countedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[c.src]--; l.open[c.src] <= 0 {
		delete(l.open, c.src)
	}
	delete(l.conns, c.RemoteAddr().String())
}

// cutAfter closes the connection from remote after d, unless it is
// closed before. It is how a stream deadline is enforced on a peer that
// stopped reading: the gateway cannot reset one HTTP/2 stream whose data
// waits on the peer's flow-control window, so it drops the connection.
//
// A connection keeps one timer, the first: every call passes the same d
// (limits.stream_timeout), so the first cut comes before any later one
// would, and a connection that makes many calls, even ones refused at
// once, holds no more than one that makes a single call.
func (l *perSourceListener) cutAfter(remote net.Addr, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.conns[remote.String()]
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && c.cut == nil {
		c.cut = time.AfterFunc(d, func() { c.Close() })
	}
}

// pendingCuts is how many cutAfter timers the open connections hold.
func (l *perSourceListener) pendingCuts() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		c.mu.Lock()
		if c.cut != nil {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// sourceOf is the source a peer counts under: its IPv4 address, or the
// first v6Bits of its IPv6 address (limits.source_prefix_v6). An IPv6
// subscriber is given a whole /64 (or more), so counted by address it
// could open the limit's worth of connections from each of them.
func (l *perSourceListener) sourceOf(a net.Addr) string { return sourceKey(a, l.v6Bits) }

// sourceKey is the source a peer address counts under (sourceOf).
func sourceKey(a net.Addr, v6Bits int) string {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip4 := t.IP.To4(); ip4 != nil {
			return ip4.String()
		}
		if ip := t.IP.To16(); ip != nil && v6Bits > 0 && v6Bits < 128 {
			return (&net.IPNet{IP: ip.Mask(net.CIDRMask(v6Bits, 128)), Mask: net.CIDRMask(v6Bits, 128)}).String()
		}
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// countedConn gives its place back once, when it is closed.
type countedConn struct {
	net.Conn
	l   *perSourceListener
	src string

	mu     sync.Mutex
	closed bool
	cut    *time.Timer // cutAfter's
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	if c.cut != nil {
		c.cut.Stop()
		c.cut = nil
	}
	c.mu.Unlock()
	if first {
		c.l.done(c)
	}
	return err
}
