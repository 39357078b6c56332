package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// handshakeListener does each connection's TLS handshake before the HTTP
// server sees it, under a deadline of its own. A browser asks for the
// card's PIN in the middle of the handshake, and Go's http.Server bounds
// a handshake by the smallest of its read timeouts (10 s of
// limits.http_read_header_timeout): a person typing the PIN was cut off
// with a bare TLS error. Each handshake runs in its own goroutine, so a
// slow one holds up no other accept; the per-source limit below it bounds
// how many one address may hold.
type handshakeListener struct {
	net.Listener
	cfg     *tls.Config
	hello   time.Duration // until the ClientHello
	timeout time.Duration // from the ClientHello
	log     *slog.Logger
	failed  *prometheus.CounterVec

	ready chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newHandshakeListener(ln net.Listener, cfg *tls.Config, hello, timeout time.Duration, log *slog.Logger, failed *prometheus.CounterVec) *handshakeListener {
	h := &handshakeListener{Listener: ln, cfg: cfg, hello: hello, timeout: timeout, log: log, failed: failed,
		ready: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
	h.wg.Add(1)
	go h.acceptLoop()
	return h
}

func (h *handshakeListener) acceptLoop() {
	defer h.wg.Done()
	for {
		c, err := h.Listener.Accept()
		if err != nil {
			select {
			case h.errs <- err:
			case <-h.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		h.wg.Add(1)
		go h.handshake(c)
	}
}

func (h *handshakeListener) handshake(c net.Conn) {
	defer h.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	// Until the ClientHello, the short deadline of a request's headers: a
	// client that connects and says nothing holds the connection no
	// longer than before. The person's time starts with the hello.
	c.SetDeadline(time.Now().Add(h.hello))
	cfg := h.cfg.Clone()
	inner := cfg.GetConfigForClient
	hello := false
	cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = true
		c.SetDeadline(time.Now().Add(h.timeout))
		if inner == nil {
			return nil, nil
		}
		return inner(chi)
	}
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		switch {
		case ctx.Err() != nil:
			return // shutting down
		case !hello:
			// A port probe, a load balancer's check, plain HTTP: not a
			// person at a browser.
			h.log.Debug("portal connection closed before its TLS hello", "remote", c.RemoteAddr().String(), "error", err.Error())
			return
		}
		reason := "error"
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason = "timeout"
		}
		h.failed.WithLabelValues(reason).Inc()
		// A person's doing more often than an attack's: info, with what
		// to look at when many people report "the portal does not open".
		h.log.Info("portal TLS handshake failed", "remote", c.RemoteAddr().String(), "reason", reason,
			"error", err.Error(), "timeout", h.timeout.String())
		return
	}
	c.SetDeadline(time.Time{}) // the HTTP server sets its own
	select {
	case <-h.done:
		tc.Close()
		return
	default:
	}
	select {
	case h.ready <- tc:
	case <-h.done:
		tc.Close()
	}
}

// Accept returns the next connection whose handshake is done; none once
// the listener is closed.
func (h *handshakeListener) Accept() (net.Conn, error) {
	select {
	case <-h.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-h.ready:
		select {
		case <-h.done:
			c.Close()
			return nil, net.ErrClosed
		default:
		}
		return c, nil
	case err := <-h.errs:
		return nil, err
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends the handshakes under way (it waits for
// them).
func (h *handshakeListener) Close() error {
	err := h.Listener.Close()
	h.once.Do(func() { close(h.done) })
	h.wg.Wait()
	return err
}
