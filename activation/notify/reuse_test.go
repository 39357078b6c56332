package notify_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// claimStore hands out the notifications it holds once and records their
// outcome.
type claimStore struct {
	fakeStore
	mu     sync.Mutex
	due    []store.Notification
	sent   int
	failed int
}

func (c *claimStore) ClaimNotifications(_ context.Context, _ time.Time, _ time.Duration, limit int) ([]store.Notification, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(limit, len(c.due))
	out := c.due[:n]
	c.due = c.due[n:]
	return out, nil
}

func (c *claimStore) NotificationSent(context.Context, store.Notification, time.Time) error {
	c.mu.Lock()
	c.sent++
	c.mu.Unlock()
	return nil
}

// relay is a plain SMTP relay (no TLS: insecure_no_tls) that counts the
// connections it accepted and the messages it took.
type relay struct {
	ln          net.Listener
	conns, msgs atomic.Int32
}

func startRelay(t *testing.T) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			go r.serve(c)
		}
	}()
	return r
}

func (r *relay) serve(c net.Conn) {
	defer c.Close()
	br, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("220 relay")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 relay")
		case strings.HasPrefix(cmd, "MAIL FROM"), strings.HasPrefix(cmd, "RCPT TO"), cmd == "RSET", cmd == "NOOP":
			say("250 ok")
		case cmd == "DATA":
			say("354 go")
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			r.msgs.Add(1)
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 unknown")
		}
	}
}

// TestSMTPConnectionReuse: one delivery run sends its messages over one
// relay connection, and closes it when the run ends.
func TestSMTPConnectionReuse(t *testing.T) {
	r := startRelay(t)
	st := &claimStore{}
	for i := range 7 {
		st.due = append(st.due, store.Notification{ID: "n" + string(rune('a'+i)), Kind: "binding", Recipient: "holder@example.com",
			Subject: "Your derived credentials", Body: "hello", Attempts: 1})
	}
	o, err := notify.New(notify.Config{SMTP: notify.SMTPConfig{Address: r.ln.Addr().String(), From: "credgw@example.com", InsecureNoTLS: true}},
		func(p string) string { return p }, st, discard(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	sent, failed, err := o.Deliver(context.Background())
	if err != nil || sent != 7 || failed != 0 {
		t.Fatalf("Deliver: sent %d failed %d: %v", sent, failed, err)
	}
	if got := r.msgs.Load(); got != 7 {
		t.Fatalf("the relay took %d messages, want 7", got)
	}
	if got := r.conns.Load(); got != 1 {
		t.Errorf("7 messages took %d connections, want 1", got)
	}
	// The next run opens a connection of its own.
	st.mu.Lock()
	st.due = append(st.due, store.Notification{ID: "later", Kind: "binding", Recipient: "holder@example.com", Subject: "s", Body: "b", Attempts: 1})
	st.mu.Unlock()
	if sent, _, err := o.Deliver(context.Background()); err != nil || sent != 1 {
		t.Fatalf("second run: sent %d: %v", sent, err)
	}
	if got := r.conns.Load(); got != 2 {
		t.Errorf("two runs took %d connections, want 2", got)
	}
}
